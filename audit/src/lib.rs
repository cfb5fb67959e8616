//! Sakshi's tamper-evident audit log.
//!
//! Entries ([`Entry`]) are stored in SQLite in their canonical encoding (RFC 8785 JSON), hash
//! chained (`chain = SHA-256(prev_chain || leaf_hash)`) and placed in an RFC 9162 Merkle tree.
//! Signed checkpoints ([`SignedCheckpoint`], C2SP tlog-checkpoint form, ECDSA P-256 with the
//! [`ApplianceKey`]) are written every N entries or T seconds, chain to each other, and are
//! handed to a [`CheckpointWitness`] (the TPM). `AuditLog::verify` / `verify_database`
//! check the chain, every leaf against the tree, every checkpoint, and consistency with
//! externally held checkpoints, naming the first bad index and the kind of [`Damage`].
//!
//! Everything except the database side (`AuditLog`, behind the default `sqlite` feature)
//! is pure Rust, so offline verifiers can use it without SQLite. See `docs/AUDIT.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod canonical;
mod checkpoint;
mod entry;
mod export;
mod key;
mod merkle;
mod verify;
mod witness;

#[cfg(feature = "sqlite")]
mod store;

pub use checkpoint::{
    Checkpoint, CheckpointParseError, CheckpointVerifyError, MAX_CHECKPOINT_BYTES, MAX_SIGNATURES,
    SignedCheckpoint, key_id,
};
pub use entry::{
    Action, Actor, ActorKind, AuthMethod, DecodeEntryError, ENTRY_FORMAT_VERSION, Entry,
    InvalidEntry, MAX_DETAILS_BYTES, MAX_FIELD_BYTES, MAX_SAFE_INTEGER, NewEntry, Origin, Outcome,
    Target, TargetKind, TraceId, TraceIdError, UnknownAction, format_time,
};
pub use export::{EXPORT_FORMAT, ExportBundle, ExportVerifyError, ExportedEntry, VerifiedExport};
pub use key::{
    ApplianceKey, AppliancePublicKey, KeyError, PublicKeyError, SignError, SignatureError,
};
pub use merkle::{
    Frontier, FrontierError, GENESIS_CHAIN, Hash, MemoryTree, MissingNode, NodeSource,
    ProofBuildError, ProofError, RangeProof, chain_hash, consistency_proof, empty_root,
    inclusion_proof, leaf_hash, node_hash, range_hash, range_proof, root_from_inclusion,
    root_from_range, verify_consistency, verify_inclusion,
};
pub use merkle::{hex_hash, hex_hashes};
pub use verify::{
    Damage, DamageKind, KeySource, LeafRow, LogVerifier, MAX_FINDINGS, RetainedBase, VerifyReport,
};
pub use witness::{CheckpointWitness, WitnessError};

#[cfg(feature = "sqlite")]
pub use store::{
    AppendError, AuditConfig, AuditLog, AuditReader, CheckpointError, ConsistencyProof,
    InclusionProof, MAX_PAGE, OpenError, Order, Page, PendingAppend, ProofRequestError, Query,
    QueryError, Receipt, RetentionError, RetentionPolicy, RetentionPolicyError, RetentionReport,
    SegmentInfo, VerifyError, VerifyOptions, verify_database,
};
