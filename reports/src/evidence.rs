//! The evidence controls are evaluated on, apart from the audit entries themselves: period,
//! inventory, time synchronisation, retention, data location, SIEM delivery, log integrity and
//! attestation summaries. These are plain serde structs; the appliance (web/host) fills in the
//! ones it knows about and leaves the rest `None`, which rules report as "needs review".

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::patch::PatchRecord;
use crate::stats::EntryStats;

/// A half-open time range `[from, to)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPeriod", into = "RawPeriod")]
pub struct Period {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl TryFrom<RawPeriod> for Period {
    type Error = PeriodError;
    fn try_from(r: RawPeriod) -> Result<Self, PeriodError> {
        Period::new(r.from, r.to)
    }
}

impl From<Period> for RawPeriod {
    fn from(p: Period) -> Self {
        RawPeriod {
            from: p.from,
            to: p.to,
        }
    }
}

/// A period whose end is not after its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period end {to} is not after its start {from}")]
pub struct PeriodError {
    /// Start.
    pub from: DateTime<Utc>,
    /// End.
    pub to: DateTime<Utc>,
}

impl Period {
    /// `[from, to)`; `to` must be after `from`.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, PeriodError> {
        if to <= from {
            return Err(PeriodError { from, to });
        }
        Ok(Period { from, to })
    }

    /// Start (inclusive).
    pub fn from(&self) -> DateTime<Utc> {
        self.from
    }

    /// End (exclusive).
    pub fn to(&self) -> DateTime<Utc> {
        self.to
    }

    /// True when `t` is inside the period.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }

    /// A compact form for file names: `20261101T000000Z-20261201T000000Z`.
    pub fn file_stem(&self) -> String {
        format!(
            "{}-{}",
            self.from.format("%Y%m%dT%H%M%SZ"),
            self.to.format("%Y%m%dT%H%M%SZ")
        )
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.from.to_rfc3339(), self.to.to_rfc3339())
    }
}

/// One micro-VM in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    /// VM id.
    pub id: String,
    /// Lifecycle state at export time (`running`, `stopped`, ...).
    pub state: String,
    /// Kernel image digest (`sha256:...`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_sha256: Option<String>,
    /// Initrd digest, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_sha256: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Labels (e.g. `function`, `tenant`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The state of time synchronisation when the bundle was made (e.g. from `chronyc tracking`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSync {
    /// When this was collected.
    pub collected_at: DateTime<Utc>,
    /// Which daemon reported it (`chrony`, `systemd-timesyncd`, ...).
    pub daemon: String,
    /// True when the daemon reports the clock synchronised.
    pub synchronized: bool,
    /// The source currently selected (host name or address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_source: Option<String>,
    /// Every configured source.
    #[serde(default)]
    pub configured_sources: Vec<String>,
    /// Offset from the reference, milliseconds (absolute value is compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<f64>,
    /// Stratum of the local clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratum: Option<u32>,
    /// The raw daemon output, for the auditor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Retention configuration and state of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionStatus {
    /// When this was collected.
    pub collected_at: DateTime<Utc>,
    /// Days kept hot (immediately queryable).
    pub online_days: u32,
    /// Days kept in total (hot plus archive segments).
    pub total_days: u32,
    /// Time of the oldest entry still queryable, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_online: Option<DateTime<Utc>>,
    /// Time of the oldest entry retained anywhere (hot or archive), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_retained: Option<DateTime<Utc>>,
    /// When the log was created (the appliance's first start).
    pub log_created: DateTime<Utc>,
}

/// One place data is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageLocation {
    /// What is stored there (`audit log`, `archive segments`, `SIEM`, `backups`, ...).
    pub what: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Site, region or data centre.
    pub site: String,
}

/// The operator's data-location statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLocation {
    /// Every storage location.
    pub locations: Vec<StorageLocation>,
    /// Who declared it (name, role).
    pub declared_by: String,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
}

/// Delivery of the audit log to the SIEM at export time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemStatus {
    /// When this was collected.
    pub collected_at: DateTime<Utc>,
    /// The receiver (URL without credentials).
    pub endpoint: String,
    /// Entries the receiver acknowledged: `[0, acked_size)`.
    pub acked_size: u64,
    /// Entries in the log at collection time.
    pub log_size: u64,
    /// Time of the oldest entry not yet acknowledged, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacked: Option<DateTime<Utc>>,
}

/// What verifying the log for the period showed (filled by the exporter and the verifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogIntegrity {
    /// Problems found; empty when everything verified.
    pub problems: Vec<String>,
    /// First sequence number of the period.
    pub start: u64,
    /// One past the last sequence number of the period.
    pub end: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Largest gap between consecutive checkpoints in the period (and its edges), seconds.
    pub max_checkpoint_gap_secs: u64,
    /// Tree size of the previous bundle's checkpoint when a consistency proof from it was
    /// checked, `None` when there was no previous bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_from: Option<u64>,
}

/// What verifying the TPM quote showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSummary {
    /// True when the quote, its nonce and the event-log replay verified.
    pub verified: bool,
    /// Why it did not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True for a software TPM (no hardware root of trust).
    pub software_tpm: bool,
    /// Appraisal findings against the golden values.
    pub findings: Vec<String>,
    /// VM boots in the event log.
    pub vm_boots: u64,
}

/// Everything a catalog is evaluated against. `None` means "not available": rules that need
/// it return needs-review and say which evidence is missing.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The period.
    pub period: Period,
    /// Statistics over the period's audit entries.
    pub entries: Option<EntryStats>,
    /// Log verification result.
    pub log: Option<LogIntegrity>,
    /// Quote verification result.
    pub attestation: Option<AttestationSummary>,
    /// VM inventory.
    pub inventory: Option<Vec<VmRecord>>,
    /// Patch ledger (all records known at export time).
    pub patches: Option<Vec<PatchRecord>>,
    /// Time synchronisation.
    pub time_sync: Option<TimeSync>,
    /// Retention.
    pub retention: Option<RetentionStatus>,
    /// Data location.
    pub location: Option<DataLocation>,
    /// SIEM delivery.
    pub siem: Option<SiemStatus>,
}

impl Evidence {
    /// Evidence for `period` with nothing available yet.
    pub fn new(period: Period) -> Self {
        Evidence {
            period,
            entries: None,
            log: None,
            attestation: None,
            inventory: None,
            patches: None,
            time_sync: None,
            retention: None,
            location: None,
            siem: None,
        }
    }
}
