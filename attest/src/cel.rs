//! The measurement log in TCG Canonical Event Log form (CEL-JSON).
//!
//! Each record is `{"recnum", "pcr", "digests": [{"hashAlg", "digest"}], "content_type":
//! "pcclient_std", "content": {"event_type", "event_data"}}` with hex digests and hex event
//! data, as in the CEL v1.0 JSON encoding. Record numbers start at 0 and increase by one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::HashAlg;
use crate::event::MeasuredEvent;

/// Largest CEL-JSON document accepted (64 MiB).
pub const MAX_CEL_JSON_LEN: usize = 64 << 20;
/// Largest event data accepted in one record (64 KiB).
pub const MAX_EVENT_DATA_LEN: usize = 64 << 10;

/// One digest of a record, for one PCR bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrDigest {
    /// The bank.
    pub alg: HashAlg,
    /// The digest (`alg.digest_len()` bytes).
    pub digest: Vec<u8>,
}

/// One log record: an extend of `pcr` in every bank, with the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelRecord {
    /// Record number (0-based, consecutive).
    pub recnum: u64,
    /// The PCR extended.
    pub pcr: u32,
    /// One digest per bank, in bank order.
    pub digests: Vec<PcrDigest>,
    /// TCG PC Client event type.
    pub event_type: u32,
    /// The event data (for Sakshi events, [`MeasuredEvent::event_data`]).
    pub event_data: Vec<u8>,
}

impl CelRecord {
    /// The record for `event` at position `recnum`, with a digest for every bank in `banks`.
    pub fn build(recnum: u64, pcr: u32, banks: &[HashAlg], event: &MeasuredEvent) -> CelRecord {
        let data = event.event_data();
        CelRecord {
            recnum,
            pcr,
            digests: banks
                .iter()
                .map(|&alg| PcrDigest {
                    alg,
                    digest: alg.digest(&data),
                })
                .collect(),
            event_type: event.event_type(),
            event_data: data,
        }
    }

    /// The digest for `alg`, if the record has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg == alg)
            .map(|d| d.digest.as_slice())
    }

    /// Decode the event as a Sakshi event.
    pub fn event(&self) -> Result<MeasuredEvent, crate::event::EventDecodeError> {
        MeasuredEvent::decode(self.event_type, &self.event_data)
    }
}

/// A measurement log: the records in extend order. Cloning is cheap (records are shared), so a
/// quote can carry a snapshot of a long log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    records: Vec<Arc<CelRecord>>,
}

/// Why a CEL-JSON document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CelParseError {
    /// The document is larger than [`MAX_CEL_JSON_LEN`].
    #[error("CEL-JSON document is larger than {MAX_CEL_JSON_LEN} bytes")]
    TooLarge,
    /// Not JSON, or not an array of records with the CEL-JSON fields.
    #[error("CEL-JSON document is malformed")]
    Json(#[source] serde_json::Error),
    /// A record number is out of sequence.
    #[error("record {index} has recnum {found}, expected {index}")]
    Recnum {
        /// Position in the array.
        index: usize,
        /// The recnum it carries.
        found: u64,
    },
    /// The content type is not `pcclient_std`.
    #[error("record {recnum}: content type {content_type:?} is not supported")]
    ContentType {
        /// The record.
        recnum: u64,
        /// Its content type.
        content_type: String,
    },
    /// An event type name is not a TCG PC Client event type.
    #[error("record {recnum}: unknown event type name {name:?}")]
    EventTypeName {
        /// The record.
        recnum: u64,
        /// The name.
        name: String,
    },
    /// A hash algorithm is unknown, repeated, or its digest has the wrong length or is not hex.
    #[error("record {recnum}: bad digest for {alg:?}")]
    Digest {
        /// The record.
        recnum: u64,
        /// The algorithm name as written.
        alg: String,
    },
    /// Records do not all carry digests for the same banks, or a record carries none.
    #[error("record {recnum}: digests do not cover the same banks as record 0")]
    Banks {
        /// The record.
        recnum: u64,
    },
    /// Event data is not hex or is larger than [`MAX_EVENT_DATA_LEN`].
    #[error("record {recnum}: bad event data")]
    EventData {
        /// The record.
        recnum: u64,
    },
    /// The PCR index is above 31.
    #[error("record {recnum}: PCR index {pcr} out of range")]
    Pcr {
        /// The record.
        recnum: u64,
        /// The index.
        pcr: u32,
    },
}

// --- CEL-JSON wire structs ---

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    recnum: u64,
    pcr: u32,
    digests: Vec<JsonDigest>,
    content_type: String,
    content: JsonContent,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDigest {
    #[serde(rename = "hashAlg")]
    hash_alg: String,
    digest: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonContent {
    event_type: JsonEventType,
    event_data: String,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonEventType {
    Code(u32),
    Name(String),
}

/// TCG PC Client event type names (PC Client Platform Firmware Profile, table 9).
const EVENT_TYPE_NAMES: &[(u32, &str)] = &[
    (0x0, "EV_PREBOOT_CERT"),
    (0x1, "EV_POST_CODE"),
    (0x2, "EV_UNUSED"),
    (0x3, "EV_NO_ACTION"),
    (0x4, "EV_SEPARATOR"),
    (0x5, "EV_ACTION"),
    (0x6, "EV_EVENT_TAG"),
    (0x7, "EV_S_CRTM_CONTENTS"),
    (0x8, "EV_S_CRTM_VERSION"),
    (0x9, "EV_CPU_MICROCODE"),
    (0xa, "EV_PLATFORM_CONFIG_FLAGS"),
    (0xb, "EV_TABLE_OF_DEVICES"),
    (0xc, "EV_COMPACT_HASH"),
    (0xd, "EV_IPL"),
    (0xe, "EV_IPL_PARTITION_DATA"),
    (0xf, "EV_NONHOST_CODE"),
    (0x10, "EV_NONHOST_CONFIG"),
    (0x11, "EV_NONHOST_INFO"),
    (0x12, "EV_OMIT_BOOT_DEVICE_EVENTS"),
];

fn event_type_name(code: u32) -> Option<&'static str> {
    EVENT_TYPE_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
}

fn event_type_code(name: &str) -> Option<u32> {
    EVENT_TYPE_NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(c, _)| *c)
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The records in order.
    pub fn records(&self) -> &[Arc<CelRecord>] {
        &self.records
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The banks every record carries a digest for (empty for an empty log).
    pub fn banks(&self) -> Vec<HashAlg> {
        self.records
            .first()
            .map(|r| r.digests.iter().map(|d| d.alg).collect())
            .unwrap_or_default()
    }

    /// Build the record `event` would produce as the next record of this log (digests for
    /// every bank in `banks`), without appending it.
    pub fn next_record(&self, pcr: u32, banks: &[HashAlg], event: &MeasuredEvent) -> CelRecord {
        CelRecord::build(self.records.len() as u64, pcr, banks, event)
    }

    /// Append a record built by [`EventLog::next_record`]. Its recnum must be the next one.
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub(crate) fn push(&mut self, record: CelRecord) {
        debug_assert_eq!(record.recnum, self.records.len() as u64);
        self.records.push(Arc::new(record));
    }

    /// Keep only the first `len` records.
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub(crate) fn truncate(&mut self, len: usize) {
        self.records.truncate(len);
    }

    /// Append `event` as the next record for `pcr`, with a digest for every bank in `banks`.
    /// Returns the new record.
    pub fn append(&mut self, pcr: u32, banks: &[HashAlg], event: &MeasuredEvent) -> &CelRecord {
        let record = self.next_record(pcr, banks, event);
        self.records.push(Arc::new(record));
        &self.records[self.records.len() - 1]
    }

    /// The value `pcr` has in bank `alg` after replaying the first `upto` records from the
    /// PCR's initial value. `None` when a record of that PCR lacks a digest for `alg`.
    pub fn replay_prefix(&self, pcr: u32, alg: HashAlg, upto: usize) -> Option<Vec<u8>> {
        let mut value = alg.pcr_initial_value(pcr);
        for r in self.records.iter().take(upto).filter(|r| r.pcr == pcr) {
            value = alg.extend(&value, r.digest(alg)?);
        }
        Some(value)
    }

    /// The value `pcr` has in bank `alg` after replaying every record.
    pub fn replay(&self, pcr: u32, alg: HashAlg) -> Option<Vec<u8>> {
        self.replay_prefix(pcr, alg, self.records.len())
    }

    /// The log as a CEL-JSON array (one record per line).
    pub fn to_cel_json(&self) -> String {
        let mut out = String::from("[\n");
        for (i, r) in self.records.iter().enumerate() {
            out.push_str(&record_to_json_line(r));
            out.push_str(if i + 1 < self.records.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        out.push_str("]\n");
        out
    }

    /// Parse a CEL-JSON array, checking record numbers, digests and banks.
    pub fn from_cel_json(text: &[u8]) -> Result<Self, CelParseError> {
        if text.len() > MAX_CEL_JSON_LEN {
            return Err(CelParseError::TooLarge);
        }
        let raw: Vec<JsonRecord> = serde_json::from_slice(text).map_err(CelParseError::Json)?;
        let mut log = EventLog::new();
        for (index, jr) in raw.into_iter().enumerate() {
            let rec = record_from_json(jr)?;
            log.check_and_push(index, rec)?;
        }
        Ok(log)
    }

    /// Check sequence and banks, then push (used by parsers).
    pub(crate) fn check_and_push(
        &mut self,
        index: usize,
        rec: CelRecord,
    ) -> Result<(), CelParseError> {
        if rec.recnum != index as u64 {
            return Err(CelParseError::Recnum {
                index,
                found: rec.recnum,
            });
        }
        let banks: Vec<HashAlg> = rec.digests.iter().map(|d| d.alg).collect();
        if banks.is_empty() || (!self.records.is_empty() && banks != self.banks()) {
            return Err(CelParseError::Banks { recnum: rec.recnum });
        }
        self.records.push(Arc::new(rec));
        Ok(())
    }
}

/// One record as a single-line CEL-JSON object.
pub(crate) fn record_to_json_line(r: &CelRecord) -> String {
    // A struct of strings and integers always serializes.
    serde_json::to_string(&json_record(r)).unwrap_or_default()
}

fn json_record(r: &CelRecord) -> JsonRecord {
    JsonRecord {
        recnum: r.recnum,
        pcr: r.pcr,
        digests: r
            .digests
            .iter()
            .map(|d| JsonDigest {
                hash_alg: d.alg.name().to_owned(),
                digest: hex::encode(&d.digest),
            })
            .collect(),
        content_type: "pcclient_std".to_owned(),
        content: JsonContent {
            event_type: match event_type_name(r.event_type) {
                Some(n) => JsonEventType::Name(n.to_owned()),
                None => JsonEventType::Code(r.event_type),
            },
            event_data: hex::encode(&r.event_data),
        },
    }
}

/// Serializes as the CEL-JSON array (the same records as [`EventLog::to_cel_json`]).
impl Serialize for EventLog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.records.iter().map(|r| json_record(r)))
    }
}

/// Parse one single-line CEL-JSON record (used by the on-disk journal).
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
pub(crate) fn record_from_json_line(line: &[u8]) -> Result<CelRecord, CelParseError> {
    let jr: JsonRecord = serde_json::from_slice(line).map_err(CelParseError::Json)?;
    record_from_json(jr)
}

fn record_from_json(jr: JsonRecord) -> Result<CelRecord, CelParseError> {
    let recnum = jr.recnum;
    if jr.content_type != "pcclient_std" {
        return Err(CelParseError::ContentType {
            recnum,
            content_type: jr.content_type,
        });
    }
    if jr.pcr > 31 {
        return Err(CelParseError::Pcr {
            recnum,
            pcr: jr.pcr,
        });
    }
    let mut digests: Vec<PcrDigest> = Vec::with_capacity(jr.digests.len());
    for d in jr.digests {
        let bad = || CelParseError::Digest {
            recnum,
            alg: d.hash_alg.clone(),
        };
        let alg = HashAlg::from_name(&d.hash_alg).ok_or_else(bad)?;
        let digest = hex::decode(&d.digest).map_err(|_| bad())?;
        if digest.len() != alg.digest_len() || digests.iter().any(|x| x.alg == alg) {
            return Err(bad());
        }
        digests.push(PcrDigest { alg, digest });
    }
    let event_type = match jr.content.event_type {
        JsonEventType::Code(c) => c,
        JsonEventType::Name(name) => {
            event_type_code(&name).ok_or(CelParseError::EventTypeName { recnum, name })?
        }
    };
    if jr.content.event_data.len() > 2 * MAX_EVENT_DATA_LEN {
        return Err(CelParseError::EventData { recnum });
    }
    let event_data =
        hex::decode(&jr.content.event_data).map_err(|_| CelParseError::EventData { recnum })?;
    Ok(CelRecord {
        recnum,
        pcr: jr.pcr,
        digests,
        event_type,
        event_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::event::BootComponent;

    pub(crate) fn sample_log() -> EventLog {
        let mut log = EventLog::new();
        let banks = [HashAlg::Sha1, HashAlg::Sha256];
        for (i, c) in [
            BootComponent::Kernel,
            BootComponent::Cmdline,
            BootComponent::Config,
        ]
        .into_iter()
        .enumerate()
        {
            log.append(
                16,
                &banks,
                &MeasuredEvent::Boot {
                    component: c,
                    vm_id: "vm-a".into(),
                    boot: 0,
                    sha256: Sha256Digest::of(&[i as u8]),
                },
            );
        }
        log.append(
            16,
            &banks,
            &MeasuredEvent::AuditCheckpoint {
                tree_size: 3,
                checkpoint_sha256: Sha256Digest::of(b"head"),
            },
        );
        log
    }

    #[test]
    fn cel_json_round_trips() {
        let log = sample_log();
        let text = log.to_cel_json();
        let back = EventLog::from_cel_json(text.as_bytes()).unwrap();
        assert_eq!(back, log);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&log).unwrap(), v);
        assert_eq!(v[1]["recnum"], 1);
        assert_eq!(v[1]["content_type"], "pcclient_std");
        assert_eq!(v[1]["content"]["event_type"], "EV_EVENT_TAG");
        assert_eq!(v[1]["digests"][1]["hashAlg"], "sha256");
    }

    #[test]
    fn replay_matches_manual_extend_chain() {
        let log = sample_log();
        let mut v = vec![0u8; 32];
        for r in log.records() {
            let d = HashAlg::Sha256.digest(&r.event_data);
            assert_eq!(r.digest(HashAlg::Sha256).unwrap(), d.as_slice());
            v = HashAlg::Sha256.extend(&v, &d);
        }
        assert_eq!(log.replay(16, HashAlg::Sha256).unwrap(), v);
        assert_eq!(log.replay(15, HashAlg::Sha256).unwrap(), vec![0u8; 32]);
        assert_eq!(log.replay(16, HashAlg::Sha384), None);
        assert_ne!(log.replay_prefix(16, HashAlg::Sha256, 3).unwrap(), v);
    }

    #[test]
    fn cel_json_rejects_malformed_records() {
        let log = sample_log();
        let text = log.to_cel_json();
        type Case = (String, fn(&CelParseError) -> bool);
        let cases: Vec<Case> = vec![
            (text.replace("\"recnum\":2", "\"recnum\":5"), |e| {
                matches!(e, CelParseError::Recnum { index: 2, found: 5 })
            }),
            (text.replacen("pcclient_std", "ima_template", 1), |e| {
                matches!(e, CelParseError::ContentType { recnum: 0, .. })
            }),
            (text.replacen("EV_EVENT_TAG", "EV_BOGUS", 1), |e| {
                matches!(e, CelParseError::EventTypeName { .. })
            }),
            (text.replacen("\"sha1\"", "\"md5\"", 1), |e| {
                matches!(e, CelParseError::Digest { recnum: 0, .. })
            }),
            (
                text.replacen("\"recnum\":0,", "\"recnum\":0,\"extra\":1,", 1),
                |e| matches!(e, CelParseError::Json(_)),
            ),
            ("{".to_owned(), |e| matches!(e, CelParseError::Json(_))),
        ];
        for (doc, want) in cases {
            let err = EventLog::from_cel_json(doc.as_bytes()).unwrap_err();
            assert!(want(&err), "unexpected error {err:?}");
        }
        // A record with a sha1 digest of the wrong length.
        let short = text.replacen(
            &hex::encode(log.records()[0].digest(HashAlg::Sha1).unwrap()),
            "00",
            1,
        );
        assert!(matches!(
            EventLog::from_cel_json(short.as_bytes()),
            Err(CelParseError::Digest { recnum: 0, .. })
        ));
        // Banks differ between records.
        let mut other = sample_log();
        Arc::make_mut(&mut other.records[2]).digests.remove(0);
        assert!(matches!(
            EventLog::from_cel_json(other.to_cel_json().as_bytes()),
            Err(CelParseError::Banks { recnum: 2 })
        ));
    }
}
