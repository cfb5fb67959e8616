//! A small blocking HTTP client for the appliance API (ureq), turning problem documents into
//! errors that name the field.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// The roots `https://` appliances are checked against, set once by [`trust`].
static ROOTS: OnceLock<RootCerts> = OnceLock::new();

/// Trust the certificates in the PEM file `ca_cert` (a private CA or a self-signed appliance
/// certificate), and only those, for every API call of this process; `None` = the system's
/// roots. Call once, before the first [`Api::new`].
pub fn trust(ca_cert: Option<&Path>) -> Result<()> {
    let roots = match ca_cert {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .with_context(|| format!("{} is not PEM", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    if ROOTS.set(roots).is_err() {
        bail!("the trusted CA is already set");
    }
    Ok(())
}

/// The API at `base` with an optional bearer token.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A query string from optional pairs.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Api {
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(ROOTS.get().cloned().unwrap_or(RootCerts::PlatformVerifier))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Api {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(
        &self,
        what: &str,
        resp: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<Value>> {
        let mut resp = resp.with_context(|| format!("cannot reach {} ({what})", self.base))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the response to {what}"))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("the response to {what} is not JSON"));
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(p) if p.get("detail").is_some() => {
                let mut msg = format!(
                    "{} {}: {}",
                    status.as_u16(),
                    p["title"].as_str().unwrap_or(""),
                    p["detail"].as_str().unwrap_or("")
                );
                if let Some(errs) = p["errors"].as_array() {
                    for e in errs {
                        if let Some(f) = e["field"].as_str() {
                            msg.push_str(&format!(" [field {f}]"));
                        }
                    }
                }
                if status.as_u16() == 401 {
                    msg.push_str(" (set SAKSHI_TOKEN or pass --token; `sakshi login` issues one)");
                }
                bail!("{what} failed: {msg}")
            }
            _ => bail!("{what} failed: HTTP {status}"),
        }
    }

    /// GET, JSON response.
    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self.auth(self.agent.get(self.url(path))).call();
        Ok(self
            .finish(&format!("GET {path}"), r)?
            .unwrap_or(Value::Null))
    }

    /// POST with a JSON body (or none).
    pub fn post(&self, path: &str, body: Option<Value>) -> Result<Value> {
        let req = self.auth(self.agent.post(self.url(path)));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        };
        Ok(self
            .finish(&format!("POST {path}"), r)?
            .unwrap_or(Value::Null))
    }

    /// POST raw bytes.
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<Value> {
        let r = self
            .auth(self.agent.post(self.url(path)))
            .header("Content-Type", "application/octet-stream")
            .send(bytes);
        Ok(self
            .finish(&format!("POST {path}"), r)?
            .unwrap_or(Value::Null))
    }

    /// PUT with a JSON body.
    pub fn put(&self, path: &str, body: Value) -> Result<()> {
        let r = self.auth(self.agent.put(self.url(path))).send_json(body);
        self.finish(&format!("PUT {path}"), r).map(|_| ())
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Result<()> {
        let r = self.auth(self.agent.delete(self.url(path))).call();
        self.finish(&format!("DELETE {path}"), r).map(|_| ())
    }

    /// GET (no body) or POST (JSON body) and stream a successful response into a new file:
    /// `out`, or the server's suggested name (`Content-Disposition`) inside `out` when it is a
    /// directory. The bytes go to a temporary sibling that is renamed at the end, so nothing
    /// partial is left behind and an existing file is never replaced. Returns the file and its
    /// size.
    pub fn download(&self, path: &str, body: Option<Value>, out: &Path) -> Result<(PathBuf, u64)> {
        let (what, r) = match body {
            None => (
                format!("GET {path}"),
                self.auth(self.agent.get(self.url(path))).call(),
            ),
            Some(b) => (
                format!("POST {path}"),
                self.auth(self.agent.post(self.url(path))).send_json(b),
            ),
        };
        let mut resp = r.with_context(|| format!("cannot reach {} ({what})", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            self.finish(&what, Ok(resp))?;
            bail!("{what} failed: HTTP {status}");
        }
        let suggested = resp
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .and_then(attachment_name);
        let target = if out.is_dir() {
            out.join(
                suggested
                    .context("the appliance suggested no file name; give --out a file path")?,
            )
        } else {
            out.to_path_buf()
        };
        if target.exists() {
            bail!("{} already exists; not overwriting it", target.display());
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".sakshi-download-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let bytes = std::io::copy(&mut resp.body_mut().as_reader(), &mut tmp)
            .with_context(|| format!("receiving the response to {what}"))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        tmp.persist_noclobber(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("saving {}", target.display()))?;
        Ok((target, bytes))
    }
}

/// The file name of a `Content-Disposition: attachment; filename="..."` header, if it is a
/// plain name (no path separators, not hidden).
pub fn attachment_name(header: &str) -> Option<String> {
    let start = header.find("filename=\"")? + "filename=\"".len();
    let len = header[start..].find('"')?;
    let name = &header[start..start + len];
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    plain.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_plain_file_names() {
        assert_eq!(
            attachment_name("attachment; filename=\"sakshi-evidence_h_all_x.tar.gz\"").as_deref(),
            Some("sakshi-evidence_h_all_x.tar.gz")
        );
        assert_eq!(
            attachment_name("attachment; filename=\"../etc/passwd\""),
            None
        );
        assert_eq!(attachment_name("attachment; filename=\".hidden\""), None);
        assert_eq!(attachment_name("attachment"), None);
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("actor", Some("a b".into())),
                ("x", None),
                ("action", Some("vm.".into()))
            ]),
            "?actor=a%20b&action=vm."
        );
    }
}
