//! Router tests: the whole application router driven with `tower::ServiceExt::oneshot` (no
//! socket), with the fake VM host and in-memory audit log behind the real traits.

use crate::auth::{UserStore, hash_password};
use crate::backend::{Outcome, VmBackend, VmState};
use crate::config::Config;
use crate::images::{ImageKind, ImageStore};
use crate::rbac::Role;
use crate::routes::{Access, ROUTES, Surface, build_router};
use crate::state::{AppState, Settings};
use crate::testing::{FakeVms, MemAudit};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tower::ServiceExt;

const ALICE_PASSWORD: &str = "alice's long password";

struct H {
    router: Router,
    app: AppState,
    audit: Arc<MemAudit>,
    vms: Arc<FakeVms>,
    _dir: tempfile::TempDir,
    tokens: HashMap<Role, String>,
    kernel: String,
    initrd: String,
    vm_id: String,
    /// The evidence service's own log (export and reports read it).
    evidence_log: Arc<sakshi_audit::AuditLog>,
    golden: Arc<crate::backend::evidence::tests::MemGolden>,
}

fn fake_kernel() -> Vec<u8> {
    let mut v = vec![0u8; 256];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = 2;
    v
}

fn harness_with(config: Config) -> H {
    let dir = tempfile::tempdir().unwrap();
    let users = UserStore::open_in_memory().unwrap();
    let mut tokens = HashMap::new();
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    for role in Role::ALL {
        // Role users get an unusable password hash: they authenticate with tokens.
        users.create_user(role.as_str(), role, "!").unwrap();
        let t = users
            .create_token(role.as_str(), "test", role, later)
            .unwrap();
        tokens.insert(role, t.secret);
    }
    users
        .create_user(
            "alice",
            Role::Operator,
            &hash_password(ALICE_PASSWORD).unwrap(),
        )
        .unwrap();
    let images = ImageStore::open(&dir.path().join("images")).unwrap();
    let (k, _) = images
        .put("guest", ImageKind::Kernel, &fake_kernel(), "test")
        .unwrap();
    let (i, _) = images
        .put("rd", ImageKind::Initrd, b"initrd", "test")
        .unwrap();
    let vms = Arc::new(FakeVms::default());
    let audit = Arc::new(MemAudit::default());
    let vm = vms
        .create(crate::backend::VmSpec {
            name: "demo".into(),
            kernel: images.resolve(&k.sha256, ImageKind::Kernel).unwrap(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            memory_mib: 64,
            trace_id: "0".repeat(32),
        })
        .unwrap();
    vms.start(&vm.summary.id).unwrap();
    let settings = Settings::from_config(&config, "ab".repeat(32));
    let app = AppState::new(&config, settings, vms.clone(), audit.clone(), users, images);
    let (evidence, evidence_log, golden) =
        crate::backend::evidence::tests::test_service(dir.path());
    app.set_evidence(evidence);
    app.set_golden(Arc::new(
        crate::golden::GoldenStore::open(
            &dir.path().join("golden.json"),
            sakshi_attest::PolicyMode::Enforce,
            Box::new(|_| {}),
        )
        .unwrap(),
    ));
    H {
        router: build_router(app.clone()),
        app,
        audit,
        vms,
        _dir: dir,
        tokens,
        kernel: k.sha256,
        initrd: i.sha256,
        vm_id: vm.summary.id,
        evidence_log,
        golden,
    }
}

fn harness() -> H {
    let mut c = Config::default();
    c.auth.lockout_threshold = 3;
    harness_with(c)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn problem_field(&self) -> Option<String> {
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["status"].as_u64(), Some(u64::from(self.status.as_u16())));
        p["errors"][0]["field"].as_str().map(str::to_owned)
    }
}

impl H {
    async fn send(&self, req: Request<Body>) -> Resp {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    async fn api(
        &self,
        method: Method,
        uri: &str,
        role: Option<Role>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(r) = role {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token(r)));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    /// Logs in through the form; returns (session cookie value, CSRF token of the session).
    async fn login(&self, user: &str, password: &str) -> Resp {
        let form = self.send(get("/login")).await;
        assert_eq!(form.status, StatusCode::OK);
        let login_cookie = set_cookie(&form.headers, "sakshi_login_csrf").unwrap();
        let csrf = hidden_csrf(&form.text());
        assert_eq!(csrf, login_cookie);
        let body = format!(
            "username={user}&password={}&csrf={csrf}&next=%2Fvms",
            crate::ui::url_encode(password)
        );
        self.send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, format!("sakshi_login_csrf={login_cookie}"))
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    async fn session(&self) -> (String, String) {
        let r = self.login("alice", ALICE_PASSWORD).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        let cookie = set_cookie(&r.headers, "sakshi_session").unwrap();
        let page = self.send(with_cookie(get("/vms"), &cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        (cookie, hidden_csrf(&page.text()))
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn with_cookie(mut r: Request<Body>, session: &str) -> Request<Body> {
    r.headers_mut().insert(
        header::COOKIE,
        format!("sakshi_session={session}").parse().unwrap(),
    );
    r
}

fn form(uri: &str, session: &str, body: &str) -> Request<Body> {
    with_cookie(
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap(),
        session,
    )
}

fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn set_cookie_attrs(h: &HeaderMap, name: &str) -> String {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap()
        .to_owned()
}

fn hidden_csrf(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[i..i + 64].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Route x role: every route, every role and anonymous.

fn concrete_path(h: &H, path: &str) -> String {
    path.replace("{id}", &h.vm_id)
        .replace("{sha256}", &h.kernel)
        .replace("{index}", "0")
        .replace("{name}", "ghost")
        .replace("{file}", "sakshi.css")
        .replace("{framework}", "pci-dss-4.0.1")
}

#[tokio::test]
async fn every_route_enforces_its_permission_for_every_role_and_audits_denials() {
    let h = harness();
    // Keep the VM id resolvable by token routes too.
    let mut checked = 0;
    for route in ROUTES {
        let mut uri = concrete_path(&h, route.path);
        if route.surface == Surface::Api && route.path.starts_with("/api/v1/tokens/") {
            uri = "/api/v1/tokens/0000000000000000".to_owned();
        }
        let identities: Vec<Option<Role>> = std::iter::once(None)
            .chain(Role::ALL.into_iter().map(Some))
            .collect();
        for who in identities {
            let before = h.audit.len();
            let mut b = Request::builder().method(route.method.clone()).uri(&uri);
            if let Some(r) = who {
                b = b.header(header::AUTHORIZATION, format!("Bearer {}", h.token(r)));
            }
            let req = if matches!(route.method, Method::POST | Method::PUT) {
                let ct = if route.surface == Surface::Api {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                };
                b.header(header::CONTENT_TYPE, ct).body(Body::from(
                    if route.surface == Surface::Api {
                        "{}"
                    } else {
                        ""
                    },
                ))
            } else {
                b.body(Body::empty())
            };
            let resp = h.send(req.unwrap()).await;
            let label = format!("{} {} as {:?}", route.method, route.path, who);
            assert!(
                !resp.status.is_server_error(),
                "{label}: {} {}",
                resp.status,
                resp.text()
            );
            let allowed = match (route.access, who) {
                (Access::Public, _) => true,
                (Access::Perm(_), None) => false,
                (Access::Perm(p), Some(r)) => r.allows(p),
            };
            if allowed {
                assert!(
                    resp.status != StatusCode::UNAUTHORIZED
                        && (resp.status != StatusCode::FORBIDDEN || route.path == "/login"),
                    "{label}: allowed but got {}: {}",
                    resp.status,
                    resp.text()
                );
                continue;
            }
            match (route.surface, who) {
                (Surface::Api, None) => {
                    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{label}");
                    assert!(resp.headers.contains_key(header::WWW_AUTHENTICATE));
                    resp.problem_field();
                }
                (Surface::Ui, None) => {
                    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{label}");
                    let loc = resp.headers[header::LOCATION].to_str().unwrap();
                    assert!(loc.starts_with("/login"), "{label}: {loc}");
                }
                (Surface::Api, Some(_)) => {
                    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{label}");
                    resp.problem_field();
                }
                (Surface::Ui, Some(_)) => {
                    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{label}");
                    assert!(resp.content_type().starts_with("text/html"), "{label}");
                }
            }
            let entries = h.audit.all();
            assert_eq!(
                entries.len(),
                before + 1,
                "{label}: exactly one audit entry"
            );
            let e = entries.last().unwrap();
            assert_eq!(e.action, "auth.denied", "{label}");
            assert_eq!(e.outcome, Outcome::Denied, "{label}");
            assert_eq!(
                e.target,
                format!("appliance:{} {}", route.method, route.path),
                "{label}"
            );
            let actor = who.map_or("anonymous", |r| r.as_str());
            assert_eq!(e.actor, actor, "{label}");
            checked += 1;
        }
    }
    // Every permission-guarded route was refused to anonymous at least.
    let guarded = ROUTES.iter().filter(|r| r.access != Access::Public).count();
    assert!(
        checked >= guarded,
        "{checked} denials checked for {guarded} guarded routes"
    );
}

// ---------------------------------------------------------------------------------------------
// Problem documents.

#[tokio::test]
async fn bad_input_gets_problem_documents_naming_the_field_and_never_a_5xx() {
    let h = harness();
    let op = Some(Role::Operator);
    let k = h.kernel.clone();
    let cases: Vec<(Value, StatusCode, Option<&str>)> = vec![
        (
            json!({"name": "a", "kernel_sha256": k, "bogus": 1}),
            StatusCode::BAD_REQUEST,
            Some("bogus"),
        ),
        (
            json!({"kernel_sha256": k}),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "vcpus": "two"}),
            StatusCode::BAD_REQUEST,
            Some("vcpus"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "vcpus": 999}),
            StatusCode::BAD_REQUEST,
            Some("vcpus"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "memory_mib": -1}),
            StatusCode::BAD_REQUEST,
            Some("memory_mib"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "memory_mib": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("memory_mib"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "memory_mib": 1_000_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("memory_mib"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "vcpus": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("vcpus"),
        ),
        (
            json!({"name": "Bad Name", "kernel_sha256": k}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            json!({"name": "a", "kernel_sha256": "xyz"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("kernel_sha256"),
        ),
        (
            json!({"name": "a", "kernel_sha256": "0".repeat(64)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("kernel_sha256"),
        ),
        (
            json!({"name": "a", "kernel_sha256": h.initrd}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("kernel_sha256"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "initrd_sha256": k}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("initrd_sha256"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "cmdline": "a\u{1}b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cmdline"),
        ),
        (
            json!({"name": "a", "kernel_sha256": k, "cmdline": "reject-me"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cmdline"),
        ),
        (
            json!({"name": "demo", "kernel_sha256": k}),
            StatusCode::CONFLICT,
            None,
        ),
        (json!([1, 2, 3]), StatusCode::BAD_REQUEST, None),
        (json!("just a string"), StatusCode::BAD_REQUEST, None),
    ];
    let vms_before = h.vms.list().unwrap().len();
    for (body, status, field) in cases {
        let r = h
            .api(Method::POST, "/api/v1/vms", op, Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.problem_field().as_deref(), field, "{body}");
    }
    assert_eq!(
        h.vms.list().unwrap().len(),
        vms_before,
        "bad input changed nothing"
    );

    // Malformed JSON, wrong media type, oversize body.
    let raw = |body: &'static [u8], ct: &'static str| {
        Request::post("/api/v1/vms")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", h.token(Role::Operator)),
            )
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let r = h.send(raw(b"{\"name\": ", "application/json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    let r = h
        .send(raw(b"name=x", "application/x-www-form-urlencoded"))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    r.problem_field();
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(100_000));
    let r = h
        .send(
            Request::post("/api/v1/vms")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", h.token(Role::Operator)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["detail"].as_str().unwrap().contains("65536"));

    // Query strings: unknown parameters and bad values are named.
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries?limit=abc",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("limit"));
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries?colour=red",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("colour"));
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries?limit=501",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.problem_field().as_deref(), Some("limit"));
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries/abc",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries/999999",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/vms/{}/console?bytes=0", h.vm_id),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.problem_field().as_deref(), Some("bytes"));

    // Unknown routes and methods.
    let r = h
        .api(Method::GET, "/api/v1/nope", Some(Role::Admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.problem_field();
    let r = h
        .api(Method::PATCH, "/api/v1/vms", Some(Role::Admin), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.problem_field();
    let r = h
        .api(Method::GET, "/api/v1/vms/nope", Some(Role::Admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.problem_field();
}

// ---------------------------------------------------------------------------------------------
// VM lifecycle through the API, audited.

#[tokio::test]
async fn vm_lifecycle_through_the_api_is_audited_with_actor_and_trace_id() {
    let h = harness();
    let op = Some(Role::Operator);
    let body = json!({"name": "web-1", "kernel_sha256": h.kernel, "initrd_sha256": h.initrd,
        "cmdline": "console=ttyS0 marker=x", "vcpus": 2, "memory_mib": 128, "start": true});
    let r = h
        .send(
            Request::post("/api/v1/vms")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", h.token(Role::Operator)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let vm = r.json();
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(vm["initrd_sha256"], h.initrd.as_str());
    let id = vm["id"].as_str().unwrap().to_owned();
    let create = h
        .audit
        .all()
        .into_iter()
        .find(|e| e.action == "vm.create")
        .unwrap();
    assert_eq!(create.actor, "operator");
    assert_eq!(create.target, format!("vm:{id}"));
    assert_eq!(create.details["kernel_sha256"], h.kernel.as_str());
    assert_eq!(
        create.details["auth"],
        "token:".to_owned() + &h.token(Role::Operator)[4..20]
    );
    assert_eq!(
        create.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    for (action, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("stop", "stopped"),
    ] {
        let r = h
            .api(
                Method::POST,
                &format!("/api/v1/vms/{id}/{action}"),
                op,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.text());
        assert_eq!(r.json()["state"], state);
        let e = h.audit.last().unwrap();
        assert_eq!(
            (e.action.as_str(), e.outcome),
            (format!("vm.{action}").as_str(), Outcome::Success)
        );
        assert_eq!(e.target, format!("vm:{id}"));
    }
    // Not allowed in this state: 409, audited as a failure.
    let r = h
        .api(Method::POST, &format!("/api/v1/vms/{id}/pause"), op, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["detail"].as_str().unwrap().contains("stopped"));
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome),
        ("vm.pause", Outcome::Failure)
    );

    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/vms/{id}/console?bytes=14"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.json()["text"], "boot-complete\n");
    let r = h
        .api(Method::DELETE, &format!("/api/v1/vms/{id}"), op, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .api(Method::GET, &format!("/api/v1/vms/{id}"), op, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let list = h
        .api(Method::GET, "/api/v1/vms", Some(Role::Responder), None)
        .await
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn images_upload_validates_kernels_and_is_idempotent() {
    let h = harness();
    let up = |bytes: Vec<u8>, q: &str, ct: &str| {
        Request::post(format!("/api/v1/images?{q}"))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", h.token(Role::Operator)),
            )
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(bytes))
            .unwrap()
    };
    let r = h
        .send(up(
            b"MZ\x90\x00".to_vec(),
            "name=x&kind=kernel",
            "application/octet-stream",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.problem_field().as_deref(), Some("body"));
    assert_eq!(h.audit.last().unwrap().outcome, Outcome::Failure);
    let r = h
        .send(up(
            b"x".to_vec(),
            "name=x&kind=rootfs",
            "application/octet-stream",
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("kind"));
    let r = h
        .send(up(b"x".to_vec(), "name=x&kind=initrd", "application/json"))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut k = fake_kernel();
    k.push(7);
    let r = h
        .send(up(
            k.clone(),
            "name=k2&kind=kernel",
            "application/octet-stream",
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sha = r.json()["sha256"].as_str().unwrap().to_owned();
    assert_eq!(h.audit.last().unwrap().target, format!("image:{sha}"));
    let r = h
        .send(up(k, "name=k3&kind=kernel", "application/octet-stream"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["name"], "k2");
    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/images/{sha}"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.json()["kind"], "kernel");
    let r = h
        .api(Method::GET, "/api/v1/images", Some(Role::Auditor), None)
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Sessions, CSRF, lockout, tokens.

#[tokio::test]
async fn login_session_csrf_and_logout_through_the_dashboard() {
    let h = harness();
    // Wrong password: 401 page, audited failure, no session.
    let r = h.login("alice", "wrong password!!").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r.headers, "sakshi_session").is_none());
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome, e.actor.as_str()),
        ("auth.login.failure", Outcome::Failure, "anonymous")
    );
    assert_eq!(e.target, "user:alice");

    let r = h.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/vms");
    let attrs = set_cookie_attrs(&r.headers, "sakshi_session");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    assert!(!attrs.contains("Secure"), "no TLS configured: {attrs}");
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome, e.actor.as_str()),
        ("auth.login.success", Outcome::Success, "alice")
    );
    let cookie = set_cookie(&r.headers, "sakshi_session").unwrap();

    let page = h
        .send(with_cookie(get(&format!("/vms/{}", h.vm_id)), &cookie))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("id=\"act-stop\""),
        "operator sees the stop button"
    );
    let csrf = hidden_csrf(&html);

    // A form without (or with a wrong) CSRF token is refused and audited.
    let stop = format!("/vms/{}/stop", h.vm_id);
    for body in ["".to_owned(), format!("csrf={}", "0".repeat(64))] {
        let r = h.send(form(&stop, &cookie, &body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body:?}");
        let e = h.audit.last().unwrap();
        assert_eq!(
            (e.action.as_str(), e.outcome),
            ("auth.denied", Outcome::Denied)
        );
        assert_eq!(e.details["reason"], "missing or wrong CSRF token");
    }
    assert_eq!(
        h.vms.show(&h.vm_id).unwrap().summary.state,
        VmState::Running
    );
    // The API with a session cookie needs the header.
    let r = h
        .send(with_cookie(
            Request::post(format!("/api/v1/vms/{}/stop", h.vm_id))
                .body(Body::empty())
                .unwrap(),
            &cookie,
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let pause = format!("/vms/{}/pause", h.vm_id);
    let r = h.send(form(&pause, &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(h.vms.show(&h.vm_id).unwrap().summary.state, VmState::Paused);
    let e = h.audit.last().unwrap();
    assert_eq!(
        (
            e.action.as_str(),
            e.actor.as_str(),
            e.details["auth"].as_str()
        ),
        ("vm.pause", "alice", Some("session"))
    );
    let mut req = with_cookie(
        Request::post(format!("/api/v1/vms/{}/resume", h.vm_id))
            .body(Body::empty())
            .unwrap(),
        &cookie,
    );
    req.headers_mut()
        .insert("x-csrf-token", csrf.parse().unwrap());
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    let r = h.send(form(&stop, &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        h.vms.show(&h.vm_id).unwrap().summary.state,
        VmState::Stopped
    );

    // Logout ends the session.
    let r = h
        .send(form("/logout", &cookie, &format!("csrf={csrf}")))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(set_cookie_attrs(&r.headers, "sakshi_session").contains("Max-Age=0"));
    assert_eq!(h.audit.last().unwrap().action, "auth.logout");
    let r = h.send(with_cookie(get("/vms"), &cookie)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login?next=/vms");
}

#[tokio::test]
async fn login_form_needs_its_csrf_cookie() {
    let h = harness();
    let form = h.send(get("/login")).await;
    let csrf = hidden_csrf(&form.text());
    let r = h
        .send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "username=alice&password={}&csrf={csrf}",
                    crate::ui::url_encode(ALICE_PASSWORD)
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&r.headers, "sakshi_session").is_none());
    assert_eq!(h.audit.last().unwrap().action, "auth.denied");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_even_for_the_right_password() {
    let h = harness();
    for _ in 0..3 {
        assert_eq!(
            h.login("alice", "not the password").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = h.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert!(set_cookie(&r.headers, "sakshi_session").is_none());
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome),
        ("auth.login.failure", Outcome::Failure)
    );
    assert_eq!(e.details["reason"], "locked out");
    // The API token login shares the lockout.
    let r = h
        .api(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(json!({"username": "alice", "password": ALICE_PASSWORD, "name": "cli"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn secure_cookie_when_served_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let mut c = Config::default();
    c.server.tls = Some(crate::config::TlsConfig { cert, key });
    let h = harness_with(c);
    let r = h.login("alice", ALICE_PASSWORD).await;
    assert!(set_cookie_attrs(&r.headers, "sakshi_session").contains("; Secure"));
}

#[tokio::test]
async fn api_tokens_are_scoped_expire_and_revoke() {
    let h = harness();
    // Password login through the API issues a token with the user's role.
    let r = h
        .api(Method::POST, "/api/v1/auth/token", None,
             Some(json!({"username": "alice", "password": ALICE_PASSWORD, "name": "cli", "expires_in_days": 1})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let t = r.json();
    assert_eq!(t["role"], "operator");
    let secret = t["secret"].as_str().unwrap().to_owned();
    let who = |s: String| {
        let h = &h;
        async move {
            h.send(
                Request::get("/api/v1/whoami")
                    .header(header::AUTHORIZATION, format!("Bearer {s}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
        }
    };
    let r = who(secret.clone()).await;
    assert_eq!(r.json()["user"], "alice");
    assert_eq!(r.json()["auth"], "token");

    // Operators cannot mint admin tokens (403, audited); admins can mint any role.
    let r = h
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(Role::Operator),
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.audit.last().unwrap().outcome, Outcome::Denied);
    let r = h
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(Role::Admin),
            Some(json!({"name": "ro", "role": "auditor"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let ro = r.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(who(ro.clone()).await.json()["role"], "auditor");
    let r = h
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(Role::Admin),
            Some(json!({"name": "x", "expires_in_days": 100000})),
        )
        .await;
    assert_eq!(r.problem_field().as_deref(), Some("expires_in_days"));

    // Someone else's token cannot be revoked by a non-admin.
    let id = t["id"].as_str().unwrap();
    let r = h
        .api(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .api(
            Method::GET,
            "/api/v1/tokens?all=true",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let all = h
        .api(
            Method::GET,
            "/api/v1/tokens?all=true",
            Some(Role::Admin),
            None,
        )
        .await
        .json();
    assert!(all["items"].as_array().unwrap().len() >= 6);
    let r = h
        .api(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // A revoked token is refused and the attempt audited.
    let r = who(secret.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome),
        ("auth.login.failure", Outcome::Failure)
    );
    assert_eq!(e.details["token_id"], id);
    assert_eq!(e.target, format!("token:{id}"));
    // Garbage tokens too.
    assert_eq!(
        who("skt_nope".into()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut forged = ro.clone();
    forged.pop();
    forged.push(if ro.ends_with('0') { '1' } else { '0' });
    assert_eq!(who(forged).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_are_managed_by_admins_and_deletion_ends_sessions() {
    let h = harness();
    let r = h
        .api(
            Method::POST,
            "/api/v1/users",
            Some(Role::Admin),
            Some(json!({"name": "bob", "role": "auditor", "password": "short"})),
        )
        .await;
    assert_eq!(r.problem_field().as_deref(), Some("password"));
    let r = h
        .api(
            Method::POST,
            "/api/v1/users",
            Some(Role::Admin),
            Some(json!({"name": "bob", "role": "root", "password": "a long enough pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("role"));
    let r = h
        .api(
            Method::POST,
            "/api/v1/users",
            Some(Role::Admin),
            Some(json!({"name": "bob", "role": "auditor", "password": "a long enough pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .api(
            Method::POST,
            "/api/v1/users",
            Some(Role::Admin),
            Some(json!({"name": "bob", "role": "auditor", "password": "a long enough pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let (cookie, _) = h.session().await;
    let r = h
        .api(
            Method::DELETE,
            "/api/v1/users/alice",
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.target.as_str(), e.actor.as_str()),
        ("user.delete", "user:alice", "admin")
    );
    assert_eq!(
        h.send(with_cookie(get("/vms"), &cookie)).await.status,
        StatusCode::SEE_OTHER
    );
    let r = h
        .api(
            Method::DELETE,
            "/api/v1/users/admin",
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "the last admin stays");
}

// ---------------------------------------------------------------------------------------------
// Audit reads: audited, paginated, filtered.

#[tokio::test]
async fn audit_queries_paginate_filter_and_are_themselves_audited() {
    let h = harness();
    for i in 0..120 {
        h.app
            .audit_system(
                crate::AuditAction::VmRunning,
                format!("vm:x{i}"),
                Outcome::Success,
                json!({}),
            )
            .await
            .unwrap();
    }
    let mut seen = BTreeSet::new();
    let mut uri = "/api/v1/audit/entries?limit=50&action=vm.running".to_owned();
    let mut pages = 0;
    loop {
        let r = h.api(Method::GET, &uri, Some(Role::Auditor), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let p = r.json();
        let entries = p["entries"].as_array().unwrap();
        let idx: Vec<u64> = entries
            .iter()
            .map(|e| e["index"].as_u64().unwrap())
            .collect();
        assert!(idx.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert!(entries.iter().all(|e| e["action"] == "vm.running"));
        seen.extend(idx);
        pages += 1;
        let read = h.audit.last().unwrap();
        assert_eq!(
            (read.action.as_str(), read.actor.as_str()),
            ("audit.read", "auditor")
        );
        match p["next_before"].as_u64() {
            Some(b) => uri = format!("/api/v1/audit/entries?limit=50&action=vm.running&before={b}"),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 120));
    // Back one page from the oldest.
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries?limit=10&action=vm.&after=0",
            Some(Role::Auditor),
            None,
        )
        .await;
    let p = r.json();
    assert_eq!(p["entries"][0]["index"].as_u64(), Some(10));
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries?outcome=denied&actor=anonymous",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert!(r.json()["entries"].as_array().unwrap().is_empty());
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries/5/proof",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.audit.last().unwrap().details["kind"], "inclusion_proof");
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/entries/5/proof?tree_size=3",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.problem_field().as_deref(), Some("tree_size"));
    let r = h
        .api(
            Method::POST,
            "/api/v1/audit/verify",
            Some(Role::Responder),
            None,
        )
        .await;
    assert_eq!(r.json()["ok"], true);
    assert_eq!(h.audit.last().unwrap().action, "audit.verify");
    let r = h
        .api(
            Method::GET,
            "/api/v1/audit/checkpoints",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.audit.last().unwrap().details["kind"], "checkpoints");
    // The dashboard browser shows pages with links.
    let (cookie, _) = {
        let r = h.login("alice", ALICE_PASSWORD).await;
        (set_cookie(&r.headers, "sakshi_session").unwrap(), ())
    };
    // alice is an operator: no audit access, refused and audited.
    let r = h.send(with_cookie(get("/audit"), &cookie)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("lacks permission audit.read"));
}

// ---------------------------------------------------------------------------------------------
// Dashboard pages render for every role.

#[tokio::test]
async fn dashboard_pages_render_with_role_appropriate_actions() {
    let h = harness();
    let pages = [
        "/",
        "/vms",
        &format!("/vms/{}", h.vm_id),
        "/images",
        "/audit",
        "/audit/0",
        "/attestation",
        "/users",
        "/account",
    ];
    for role in Role::ALL {
        for p in pages {
            let r = h
                .send(
                    Request::get(p)
                        .header(header::AUTHORIZATION, format!("Bearer {}", h.token(role)))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            let html = r.text();
            if r.status == StatusCode::FORBIDDEN {
                continue;
            }
            assert_eq!(r.status, StatusCode::OK, "{p} as {role}: {html}");
            assert!(html.starts_with("<!doctype html>"), "{p}");
            assert!(html.contains("<main id=\"main\""), "{p}");
            assert!(
                !html.contains("{{") && !html.contains("{%"),
                "{p}: unrendered template"
            );
            if p.starts_with("/vms/") {
                let can = role.allows(crate::rbac::Permission::VmLifecycle);
                assert_eq!(
                    html.contains("id=\"actions-readonly\""),
                    !can,
                    "{p} as {role}"
                );
            }
            if p == "/" {
                assert!(html.contains("id=\"vm-running\">1<"), "{html}");
            }
        }
    }
    let css = h.send(get("/static/sakshi.css")).await;
    assert_eq!(css.content_type(), "text/css; charset=utf-8");
    assert!(css.text().contains(":root"));
    assert_eq!(
        h.send(get("/static/nope.js")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h.send(get("/no-such-page")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.content_type().starts_with("text/html"));
    let r = h.send(get("/")).await;
    assert_eq!(r.headers[header::LOCATION], "/login?next=/");
    assert!(r.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn dashboard_create_form_shows_field_errors_and_creates_vms() {
    let h = harness();
    let (cookie, csrf) = h.session().await;
    let body = format!(
        "csrf={csrf}&name=Bad+Name&kernel_sha256={}&initrd_sha256=&cmdline=x&vcpus=1&memory_mib=64&start=1",
        h.kernel
    );
    let r = h.send(form("/vms", &cookie, &body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text();
    assert!(html.contains("id=\"form-error\""));
    assert!(html.contains("id=\"vm-name\" name=\"name\" required maxlength=\"63\" pattern=\"[a-z][a-z0-9-]*\" value=\"Bad Name\" aria-invalid=\"true\""), "{html}");
    let body = format!(
        "csrf={csrf}&name=ui-vm&kernel_sha256={}&initrd_sha256=&cmdline=console%3DttyS0&vcpus=1&memory_mib=64&start=1",
        h.kernel
    );
    let r = h.send(form("/vms", &cookie, &body)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let loc = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    let page = h.send(with_cookie(get(&loc), &cookie)).await.text();
    assert!(page.contains("id=\"vm-state\">running<"), "{page}");
    assert!(page.contains("boot-complete"));
}

// ---------------------------------------------------------------------------------------------
// OpenAPI: the document and the routes cannot drift.

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let name = r
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("bad $ref {r}"));
    let s = &doc["components"]["schemas"][name];
    assert!(!s.is_null(), "unresolved $ref {r}");
    s
}

/// A small JSON Schema checker for what the document uses: $ref, type (incl. arrays with null),
/// required, properties, additionalProperties false, items, enum, oneOf, pattern (anchored hex).
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        return check(doc, resolve(doc, r), v, at);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        return if alts.iter().any(|s| check(doc, s, v, at).is_ok()) {
            Ok(())
        } else {
            Err(format!("{at}: {v} matches no alternative"))
        };
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => vec![],
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            return Err(format!("{at}: {actual} not in {types:?}"));
        }
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} not in enum"));
    }
    if let (Some("^[0-9a-f]{64}$"), Some(s)) = (schema["pattern"].as_str(), v.as_str())
        && !crate::images::is_sha256_hex(s)
    {
        return Err(format!("{at}: {s} is not a sha256"));
    }
    if let Value::Object(obj) = v {
        for req in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(req.as_str().unwrap_or_default()) {
                return Err(format!("{at}: missing {req}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, val, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: undocumented property {k}"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, s, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) {
    if let Err(e) = check(doc, schema, v, at) {
        panic!("{e}");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                out.push(r.to_owned());
            }
            o.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let h = harness();
    let r = h.api(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.surface == Surface::Api)
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    assert!(
        ROUTES
            .iter()
            .filter(|r| r.surface == Surface::Ui)
            .all(|r| !r.path.starts_with("/api"))
    );

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 40);
    for r in &refs {
        resolve(&doc, r);
    }
    // Responses of the read endpoints conform to their documented schemas.
    h.api(
        Method::POST,
        "/api/v1/tokens",
        Some(Role::Admin),
        Some(json!({"name": "t"})),
    )
    .await;
    let reads = [
        ("/api/v1/health".to_owned(), "/api/v1/health"),
        ("/api/v1/whoami".to_owned(), "/api/v1/whoami"),
        ("/api/v1/overview".to_owned(), "/api/v1/overview"),
        ("/api/v1/vms".to_owned(), "/api/v1/vms"),
        (format!("/api/v1/vms/{}", h.vm_id), "/api/v1/vms/{id}"),
        (
            format!("/api/v1/vms/{}/console", h.vm_id),
            "/api/v1/vms/{id}/console",
        ),
        ("/api/v1/images".to_owned(), "/api/v1/images"),
        (
            format!("/api/v1/images/{}", h.kernel),
            "/api/v1/images/{sha256}",
        ),
        ("/api/v1/audit/entries".to_owned(), "/api/v1/audit/entries"),
        (
            "/api/v1/audit/entries/0".to_owned(),
            "/api/v1/audit/entries/{index}",
        ),
        (
            "/api/v1/audit/entries/0/proof".to_owned(),
            "/api/v1/audit/entries/{index}/proof",
        ),
        (
            "/api/v1/audit/consistency?from=1".to_owned(),
            "/api/v1/audit/consistency",
        ),
        (
            "/api/v1/audit/checkpoints".to_owned(),
            "/api/v1/audit/checkpoints",
        ),
        ("/api/v1/users".to_owned(), "/api/v1/users"),
        ("/api/v1/tokens".to_owned(), "/api/v1/tokens"),
        ("/api/v1/patches".to_owned(), "/api/v1/patches"),
        ("/api/v1/golden".to_owned(), "/api/v1/golden"),
    ];
    for (uri, template) in reads {
        let r = h.api(Method::GET, &uri, Some(Role::Admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        let schema = &doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        validate(&doc, schema, &r.json(), &uri);
    }
    let r = h
        .api(
            Method::POST,
            "/api/v1/audit/verify",
            Some(Role::Admin),
            None,
        )
        .await;
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/VerifyReport"}),
        &r.json(),
        "verify",
    );
    let r = h
        .api(
            Method::POST,
            "/api/v1/vms",
            Some(Role::Admin),
            Some(json!({"name": "x", "kernel_sha256": h.kernel})),
        )
        .await;
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/VmDetail"}),
        &r.json(),
        "create",
    );
    let r = h
        .api(
            Method::POST,
            "/api/v1/vms",
            Some(Role::Admin),
            Some(json!({"name": 1})),
        )
        .await;
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/Problem"}),
        &r.json(),
        "problem",
    );
    let mut ids = BTreeSet::new();
    for route in ROUTES.iter().filter(|r| r.surface == Surface::Api) {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "unique operationId"
        );
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_template: BTreeSet<&str> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_template, "{}", route.path);
        let protected = route.access != Access::Public;
        assert_eq!(
            op["responses"]["403"].is_object(),
            protected,
            "{} {}",
            route.method,
            route.path
        );
        assert_eq!(
            op["security"] == json!([]),
            !protected,
            "{} {}",
            route.method,
            route.path
        );
        // Every route answers on its documented method (never 404/405 from the router).
        let uri = concrete_path(&h, route.path);
        let resp = h
            .api(route.method.clone(), &uri, Some(Role::Admin), None)
            .await;
        assert!(
            resp.status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            route.method,
            route.path
        );
        if resp.status == StatusCode::NOT_FOUND {
            assert!(
                !resp.json()["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("no route"),
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test]
async fn attestation_validates_the_nonce_and_audits_every_quote_attempt() {
    let h = harness();
    let post = |role, body| h.api(Method::POST, "/api/v1/attestations", Some(role), Some(body));
    // Bad input is a 422 naming the field, before the TPM is touched, and is not audited.
    for bad in [
        json!({"nonce": "xyz"}),
        json!({"nonce": ""}),
        json!({"nonce": "a"}),
        json!({"nonce": "00".repeat(65)}),
    ] {
        let before = h.audit.len();
        let r = post(Role::Auditor, bad.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text()
        );
        assert_eq!(r.problem_field().as_deref(), Some("nonce"), "{bad}");
        assert_eq!(h.audit.len(), before, "{bad}");
    }
    let r = post(Role::Auditor, json!({"nonce": "00", "extra": 1})).await;
    assert!(r.status.is_client_error(), "unknown field: {}", r.status);
    // Operators lack audit.read.
    let r = post(Role::Operator, json!({"nonce": "00"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The fake backend has no TPM: the attempt fails and is audited as a failed attest.quote
    // with the caller as actor.
    let me = h
        .api(Method::GET, "/api/v1/whoami", Some(Role::Responder), None)
        .await
        .json();
    let before = h.audit.len();
    let r = post(Role::Responder, json!({"nonce": "c0ffee"})).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    r.problem_field();
    assert_eq!(h.audit.len(), before + 1);
    let e = h.audit.last().unwrap();
    assert_eq!(e.action, "attest.quote");
    assert_eq!(e.outcome, Outcome::Failure);
    assert_eq!(e.actor, me["user"].as_str().unwrap());
    assert!(!e.origin.is_empty());
    assert_eq!(e.details["nonce"], "c0ffee");
    assert!(
        e.details["error"].as_str().unwrap().contains("no TPM"),
        "{}",
        e.details
    );
}

#[tokio::test]
async fn image_approval_is_admin_only_persisted_and_audited() {
    let h = harness();
    let path = format!("/api/v1/images/{}/approval", h.kernel);
    let golden = || async {
        h.api(Method::GET, "/api/v1/golden", Some(Role::Auditor), None)
            .await
            .json()
    };
    assert_eq!(golden().await["kernels"], json!([]));
    // Operators upload images but may not approve them (separation of duties).
    let r = h.api(Method::POST, &path, Some(Role::Operator), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(golden().await["kernels"], json!([]));

    let before = h.audit.len();
    let r = h.api(Method::POST, &path, Some(Role::Admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
    assert_eq!(r.json()["component"], "kernel");
    let g = golden().await;
    assert_eq!(g["mode"], "enforce");
    assert_eq!(g["kernels"][0]["sha256"], h.kernel.as_str());
    assert!(g["kernels"][0]["label"].as_str().unwrap().contains("guest"));
    assert_eq!(h.audit.len(), before + 1);
    let e = h.audit.last().unwrap();
    assert_eq!(
        (e.action.as_str(), e.outcome, e.target.clone()),
        (
            "image.approve",
            Outcome::Success,
            format!("image:{}", h.kernel)
        )
    );
    // Idempotent; the initrd lands in its own set; persisted on disk.
    let r = h.api(Method::POST, &path, Some(Role::Admin), None).await;
    assert_eq!(r.json()["changed"], false);
    let r = h
        .api(
            Method::POST,
            &format!("/api/v1/images/{}/approval", h.initrd),
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(r.json()["component"], "initrd");
    assert_eq!(golden().await["initrds"][0]["sha256"], h.initrd.as_str());
    let on_disk = std::fs::read_to_string(h._dir.path().join("golden.json")).unwrap();
    assert!(on_disk.contains(&h.kernel) && on_disk.contains(&h.initrd));

    // Bad and unknown digests: 4xx naming the field, audited as failures only when well formed.
    let r = h
        .api(
            Method::POST,
            "/api/v1/images/XYZ/approval",
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem_field().as_deref(), Some("sha256"));
    let unknown = format!("/api/v1/images/{}/approval", "ab".repeat(32));
    let r = h.api(Method::POST, &unknown, Some(Role::Admin), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(h.audit.last().unwrap().outcome, Outcome::Failure);

    // Withdrawal.
    let r = h.api(Method::DELETE, &path, Some(Role::Admin), None).await;
    assert_eq!(
        (r.status, r.json()["changed"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert_eq!(h.audit.last().unwrap().action, "image.revoke");
    assert_eq!(golden().await["kernels"], json!([]));
}

fn from_peer(uri: &str, peer: &str) -> Request<Body> {
    let mut req = Request::get(uri).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(crate::listen::PeerAddr(
            peer.parse().unwrap(),
        )));
    req
}

#[tokio::test]
async fn metrics_are_off_without_otlp_and_guarded_per_prometheus_access() {
    use crate::otlp::{Metrics, PrometheusAccess};
    // Without [otlp] there is nothing to scrape.
    let h = harness();
    let r = h
        .api(Method::GET, "/metrics", Some(Role::Auditor), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Authenticated (the default): any role reads; anonymous callers, even on loopback, do not.
    let m = Arc::new(Metrics::new());
    m.vms.set_all([("running", 3)]);
    h.app.set_metrics(m, PrometheusAccess::Authenticated);
    let r = h
        .api(Method::GET, "/metrics", Some(Role::Operator), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.content_type().starts_with("text/plain"));
    assert!(
        r.text().contains("sakshi_vms{state=\"running\"} 3"),
        "{}",
        r.text()
    );
    let r = h.send(from_peer("/metrics", "127.0.0.1:5000")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Loopback: anonymous loopback callers read, remote anonymous callers are refused.
    let h = harness();
    h.app
        .set_metrics(Arc::new(Metrics::new()), PrometheusAccess::Loopback);
    let r = h.send(from_peer("/metrics", "127.0.0.1:5000")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("# TYPE sakshi_vms gauge"));
    let before = h.audit.len();
    let r = h.send(from_peer("/metrics", "192.0.2.7:5000")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.audit.len(), before + 1);
    assert_eq!(h.audit.last().unwrap().action, "auth.denied");
}

// ---------------------------------------------------------------------------------------------
// Evidence bundles, reports, the patch ledger.

fn read_tar_names(gz: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn evidence_export_streams_a_signed_bundle_named_for_its_period_and_is_audited() {
    let h = harness();
    let now = chrono::Utc::now();
    let from =
        (now - chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to =
        (now + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = h
        .api(
            Method::POST,
            "/api/v1/evidence",
            Some(Role::Auditor),
            Some(json!({ "from": from, "to": to, "scope": "all" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.content_type(), "application/gzip");
    let period = sakshi_reports::Period::new(
        chrono::DateTime::parse_from_rfc3339(&from).unwrap().into(),
        chrono::DateTime::parse_from_rfc3339(&to).unwrap().into(),
    )
    .unwrap();
    let name = sakshi_reports::bundle_file_name("test-host", &sakshi_reports::Scope::All, &period);
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION].to_str().unwrap(),
        format!("attachment; filename=\"{name}\"")
    );
    assert_eq!(
        r.headers[header::CONTENT_LENGTH].to_str().unwrap(),
        r.body.len().to_string()
    );
    let names = read_tar_names(&r.body);
    assert_eq!(names.first().map(String::as_str), Some("manifest.json"));
    assert_eq!(
        names.get(1).map(String::as_str),
        Some("manifest.sigstore.json")
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("audit/entries.jsonl")
    );
    assert!(
        names.iter().any(|n| n == "attestation/quote/quote.json"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "reports/pci-dss-4.0.1.html"),
        "{names:?}"
    );
    let report = sakshi_reports::verify_bundle(
        &r.body[..],
        &sakshi_reports::VerifyOptions {
            key: h.evidence_log.public_key().clone(),
            previous_anchor: None,
        },
    );
    assert!(report.signature_ok, "{:?}", report.problems);
    assert!(report.integrity.is_some(), "{:?}", report.problems);
    let e = h.audit.last().unwrap();
    assert_eq!(e.action, "evidence.export");
    assert_eq!(e.actor, "auditor");
    assert_eq!(e.target, format!("evidence:{name}"));
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.details["kind"], "bundle");
    assert_eq!(e.details["bytes"], json!(r.body.len()));

    // Bad input: 400 naming the field, nothing exported or audited.
    let before = h.audit.len();
    for (body, field) in [
        (json!({ "from": from, "to": to, "bogus": 1 }), "bogus"),
        (json!({ "from": "yesterday", "to": to }), "from"),
        (json!({ "to": to }), "from"),
        (json!({ "from": to, "to": from }), "from"),
        (json!({ "from": from, "to": from }), "to"),
        (json!({ "from": from, "to": to, "scope": "vm:" }), "scope"),
        (
            json!({ "from": from, "to": to, "scope": "everything" }),
            "scope",
        ),
    ] {
        let r = h
            .api(
                Method::POST,
                "/api/v1/evidence",
                Some(Role::Admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.problem_field().as_deref(), Some(field), "{body}");
    }
    assert_eq!(
        h.audit.len(),
        before,
        "bad input is not audited as an export"
    );
    // A VM-scoped bundle carries the scope in its name.
    let r = h
        .api(
            Method::POST,
            "/api/v1/evidence",
            Some(Role::Admin),
            Some(json!({ "from": from, "to": to, "scope": format!("vm:{}", h.vm_id) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let cd = r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cd.contains(&format!("_vm-{}_", h.vm_id)), "{cd}");
}

#[tokio::test]
async fn framework_reports_render_as_html_and_are_audited() {
    let h = harness();
    let q = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z";
    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/reports/pci-dss?{q}"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.content_type().starts_with("text/html"));
    assert!(
        r.text().contains("10.4.1.1"),
        "the PCI DSS report lists its controls"
    );
    let e = h.audit.last().unwrap();
    assert_eq!(e.action, "evidence.export");
    assert_eq!(e.details["kind"], "report");
    assert_eq!(e.details["framework"], "pci-dss-4.0.1");
    assert_eq!(e.target, "evidence:report-pci-dss-4.0.1");

    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/reports/sox?{q}"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .api(
            Method::GET,
            "/api/v1/reports/pci-dss?from=2026-01-01T00:00:00Z",
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("to"));
    let r = h
        .api(
            Method::GET,
            &format!("/api/v1/reports/pci-dss?{q}&color=red"),
            Some(Role::Auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.problem_field().as_deref(), Some("color"));
}

fn days_ago(d: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(d))
        .date_naive()
        .to_string()
}

#[tokio::test]
async fn patches_are_recorded_listed_with_cve_status_and_approve_golden_images() {
    let h = harness();
    let perms = |role| {
        let h = &h;
        async move {
            h.api(Method::GET, "/api/v1/whoami", Some(role), None)
                .await
                .json()["permissions"]
                .clone()
        }
    };
    let op = perms(Role::Operator).await;
    assert!(
        op.as_array().unwrap().contains(&json!("patch.record")),
        "{op}"
    );
    let aud = perms(Role::Auditor).await;
    assert!(
        aud.as_array().unwrap().contains(&json!("patch.read")),
        "{aud}"
    );
    assert!(
        !aud.as_array().unwrap().contains(&json!("patch.record")),
        "{aud}"
    );
    let digest = "ab".repeat(32);
    // A critical CVE released 45 days ago and still pending: overdue, fails 6.3.3.
    let pending = json!({
        "component": "vmm", "from_version": "0.1.0", "to_version": "0.1.1",
        "cves": [{ "id": "CVE-2026-1111", "severity": "critical", "vendor_released": days_ago(45) }],
        "approver": "cab-7"
    });
    let r = h
        .api(
            Method::POST,
            "/api/v1/patches",
            Some(Role::Operator),
            Some(pending),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    assert_eq!(v["record"]["recorded_by"], "operator");
    assert!(v["golden_set"].is_null());
    let e = h.audit.last().unwrap();
    assert_eq!(e.action, "patch.record");
    assert_eq!(e.actor, "operator");
    assert_eq!(
        e.target,
        format!("patch:{}", v["record"]["id"].as_str().unwrap())
    );
    assert_eq!(e.details["patch"]["approver"], "cab-7");

    // An applied guest-kernel patch within the deadline that approves its image.
    let applied = json!({
        "component": "guest_kernel", "from_version": "6.1.1", "to_version": "6.1.2",
        "cves": [{ "id": "CVE-2026-2222", "severity": "critical", "vendor_released": days_ago(10) }],
        "applied_at": (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339(),
        "artifacts": [{ "name": "vmlinuz", "sha256": digest }],
        "approver": "cab-8",
        "golden_image": { "kernel_sha256": digest }
    });
    let r = h
        .api(
            Method::POST,
            "/api/v1/patches",
            Some(Role::Admin),
            Some(applied),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.json()["golden_set"],
        json!({ "approved": true, "digests_added": 1 })
    );
    let golden = h.golden.0.lock().unwrap().to_json();
    assert!(golden.contains(&digest), "{golden}");
    let e = h.audit.last().unwrap();
    assert_eq!(e.action, "image.approve");
    assert_eq!(e.target, format!("image:{digest}"));

    let r = h
        .api(Method::GET, "/api/v1/patches", Some(Role::Auditor), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let l = r.json();
    assert_eq!(l["records"].as_array().unwrap().len(), 2);
    assert_eq!(l["failing"], 1);
    let cves = l["cves"].as_array().unwrap();
    let by = |id: &str| cves.iter().find(|c| c["cve"] == id).unwrap().clone();
    assert_eq!(by("CVE-2026-1111")["sla"], "overdue");
    assert_eq!(by("CVE-2026-1111")["fails_6_3_3"], true);
    assert_eq!(by("CVE-2026-2222")["sla"], "patched_in_time");
    assert_eq!(h.audit.last().unwrap().details["kind"], "patch_ledger");

    // Bad submissions name the field and record nothing.
    let before = h.audit.len();
    for (body, status, field) in [
        (
            json!({ "component": "vmm", "from_version": "1", "to_version": "2", "approver": "x", "bogus": 1 }),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
        (
            json!({ "component": "toaster", "from_version": "1", "to_version": "2", "approver": "x" }),
            StatusCode::BAD_REQUEST,
            "component",
        ),
        (
            json!({ "component": "vmm", "from_version": "1", "to_version": "1", "approver": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_version",
        ),
        (
            json!({ "component": "vmm", "from_version": "1", "to_version": "2", "approver": "x",
                 "cves": [{ "id": "CVE-X", "severity": "low", "vendor_released": "2026-01-01" }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cves",
        ),
        (
            json!({ "component": "vmm", "from_version": "1", "to_version": "2", "approver": "x",
                 "applied_at": chrono::Utc::now().to_rfc3339() }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "artifacts",
        ),
    ] {
        let r = h
            .api(
                Method::POST,
                "/api/v1/patches",
                Some(Role::Operator),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.problem_field().as_deref(), Some(field), "{body}");
    }
    assert_eq!(h.audit.len(), before);
}

#[tokio::test]
async fn evidence_and_patch_pages_follow_roles_and_the_download_form_needs_csrf() {
    let h = harness();
    let pw = "audrey's long password";
    h.app
        .users()
        .create_user("audrey", Role::Auditor, &hash_password(pw).unwrap())
        .unwrap();
    let r = h.login("audrey", pw).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = set_cookie(&r.headers, "sakshi_session").unwrap();
    let page = h.send(with_cookie(get("/evidence"), &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("href=\"/evidence\" aria-current=\"page\""),
        "nav marks the page"
    );
    assert!(html.contains("href=\"/patches\""));
    assert!(html.contains("<label for=\"e-from\">"));
    assert!(html.contains("data-framework=\"pci-dss-4.0.1\""));
    let csrf = hidden_csrf(&html);
    let body = "from=2026-01-01&to=2026-01-02&scope=all";
    let r = h
        .send(form("/evidence", &cookie, &format!("csrf={csrf}&{body}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.content_type(), "application/gzip");
    assert!(
        r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("_all_20260101T000000Z-20260102T000000Z.tar.gz")
    );
    assert_eq!(h.audit.last().unwrap().details["auth"], "session");
    // Without the CSRF token: refused and audited.
    let r = h.send(form("/evidence", &cookie, body)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.audit.last().unwrap().action, "auth.denied");
    // A bad date re-renders the form with the problem.
    let r = h
        .send(form(
            "/evidence",
            &cookie,
            &format!("csrf={csrf}&from=soon&to=2026-01-02&scope=all"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("id=\"evidence-error\""));
    // The per-framework report link renders the report.
    let r = h
        .send(with_cookie(
            get("/evidence/reports/cert-in-2022?from=2026-01-01&to=2026-01-02&scope=all"),
            &cookie,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("CERT-IN"), "{}", r.text());
    let r = h.send(with_cookie(get("/patches"), &cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("No patches recorded."));

    // Operators see Patches but not Evidence.
    let (op_cookie, _) = h.session().await;
    let page = h.send(with_cookie(get("/vms"), &op_cookie)).await.text();
    assert!(page.contains("href=\"/patches\""));
    assert!(!page.contains("href=\"/evidence\""));
    let r = h.send(with_cookie(get("/evidence"), &op_cookie)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
