//! The measured-boot hook and the file digest cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::ids::{TraceId, VmId};

/// What is about to boot, handed to a [`BootMeasurer`] before the VMM is spawned.
#[derive(Debug)]
pub struct BootMeasurement<'a> {
    /// The VM.
    pub vm_id: &'a VmId,
    /// Its trace id.
    pub trace_id: &'a TraceId,
    /// SHA-256 of the kernel file.
    pub kernel_sha256: [u8; 32],
    /// SHA-256 of the initrd file, when there is one.
    pub initrd_sha256: Option<[u8; 32]>,
    /// The kernel command line exactly as the guest will see it.
    pub cmdline: &'a str,
    /// The VMM configuration as canonical JSON (RFC 8785); these are the exact bytes of the
    /// `vm.json` the VMM is started with.
    pub config_json: &'a [u8],
}

/// Why a [`BootMeasurer`] did not let a VM boot.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Policy refused the boot (for example an image that is not approved, in enforce mode).
    #[error("boot refused by policy: {reason}")]
    Refused {
        /// Why, for the operator and the audit log.
        reason: String,
    },
    /// The measurement itself could not be recorded (TPM, event log, ...).
    #[error("boot measurement could not be recorded")]
    Unavailable {
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Called before every VMM spawn with what is about to boot; may refuse.
///
/// Implementations extend the measurement PCR, append the event log and check policy.
/// The call is made from the thread that called [`Supervisor::start`](super::Supervisor::start),
/// with that VM locked: it may block, but must not call back into the supervisor for the same VM.
pub trait BootMeasurer: Send + Sync {
    /// Records the measurement; an error refuses the boot (the VM becomes `Failed`, nothing is spawned).
    fn measure(&self, measurement: &BootMeasurement<'_>) -> Result<(), MeasureError>;
}

/// A measurer that records nothing and allows every boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMeasurer;

impl BootMeasurer for NoopMeasurer {
    fn measure(&self, _measurement: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        Ok(())
    }
}

/// Cached digest of one path: (size, mtime, SHA-256).
type CacheMap = HashMap<PathBuf, (u64, SystemTime, [u8; 32])>;

/// SHA-256 of files, cached by (path, size, modification time).
#[derive(Debug, Default)]
pub(crate) struct DigestCache {
    entries: Mutex<CacheMap>,
}

impl DigestCache {
    /// The digest of `path`, from the cache when its size and mtime are unchanged.
    pub fn sha256(&self, path: &Path) -> io::Result<[u8; 32]> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let key = (meta.len(), meta.modified()?);
        if let Some((size, mtime, digest)) = self.lock().get(path)
            && (*size, *mtime) == key
        {
            return Ok(*digest);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        self.lock()
            .insert(path.to_path_buf(), (key.0, key.1, digest));
        Ok(digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheMap> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn digest_matches_known_answer_and_tracks_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, b"abc").unwrap();
        let cache = DigestCache::default();
        // FIPS 180-2 example: SHA-256("abc").
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(cache.sha256(&path).unwrap()), abc);
        assert_eq!(hex::encode(cache.sha256(&path).unwrap()), abc);
        assert_eq!(cache.len(), 1);
        // A size change invalidates the entry even if the mtime granularity hides the write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"d").unwrap();
        drop(f);
        assert_eq!(
            hex::encode(cache.sha256(&path).unwrap()),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let cache = DigestCache::default();
        assert!(
            cache
                .sha256(Path::new("/nonexistent/sakshi/kernel"))
                .is_err()
        );
    }
}
