//! The hook through which each new checkpoint is witnessed outside the database (the TPM
//! work extends the checkpoint hash into a PCR, so a quote binds the audit head).

/// Called once for every new checkpoint, after it is durable in the log, in checkpoint order,
/// on the log's writer thread (keep it short: appends wait while it runs).
pub trait CheckpointWitness: Send + Sync {
    /// Witness the checkpoint of `tree_size` entries whose signed note hashes to
    /// `checkpoint_hash` (SHA-256 of the full signed note).
    fn witness(&self, tree_size: u64, checkpoint_hash: &[u8; 32]) -> Result<(), WitnessError>;
}

/// A witness failed. The checkpoint stays in the log; the failure is itself recorded as an
/// `audit.witness_failure` entry.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint witness {witness} failed")]
pub struct WitnessError {
    /// Which witness (e.g. `"tpm"`).
    pub witness: &'static str,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl WitnessError {
    /// Wrap an error from the named witness.
    pub fn new(
        witness: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        WitnessError {
            witness,
            source: source.into(),
        }
    }
}
