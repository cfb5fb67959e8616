//! A small blocking HTTP client for the appliance API (ureq), turning problem documents into
//! errors that name the field.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::time::Duration;

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
        let config = ureq::Agent::config_builder()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
