//! The dashboard in a real headless Chromium (Debian's chromium + chromedriver), driven over
//! the W3C WebDriver protocol with a small client, against a real `sakshi serve` (real KVM,
//! swtpm, SQLite).

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::{Client, Daemon, write_config};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver plus one browser session; both end on drop.
struct Browser {
    driver: Child,
    agent: ureq::Agent,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (Debian package chromium-driver)")?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = agent.get(format!("{base}/status")).call()
                && let Ok(v) = r.body_mut().read_json::<Value>()
                && v["value"]["ready"] == true
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir()?;
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut b = Browser {
            driver,
            agent,
            base,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"].as_str().context("no session id")?.to_owned();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, Some(b)) => self.agent.post(&url).send_json(b),
            (_, None) => self.agent.post(&url).send_json(json!({})),
        };
        let mut resp = resp.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.body_mut().read_json()?;
        if !status.is_success() {
            bail!("WebDriver {method} {path}: {status} {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .map(|_| ())
    }

    fn url(&self) -> Result<String> {
        Ok(self
            .call("GET", &self.s("/url"), None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// Waits until the current URL contains `part`.
    fn wait_url(&self, part: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let u = self.url()?;
            if u.contains(part) {
                return Ok(u);
            }
            ensure!(
                Instant::now() < deadline,
                "URL never contained {part:?} (at {u})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn source(&self) -> Result<String> {
        Ok(self
            .call("GET", &self.s("/source"), None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    fn find(&self, css: &str) -> Result<String> {
        let v = self
            .call(
                "POST",
                &self.s("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .with_context(|| format!("no element {css}"))?;
        Ok(v[ELEMENT]
            .as_str()
            .with_context(|| format!("element id in {v}"))?
            .to_owned())
    }

    fn find_all(&self, css: &str) -> Result<Vec<String>> {
        let v = self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
            .collect())
    }

    fn text(&self, css: &str) -> Result<String> {
        let e = self.find(css)?;
        Ok(self
            .call("GET", &self.s(&format!("/element/{e}/text")), None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    fn attr(&self, element: &str, name: &str) -> Result<String> {
        Ok(self
            .call(
                "GET",
                &self.s(&format!("/element/{element}/attribute/{name}")),
                None,
            )?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    fn click(&self, css: &str) -> Result<()> {
        let e = self.find(css)?;
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        )
        .map(|_| ())
    }

    fn clear_and_type(&self, css: &str, text: &str) -> Result<()> {
        let e = self.find(css)?;
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/clear")),
            Some(json!({})),
        )?;
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    /// Saves a PNG of the page to `$SAKSHI_SCREENSHOTS/<name>.png` when that is set.
    fn shot(&self, name: &str) -> Result<()> {
        let Ok(dir) = std::env::var("SAKSHI_SCREENSHOTS") else {
            return Ok(());
        };
        let b64 = self.call("GET", &self.s("/screenshot"), None)?;
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            b64.as_str().unwrap_or(""),
        )?;
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)?;
        Ok(())
    }

    fn script(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Reloads until `css`'s text contains `want` (the console tail fills in after boot-complete).
    fn wait_text_contains(&self, css: &str, want: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.text(css).map(|t| t.contains(want)).unwrap_or(false) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{css} never contained {want:?}");
            std::thread::sleep(Duration::from_millis(200));
            self.call("POST", &self.s("/refresh"), Some(json!({})))?;
        }
    }

    /// Reloads until `css` has `want` as its text.
    fn wait_text(&self, css: &str, want: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.text(css).map(|t| t.trim() == want).unwrap_or(false) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{css} never showed {want:?}");
            std::thread::sleep(Duration::from_millis(200));
            self.call("POST", &self.s("/refresh"), Some(json!({})))?;
        }
    }

    fn login(&self, base: &str, user: &str, password: &str) -> Result<()> {
        self.goto(&format!("{base}/"))?;
        ensure!(
            self.url()?.contains("/login?next=/"),
            "anonymous / redirects to login: {}",
            self.url()?
        );
        self.clear_and_type("#username", user)?;
        self.clear_and_type("#password", password)?;
        self.click("#login-submit")?;
        self.wait_url(&format!("{base}/"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.url()?.contains("/login") {
            ensure!(Instant::now() < deadline, "still on the login page");
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(
            self.source()?
                .contains(&format!("Signed in as </span>{user}")),
            "signed in as {user}"
        );
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn browser_login_create_start_see_running_browse_audit_logout_and_forbidden_action() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = write_config(&data, "", "[demo]\nenabled = false\n")?;
    let d = Daemon::start(&cfg)?;
    let admin_pw = d.admin_password.clone().context("admin password")?;
    let mut api = Client::new(&d.url);
    api.login("admin", &admin_pw)?;
    let guest = std::fs::read(sakshi_host::test_guest::test_guest_path())?;
    let (s, img) = api.post_bytes("/api/v1/images?name=test-guest&kind=kernel", &guest)?;
    ensure!(s == 201, "{s} {img}");
    let (s, _) = api.post(
        "/api/v1/users",
        json!({"name": "olga", "role": "auditor", "password": "olga's long password"}),
    )?;
    ensure!(s == 201);

    let b = Browser::start()?;
    let base = d.url.clone();
    b.login(&base, "admin", &admin_pw)?;
    ensure!(b.text("#kvm-mode")?.contains("PVM") || b.text("#kvm-mode")?.contains("KVM"));
    ensure!(b.text("#tpm-kind")?.contains("software TPM"));
    b.shot("overview")?;

    // Create and start a VM from the form; see it running.
    b.goto(&format!("{base}/vms"))?;
    b.clear_and_type("#vm-name", "web-1")?;
    b.clear_and_type("#vm-cmdline", "console=ttyS0 run=spin")?;
    b.clear_and_type("#vm-memory", "32")?;
    b.click("#vm-create")?;
    b.wait_url("/vms/")?;
    b.wait_text("#vm-state", "running")?;
    // The guest prints `run: spin` just after boot-complete (which is what makes the VM `running`).
    b.wait_text_contains("#console", "run: spin")?;
    ensure!(b.text("#boot-latency")?.ends_with("ms"));
    b.shot("vm-detail")?;
    let vm_url = b.url()?;
    let vm_id = vm_url.rsplit('/').next().context("vm id")?.to_owned();

    // Browse the audit log: filter, page, open an entry with its inclusion proof.
    b.goto(&format!("{base}/audit"))?;
    let src = b.source()?;
    for a in ["vm.create", "vm.boot", "auth.login.success"] {
        ensure!(
            src.contains(&format!("data-action=\"{a}\"")),
            "audit page lists {a}"
        );
    }
    b.clear_and_type("#f-action", "vm.")?;
    b.click("#filter-apply")?;
    b.wait_url("action=vm.")?;
    let rows = b.find_all("#audit-table tbody tr[data-action]")?;
    ensure!(!rows.is_empty());
    for r in &rows {
        ensure!(
            b.attr(r, "data-action")?.starts_with("vm."),
            "filtered rows are vm.*"
        );
    }
    b.shot("audit")?;
    b.click("#audit-table tbody tr[data-action] td a")?;
    b.wait_url("/audit/")?;
    ensure!(b.text("#proof-size")?.parse::<u64>()? > 0);
    b.find("#proof-path")?;
    b.shot("audit-entry")?;
    b.goto(&format!("{base}/vms"))?;
    b.shot("vms")?;

    // Stop it from the UI.
    b.goto(&vm_url)?;
    b.click("#act-stop")?;
    b.wait_text("#vm-state", "stopped")?;

    // Log out.
    b.click("header form[action=\"/logout\"] button")?;
    b.wait_url("/login")?;
    b.goto(&format!("{base}/vms"))?;
    b.wait_url("/login?next=/vms")?;

    // A forbidden action: an auditor forces the disabled Stop button on a running VM.
    let (s, v) = api.post("/api/v1/vms", json!({"name": "web-2", "kernel_sha256": img["sha256"], "cmdline": "run=spin", "memory_mib": 32, "start": true}))?;
    ensure!(s == 201, "{s} {v}");
    let id2 = v["id"].as_str().context("id")?.to_owned();
    api.wait_vm(&id2, "running", |v| v["state"] == "running")?;
    b.login(&base, "olga", "olga's long password")?;
    b.goto(&format!("{base}/vms/{id2}"))?;
    b.find("#actions-readonly")?;
    let stop = b.find("#act-stop")?;
    ensure!(
        b.attr(&stop, "disabled")? == "true",
        "stop is disabled for auditors"
    );
    b.script("const s = document.getElementById('act-stop'); s.disabled = false; s.click();")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.source()?.contains("id=\"error-detail\"") {
        ensure!(
            Instant::now() < deadline,
            "no error page after the forbidden stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        b.text("#error-detail")?
            .contains("lacks permission vm.lifecycle"),
        "{}",
        b.text("#error-detail")?
    );
    ensure!(b.source()?.contains("403"));
    b.shot("forbidden")?;
    let (_, v) = api.get(&format!("/api/v1/vms/{id2}"))?;
    ensure!(v["state"] == "running", "the VM was not touched: {v}");
    let (_, page) = api.get("/api/v1/audit/entries?action=auth.denied&actor=olga")?;
    let denied = page["entries"].as_array().context("entries")?;
    ensure!(
        denied
            .iter()
            .any(|e| e["target"] == "appliance:POST /vms/{id}/stop" && e["outcome"] == "denied"),
        "the refusal is audited: {page}"
    );
    let _ = vm_id;
    drop(b);
    d.stop()?;
    Ok(())
}
