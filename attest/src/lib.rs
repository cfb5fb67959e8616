//! Sakshi attestation: TPM access, measured boot, event logs, quotes and a verifier.
//!
//! - [`Tpm`] (feature `tpm`) is a handle to one actor thread that owns the tss-esapi context.
//!   It extends the measurement PCR, keeps the event log in step with it, and quotes.
//! - [`Swtpm`] spawns a software TPM on free ports for development and tests.
//! - [`MeasuredBoot`] (feature `tpm`) measures a VM's kernel, initrd, command line and
//!   canonical config before it boots, applying the [`Policy`].
//! - [`EventLog`] is the measurement log: CEL-JSON, exportable as a TCG2 binary log.
//! - [`Quote`] is a quote with its PCR values, log and AK public key; it writes and reads the
//!   files tpm2-tools uses.
//! - [`verify_quote`] / [`verify_dir`] check a quote offline in pure Rust; this part builds
//!   with `--no-default-features`.
//!
//! See `docs/ATTESTATION.md` for formats and the threat model.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cel;
mod digest;
mod event;
mod policy;
mod quote;
mod swtpm;
mod tcg2;
mod verify;
mod wire;

#[cfg(feature = "tpm")]
mod measure;
#[cfg(feature = "tpm")]
mod tpm;

#[cfg(test)]
mod testdata;

pub use cel::{
    CelParseError, CelRecord, EventLog, MAX_CEL_JSON_LEN, MAX_EVENT_DATA_LEN, PcrDigest,
};
pub use digest::{HashAlg, ParseDigestError, Sha256Digest};
pub use event::{BootComponent, EventDecodeError, MeasuredEvent, is_valid_vm_id};
pub use policy::{
    Appraisal, Policy, PolicyDecision, PolicyMode, PolicyParseError, UnapprovedImage,
};
pub use quote::{PcrValues, Quote, ReadDirError, TpmKind, WriteDirError, files as quote_files};
pub use swtpm::{Swtpm, SwtpmError, SwtpmStop};
pub use tcg2::Tcg2ParseError;
pub use verify::{
    CheckpointReport, ComponentReport, Finding, Report, VerifyDirError, VerifyError, VerifyOptions,
    VmBootReport, verify_dir, verify_quote,
};
pub use wire::{ClockInfo, WireError};

#[cfg(feature = "tpm")]
pub use measure::{
    BootMeasurement, DigestError, MeasureError, MeasuredBoot, VmBoot, VmBootDigests, canonical_json,
};
#[cfg(feature = "tpm")]
pub use tpm::{
    DEFAULT_AK_HANDLE, DEFAULT_EK_HANDLE, DEFAULT_PCR, ExtendError, Extended, JournalError,
    MAX_NONCE_LEN, OpenError, OpenStep, QuoteError, Tpm, TpmConfig, TpmConfigError, TpmError,
};
