//! The TCG PC Client crypto-agile binary event log (the format of
//! `/sys/kernel/security/tpm0/binary_bios_measurements`, read by `tpm2_eventlog`).
//!
//! Layout (all integers little-endian): one SHA-1-format `TCG_PCR_EVENT` header of type
//! `EV_NO_ACTION` carrying the `TCG_EfiSpecIDEvent` ("Spec ID Event03", the digest sizes of
//! every bank), then one `TCG_PCR_EVENT2` per record: `pcrIndex`, `eventType`, a
//! `TPML_DIGEST_VALUES` (count, then `hashAlg` + digest per bank), `eventSize`, event data.

use crate::cel::{CelParseError, CelRecord, EventLog, MAX_EVENT_DATA_LEN, PcrDigest};
use crate::digest::HashAlg;
use crate::event::EV_NO_ACTION;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// Why a binary event log was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Tcg2ParseError {
    /// The log ends inside a structure.
    #[error("binary event log truncated at byte {offset}")]
    Truncated {
        /// Where the missing bytes start.
        offset: usize,
    },
    /// The first event is not a Spec ID Event03 header.
    #[error("binary event log does not start with a Spec ID Event03 header")]
    NoSpecIdHeader,
    /// The header names an algorithm Sakshi does not support, or a digest size that does not
    /// match the algorithm.
    #[error("Spec ID header lists unsupported algorithm {alg_id:#06x} (size {size})")]
    UnsupportedAlgorithm {
        /// TPM2_ALG_ID.
        alg_id: u16,
        /// Declared digest size.
        size: u16,
    },
    /// An event's digest list does not match the header's banks.
    #[error("event {index}: digest list does not match the Spec ID banks")]
    Digests {
        /// Event index (0 = first event after the header).
        index: usize,
    },
    /// An event's data is larger than the limit.
    #[error("event {index}: event data larger than {MAX_EVENT_DATA_LEN} bytes")]
    EventTooLarge {
        /// Event index.
        index: usize,
    },
    /// The records do not form a valid log.
    #[error("binary event log records are inconsistent")]
    Records(#[source] CelParseError),
}

impl EventLog {
    /// The log as a TCG PC Client crypto-agile binary log. The Spec ID header lists the log's
    /// banks (SHA-256 alone for an empty log).
    pub fn to_tcg2_binary(&self) -> Vec<u8> {
        let mut banks = self.banks();
        if banks.is_empty() {
            banks.push(HashAlg::Sha256);
        }
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.push(0); // specVersionMinor
        spec.push(2); // specVersionMajor
        spec.push(0); // specErrata
        spec.push(2); // uintnSize: UINT64
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for alg in &banks {
            spec.extend_from_slice(&alg.tpm_alg_id().to_le_bytes());
            spec.extend_from_slice(&(alg.digest_len() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize

        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes()); // pcrIndex
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]); // SHA-1 digest
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);

        for r in self.records() {
            out.extend_from_slice(&r.pcr.to_le_bytes());
            out.extend_from_slice(&r.event_type.to_le_bytes());
            out.extend_from_slice(&(r.digests.len() as u32).to_le_bytes());
            for d in &r.digests {
                out.extend_from_slice(&d.alg.tpm_alg_id().to_le_bytes());
                out.extend_from_slice(&d.digest);
            }
            out.extend_from_slice(&(r.event_data.len() as u32).to_le_bytes());
            out.extend_from_slice(&r.event_data);
        }
        out
    }

    /// Parse a crypto-agile binary log written by [`EventLog::to_tcg2_binary`] (or any log
    /// whose banks Sakshi supports). Records are numbered from 0 in file order.
    pub fn from_tcg2_binary(bytes: &[u8]) -> Result<Self, Tcg2ParseError> {
        let mut c = Cursor { b: bytes, pos: 0 };
        let _pcr = c.u32()?;
        let ty = c.u32()?;
        let _sha1 = c.take(20)?;
        let size = c.u32()? as usize;
        let spec = c.take(size)?;
        if ty != EV_NO_ACTION || spec.len() < 16 || &spec[..16] != SPEC_ID_SIGNATURE {
            return Err(Tcg2ParseError::NoSpecIdHeader);
        }
        let mut s = Cursor { b: spec, pos: 16 };
        let _platform_class = s.u32()?;
        let _ver = s.take(4)?;
        let n = s.u32()? as usize;
        let mut banks = Vec::new();
        for _ in 0..n {
            let alg_id = s.u16()?;
            let size = s.u16()?;
            match HashAlg::from_tpm_alg_id(alg_id) {
                Some(a) if a.digest_len() == size as usize => banks.push(a),
                _ => return Err(Tcg2ParseError::UnsupportedAlgorithm { alg_id, size }),
            }
        }

        let mut log = EventLog::new();
        let mut index = 0usize;
        while c.pos < bytes.len() {
            let pcr = c.u32()?;
            let event_type = c.u32()?;
            let count = c.u32()? as usize;
            if count != banks.len() {
                return Err(Tcg2ParseError::Digests { index });
            }
            let mut digests = Vec::with_capacity(count);
            for _ in 0..count {
                let alg = HashAlg::from_tpm_alg_id(c.u16()?)
                    .filter(|a| banks.contains(a))
                    .ok_or(Tcg2ParseError::Digests { index })?;
                digests.push(PcrDigest {
                    alg,
                    digest: c.take(alg.digest_len())?.to_vec(),
                });
            }
            let size = c.u32()? as usize;
            if size > MAX_EVENT_DATA_LEN {
                return Err(Tcg2ParseError::EventTooLarge { index });
            }
            let event_data = c.take(size)?.to_vec();
            let rec = CelRecord {
                recnum: index as u64,
                pcr,
                digests,
                event_type,
                event_data,
            };
            log.check_and_push(index, rec)
                .map_err(Tcg2ParseError::Records)?;
            index += 1;
        }
        Ok(log)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Tcg2ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Tcg2ParseError::Truncated { offset: self.pos }),
        }
    }
    fn u16(&mut self) -> Result<u16, Tcg2ParseError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, Tcg2ParseError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::event::{BootComponent, MeasuredEvent};

    fn log() -> EventLog {
        let mut log = EventLog::new();
        let banks = [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ];
        for c in [BootComponent::Kernel, BootComponent::Initrd] {
            log.append(
                15,
                &banks,
                &MeasuredEvent::Boot {
                    component: c,
                    vm_id: "v".into(),
                    boot: 0,
                    sha256: Sha256Digest::of(b"k"),
                },
            );
        }
        log
    }

    #[test]
    fn binary_log_round_trips_and_has_spec_id_header() {
        let log = log();
        let bin = log.to_tcg2_binary();
        assert_eq!(&bin[4..8], &EV_NO_ACTION.to_le_bytes());
        assert_eq!(&bin[32..48], SPEC_ID_SIGNATURE);
        // numberOfAlgorithms right after the 16-byte signature, class and 4 version bytes.
        assert_eq!(&bin[56..60], &4u32.to_le_bytes());
        assert_eq!(EventLog::from_tcg2_binary(&bin).unwrap(), log);
    }

    #[test]
    fn binary_log_rejects_truncation_and_bad_headers() {
        let bin = log().to_tcg2_binary();
        for cut in [3, 30, 60, bin.len() - 1] {
            assert!(matches!(
                EventLog::from_tcg2_binary(&bin[..cut]),
                Err(Tcg2ParseError::Truncated { .. })
            ));
        }
        let mut bad = bin.clone();
        bad[32] = b'X';
        assert!(matches!(
            EventLog::from_tcg2_binary(&bad),
            Err(Tcg2ParseError::NoSpecIdHeader)
        ));
        let mut bad_alg = bin.clone();
        bad_alg[60] = 0x12; // first algorithm id -> SM3
        assert!(matches!(
            EventLog::from_tcg2_binary(&bad_alg),
            Err(Tcg2ParseError::UnsupportedAlgorithm { .. })
        ));
        assert!(
            EventLog::from_tcg2_binary(&EventLog::new().to_tcg2_binary())
                .unwrap()
                .is_empty()
        );
    }
}
