//! Building OTLP protobuf messages: the resource, attributes, and audit entries as log records.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::OtlpConfig;
use super::source::AuditRecord;

/// The instrumentation scope of exported audit entries.
pub const AUDIT_SCOPE: &str = "sakshi.audit";

/// The `service.name` of every resource Sakshi exports.
pub const SERVICE_NAME: &str = "sakshi";

/// Longest string attribute value exported; longer values are cut at a character boundary.
const MAX_ATTR_BYTES: usize = 8 * 1024;

pub(crate) fn string(v: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(v.into())),
    }
}

pub(crate) fn int(v: i64) -> AnyValue {
    AnyValue {
        value: Some(Value::IntValue(v)),
    }
}

pub(crate) fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

pub(crate) fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, string(value))
}

/// A u64 as an OTLP int (int64); values above `i64::MAX` (never produced by the audit log) saturate.
pub(crate) fn kv_u64(key: &str, value: u64) -> KeyValue {
    kv(key, int(i64::try_from(value).unwrap_or(i64::MAX)))
}

pub(crate) fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ATTR_BYTES {
        let mut cut = MAX_ATTR_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A JSON value as an OTLP AnyValue (objects become kvlists, arrays arrays; numbers stay typed).
pub(crate) fn json_value(v: &serde_json::Value) -> AnyValue {
    let value = match v {
        serde_json::Value::Null => return AnyValue { value: None },
        serde_json::Value::Bool(b) => Value::BoolValue(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::StringValue(truncate(s.clone())),
        serde_json::Value::Array(a) => Value::ArrayValue(ArrayValue {
            values: a.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(o) => Value::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv(k, json_value(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

/// Where the resource attributes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `service.version`.
    pub service_version: String,
    /// `host.id`.
    pub host_id: String,
    /// `host.name`.
    pub host_name: String,
}

impl ResourceInfo {
    /// From the config's overrides, else `/etc/machine-id` and the kernel host name.
    pub fn detect(config: &OtlpConfig) -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        ResourceInfo {
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            host_id: config
                .host_id
                .clone()
                .or_else(|| read("/etc/machine-id"))
                .unwrap_or_else(|| "unknown".to_owned()),
            host_name: config
                .host_name
                .clone()
                .or_else(|| read("/proc/sys/kernel/hostname"))
                .unwrap_or_else(|| "unknown".to_owned()),
        }
    }

    pub(crate) fn resource(&self) -> Resource {
        Resource {
            attributes: vec![
                kv_str("service.name", SERVICE_NAME),
                kv_str("service.version", self.service_version.clone()),
                kv_str("host.id", self.host_id.clone()),
                kv_str("host.name", self.host_name.clone()),
            ],
            ..Default::default()
        }
    }
}

/// Actions whose records are exported at ERROR severity even when they "succeeded" as entries.
const ERROR_ACTIONS: &[&str] = &[
    "vm.failed",
    "audit.witness_failure",
    "attest.failure",
    "image.policy_violation",
];

fn severity(record: &AuditRecord) -> (SeverityNumber, &'static str) {
    if ERROR_ACTIONS.contains(&record.action.as_str()) {
        (SeverityNumber::Error, "ERROR")
    } else if record.outcome == "success" {
        (SeverityNumber::Info, "INFO")
    } else {
        (SeverityNumber::Warn, "WARN")
    }
}

/// One audit entry as an OTLP log record (see `docs/OTLP.md` for the mapping).
pub(crate) fn audit_log_record(record: &AuditRecord, observed_unix_nano: u64) -> LogRecord {
    let (severity_number, severity_text) = severity(record);
    let mut attributes = vec![
        kv_str("log.record.uid", record.uid.clone()),
        kv_u64("sakshi.audit.seq", record.seq),
        kv_str("sakshi.audit.hash", record.hash.clone()),
        kv_str("sakshi.actor", truncate(record.actor.clone())),
        kv_str("sakshi.origin", truncate(record.origin.clone())),
        kv_str("sakshi.outcome", record.outcome.clone()),
    ];
    if let Some(target) = &record.target {
        attributes.push(kv_str("sakshi.target", truncate(target.clone())));
    }
    if let Some(reason) = &record.outcome_reason {
        attributes.push(kv_str("sakshi.outcome.reason", truncate(reason.clone())));
    }
    if let Some(vm) = &record.vm_id {
        attributes.push(kv_str("sakshi.vm.id", truncate(vm.clone())));
    }
    if let Some(vm_seq) = record.vm_seq {
        attributes.push(kv_u64("sakshi.vm.seq", vm_seq));
    }
    if !record.details.is_null() {
        attributes.push(kv("sakshi.details", json_value(&record.details)));
    }
    let mut summary = format!("{} by {}", record.action, record.actor);
    if let Some(target) = &record.target {
        summary.push_str(" on ");
        summary.push_str(target);
    }
    summary.push_str(": ");
    summary.push_str(&record.outcome);
    if let Some(reason) = &record.outcome_reason {
        summary.push_str(" (");
        summary.push_str(reason);
        summary.push(')');
    }
    LogRecord {
        time_unix_nano: record.time_unix_nano,
        observed_time_unix_nano: observed_unix_nano,
        severity_number: severity_number as i32,
        severity_text: severity_text.to_owned(),
        body: Some(string(truncate(summary))),
        attributes,
        trace_id: record.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: record.span_id.map(|s| s.to_vec()).unwrap_or_default(),
        // W3C sampled flag when the record belongs to a trace.
        flags: if record.trace_id.is_some() { 1 } else { 0 },
        event_name: record.action.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 7,
            uid: "uid-7".into(),
            time_unix_nano: 1_700_000_000_000_000_123,
            action: "vm.create".into(),
            actor: "user:alice".into(),
            origin: "192.0.2.7".into(),
            target: Some("vm:vm-1".into()),
            outcome: "failure".into(),
            outcome_reason: Some("image not approved".into()),
            details: serde_json::json!({"kernel_sha256": "ab", "vcpus": 2, "ratio": 0.5}),
            trace_id: Some([0x4b; 16]),
            span_id: Some([0x01; 8]),
            vm_id: Some("vm-1".into()),
            vm_seq: Some(3),
            hash: "deadbeef".into(),
        }
    }

    #[test]
    fn audit_entry_maps_to_log_record() {
        let r = audit_log_record(&record(), 42);
        assert_eq!(r.event_name, "vm.create");
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_123);
        assert_eq!(r.observed_time_unix_nano, 42);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.trace_id, vec![0x4b; 16]);
        assert_eq!(r.span_id, vec![0x01; 8]);
        assert_eq!(
            attr(&r, "log.record.uid"),
            Some(&Value::StringValue("uid-7".into()))
        );
        assert_eq!(attr(&r, "sakshi.audit.seq"), Some(&Value::IntValue(7)));
        assert_eq!(
            attr(&r, "sakshi.vm.id"),
            Some(&Value::StringValue("vm-1".into()))
        );
        assert_eq!(attr(&r, "sakshi.vm.seq"), Some(&Value::IntValue(3)));
        let Some(Value::KvlistValue(details)) = attr(&r, "sakshi.details") else {
            panic!("details are not a kvlist");
        };
        assert_eq!(details.values.len(), 3);
        let body = r.body.and_then(|b| b.value);
        assert_eq!(
            body,
            Some(Value::StringValue(
                "vm.create by user:alice on vm:vm-1: failure (image not approved)".into()
            ))
        );
    }

    #[test]
    fn entries_without_trace_have_empty_ids_and_info_severity() {
        let mut rec = record();
        rec.trace_id = None;
        rec.span_id = None;
        rec.outcome = "success".into();
        rec.outcome_reason = None;
        rec.details = serde_json::Value::Null;
        let r = audit_log_record(&rec, 1);
        assert!(r.trace_id.is_empty() && r.span_id.is_empty());
        assert_eq!(r.flags, 0);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert!(attr(&r, "sakshi.details").is_none());
        rec.action = "vm.failed".into();
        assert_eq!(audit_log_record(&rec, 1).severity_text, "ERROR");
    }

    #[test]
    fn long_strings_are_cut_on_char_boundaries() {
        let s = "é".repeat(MAX_ATTR_BYTES);
        let t = truncate(s);
        assert!(t.len() <= MAX_ATTR_BYTES && t.chars().all(|c| c == 'é'));
    }

    #[test]
    fn resource_carries_service_and_host() {
        let mut c = OtlpConfig::new(
            "http://x:1",
            super::super::config::Protocol::Grpc,
            "/c".into(),
        );
        c.host_id = Some("hid".into());
        c.host_name = Some("appliance-1".into());
        let r = ResourceInfo::detect(&c).resource();
        let keys: Vec<_> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            ["service.name", "service.version", "host.id", "host.name"]
        );
        assert_eq!(r.attributes[3].value, Some(string("appliance-1")));
    }
}
