//! Guest console lines as log records: a per-VM rate limit and parsing of structured lines.
//!
//! A guest controls what it prints, so everything here is bounded: lines are cut, JSON lines give at
//! most [`MAX_GUEST_ATTRS`] attributes, and each VM has a token bucket (`console_lines_per_sec`,
//! `console_burst`); lines over the limit are counted and dropped.

use std::collections::HashMap;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};

use super::encode::{json_value, kv, kv_str, string};
use super::trace::TraceId;

/// Longest console line exported, bytes (longer lines are cut).
pub const MAX_LINE_BYTES: usize = 4096;
/// Most attributes taken from one structured (JSON) guest line.
pub const MAX_GUEST_ATTRS: usize = 32;
/// Most VMs the limiter tracks; the least recently seen is forgotten first.
const MAX_TRACKED_VMS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per VM.
#[derive(Debug)]
pub struct ConsoleLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl ConsoleLimiter {
    /// `rate` lines per second per VM, bursts of up to `burst` lines.
    pub fn new(rate: u32, burst: u32) -> Self {
        ConsoleLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether VM `vm_id` may export one more line at `now`.
    pub fn allow(&mut self, vm_id: &str, now: Instant) -> bool {
        if !self.buckets.contains_key(vm_id)
            && self.buckets.len() >= MAX_TRACKED_VMS
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&oldest);
        }
        let b = self.buckets.entry(vm_id.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forget a VM (after it is destroyed).
    pub fn forget(&mut self, vm_id: &str) {
        self.buckets.remove(vm_id);
    }
}

/// A console line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestLine {
    /// The message (the JSON `msg`/`message` field, or the line itself).
    pub body: String,
    /// `guest.<key>` attributes from a JSON line, and `sakshi.guest.trace_id` from a `trace: <id>` line.
    pub attributes: Vec<(String, serde_json::Value)>,
    /// Severity from a JSON `level`/`severity` field.
    pub severity: Option<(SeverityNumber, &'static str)>,
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

fn severity_of(level: &str) -> Option<(SeverityNumber, &'static str)> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => (SeverityNumber::Trace, "TRACE"),
        "debug" => (SeverityNumber::Debug, "DEBUG"),
        "info" | "notice" => (SeverityNumber::Info, "INFO"),
        "warn" | "warning" => (SeverityNumber::Warn, "WARN"),
        "error" | "err" => (SeverityNumber::Error, "ERROR"),
        "fatal" | "crit" | "critical" | "emerg" | "alert" => (SeverityNumber::Fatal, "FATAL"),
        _ => return None,
    })
}

/// Parse one console line (without its newline). Structured lines from the guest agent are JSON
/// objects; the test guest's `trace: <32 hex>` line yields `sakshi.guest.trace_id`.
pub fn parse_guest_line(line: &str) -> GuestLine {
    let line = cut(line.trim_end_matches(['\r', '\n']), MAX_LINE_BYTES);
    if line.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line)
    {
        let mut body = None;
        let mut severity = None;
        let mut attributes = Vec::new();
        for (k, v) in map {
            match (k.as_str(), &v) {
                ("msg" | "message", serde_json::Value::String(s)) if body.is_none() => {
                    body = Some(s.clone());
                }
                ("level" | "severity", serde_json::Value::String(s)) if severity.is_none() => {
                    severity = severity_of(s);
                    if severity.is_none() && attributes.len() < MAX_GUEST_ATTRS {
                        attributes.push((format!("guest.{}", cut(&k, 64)), v));
                    }
                }
                _ if attributes.len() < MAX_GUEST_ATTRS => {
                    attributes.push((format!("guest.{}", cut(&k, 64)), v));
                }
                _ => {}
            }
        }
        return GuestLine {
            body: body.unwrap_or_else(|| line.to_owned()),
            attributes,
            severity,
        };
    }
    let mut attributes = Vec::new();
    if let Some(id) = line.strip_prefix("trace: ")
        && id.parse::<TraceId>().is_ok()
    {
        attributes.push((
            "sakshi.guest.trace_id".to_owned(),
            serde_json::Value::String(id.to_owned()),
        ));
    }
    GuestLine {
        body: line.to_owned(),
        attributes,
        severity: None,
    }
}

/// A console line as an OTLP log record carrying the VM id and the VM's trace id.
pub(crate) fn console_log_record(
    vm_id: &str,
    trace_id: Option<TraceId>,
    line: &str,
    time_unix_nano: u64,
) -> LogRecord {
    let parsed = parse_guest_line(line);
    let (severity_number, severity_text) =
        parsed.severity.unwrap_or((SeverityNumber::Info, "INFO"));
    let mut attributes: Vec<KeyValue> = vec![kv_str("sakshi.vm.id", vm_id)];
    attributes.extend(parsed.attributes.iter().map(|(k, v)| kv(k, json_value(v))));
    LogRecord {
        time_unix_nano,
        observed_time_unix_nano: time_unix_nano,
        severity_number: severity_number as i32,
        severity_text: severity_text.to_owned(),
        body: Some(string(parsed.body)),
        attributes,
        trace_id: trace_id.map(|t| t.to_bytes().to_vec()).unwrap_or_default(),
        flags: u32::from(trace_id.is_some()),
        event_name: "vm.console".to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limiter_allows_bursts_then_the_rate_per_vm() {
        let mut l = ConsoleLimiter::new(10, 5);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| l.allow("a", t0)).count(), 5);
        assert!(l.allow("b", t0), "VMs have separate buckets");
        assert!(!l.allow("a", t0 + Duration::from_millis(50)));
        assert!(l.allow("a", t0 + Duration::from_millis(110)));
        assert_eq!(
            (0..20)
                .filter(|_| l.allow("a", t0 + Duration::from_secs(60)))
                .count(),
            5
        );
    }

    #[test]
    fn json_lines_become_attributes() {
        let g =
            parse_guest_line(r#"{"level":"warn","msg":"disk slow","latency_ms":12,"dev":"vda"}"#);
        assert_eq!(g.body, "disk slow");
        assert_eq!(g.severity, Some((SeverityNumber::Warn, "WARN")));
        assert!(
            g.attributes
                .contains(&("guest.latency_ms".into(), serde_json::json!(12)))
        );
        assert!(
            g.attributes
                .contains(&("guest.dev".into(), serde_json::json!("vda")))
        );
        assert_eq!(g.attributes.len(), 2);
    }

    #[test]
    fn hostile_lines_are_bounded() {
        let many: serde_json::Map<_, _> = (0..100)
            .map(|i| (format!("k{i}"), serde_json::json!(i)))
            .collect();
        let g = parse_guest_line(&serde_json::Value::Object(many).to_string());
        assert_eq!(g.attributes.len(), MAX_GUEST_ATTRS);
        let long = "x".repeat(MAX_LINE_BYTES * 2);
        assert_eq!(parse_guest_line(&long).body.len(), MAX_LINE_BYTES);
        assert_eq!(parse_guest_line("{not json").body, "{not json");
    }

    #[test]
    fn trace_line_and_record_carry_the_vm_trace() {
        let id: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let r = console_log_record(
            "vm-1",
            Some(id),
            "trace: 4bf92f3577b34da6a3ce929d0e0e4736\n",
            5,
        );
        assert_eq!(r.trace_id, id.to_bytes().to_vec());
        let keys: Vec<_> = r.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["sakshi.vm.id", "sakshi.guest.trace_id"]);
        assert!(parse_guest_line("trace: nothex").attributes.is_empty());
    }
}
