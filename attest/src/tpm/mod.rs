//! TPM access: one actor thread owns the tss-esapi `Context`; [`Tpm`] handles send it requests.

mod actor;
mod journal;

use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::cel::EventLog;
use crate::digest::{HashAlg, Sha256Digest};
use crate::quote::{Quote, TpmKind};

pub use journal::JournalError;

/// Default persistent handle of the endorsement key (TCG provisioning guidance: ECC P-256 EK).
pub const DEFAULT_EK_HANDLE: u32 = 0x8101_0002;
/// Default persistent handle of the attestation key.
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_0003;
/// Default measurement PCR (OS-owned, not resettable).
pub const DEFAULT_PCR: u32 = 15;
/// Longest nonce a quote accepts (the size of a SHA-512 digest, `sizeof(TPMU_HA)`).
pub const MAX_NONCE_LEN: usize = 64;

/// Which TPM to use and where its state lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TCTI: `device:/dev/tpmrm0` in production, `swtpm:host=127.0.0.1,port=P` for swtpm.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// Directory for the event-log journal and the exported AK public key.
    pub state_dir: PathBuf,
    /// The measurement PCR. Production: 8-15. 16 and 23 (resettable from locality 0) only
    /// with `allow_resettable_pcr`, which tests use.
    #[serde(default = "default_pcr")]
    pub pcr: u32,
    /// Allow PCR 16 or 23 (tests only: anyone can reset them).
    #[serde(default)]
    pub allow_resettable_pcr: bool,
    /// Persistent handle of the EK.
    #[serde(default = "default_ek")]
    pub ek_handle: u32,
    /// Persistent handle of the AK.
    #[serde(default = "default_ak")]
    pub ak_handle: u32,
}

fn default_tcti() -> String {
    "device:/dev/tpmrm0".to_owned()
}
fn default_pcr() -> u32 {
    DEFAULT_PCR
}
fn default_ek() -> u32 {
    DEFAULT_EK_HANDLE
}
fn default_ak() -> u32 {
    DEFAULT_AK_HANDLE
}

/// Why a [`TpmConfig`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmConfigError {
    /// The TCTI string is empty.
    #[error("TCTI is empty")]
    EmptyTcti,
    /// PCR 16 or 23 without `allow_resettable_pcr`.
    #[error(
        "PCR {0} can be reset by any process; choose 8-15 (or set allow_resettable_pcr for tests)"
    )]
    ResettablePcr(u32),
    /// A firmware PCR (0-7), a locality-controlled PCR (17-22) or no PCR at all (above 23).
    #[error("PCR {0} cannot be the measurement PCR; choose 8-15")]
    UnusablePcr(u32),
    /// A handle outside the persistent range, or EK and AK on the same handle.
    #[error(
        "persistent handles must be distinct and in 0x81000000-0x81ffffff (ek {ek:#x}, ak {ak:#x})"
    )]
    Handles {
        /// EK handle.
        ek: u32,
        /// AK handle.
        ak: u32,
    },
}

impl TpmConfig {
    /// A config with defaults for everything but the TCTI and state directory.
    pub fn new(tcti: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            tcti: tcti.into(),
            state_dir: state_dir.into(),
            pcr: DEFAULT_PCR,
            allow_resettable_pcr: false,
            ek_handle: DEFAULT_EK_HANDLE,
            ak_handle: DEFAULT_AK_HANDLE,
        }
    }

    /// Check the config without touching the TPM.
    pub fn validate(&self) -> Result<(), TpmConfigError> {
        if self.tcti.trim().is_empty() {
            return Err(TpmConfigError::EmptyTcti);
        }
        match self.pcr {
            8..=15 => {}
            16 | 23 if self.allow_resettable_pcr => {}
            16 | 23 => return Err(TpmConfigError::ResettablePcr(self.pcr)),
            other => return Err(TpmConfigError::UnusablePcr(other)),
        }
        let persistent = 0x8100_0000..=0x81ff_ffff;
        if !persistent.contains(&self.ek_handle)
            || !persistent.contains(&self.ak_handle)
            || self.ek_handle == self.ak_handle
        {
            return Err(TpmConfigError::Handles {
                ek: self.ek_handle,
                ak: self.ak_handle,
            });
        }
        Ok(())
    }
}

/// A step of opening the TPM, named in [`OpenError::Tpm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStep {
    /// Parsing the TCTI string.
    Tcti,
    /// Connecting to the TPM.
    Connect,
    /// Reading capabilities.
    Capabilities,
    /// Reading or creating the EK.
    EndorsementKey,
    /// Reading or creating the AK.
    AttestationKey,
    /// Reading the measurement PCR and reset counter.
    ReadState,
}

impl std::fmt::Display for OpenStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenStep::Tcti => "parsing the TCTI",
            OpenStep::Connect => "connecting to the TPM",
            OpenStep::Capabilities => "reading TPM capabilities",
            OpenStep::EndorsementKey => "preparing the endorsement key",
            OpenStep::AttestationKey => "preparing the attestation key",
            OpenStep::ReadState => "reading the measurement PCR",
        })
    }
}

/// Why [`Tpm::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The config is invalid.
    #[error("invalid TPM config")]
    Config(#[from] TpmConfigError),
    /// The state directory could not be created or written.
    #[error("cannot use TPM state directory {path}")]
    StateDir {
        /// The directory or file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A TPM command failed.
    #[error("TPM error while {step}")]
    Tpm {
        /// What was being done.
        step: OpenStep,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// An active PCR bank uses a hash Sakshi cannot compute.
    #[error(
        "active PCR bank with algorithm {0:#06x} is not supported (sha1, sha256, sha384, sha512 are)"
    )]
    UnsupportedBank(u16),
    /// The TPM has no active SHA-256 bank, or the measurement PCR is missing from a bank.
    #[error("PCR {0} is not available in every active bank, or there is no sha256 bank")]
    PcrUnavailable(u32),
    /// A persistent handle holds an object that is not the expected key.
    #[error("persistent handle {0:#x} holds an object that is not the expected Sakshi key")]
    ForeignObject(u32),
    /// The event-log journal could not be opened, or disagrees with the PCR.
    #[error("cannot open the event log journal")]
    Journal(#[from] JournalError),
    /// The actor thread could not be started.
    #[error("cannot start the TPM thread")]
    Thread(#[source] std::io::Error),
    /// The actor thread ended without reporting (it panicked).
    #[error("the TPM thread ended during open")]
    ThreadDied,
}

/// Why an extend (measurement or audit checkpoint) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    /// The VM id is not 1-128 characters of `[A-Za-z0-9._:-]`.
    #[error("invalid VM id")]
    BadVmId,
    /// Writing the journal failed; nothing was extended.
    #[error("cannot write the event log")]
    Journal(#[source] JournalError),
    /// The TPM refused an extend; the log keeps exactly the records that were extended.
    #[error("TPM refused PCR extend")]
    Tpm(#[source] tss_esapi::Error),
    /// The TPM actor has stopped.
    #[error("TPM actor has stopped")]
    Gone,
}

/// Why a quote failed.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The nonce is empty or longer than [`MAX_NONCE_LEN`] bytes.
    #[error("nonce must be 1-{MAX_NONCE_LEN} bytes, got {0}")]
    BadNonce(usize),
    /// A TPM command failed.
    #[error("TPM quote failed")]
    Tpm(#[source] tss_esapi::Error),
    /// The PCR changed between reading it and quoting it (another TPM user extended it).
    #[error("measurement PCR changed during the quote")]
    PcrChanged,
    /// The TPM returned a quote that does not parse.
    #[error("TPM returned a malformed quote")]
    Malformed(#[source] crate::wire::WireError),
    /// The TPM actor has stopped.
    #[error("TPM actor has stopped")]
    Gone,
}

/// Why a read of TPM state failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// A TPM command failed.
    #[error("TPM command failed")]
    Tpm(#[source] tss_esapi::Error),
    /// The TPM actor has stopped.
    #[error("TPM actor has stopped")]
    Gone,
}

/// What a boot measurement extends.
#[derive(Debug, Clone)]
pub(crate) struct BootDigests {
    pub vm_id: String,
    pub kernel: Sha256Digest,
    pub initrd: Option<Sha256Digest>,
    pub cmdline: Sha256Digest,
    pub config: Sha256Digest,
}

/// Where a batch of events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extended {
    /// The PCR.
    pub pcr: u32,
    /// Record number of the first event.
    pub first_recnum: u64,
    /// Number of events.
    pub count: u64,
}

/// One PCR's value in each bank.
pub(crate) type BankValues = Vec<(HashAlg, Vec<u8>)>;

pub(crate) enum Request {
    MeasureBoot(BootDigests, mpsc::Sender<Result<Extended, ExtendError>>),
    AuditCheckpoint(
        u64,
        Sha256Digest,
        mpsc::Sender<Result<Extended, ExtendError>>,
    ),
    Quote(Vec<u8>, mpsc::Sender<Result<Quote, QuoteError>>),
    Log(mpsc::Sender<EventLog>),
    ReadPcr(mpsc::Sender<Result<BankValues, TpmError>>),
}

/// Fixed facts about the opened TPM.
#[derive(Debug, Clone)]
pub(crate) struct TpmInfo {
    pub kind: TpmKind,
    pub pcr: u32,
    pub banks: Vec<HashAlg>,
    pub ak_public_pem: String,
    pub ak_public: Vec<u8>,
}

struct Inner {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    info: TpmInfo,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the actor, which flushes and closes the TPM context.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A handle to the TPM actor. Cheap to clone; the actor stops when the last handle drops.
///
/// Every method blocks until the TPM answers (about 0.1 ms per extend and 0.5 ms per quote on
/// swtpm); call it from `spawn_blocking` in async code.
#[derive(Clone)]
pub struct Tpm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("kind", &self.inner.info.kind)
            .field("pcr", &self.inner.info.pcr)
            .finish()
    }
}

impl Tpm {
    /// Connect to the TPM, make sure the EK and AK exist (creating and persisting them on first
    /// use), and load the event-log journal, checking it against the PCR.
    pub fn open(config: &TpmConfig) -> Result<Tpm, OpenError> {
        config.validate()?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| OpenError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let (init_tx, init_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let cfg = config.clone();
        let thread = std::thread::Builder::new()
            .name("sakshi-tpm".into())
            .spawn(move || actor::run(cfg, rx, init_tx))
            .map_err(OpenError::Thread)?;
        match init_rx.recv() {
            Ok(Ok(info)) => Ok(Tpm {
                inner: Arc::new(Inner {
                    tx: Some(tx),
                    thread: Some(thread),
                    info,
                }),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(OpenError::ThreadDied)
            }
        }
    }

    fn send(&self, req: Request) -> bool {
        self.inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(req).is_ok())
    }

    /// Hardware or software TPM.
    pub fn kind(&self) -> TpmKind {
        self.inner.info.kind
    }

    /// The measurement PCR.
    pub fn pcr(&self) -> u32 {
        self.inner.info.pcr
    }

    /// The active PCR banks (every extend covers all of them).
    pub fn banks(&self) -> &[HashAlg] {
        &self.inner.info.banks
    }

    /// The AK public key, PEM.
    pub fn ak_public_pem(&self) -> &str {
        &self.inner.info.ak_public_pem
    }

    /// The AK public area (`TPM2B_PUBLIC`).
    pub fn ak_public(&self) -> &[u8] {
        &self.inner.info.ak_public
    }

    pub(crate) fn measure_boot(&self, digests: BootDigests) -> Result<Extended, ExtendError> {
        if !crate::event::is_valid_vm_id(&digests.vm_id) {
            return Err(ExtendError::BadVmId);
        }
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::MeasureBoot(digests, tx)) {
            return Err(ExtendError::Gone);
        }
        rx.recv().unwrap_or(Err(ExtendError::Gone))
    }

    /// Extend an audit checkpoint (tree size and checkpoint hash) into the measurement PCR as
    /// its own event, so that every later quote binds the audit log head.
    pub fn record_audit_checkpoint(
        &self,
        tree_size: u64,
        checkpoint_hash: &[u8; 32],
    ) -> Result<Extended, ExtendError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::AuditCheckpoint(
            tree_size,
            Sha256Digest(*checkpoint_hash),
            tx,
        )) {
            return Err(ExtendError::Gone);
        }
        rx.recv().unwrap_or(Err(ExtendError::Gone))
    }

    /// Quote the measurement PCR (sha256 bank) with the caller's nonce (1-64 bytes). The
    /// quote carries the event log as of the same instant.
    pub fn quote(&self, nonce: &[u8]) -> Result<Quote, QuoteError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(QuoteError::BadNonce(nonce.len()));
        }
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Quote(nonce.to_vec(), tx)) {
            return Err(QuoteError::Gone);
        }
        rx.recv().unwrap_or(Err(QuoteError::Gone))
    }

    /// A snapshot of the event log.
    pub fn event_log(&self) -> Result<EventLog, TpmError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Log(tx)) {
            return Err(TpmError::Gone);
        }
        rx.recv().map_err(|_| TpmError::Gone)
    }

    /// The measurement PCR's value in every active bank.
    pub fn read_pcr(&self) -> Result<Vec<(HashAlg, Vec<u8>)>, TpmError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::ReadPcr(tx)) {
            return Err(TpmError::Gone);
        }
        rx.recv().unwrap_or(Err(TpmError::Gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tpm>();
        check::<crate::MeasuredBoot>();
    }

    #[test]
    fn config_validation() {
        let mut c = TpmConfig::new("swtpm:host=127.0.0.1,port=2321", "/tmp/x");
        assert_eq!(c.validate(), Ok(()));
        c.pcr = 16;
        assert_eq!(c.validate(), Err(TpmConfigError::ResettablePcr(16)));
        c.allow_resettable_pcr = true;
        assert_eq!(c.validate(), Ok(()));
        c.pcr = 17;
        assert_eq!(c.validate(), Err(TpmConfigError::UnusablePcr(17)));
        c.pcr = 0;
        assert_eq!(c.validate(), Err(TpmConfigError::UnusablePcr(0)));
        c.pcr = 15;
        c.ak_handle = c.ek_handle;
        assert!(matches!(c.validate(), Err(TpmConfigError::Handles { .. })));
        c.ak_handle = 0x8000_0000;
        assert!(matches!(c.validate(), Err(TpmConfigError::Handles { .. })));
        c = TpmConfig::new(" ", "/tmp/x");
        assert_eq!(c.validate(), Err(TpmConfigError::EmptyTcti));
    }

    #[test]
    fn config_json_defaults_and_unknown_fields() {
        let c: TpmConfig = serde_json::from_str(r#"{"state_dir":"/var/lib/sakshi/tpm"}"#).unwrap();
        assert_eq!(c.tcti, "device:/dev/tpmrm0");
        assert_eq!(c.pcr, DEFAULT_PCR);
        assert!(serde_json::from_str::<TpmConfig>(r#"{"state_dir":"/x","pcr_index":3}"#).is_err());
    }
}
