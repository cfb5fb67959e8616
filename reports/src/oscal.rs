//! Control results as JSON shaped like NIST OSCAL 1.1 `assessment-results`.
//!
//! One OSCAL `result` per framework, one `observation` and one `finding` per control. The
//! finding's `target.status.state` is `satisfied` for pass and `not-satisfied` otherwise, with
//! `reason` `pass`, `fail` or `other` (needs review) and Sakshi's own status as a property.
//! UUIDs are derived from the bundle identity and control ids, so the same evidence gives the
//! same document.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::evaluate::{FrameworkResult, Status};
use crate::html::ReportContext;

/// The OSCAL version the document follows.
pub const OSCAL_VERSION: &str = "1.1.2";
/// Namespace of Sakshi's OSCAL properties.
pub const SAKSHI_NS: &str = "https://sakshi.invalid/ns/oscal";

fn uuid_for(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The `assessment-results` document for `results`.
pub fn assessment_results(results: &[FrameworkResult], ctx: &ReportContext) -> Value {
    let base = format!(
        "{}|{}|{}|{}",
        ctx.hostname,
        ctx.scope,
        time(&ctx.period.from()),
        time(&ctx.period.to())
    );
    let generated = time(&ctx.generated_at);
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            let fw = &r.framework.id;
            let mut observations = Vec::new();
            let mut findings = Vec::new();
            for c in &r.controls {
                let obs_uuid = uuid_for(&[&base, &generated, fw, &c.id, "observation"]);
                let reasons: Vec<String> = c.rules.iter().flat_map(|r| r.reasons.iter().cloned()).collect();
                let manual = c.rules.iter().all(|r| r.kind == "manual");
                let mut evidence: Vec<Value> = c
                    .evidence
                    .iter()
                    .map(|e| json!({"href": format!("#evidence-{}", e.as_str()), "description": format!("{} evidence in this bundle", e.as_str())}))
                    .collect();
                evidence.extend(c.entries.iter().map(|s| {
                    json!({"href": format!("audit/entries.jsonl#seq={s}"), "description": format!("audit entry #{s}")})
                }));
                observations.push(json!({
                    "uuid": obs_uuid,
                    "title": format!("{} {}", r.framework.name, c.id),
                    "description": reasons.join(" "),
                    "methods": [if manual { "EXAMINE" } else { "AUTOMATED" }],
                    "collected": generated,
                    "relevant-evidence": evidence,
                }));
                let (state, reason) = match c.status {
                    Status::Pass => ("satisfied", "pass"),
                    Status::Fail => ("not-satisfied", "fail"),
                    Status::NeedsReview => ("not-satisfied", "other"),
                };
                findings.push(json!({
                    "uuid": uuid_for(&[&base, &generated, fw, &c.id, "finding"]),
                    "title": c.title,
                    "description": c.summary,
                    "props": [
                        {"name": "sakshi-status", "ns": SAKSHI_NS, "value": c.status.as_str()},
                        {"name": "wording-verified", "ns": SAKSHI_NS, "value": c.wording_verified.to_string()},
                    ],
                    "target": {
                        "type": "objective-id",
                        "target-id": format!("{fw}_{}", c.id),
                        "status": {"state": state, "reason": reason},
                    },
                    "related-observations": [{"observation-uuid": obs_uuid}],
                }));
            }
            let control_ids: Vec<Value> = r.controls.iter().map(|c| json!({"control-id": c.id})).collect();
            json!({
                "uuid": uuid_for(&[&base, &generated, fw, "result"]),
                "title": format!("{} {}", r.framework.name, r.framework.version),
                "description": format!("{}. {}", r.framework.reference, r.framework.source_note),
                "start": time(&r.period.from()),
                "end": time(&r.period.to()),
                "props": [
                    {"name": "pass", "ns": SAKSHI_NS, "value": r.summary.pass.to_string()},
                    {"name": "needs-review", "ns": SAKSHI_NS, "value": r.summary.needs_review.to_string()},
                    {"name": "fail", "ns": SAKSHI_NS, "value": r.summary.fail.to_string()},
                ],
                "reviewed-controls": {"control-selections": [{"include-controls": control_ids}]},
                "observations": observations,
                "findings": findings,
            })
        })
        .collect();
    json!({
        "assessment-results": {
            "uuid": uuid_for(&[&base, &generated, "assessment-results"]),
            "metadata": {
                "title": format!("Sakshi control assessment of {} ({}), {} to {}", ctx.hostname, ctx.scope, time(&ctx.period.from()), time(&ctx.period.to())),
                "last-modified": generated,
                "version": ctx.appliance_version,
                "oscal-version": OSCAL_VERSION,
                "props": [
                    {"name": "scope", "ns": SAKSHI_NS, "value": ctx.scope},
                    {"name": "appliance-key-sha256", "ns": SAKSHI_NS, "value": ctx.appliance_key},
                ],
            },
            "import-ap": {"href": "#sakshi-built-in-catalogs"},
            "results": results,
        }
    })
}
