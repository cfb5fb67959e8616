//! The OpenAPI 3.1 document of `/api/v1`, generated from the route table plus per-operation
//! documentation, so a route cannot exist undocumented (see the tests in `tests.rs`).

use crate::routes::{Access, Op, ROUTES, Surface};
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
}

#[derive(Clone, Copy)]
struct Param(&'static str, Kind, bool, &'static str);

#[derive(Clone, Copy)]
enum Body {
    Json(&'static str),
    Octets,
}

struct Doc {
    summary: &'static str,
    tag: &'static str,
    query: &'static [Param],
    body: Option<Body>,
    status: u16,
    response: Option<&'static str>,
}

fn doc(op: Op) -> Option<Doc> {
    use Kind::*;
    let d = |summary, tag, query, body, status, response| {
        Some(Doc {
            summary,
            tag,
            query,
            body,
            status,
            response,
        })
    };
    const AUDIT_Q: &[Param] = &[
        Param("actor", Str, false, "exact actor"),
        Param(
            "action",
            Str,
            false,
            "exact action, or a prefix ending in '.'",
        ),
        Param("target", Str, false, "exact target"),
        Param("outcome", Str, false, "success, failure or denied"),
        Param("since", Str, false, "RFC 3339 lower bound (inclusive)"),
        Param("until", Str, false, "RFC 3339 upper bound (exclusive)"),
        Param(
            "before",
            Int,
            false,
            "older page: entries with a lower index",
        ),
        Param(
            "after",
            Int,
            false,
            "newer page: entries with a higher index",
        ),
        Param("limit", Int, false, "page size, 1-500 (default 50)"),
    ];
    match op {
        Op::Health => d("Liveness", "appliance", &[], None, 200, Some("Health")),
        Op::OpenApi => d("This document", "appliance", &[], None, 200, None),
        Op::Whoami => d("The caller", "appliance", &[], None, 200, Some("Whoami")),
        Op::Overview => d(
            "Host, VM counts, audit head",
            "appliance",
            &[],
            None,
            200,
            Some("Overview"),
        ),
        Op::VmList => d("List VMs", "vms", &[], None, 200, Some("VmList")),
        Op::VmCreate => d(
            "Create (and measure) a VM",
            "vms",
            &[],
            Some(Body::Json("CreateVm")),
            201,
            Some("VmDetail"),
        ),
        Op::VmShow => d("Show a VM", "vms", &[], None, 200, Some("VmDetail")),
        Op::VmDestroy => d("Destroy a VM", "vms", &[], None, 204, None),
        Op::VmStart => d("Boot a VM", "vms", &[], None, 200, Some("VmDetail")),
        Op::VmPause => d("Pause a VM", "vms", &[], None, 200, Some("VmDetail")),
        Op::VmResume => d("Resume a VM", "vms", &[], None, 200, Some("VmDetail")),
        Op::VmStop => d("Stop a VM", "vms", &[], None, 200, Some("VmDetail")),
        Op::VmConsole => d(
            "Console tail",
            "vms",
            &[Param(
                "bytes",
                Int,
                false,
                "bytes from the end, 1-65536 (default 4096)",
            )],
            None,
            200,
            Some("ConsoleTail"),
        ),
        Op::ImageList => d("List images", "images", &[], None, 200, Some("ImageList")),
        Op::ImageUpload => d(
            "Upload an image (raw bytes); 201 when new, 200 when already stored",
            "images",
            &[
                Param("name", Str, true, "label"),
                Param("kind", Str, true, "kernel or initrd"),
            ],
            Some(Body::Octets),
            201,
            Some("Image"),
        ),
        Op::ImageShow => d("Show an image", "images", &[], None, 200, Some("Image")),
        Op::ImageApprove => d(
            "Approve a stored image into measured boot's golden set (admin); audited as image.approve",
            "images",
            &[],
            None,
            200,
            Some("Approval"),
        ),
        Op::ImageRevoke => d(
            "Withdraw an image from the golden set (admin); audited as image.revoke",
            "images",
            &[],
            None,
            200,
            Some("Approval"),
        ),
        Op::Golden => d(
            "Measured boot's golden set and policy mode",
            "images",
            &[],
            None,
            200,
            Some("Golden"),
        ),
        Op::AuditEntries => d(
            "Query entries, newest first (keyset pagination); audited",
            "audit",
            AUDIT_Q,
            None,
            200,
            Some("AuditPage"),
        ),
        Op::AuditEntry => d(
            "One entry; audited",
            "audit",
            &[],
            None,
            200,
            Some("AuditEntry"),
        ),
        Op::AuditInclusion => d(
            "RFC 9162 inclusion proof; audited",
            "audit",
            &[Param(
                "tree_size",
                Int,
                false,
                "tree size (default: current)",
            )],
            None,
            200,
            Some("InclusionProof"),
        ),
        Op::AuditConsistency => d(
            "RFC 9162 consistency proof; audited",
            "audit",
            &[
                Param("from", Int, true, "older tree size"),
                Param("to", Int, false, "newer tree size (default: current)"),
            ],
            None,
            200,
            Some("ConsistencyProof"),
        ),
        Op::AuditVerify => d(
            "Verify the whole log; audited",
            "audit",
            &[],
            None,
            200,
            Some("VerifyReport"),
        ),
        Op::AuditCheckpoints => d(
            "Latest signed checkpoints; audited",
            "audit",
            &[Param("limit", Int, false, "1-100 (default 10)")],
            None,
            200,
            Some("CheckpointList"),
        ),
        Op::AttestQuote => d(
            "TPM quote over the measurement PCR with the caller's nonce, the event log and the AK public key; audited",
            "attestation",
            &[],
            Some(Body::Json("QuoteRequest")),
            200,
            Some("Quote"),
        ),
        Op::EvidenceExport => d(
            "Signed evidence bundle (tar.gz, sakshi-evidence/v1) for a period and scope, with a fresh TPM quote; streamed; Content-Disposition names the file; audited",
            "evidence",
            &[],
            Some(Body::Json("EvidenceRequest")),
            200,
            None,
        ),
        Op::ReportHtml => d(
            "Printable HTML compliance report of one framework (id or unique id prefix, e.g. pci-dss) for a period; audited",
            "evidence",
            &[
                Param(
                    "from",
                    Str,
                    true,
                    "RFC 3339 start of the period (inclusive)",
                ),
                Param("to", Str, true, "RFC 3339 end of the period (exclusive)"),
                Param("scope", Str, false, "all (default) or vm:<id>"),
            ],
            None,
            200,
            None,
        ),
        Op::PatchList => d(
            "Patch ledger and per-CVE time-to-patch against PCI DSS 6.3.3; audited",
            "patches",
            &[],
            None,
            200,
            Some("PatchLedger"),
        ),
        Op::PatchRecord => d(
            "Record a patch (stored as a patch.record audit entry); a golden image is approved into measured boot's golden set (audited as image.approve)",
            "patches",
            &[],
            Some(Body::Json("NewPatch")),
            201,
            Some("PatchRecorded"),
        ),
        Op::Metrics => d(
            "Prometheus text metrics (404 without [otlp]; open to loopback callers with prometheus = \"loopback\")",
            "metrics",
            &[],
            None,
            200,
            None,
        ),
        Op::UserList => d("List users", "users", &[], None, 200, Some("UserList")),
        Op::UserCreate => d(
            "Create a user",
            "users",
            &[],
            Some(Body::Json("CreateUser")),
            201,
            Some("User"),
        ),
        Op::UserDelete => d(
            "Delete a user and their tokens",
            "users",
            &[],
            None,
            204,
            None,
        ),
        Op::UserResetPassword => d(
            "Reset a user's password",
            "users",
            &[],
            Some(Body::Json("ResetPassword")),
            204,
            None,
        ),
        Op::OwnPassword => d(
            "Change the caller's password",
            "users",
            &[],
            Some(Body::Json("ChangePassword")),
            204,
            None,
        ),
        Op::TokenList => d(
            "List the caller's API tokens (all=true: everyone's, admins only)",
            "tokens",
            &[Param("all", Bool, false, "everyone's tokens")],
            None,
            200,
            Some("TokenList"),
        ),
        Op::TokenCreate => d(
            "Issue an API token",
            "tokens",
            &[],
            Some(Body::Json("CreateToken")),
            201,
            Some("NewToken"),
        ),
        Op::TokenRevoke => d("Revoke an API token", "tokens", &[], None, 204, None),
        Op::TokenLogin => d(
            "Exchange user name and password for an API token (subject to lockout)",
            "tokens",
            &[],
            Some(Body::Json("TokenLogin")),
            201,
            Some("NewToken"),
        ),
        _ => None,
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn problem(desc: &str) -> Value {
    json!({
        "description": desc,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES.iter().filter(|r| r.surface == Surface::Api) {
        let Some(d) = doc(route.op) else { continue };
        let mut params: Vec<Value> = path_params(route.path)
            .into_iter()
            .map(|p| {
                let schema = if p == "index" {
                    json!({ "type": "integer", "minimum": 0 })
                } else {
                    json!({ "type": "string" })
                };
                json!({ "name": p, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        for Param(name, kind, required, description) in d.query {
            let schema = match kind {
                Kind::Str => json!({ "type": "string" }),
                Kind::Int => json!({ "type": "integer", "minimum": 0 }),
                Kind::Bool => json!({ "type": "boolean" }),
            };
            params.push(json!({
                "name": name, "in": "query", "required": required,
                "description": description, "schema": schema
            }));
        }
        let mut responses = Map::new();
        let ok = match (route.op, d.response) {
            (Op::Metrics, _) => json!({
                "description": "Prometheus text exposition format 0.0.4",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }),
            (Op::EvidenceExport, _) => json!({
                "description": "the evidence bundle (sakshi-evidence/v1); verify it with `sakshi-verify bundle FILE --key PUB.pem`",
                "content": { "application/gzip": { "schema": { "type": "string", "format": "binary" } } }
            }),
            (Op::ReportHtml, _) => json!({
                "description": "printable HTML report",
                "content": { "text/html": { "schema": { "type": "string" } } }
            }),
            (Op::OpenApi, _) => json!({
                "description": "OpenAPI 3.1 document",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }),
            (_, Some(schema)) => json!({
                "description": "success",
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            }),
            (_, None) => json!({ "description": "success, no content" }),
        };
        responses.insert(d.status.to_string(), ok);
        if route.op == Op::ImageUpload {
            responses.insert(
                "200".to_owned(),
                json!({
                    "description": "already stored",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Image" } } }
                }),
            );
        }
        if !params.is_empty() || d.body.is_some() {
            responses.insert(
                "400".into(),
                problem("malformed request; `errors` names the field"),
            );
        }
        if matches!(route.access, Access::Perm(_)) {
            responses.insert("401".into(), problem("authentication required"));
            responses.insert("403".into(), problem("role lacks the permission (audited)"));
        }
        if route.path.contains('{') {
            responses.insert("404".into(), problem("no such resource"));
        }
        if matches!(
            route.op,
            Op::VmCreate
                | Op::VmStart
                | Op::VmPause
                | Op::VmResume
                | Op::VmStop
                | Op::VmDestroy
                | Op::UserCreate
                | Op::UserDelete
                | Op::EvidenceExport
                | Op::ReportHtml
        ) {
            responses.insert("409".into(), problem("not allowed in the current state"));
        }
        if d.body.is_some() {
            responses.insert("413".into(), problem("body larger than the limit"));
            responses.insert("415".into(), problem("wrong Content-Type"));
        }
        if d.body.is_some() || !d.query.is_empty() || route.op == Op::TokenCreate {
            responses.insert(
                "422".into(),
                problem("invalid value; `errors` names the field"),
            );
        }
        if route.op == Op::TokenLogin {
            responses.insert(
                "401".into(),
                problem("wrong user name or password (audited)"),
            );
            responses.insert("429".into(), problem("locked out after repeated failures"));
        }
        responses.insert(
            "500".into(),
            problem("internal error (logged under the trace id)"),
        );
        let mut operation = json!({
            "operationId": format!("{:?}", route.op).chars().enumerate().map(|(i, c)| if i == 0 { c.to_ascii_lowercase() } else { c }).collect::<String>(),
            "summary": d.summary,
            "tags": [d.tag],
            "parameters": params,
            "responses": responses,
        });
        if matches!(route.access, Access::Public) {
            operation["security"] = json!([]);
        }
        match d.body {
            Some(Body::Json(schema)) => {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
                });
            }
            Some(Body::Octets) => {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
                });
            }
            None => {}
        }
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sakshi appliance API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Micro-VM lifecycle, images, the audit log, users and API tokens. \
                Errors are RFC 9457 problem documents (application/problem+json). Authenticate \
                with `Authorization: Bearer skt_...` (API token) or the dashboard session cookie \
                plus the `X-CSRF-Token` header on state-changing requests."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }, { "session": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "skt_<id>_<secret>" },
                "session": { "type": "apiKey", "in": "cookie", "name": "sakshi_session" }
            },
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    let s = json!({ "type": "string" });
    let ns = json!({ "type": ["string", "null"] });
    let i = json!({ "type": "integer", "minimum": 0 });
    let ni = json!({ "type": ["integer", "null"], "minimum": 0 });
    let hash = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let role = json!({ "type": "string", "enum": ["admin", "operator", "auditor", "responder"] });
    let state = json!({ "type": "string", "enum": ["created", "booting", "running", "paused", "stopped", "failed"] });
    let outcome = json!({ "type": "string", "enum": ["success", "failure", "denied"] });
    let list = |item: &str| {
        json!({
            "type": "object", "required": ["items"], "additionalProperties": false,
            "properties": { "items": { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } } }
        })
    };
    let vm_summary_props = json!({
        "id": s, "name": s, "state": state, "vcpus": i, "memory_mib": i, "created_at": s,
        "boot_latency_us": ni, "rss_kib": ni, "kernel_sha256": hash, "trace_id": s
    });
    let mut vm_detail_props = vm_summary_props.clone();
    if let Some(o) = vm_detail_props.as_object_mut() {
        o.insert("cmdline".into(), s.clone());
        o.insert(
            "initrd_sha256".into(),
            json!({ "type": ["string", "null"], "pattern": "^[0-9a-f]{64}$" }),
        );
        o.insert("exit_reason".into(), ns.clone());
        o.insert(
            "history".into(),
            json!({ "type": "array", "items": { "$ref": "#/components/schemas/StateChange" } }),
        );
        o.insert(
            "measurements".into(),
            json!({ "type": "array", "items": { "$ref": "#/components/schemas/Measurement" } }),
        );
    }
    let summary_req = [
        "id",
        "name",
        "state",
        "vcpus",
        "memory_mib",
        "created_at",
        "kernel_sha256",
        "trace_id",
    ];
    let mut detail_req: Vec<&str> = summary_req.to_vec();
    detail_req.extend(["cmdline", "history", "measurements"]);
    let mut m = Map::new();
    m.insert(
        "Problem".into(),
        json!({
            "type": "object", "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": s, "title": s, "status": { "type": "integer" }, "detail": s,
                "errors": { "type": "array", "items": {
                    "type": "object", "required": ["field", "message"],
                    "properties": { "field": s, "message": s } } }
            }
        }),
    );
    m.insert(
        "Health".into(),
        json!({ "type": "object", "required": ["status", "version"], "additionalProperties": false,
            "properties": { "status": s, "version": s } }),
    );
    m.insert("Whoami".into(), json!({ "type": "object", "required": ["user", "role", "auth", "permissions"], "additionalProperties": false,
            "properties": { "user": s, "role": role, "auth": { "type": "string", "enum": ["session", "token"] },
                "permissions": { "type": "array", "items": s } } }));
    m.insert("HostInfo".into(), json!({ "type": "object", "required": ["hostname", "kvm_mode", "tpm_kind", "attestation"], "additionalProperties": false,
            "properties": { "hostname": s, "kvm_mode": s, "tpm_kind": s, "attestation": s } }));
    m.insert("VmCounts".into(), json!({ "type": "object", "additionalProperties": false,
            "required": ["total", "created", "booting", "running", "paused", "stopped", "failed"],
            "properties": { "total": i, "created": i, "booting": i, "running": i, "paused": i, "stopped": i, "failed": i } }));
    m.insert("Overview".into(), json!({ "type": "object", "additionalProperties": false,
            "required": ["version", "binary_sha256", "uptime_s", "host", "vms", "audit_size", "audit_root", "user"],
            "properties": { "version": s, "binary_sha256": s, "uptime_s": i,
                "host": { "$ref": "#/components/schemas/HostInfo" }, "vms": { "$ref": "#/components/schemas/VmCounts" },
                "audit_size": i, "audit_root": s,
                "last_checkpoint": { "oneOf": [{ "type": "null" }, { "$ref": "#/components/schemas/Checkpoint" }] },
                "user": s, "role": { "type": ["string", "null"] },
                "siem": { "oneOf": [{ "type": "null" }, { "$ref": "#/components/schemas/SiemDelivery" }] } } }));
    m.insert("SiemDelivery".into(), json!({ "type": "object", "additionalProperties": false,
            "required": ["state", "next_seq", "pending", "lag_secs", "consecutive_failures"],
            "properties": { "state": { "type": "string", "enum": ["healthy", "retrying", "logging_failure"] },
                "next_seq": i, "pending": i, "lag_secs": { "type": "number" }, "consecutive_failures": i,
                "last_error": ns, "last_ack_unix_ms": { "type": ["integer", "null"] },
                "failing_since_unix_ms": { "type": ["integer", "null"] } } }));
    m.insert("CreateVm".into(), json!({ "type": "object", "required": ["name", "kernel_sha256"], "additionalProperties": false,
            "properties": { "name": { "type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$" }, "kernel_sha256": hash,
                "initrd_sha256": { "type": ["string", "null"], "pattern": "^[0-9a-f]{64}$" },
                "cmdline": { "type": "string", "maxLength": 2000 },
                "vcpus": { "type": "integer", "minimum": 1, "default": 1 },
                "memory_mib": { "type": "integer", "minimum": 16, "default": 64 },
                "start": { "type": "boolean", "default": false } } }));
    m.insert("VmSummary".into(), json!({ "type": "object", "required": summary_req, "additionalProperties": false, "properties": vm_summary_props }));
    m.insert("VmDetail".into(), json!({ "type": "object", "required": detail_req, "additionalProperties": false, "properties": vm_detail_props }));
    m.insert("VmList".into(), json!(list("VmSummary")));
    m.insert(
        "StateChange".into(),
        json!({ "type": "object", "required": ["state", "at"], "additionalProperties": false,
            "properties": { "state": state, "at": s, "reason": ns } }),
    );
    m.insert(
        "Measurement".into(),
        json!({ "type": "object", "required": ["what", "sha256"], "additionalProperties": false,
            "properties": { "what": s, "sha256": hash, "pcr": ni,
                "approved": { "type": "boolean", "description": "kernel/initrd in the golden set (absent for cmdline and config)" } } }),
    );
    m.insert(
        "ConsoleTail".into(),
        json!({ "type": "object", "required": ["id", "text"], "additionalProperties": false,
            "properties": { "id": s, "text": s } }),
    );
    m.insert("Image".into(), json!({ "type": "object", "required": ["sha256", "name", "kind", "size", "added_at", "added_by"], "additionalProperties": false,
            "properties": { "sha256": hash, "name": s, "kind": { "type": "string", "enum": ["kernel", "initrd"] },
                "size": i, "added_at": s, "added_by": s } }));
    m.insert("ImageList".into(), json!(list("Image")));
    m.insert("Approval".into(), json!({ "type": "object", "required": ["sha256", "component", "approved", "changed"], "additionalProperties": false,
            "properties": { "sha256": hash, "component": { "type": "string", "enum": ["kernel", "initrd"] },
                "approved": { "type": "boolean" }, "changed": { "type": "boolean" } } }));
    let golden_list = json!({ "type": "array", "items": { "type": "object", "required": ["sha256", "label"], "additionalProperties": false,
            "properties": { "sha256": hash, "label": s } } });
    m.insert("Golden".into(), json!({ "type": "object", "required": ["mode", "kernels", "initrds", "cmdlines", "configs"], "additionalProperties": false,
            "properties": { "mode": { "type": "string", "enum": ["enforce", "audit"] }, "kernels": golden_list, "initrds": golden_list,
                "cmdlines": golden_list, "configs": golden_list } }));
    m.insert("AuditEntry".into(), json!({ "type": "object", "additionalProperties": false,
            "required": ["index", "time", "actor", "origin", "action", "target", "outcome", "details"],
            "properties": { "index": i, "time": s, "actor": s, "origin": s, "action": s, "target": s,
                "outcome": outcome, "details": {}, "trace_id": ns, "entry_hash": { "type": ["string", "null"], "description": "RFC 9162 leaf hash; single-entry reads only" } } }));
    m.insert("AuditPage".into(), json!({ "type": "object", "required": ["entries"], "additionalProperties": false,
            "properties": { "entries": { "type": "array", "items": { "$ref": "#/components/schemas/AuditEntry" } },
                "next_before": ni, "prev_after": ni } }));
    m.insert("VerifyReport".into(), json!({ "type": "object", "required": ["ok", "entries", "root", "checkpoints_checked"], "additionalProperties": false,
            "properties": { "ok": { "type": "boolean" }, "entries": i, "root": s, "checkpoints_checked": i,
                "first_bad_index": ni, "problem": ns } }));
    m.insert("InclusionProof".into(), json!({ "type": "object", "required": ["index", "tree_size", "leaf_hash", "root", "path"], "additionalProperties": false,
            "properties": { "index": i, "tree_size": i, "leaf_hash": s, "root": s, "path": { "type": "array", "items": s } } }));
    m.insert("ConsistencyProof".into(), json!({ "type": "object", "required": ["from_size", "to_size", "from_root", "to_root", "path"], "additionalProperties": false,
            "properties": { "from_size": i, "to_size": i, "from_root": s, "to_root": s, "path": { "type": "array", "items": s } } }));
    m.insert("Checkpoint".into(), json!({ "type": "object", "required": ["size", "root", "time", "text"], "additionalProperties": false,
            "properties": { "size": i, "root": s, "time": s, "text": s } }));
    m.insert("CheckpointList".into(), json!(list("Checkpoint")));
    m.insert("QuoteRequest".into(), json!({ "type": "object", "required": ["nonce"], "additionalProperties": false,
            "properties": { "nonce": { "type": "string", "pattern": "^([0-9a-fA-F]{2}){1,64}$", "description": "hex, 1-64 bytes" } } }));
    m.insert("Quote".into(), json!({ "type": "object",
            "required": ["format", "tpm_kind", "notice", "nonce", "tpms_attest", "tpmt_signature", "pcr_bank", "pcrs", "ak_public_pem", "ak_public", "event_log"],
            "additionalProperties": false,
            "properties": { "format": s, "tpm_kind": { "type": "string", "enum": ["hardware", "software"] }, "notice": s,
                "tpm_kind_notice": { "type": "string", "description": "present for software TPMs" },
                "nonce": s, "tpms_attest": s, "tpmt_signature": s, "pcr_bank": s,
                "pcrs": { "type": "object", "additionalProperties": s, "description": "PCR index -> hex value" },
                "ak_public_pem": s, "ak_public": s,
                "event_log": { "type": "array", "items": { "type": "object" }, "description": "CEL-JSON records" } } }));
    m.insert("User".into(), json!({ "type": "object", "required": ["name", "role", "created_at"], "additionalProperties": false,
            "properties": { "name": s, "role": role, "created_at": s } }));
    m.insert("UserList".into(), json!(list("User")));
    m.insert("CreateUser".into(), json!({ "type": "object", "required": ["name", "role", "password"], "additionalProperties": false,
            "properties": { "name": s, "role": role, "password": { "type": "string", "minLength": 12, "maxLength": 256 } } }));
    m.insert("ResetPassword".into(), json!({ "type": "object", "required": ["password"], "additionalProperties": false,
            "properties": { "password": { "type": "string", "minLength": 12, "maxLength": 256 } } }));
    m.insert("ChangePassword".into(), json!({ "type": "object", "required": ["current_password", "new_password"], "additionalProperties": false,
            "properties": { "current_password": s, "new_password": { "type": "string", "minLength": 12, "maxLength": 256 } } }));
    m.insert("Token".into(), json!({ "type": "object", "required": ["id", "owner", "name", "role", "created_at", "expires_at"], "additionalProperties": false,
            "properties": { "id": s, "owner": s, "name": s, "role": role, "created_at": s, "expires_at": s, "revoked_at": ns } }));
    m.insert("TokenList".into(), json!(list("Token")));
    m.insert("NewToken".into(), json!({ "type": "object", "required": ["id", "owner", "name", "role", "created_at", "expires_at", "secret"], "additionalProperties": false,
            "properties": { "id": s, "owner": s, "name": s, "role": role, "created_at": s, "expires_at": s, "revoked_at": ns,
                "secret": { "type": "string", "pattern": "^skt_[0-9a-f]{16}_[0-9a-f]{64}$" } } }));
    m.insert("CreateToken".into(), json!({ "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": { "name": s, "role": { "oneOf": [{ "type": "null" }, role] }, "expires_in_days": { "type": ["integer", "null"], "minimum": 1 } } }));
    m.insert("TokenLogin".into(), json!({ "type": "object", "required": ["username", "password", "name"], "additionalProperties": false,
            "properties": { "username": s, "password": s, "name": s, "expires_in_days": { "type": ["integer", "null"], "minimum": 1 } } }));
    let date = json!({ "type": "string", "format": "date" });
    let time = json!({ "type": "string", "format": "date-time" });
    let severity = json!({ "type": "string", "enum": ["low", "medium", "high", "critical"] });
    let component =
        json!({ "type": "string", "enum": ["appliance", "vmm", "guest_kernel", "guest_image"] });
    let cve_fix = json!({ "type": "object", "required": ["id", "severity", "vendor_released"], "additionalProperties": false,
            "properties": { "id": { "type": "string", "pattern": "^CVE-[0-9]{4}-[0-9]{4,}$" }, "severity": severity, "vendor_released": date } });
    let artifact = json!({ "type": "object", "required": ["name", "sha256"], "additionalProperties": false,
            "properties": { "name": s, "sha256": hash } });
    let golden = json!({ "type": "object", "required": ["kernel_sha256"], "additionalProperties": false,
            "properties": { "kernel_sha256": hash, "initrd_sha256": hash } });
    m.insert(
        "EvidenceRequest".into(),
        json!({ "type": "object", "required": ["from", "to"], "additionalProperties": false,
            "properties": { "from": time, "to": time,
                "scope": { "type": "string", "pattern": "^(all|vm:.+)$", "default": "all" } } }),
    );
    m.insert("NewPatch".into(), json!({ "type": "object", "required": ["component", "from_version", "to_version", "approver"], "additionalProperties": false,
            "properties": { "component": component, "from_version": s, "to_version": s,
                "cves": { "type": "array", "items": cve_fix }, "applied_at": time,
                "artifacts": { "type": "array", "items": artifact }, "approver": s,
                "golden_image": golden, "notes": s } }));
    m.insert("PatchRecord".into(), json!({ "type": "object",
            "required": ["seq", "id", "recorded_at", "recorded_by", "component", "from_version", "to_version", "cves", "artifacts", "approver"],
            "additionalProperties": false,
            "properties": { "seq": i, "id": s, "recorded_at": time, "recorded_by": s, "component": component,
                "from_version": s, "to_version": s, "cves": { "type": "array", "items": cve_fix },
                "applied_at": time, "artifacts": { "type": "array", "items": artifact }, "approver": s,
                "golden_image": golden, "notes": s } }));
    m.insert("CveStatus".into(), json!({ "type": "object",
            "required": ["cve", "component", "severity", "vendor_released", "patch_id", "days", "sla", "fails_6_3_3"],
            "additionalProperties": false,
            "properties": { "cve": s, "component": component, "severity": severity, "vendor_released": date,
                "applied_at": { "type": ["string", "null"], "format": "date-time" }, "patch_id": s,
                "days": { "type": "integer" }, "deadline_days": ni,
                "sla": { "type": "string", "enum": ["patched_in_time", "patched_late", "pending", "overdue", "no_deadline"] },
                "fails_6_3_3": { "type": "boolean" } } }));
    m.insert("PatchLedger".into(), json!({ "type": "object", "required": ["as_of", "records", "cves", "failing"], "additionalProperties": false,
            "properties": { "as_of": time,
                "records": { "type": "array", "items": { "$ref": "#/components/schemas/PatchRecord" } },
                "cves": { "type": "array", "items": { "$ref": "#/components/schemas/CveStatus" } },
                "failing": i } }));
    m.insert("PatchRecorded".into(), json!({ "type": "object", "required": ["record", "golden_set"], "additionalProperties": false,
            "properties": { "record": { "$ref": "#/components/schemas/PatchRecord" },
                "golden_set": { "oneOf": [{ "type": "null" }, { "type": "object", "required": ["approved", "digests_added"], "additionalProperties": false,
                    "properties": { "approved": { "type": "boolean" }, "digests_added": i } }] } } }));
    Value::Object(m)
}
