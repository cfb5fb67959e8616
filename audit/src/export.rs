//! Exported ranges of entries: self-contained and verifiable offline with the public key.
//!
//! An [`ExportBundle`] carries a contiguous run of entries in their canonical bytes, a signed
//! checkpoint at or after the run's end, and a [`RangeProof`] tying the run to that
//! checkpoint's root. Archive segments (retention) use the same format, gzip-compressed.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointParseError, CheckpointVerifyError, SignedCheckpoint};
use crate::entry::{DecodeEntryError, Entry};
use crate::key::AppliancePublicKey;
use crate::merkle::{
    Hash, ProofError, RangeProof, chain_hash, hex_hash, leaf_hash, root_from_range,
};

/// The `format` value of version 1 bundles.
pub const EXPORT_FORMAT: &str = "sakshi-audit-export/v1";

/// One exported entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEntry {
    /// Sequence number (leaf index).
    pub seq: u64,
    /// The canonical entry bytes (RFC 8785 JSON), exactly as hashed.
    pub canonical: String,
    /// The chain value stored with the entry.
    #[serde(with = "hex_hash")]
    pub chain: Hash,
}

/// A verifiable export of entries `[start, start + entries.len())`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBundle {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// First sequence number.
    pub start: u64,
    /// Chain value of entry `start - 1` (zeros for `start == 0`).
    #[serde(with = "hex_hash")]
    pub prev_chain: Hash,
    /// The entries.
    pub entries: Vec<ExportedEntry>,
    /// A signed checkpoint whose tree contains all the entries.
    pub checkpoint: String,
    /// Proof tying the entries to the checkpoint's root.
    pub proof: RangeProof,
    /// The appliance public key (PEM), for information: verify with a key you trust.
    pub public_key_pem: String,
}

/// What a successful [`ExportBundle::verify`] returns.
#[derive(Debug, Clone)]
pub struct VerifiedExport {
    /// The decoded entries.
    pub entries: Vec<Entry>,
    /// The checkpoint they were proven against.
    pub checkpoint: SignedCheckpoint,
}

/// Why an export does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ExportVerifyError {
    /// Unknown format string.
    #[error("unsupported export format {0:?}")]
    Format(String),
    /// The checkpoint cannot be parsed.
    #[error("the export's checkpoint is malformed")]
    Checkpoint(#[source] CheckpointParseError),
    /// The checkpoint is not signed by the trusted key.
    #[error("the export's checkpoint is not signed by the trusted key")]
    Signature(#[source] CheckpointVerifyError),
    /// The checkpoint belongs to another log.
    #[error("the checkpoint's origin {found:?} differs from the export's {expected:?}")]
    Origin {
        /// Checkpoint origin.
        found: String,
        /// Export origin.
        expected: String,
    },
    /// Entries are not contiguous from `start`.
    #[error("entry at position {position} has seq {seq}, expected {expected}")]
    Sequence {
        /// Position in the list.
        position: usize,
        /// Its seq.
        seq: u64,
        /// Expected seq.
        expected: u64,
    },
    /// An entry's bytes do not decode, or claim another seq.
    #[error("entry {seq} is not a valid entry")]
    Entry {
        /// Its seq.
        seq: u64,
        /// Why.
        #[source]
        source: DecodeEntryError,
    },
    /// An entry's canonical bytes claim a different sequence number.
    #[error("entry {seq} claims to be entry {claimed}")]
    Misplaced {
        /// Position.
        seq: u64,
        /// Claimed.
        claimed: u64,
    },
    /// The hash chain does not continue.
    #[error("hash chain broken at entry {seq}")]
    Chain {
        /// Where.
        seq: u64,
    },
    /// The entries and proof do not produce the checkpoint's root.
    #[error("the entries do not match the checkpoint root (tree size {tree_size})")]
    Root {
        /// Checkpoint size.
        tree_size: u64,
        /// Proof failure.
        #[source]
        source: ProofError,
    },
}

impl ExportBundle {
    /// Verify everything with the trusted public key: checkpoint signature and origin, entry
    /// sequence, decoding, chain, and the range proof against the checkpoint root.
    pub fn verify(&self, key: &AppliancePublicKey) -> Result<VerifiedExport, ExportVerifyError> {
        if self.format != EXPORT_FORMAT {
            return Err(ExportVerifyError::Format(
                self.format.chars().take(64).collect(),
            ));
        }
        let cp =
            SignedCheckpoint::parse(&self.checkpoint).map_err(ExportVerifyError::Checkpoint)?;
        cp.verify(key).map_err(ExportVerifyError::Signature)?;
        let c = cp.checkpoint();
        if c.origin != self.origin {
            return Err(ExportVerifyError::Origin {
                found: c.origin.clone(),
                expected: self.origin.clone(),
            });
        }
        let mut chain = self.prev_chain;
        let mut leaves = Vec::with_capacity(self.entries.len());
        let mut decoded = Vec::with_capacity(self.entries.len());
        for (position, e) in self.entries.iter().enumerate() {
            let expected = self.start + position as u64;
            if e.seq != expected {
                return Err(ExportVerifyError::Sequence {
                    position,
                    seq: e.seq,
                    expected,
                });
            }
            let entry = Entry::decode(e.canonical.as_bytes())
                .map_err(|source| ExportVerifyError::Entry { seq: e.seq, source })?;
            if entry.seq != e.seq {
                return Err(ExportVerifyError::Misplaced {
                    seq: e.seq,
                    claimed: entry.seq,
                });
            }
            let leaf = leaf_hash(e.canonical.as_bytes());
            chain = chain_hash(&chain, &leaf);
            if chain != e.chain {
                return Err(ExportVerifyError::Chain { seq: e.seq });
            }
            leaves.push(leaf);
            decoded.push(entry);
        }
        let root =
            root_from_range(self.start, &leaves, c.tree_size, &self.proof).map_err(|source| {
                ExportVerifyError::Root {
                    tree_size: c.tree_size,
                    source,
                }
            })?;
        if root != c.root {
            return Err(ExportVerifyError::Root {
                tree_size: c.tree_size,
                source: ProofError::RootMismatch {
                    computed: hex::encode(root),
                },
            });
        }
        Ok(VerifiedExport {
            entries: decoded,
            checkpoint: cp,
        })
    }
}
