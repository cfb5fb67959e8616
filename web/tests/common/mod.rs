//! Helpers for end-to-end tests: run `sakshi serve` as a child process on a free port with its
//! own data directory, and talk to it over HTTP.
#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `sakshi` binary under test.
pub fn sakshi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sakshi"))
}

/// `sakshi-vmm`, next to `sakshi`; built on demand when missing.
pub fn vmm_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SAKSHI_VMM") {
        return Ok(PathBuf::from(p));
    }
    let sakshi = sakshi_bin();
    let dir = sakshi.parent().context("sakshi has no directory")?;
    let vmm = dir.join("sakshi-vmm");
    if !vmm.exists() {
        let target = dir.parent().context("no target dir")?;
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "sakshi-host", "--bin", "sakshi-vmm"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("running cargo build for sakshi-vmm")?;
        if !status.success() || !vmm.exists() {
            bail!(
                "sakshi-vmm is missing at {} and could not be built",
                vmm.display()
            );
        }
    }
    Ok(vmm)
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub admin_password: Option<String>,
    pub demo_id: Option<String>,
    pub lines: mpsc::Receiver<String>,
}

/// Writes a config for `data` and returns its path; `vms` goes into the `[vms]` table,
/// `extra` after it.
pub fn write_config(data: &Path, vms: &str, extra: &str) -> Result<PathBuf> {
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[data]\ndir = \"{}\"\n[vms]\nvmm_binary = \"{}\"\n{vms}\n{extra}\n",
        data.display(),
        vmm_bin()?.display()
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, cfg)?;
    Ok(path)
}

impl Daemon {
    /// Starts `sakshi serve --config cfg` and waits until it listens.
    pub fn start(cfg: &Path) -> Result<Daemon> {
        let mut child = Command::new(sakshi_bin())
            .args(["serve", "--config"])
            .arg(cfg)
            .env("SAKSHI_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning sakshi serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[sakshi] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut password, mut demo) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    bail!("sakshi serve did not start listening");
                }
            };
            if let Some(p) = line.strip_prefix("sakshi: initial admin password: ") {
                password = Some(p.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("sakshi: demo VM \"demo\" booted (id ") {
                demo = Some(rest.trim_end_matches(')').to_owned());
            }
            if let Some(addr) = line.strip_prefix("sakshi: listening on ") {
                return Ok(Daemon {
                    child,
                    url: addr.trim().to_owned(),
                    admin_password: password,
                    demo_id: demo,
                    lines: rx,
                });
            }
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("sakshi serve exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("sakshi serve did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tiny API client.
pub struct Client {
    agent: ureq::Agent,
    pub url: String,
    pub token: Option<String>,
}

impl Client {
    pub fn new(url: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            url: url.to_owned(),
            token: None,
        }
    }

    fn finish(r: Result<http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, Value)> {
        let mut r = r?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        Self::finish(
            self.auth(self.agent.get(format!("{}{path}", self.url)))
                .call(),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        Self::finish(
            self.auth(self.agent.post(format!("{}{path}", self.url)))
                .send_json(body),
        )
    }

    pub fn post_empty(&self, path: &str) -> Result<(u16, Value)> {
        Self::finish(
            self.auth(self.agent.post(format!("{}{path}", self.url)))
                .send_empty(),
        )
    }

    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<(u16, Value)> {
        Self::finish(
            self.auth(self.agent.post(format!("{}{path}", self.url)))
                .header("Content-Type", "application/octet-stream")
                .send(bytes),
        )
    }

    pub fn delete(&self, path: &str) -> Result<(u16, Value)> {
        Self::finish(
            self.auth(self.agent.delete(format!("{}{path}", self.url)))
                .call(),
        )
    }

    /// Logs in as `user` and keeps the issued token.
    pub fn login(&mut self, user: &str, password: &str) -> Result<()> {
        let (s, v) = self.post(
            "/api/v1/auth/token",
            json!({ "username": user, "password": password, "name": "e2e" }),
        )?;
        if s != 201 {
            bail!("login failed: {s} {v}");
        }
        self.token = Some(v["secret"].as_str().context("no secret")?.to_owned());
        Ok(())
    }

    /// Polls a VM until `pred` holds.
    pub fn wait_vm(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = self.get(&format!("/api/v1/vms/{id}"))?;
            if s == 200 && pred(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("VM {id} never became {what}: {v}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every audit entry, oldest first.
    pub fn audit_all(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let q = before.map_or(String::new(), |b| format!("&before={b}"));
            let (s, v) = self.get(&format!("/api/v1/audit/entries?limit=500{q}"))?;
            if s != 200 {
                bail!("audit query failed: {s} {v}");
            }
            out.extend(v["entries"].as_array().cloned().unwrap_or_default());
            match v["next_before"].as_u64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// Whether a `sakshi-vmm` for VM `id` runs.
pub fn vmm_running_for(id: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("sakshi-vmm") && c.contains(id)
                    })
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Pids of `sakshi-vmm` processes for VM `id`.
pub fn vmm_pids_for(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                    let c = std::fs::read(e.path().join("cmdline")).ok()?;
                    let c = String::from_utf8_lossy(&c);
                    (c.contains("sakshi-vmm") && c.contains(id)).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}
