//! Signed checkpoints in the C2SP `tlog-checkpoint` text form (a C2SP `signed-note`).
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 RFC 9162 root hash>
//! time <RFC 3339 UTC, 9 fraction digits>
//! prev <base64 SHA-256 of the previous signed checkpoint, or "none">
//!
//! — <origin> <base64(key id || DER ECDSA P-256 signature over the text above)>
//! ```
//!
//! The signature type is C2SP signed-note `0x02` (ECDSA); its key id is the first four bytes
//! of SHA-256 of the DER SubjectPublicKeyInfo. The checkpoint hash (chained by the next
//! checkpoint's `prev` line and handed to the [`crate::CheckpointWitness`]) is SHA-256 over the
//! whole signed note, signature lines included.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::entry::format_time;
use crate::key::{ApplianceKey, AppliancePublicKey, SignError, SignatureError};
use crate::merkle::Hash;

/// Maximum size of a checkpoint note we parse, in bytes.
pub const MAX_CHECKPOINT_BYTES: usize = 16 * 1024;
/// Maximum signature lines we accept (C2SP asks verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 16;

/// The content of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log identity (first line); also the signing key's name.
    pub origin: String,
    /// Number of entries covered.
    pub tree_size: u64,
    /// RFC 9162 root hash over the first `tree_size` entries.
    pub root: Hash,
    /// When the checkpoint was made (UTC).
    pub time: DateTime<Utc>,
    /// Hash of the previous signed checkpoint; `None` for the first.
    pub prev: Option<Hash>,
}

impl Checkpoint {
    /// The note text that is signed (ends with a newline).
    pub fn note_text(&self) -> String {
        let prev = self
            .prev
            .map_or_else(|| "none".to_owned(), |h| B64.encode(h));
        format!(
            "{}\n{}\n{}\ntime {}\nprev {}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root),
            format_time(&self.time),
            prev
        )
    }

    /// Sign with the appliance key.
    pub fn sign(self, key: &ApplianceKey) -> Result<SignedCheckpoint, SignError> {
        let text = self.note_text();
        let sig = key.sign(text.as_bytes())?;
        let mut blob = key_id(key.public_key()).to_vec();
        blob.extend_from_slice(&sig);
        let note = format!("{text}\n\u{2014} {} {}\n", self.origin, B64.encode(&blob));
        let signatures = vec![NoteSignature {
            name: self.origin.clone(),
            key_id: key_id(key.public_key()),
            signature: sig,
        }];
        Ok(SignedCheckpoint {
            checkpoint: self,
            note,
            text_len: text.len(),
            signatures,
        })
    }
}

/// C2SP signed-note key id for an ECDSA key (type 0x02): SHA-256 of the DER SPKI, first 4 bytes.
pub fn key_id(key: &AppliancePublicKey) -> [u8; 4] {
    let d = Sha256::digest(key.spki_der());
    [d[0], d[1], d[2], d[3]]
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NoteSignature {
    name: String,
    key_id: [u8; 4],
    signature: Vec<u8>,
}

/// A checkpoint with its signed-note text, as stored and exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: String,
    text_len: usize,
    signatures: Vec<NoteSignature>,
}

/// A checkpoint note that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointParseError {
    /// Larger than [`MAX_CHECKPOINT_BYTES`].
    #[error("checkpoint is larger than {MAX_CHECKPOINT_BYTES} bytes")]
    TooLarge,
    /// Contains a control character other than newline.
    #[error("checkpoint contains a control character")]
    ControlCharacter,
    /// No blank line separating text and signatures.
    #[error("checkpoint has no signature block")]
    NoSignatureBlock,
    /// A malformed line.
    #[error("checkpoint line {line}: {what}")]
    Line {
        /// 1-based line number in the note.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signatures.
    #[error("checkpoint has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
}

/// A checkpoint that does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointVerifyError {
    /// No signature line from the trusted key (by name and key id).
    #[error("no signature by the trusted key {name:?} (key id {key_id})")]
    NoTrustedSignature {
        /// The expected key name (origin).
        name: String,
        /// Hex key id.
        key_id: String,
    },
    /// The trusted key's signature is invalid.
    #[error("the checkpoint signature is invalid")]
    BadSignature(#[source] SignatureError),
}

impl SignedCheckpoint {
    /// Parse a signed note in the tlog-checkpoint form above. The signature is not checked;
    /// call [`SignedCheckpoint::verify`].
    pub fn parse(note: &str) -> Result<Self, CheckpointParseError> {
        use CheckpointParseError as E;
        if note.len() > MAX_CHECKPOINT_BYTES {
            return Err(E::TooLarge);
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(E::ControlCharacter);
        }
        let split = note.rfind("\n\n").ok_or(E::NoSignatureBlock)?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .unwrap_or(text)
            .split('\n')
            .collect();
        let line = |n: usize, what| E::Line { line: n, what };
        if lines.len() != 5 {
            return Err(line(
                lines.len().min(5) + 1,
                "expected origin, size, root, time and prev lines",
            ));
        }
        let origin = lines[0];
        if origin.is_empty() || origin.contains(char::is_whitespace) || origin.contains('+') {
            return Err(line(1, "origin is empty or contains a space or '+'"));
        }
        let size_text = lines[1];
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(line(
                2,
                "tree size is not a decimal number without leading zeros",
            ));
        }
        let tree_size: u64 = size_text
            .parse()
            .map_err(|_| line(2, "tree size overflows"))?;
        let root = decode_hash(lines[2]).ok_or(line(3, "root is not base64 of 32 bytes"))?;
        let time_text = lines[3]
            .strip_prefix("time ")
            .ok_or(line(4, "expected `time <RFC 3339>`"))?;
        let time = DateTime::parse_from_rfc3339(time_text)
            .map_err(|_| line(4, "time is not RFC 3339"))?
            .with_timezone(&Utc);
        let prev_text = lines[4]
            .strip_prefix("prev ")
            .ok_or(line(5, "expected `prev <hash>|none`"))?;
        let prev = match prev_text {
            "none" => None,
            t => Some(decode_hash(t).ok_or(line(5, "prev is not base64 of 32 bytes"))?),
        };
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            tree_size,
            root,
            time,
            prev,
        };
        if checkpoint.note_text() != text {
            return Err(line(4, "checkpoint text is not in canonical form"));
        }

        let mut signatures = Vec::new();
        let sig_lines: Vec<&str> = sigs
            .strip_suffix('\n')
            .ok_or(line(7, "note must end with a newline"))?
            .split('\n')
            .collect();
        for (i, l) in sig_lines.iter().enumerate() {
            let n = 7 + i;
            let rest = l
                .strip_prefix("\u{2014} ")
                .ok_or(line(n, "signature line must start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(line(n, "signature line needs a name and a signature"))?;
            if name.is_empty() || name.contains('+') {
                return Err(line(n, "bad key name"));
            }
            let blob = B64
                .decode(b64)
                .map_err(|_| line(n, "signature is not base64"))?;
            if blob.len() < 5 {
                return Err(line(n, "signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: [blob[0], blob[1], blob[2], blob[3]],
                signature: blob[4..].to_vec(),
            });
            if signatures.len() > MAX_SIGNATURES {
                return Err(E::TooManySignatures);
            }
        }
        if signatures.is_empty() {
            return Err(E::NoSignatureBlock);
        }
        Ok(SignedCheckpoint {
            checkpoint,
            note: note.to_owned(),
            text_len: text.len(),
            signatures,
        })
    }

    /// Verify the signature of the trusted key (name = origin, key id from the key). Other
    /// signatures (e.g. witness cosignatures) are ignored, as C2SP signed-note requires.
    pub fn verify(&self, key: &AppliancePublicKey) -> Result<(), CheckpointVerifyError> {
        let id = key_id(key);
        let text = &self.note.as_bytes()[..self.text_len];
        let mut found = false;
        for s in self
            .signatures
            .iter()
            .filter(|s| s.name == self.checkpoint.origin && s.key_id == id)
        {
            key.verify(text, &s.signature)
                .map_err(CheckpointVerifyError::BadSignature)?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(CheckpointVerifyError::NoTrustedSignature {
                name: self.checkpoint.origin.clone(),
                key_id: hex::encode(id),
            })
        }
    }

    /// The parsed content.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The full signed note.
    pub fn as_str(&self) -> &str {
        &self.note
    }

    /// SHA-256 of the full signed note: what the next checkpoint's `prev` names and what the
    /// witness extends into the TPM.
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.note.as_bytes()).into()
    }
}

impl std::fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.note)
    }
}

fn decode_hash(s: &str) -> Option<Hash> {
    let v = B64.decode(s).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cp(prev: Option<Hash>) -> Checkpoint {
        Checkpoint {
            origin: "sakshi.test/audit".into(),
            tree_size: 20852163,
            root: [7u8; 32],
            time: Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap(),
            prev,
        }
    }

    #[test]
    fn format_matches_tlog_checkpoint_shape() {
        let text = cp(Some([1u8; 32])).note_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "sakshi.test/audit");
        assert_eq!(lines[1], "20852163");
        assert_eq!(B64.decode(lines[2]).unwrap(), vec![7u8; 32]);
        assert_eq!(lines[3], "time 2026-11-27T00:00:00.000000000Z");
        assert!(lines[4].starts_with("prev AQEB"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let key = ApplianceKey::generate().unwrap();
        let signed = cp(None).sign(&key).unwrap();
        let parsed = SignedCheckpoint::parse(signed.as_str()).unwrap();
        assert_eq!(parsed, signed);
        parsed.verify(key.public_key()).unwrap();
        assert_eq!(parsed.hash(), signed.hash());
        assert!(signed.as_str().contains("\n\n\u{2014} sakshi.test/audit "));

        let other = ApplianceKey::generate().unwrap();
        assert!(matches!(
            parsed.verify(other.public_key()),
            Err(CheckpointVerifyError::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn tampered_text_or_signature_fails() {
        let key = ApplianceKey::generate().unwrap();
        let signed = cp(None).sign(&key).unwrap();
        let tampered = signed.as_str().replace("20852163", "20852164");
        let parsed = SignedCheckpoint::parse(&tampered).unwrap();
        assert!(matches!(
            parsed.verify(key.public_key()),
            Err(CheckpointVerifyError::BadSignature(_))
        ));

        // Same key id, garbage signature bytes.
        let sig_line = signed.as_str().lines().last().unwrap();
        let b64 = sig_line.rsplit(' ').next().unwrap();
        let mut blob = B64.decode(b64).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let forged = signed.as_str().replace(b64, &B64.encode(&blob));
        let parsed = SignedCheckpoint::parse(&forged).unwrap();
        assert!(parsed.verify(key.public_key()).is_err());
    }

    #[test]
    fn unknown_signatures_are_ignored() {
        let key = ApplianceKey::generate().unwrap();
        let signed = cp(None).sign(&key).unwrap();
        let with_witness = format!(
            "{}\u{2014} witness.example/w1 {}\n",
            signed.as_str(),
            B64.encode([9u8; 40])
        );
        let parsed = SignedCheckpoint::parse(&with_witness).unwrap();
        parsed.verify(key.public_key()).unwrap();
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let key = ApplianceKey::generate().unwrap();
        let good = cp(None).sign(&key).unwrap().as_str().to_owned();
        for bad in [
            good.replace("20852163", "020852163"),
            good.replace("20852163", "-1"),
            good.replace("time ", "tiem "),
            good.replace("prev none", "prev zzz"),
            good.replace("\n\n", "\n"),
            good.replace('\u{2014}', "-"),
            good.replacen("sakshi.test/audit", "sakshi test", 1),
            good.replace('\n', "\r\n"),
            String::new(),
        ] {
            assert!(SignedCheckpoint::parse(&bad).is_err(), "accepted: {bad:?}");
        }
    }
}
