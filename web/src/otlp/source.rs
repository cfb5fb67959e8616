//! The narrow port the shipper reads the audit log through, and the delivery events it writes back.

use std::error::Error as StdError;

/// One audit entry as the shipper exports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// The entry's sequence number (its leaf index; dense, from 0).
    pub seq: u64,
    /// A stable, globally unique id of the entry (exported as `log.record.uid`).
    pub uid: String,
    /// When the log accepted the entry, UTC nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Dotted action, e.g. `vm.create` (exported as the record's EventName).
    pub action: String,
    /// Who did it, e.g. `user:alice`.
    pub actor: String,
    /// From where, e.g. a client address or `internal`.
    pub origin: String,
    /// On what, e.g. `vm:vm-1`.
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Why it failed, when it did.
    pub outcome_reason: Option<String>,
    /// Details (a JSON object or null).
    pub details: serde_json::Value,
    /// The request's trace id.
    pub trace_id: Option<[u8; 16]>,
    /// The span that appended the entry, when known.
    pub span_id: Option<[u8; 8]>,
    /// The micro-VM the entry is about.
    pub vm_id: Option<String>,
    /// The supervisor's per-VM sequence number.
    pub vm_seq: Option<u64>,
    /// The entry's hash (lowercase hex).
    pub hash: String,
}

/// Reading from (or appending to) the audit log failed.
#[derive(Debug, thiserror::Error)]
#[error("audit log access failed")]
pub struct SourceError(#[source] pub Box<dyn StdError + Send + Sync>);

/// The audit log as the shipper sees it. Calls may block (SQLite); the shipper makes them from a
/// blocking thread.
pub trait AuditSource: Send + Sync + 'static {
    /// Up to `limit` entries with `seq >= from`, in increasing `seq` order.
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, SourceError>;

    /// The sequence number the next append will get (the number of entries ever appended).
    fn next_seq(&self) -> Result<u64, SourceError>;

    /// Append an audit entry (action `siem.delivery`) describing a delivery problem or recovery.
    fn record_delivery(&self, event: &DeliveryEvent) -> Result<(), SourceError>;
}

/// A change in SIEM delivery that is itself audited (PCI-DSS 10.7: failures of critical security
/// controls, here the logging one, are detected, reported and responded to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// Exports started failing (the first failure after a success or at start).
    Failing {
        /// The export error, rendered with its causes.
        error: String,
        /// The first sequence number not yet acknowledged.
        next_seq: u64,
    },
    /// The PCI 10.7 "logging failure" state was raised.
    AlarmRaised {
        /// Why: the lag or the failure duration passed the threshold.
        reason: String,
        /// Age of the oldest unshipped entry, seconds.
        lag_secs: u64,
        /// Entries waiting to be shipped.
        pending: u64,
    },
    /// Exports succeed again after failures (and the alarm, if raised, is cleared).
    Recovered {
        /// How long delivery was failing, seconds.
        failed_for_secs: u64,
        /// Whether the logging-failure alarm had been raised.
        alarm_was_raised: bool,
    },
}

impl DeliveryEvent {
    /// True for events that report a problem (audited with a failure outcome).
    pub fn is_failure(&self) -> bool {
        !matches!(self, DeliveryEvent::Recovered { .. })
    }

    /// A short name: `failing`, `alarm_raised` or `recovered`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryEvent::Failing { .. } => "failing",
            DeliveryEvent::AlarmRaised { .. } => "alarm_raised",
            DeliveryEvent::Recovered { .. } => "recovered",
        }
    }

    /// The event as an audit-details JSON object.
    pub fn details(&self) -> serde_json::Value {
        match self {
            DeliveryEvent::Failing { error, next_seq } => serde_json::json!({
                "event": self.kind(), "error": error, "next_seq": next_seq,
            }),
            DeliveryEvent::AlarmRaised {
                reason,
                lag_secs,
                pending,
            } => serde_json::json!({
                "event": self.kind(), "reason": reason, "lag_secs": lag_secs, "pending": pending,
                "control": "PCI-DSS 10.7",
            }),
            DeliveryEvent::Recovered {
                failed_for_secs,
                alarm_was_raised,
            } => serde_json::json!({
                "event": self.kind(), "failed_for_secs": failed_for_secs,
                "alarm_was_raised": alarm_was_raised,
            }),
        }
    }
}
