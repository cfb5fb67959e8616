//! The events Sakshi measures, and their canonical bytes.
//!
//! Every Sakshi event is a TCG PC Client `EV_EVENT_TAG` event whose event data is a
//! `TCG_PCClientTaggedEvent`: `taggedEventID` (u32, little-endian), `taggedEventDataSize`
//! (u32, little-endian), then the tagged data, a compact JSON object. The digest extended into
//! each PCR bank is that bank's hash of the whole event data, so the digest commits to the
//! VM id and boot number as well as to the measured image digest, and any log tool can check
//! a record's digest against its data.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// TCG PC Client event type `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// TCG PC Client event type `EV_NO_ACTION` (used by the binary log's Spec ID header).
pub const EV_NO_ACTION: u32 = 0x0000_0003;

/// Longest VM id accepted in an event.
pub const MAX_VM_ID_LEN: usize = 128;

const TAG_KERNEL: u32 = 0x534b_0001;
const TAG_INITRD: u32 = 0x534b_0002;
const TAG_CMDLINE: u32 = 0x534b_0003;
const TAG_CONFIG: u32 = 0x534b_0004;
const TAG_AUDIT_CHECKPOINT: u32 = 0x534b_0010;

/// What part of a VM boot an event measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootComponent {
    /// The kernel image.
    Kernel,
    /// The initial ramdisk.
    Initrd,
    /// The kernel command line (its UTF-8 bytes).
    Cmdline,
    /// The canonical VM configuration.
    Config,
}

impl BootComponent {
    fn tag(self) -> u32 {
        match self {
            BootComponent::Kernel => TAG_KERNEL,
            BootComponent::Initrd => TAG_INITRD,
            BootComponent::Cmdline => TAG_CMDLINE,
            BootComponent::Config => TAG_CONFIG,
        }
    }

    /// A short lowercase name (`kernel`, `initrd`, `cmdline`, `config`).
    pub fn name(self) -> &'static str {
        match self {
            BootComponent::Kernel => "kernel",
            BootComponent::Initrd => "initrd",
            BootComponent::Cmdline => "cmdline",
            BootComponent::Config => "config",
        }
    }
}

/// One measured event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MeasuredEvent {
    /// A part of a VM boot.
    Boot {
        /// Which part.
        component: BootComponent,
        /// The VM.
        vm_id: String,
        /// The record number of the boot's first event; groups the events of one boot.
        boot: u64,
        /// SHA-256 of the measured bytes.
        sha256: Sha256Digest,
    },
    /// An audit-log checkpoint, so that a quote binds the audit log head.
    AuditCheckpoint {
        /// The Merkle tree size the checkpoint commits to.
        tree_size: u64,
        /// The checkpoint hash.
        checkpoint_sha256: Sha256Digest,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootPayload<'a> {
    vm: std::borrow::Cow<'a, str>,
    boot: u64,
    sha256: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointPayload {
    tree_size: u64,
    sha256: Sha256Digest,
}

/// Why an event record is not a Sakshi event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventDecodeError {
    /// The event type is not `EV_EVENT_TAG`.
    #[error("event type {0:#010x} is not a Sakshi event type")]
    UnknownEventType(u32),
    /// The tagged event is shorter than its header or its declared size.
    #[error("tagged event is truncated")]
    Truncated,
    /// Bytes follow the tagged event.
    #[error("{0} trailing bytes after the tagged event")]
    TrailingBytes(usize),
    /// The tagged event id is not one Sakshi defines.
    #[error("tagged event id {0:#010x} is not a Sakshi event")]
    UnknownTag(u32),
    /// The tagged data is not the JSON object this tag requires.
    #[error("tagged event data is malformed")]
    Payload(#[source] std::sync::Arc<serde_json::Error>),
    /// The VM id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid VM id")]
    BadVmId,
}

/// A VM id is 1..=128 characters from `[A-Za-z0-9._:-]`.
pub fn is_valid_vm_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_VM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl MeasuredEvent {
    /// The TCG event type of every Sakshi event (`EV_EVENT_TAG`).
    pub fn event_type(&self) -> u32 {
        EV_EVENT_TAG
    }

    /// The canonical event data (a `TCG_PCClientTaggedEvent`), the bytes every bank hashes.
    pub fn event_data(&self) -> Vec<u8> {
        let (tag, payload) = match self {
            MeasuredEvent::Boot {
                component,
                vm_id,
                boot,
                sha256,
            } => (
                component.tag(),
                serde_json::to_vec(&BootPayload {
                    vm: vm_id.as_str().into(),
                    boot: *boot,
                    sha256: *sha256,
                }),
            ),
            MeasuredEvent::AuditCheckpoint {
                tree_size,
                checkpoint_sha256,
            } => (
                TAG_AUDIT_CHECKPOINT,
                serde_json::to_vec(&CheckpointPayload {
                    tree_size: *tree_size,
                    sha256: *checkpoint_sha256,
                }),
            ),
        };
        // Serializing these plain structs cannot fail.
        let payload = payload.unwrap_or_default();
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decode a record's event type and data.
    pub fn decode(event_type: u32, data: &[u8]) -> Result<Self, EventDecodeError> {
        if event_type != EV_EVENT_TAG {
            return Err(EventDecodeError::UnknownEventType(event_type));
        }
        let (tag, rest) = read_u32_le(data)?;
        let (size, rest) = read_u32_le(rest)?;
        let size = size as usize;
        if rest.len() < size {
            return Err(EventDecodeError::Truncated);
        }
        if rest.len() > size {
            return Err(EventDecodeError::TrailingBytes(rest.len() - size));
        }
        let payload_err = |e| EventDecodeError::Payload(std::sync::Arc::new(e));
        let component = match tag {
            TAG_KERNEL => BootComponent::Kernel,
            TAG_INITRD => BootComponent::Initrd,
            TAG_CMDLINE => BootComponent::Cmdline,
            TAG_CONFIG => BootComponent::Config,
            TAG_AUDIT_CHECKPOINT => {
                let p: CheckpointPayload = serde_json::from_slice(rest).map_err(payload_err)?;
                return Ok(MeasuredEvent::AuditCheckpoint {
                    tree_size: p.tree_size,
                    checkpoint_sha256: p.sha256,
                });
            }
            other => return Err(EventDecodeError::UnknownTag(other)),
        };
        let p: BootPayload<'_> = serde_json::from_slice(rest).map_err(payload_err)?;
        if !is_valid_vm_id(&p.vm) {
            return Err(EventDecodeError::BadVmId);
        }
        Ok(MeasuredEvent::Boot {
            component,
            vm_id: p.vm.into_owned(),
            boot: p.boot,
            sha256: p.sha256,
        })
    }
}

fn read_u32_le(b: &[u8]) -> Result<(u32, &[u8]), EventDecodeError> {
    match b.split_first_chunk::<4>() {
        Some((head, rest)) => Ok((u32::from_le_bytes(*head), rest)),
        None => Err(EventDecodeError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_event() -> MeasuredEvent {
        MeasuredEvent::Boot {
            component: BootComponent::Kernel,
            vm_id: "vm-1".into(),
            boot: 7,
            sha256: Sha256Digest::of(b"kernel"),
        }
    }

    #[test]
    fn events_round_trip_through_their_bytes() {
        let cp = MeasuredEvent::AuditCheckpoint {
            tree_size: 42,
            checkpoint_sha256: Sha256Digest::of(b"cp"),
        };
        for ev in [boot_event(), cp] {
            let data = ev.event_data();
            assert_eq!(MeasuredEvent::decode(ev.event_type(), &data).unwrap(), ev);
        }
    }

    #[test]
    fn event_data_layout_is_a_tagged_event() {
        let data = boot_event().event_data();
        assert_eq!(&data[..4], &TAG_KERNEL.to_le_bytes());
        let len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
        assert_eq!(len, data.len() - 8);
        let json: serde_json::Value = serde_json::from_slice(&data[8..]).unwrap();
        assert_eq!(json["vm"], "vm-1");
        assert_eq!(json["boot"], 7);
    }

    #[test]
    fn decode_rejects_bad_input_with_typed_errors() {
        let data = boot_event().event_data();
        assert!(matches!(
            MeasuredEvent::decode(5, &data),
            Err(EventDecodeError::UnknownEventType(5))
        ));
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &data[..6]),
            Err(EventDecodeError::Truncated)
        ));
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &data[..data.len() - 1]),
            Err(EventDecodeError::Truncated)
        ));
        let mut long = data.clone();
        long.push(b' ');
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &long),
            Err(EventDecodeError::TrailingBytes(1))
        ));
        let mut other_tag = data.clone();
        other_tag[..4].copy_from_slice(&0x1234u32.to_le_bytes());
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &other_tag),
            Err(EventDecodeError::UnknownTag(0x1234))
        ));
        let payload = br#"{"vm":"a b","boot":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        let mut bad_vm = TAG_INITRD.to_le_bytes().to_vec();
        bad_vm.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bad_vm.extend_from_slice(payload);
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &bad_vm),
            Err(EventDecodeError::BadVmId)
        ));
        let extra = br#"{"vm":"a","boot":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","x":1}"#;
        let mut unknown_field = TAG_INITRD.to_le_bytes().to_vec();
        unknown_field.extend_from_slice(&(extra.len() as u32).to_le_bytes());
        unknown_field.extend_from_slice(extra);
        assert!(matches!(
            MeasuredEvent::decode(EV_EVENT_TAG, &unknown_field),
            Err(EventDecodeError::Payload(_))
        ));
    }

    #[test]
    fn vm_id_rules() {
        assert!(is_valid_vm_id("0190f6a2-7c1e-7d2b-9a51-3c2f4e5d6a7b"));
        assert!(!is_valid_vm_id(""));
        assert!(!is_valid_vm_id("a/b"));
        assert!(!is_valid_vm_id(&"a".repeat(MAX_VM_ID_LEN + 1)));
    }
}
