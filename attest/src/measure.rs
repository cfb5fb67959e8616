//! Measured boot: digest a VM's kernel, initrd, command line and canonical config, apply the
//! policy, and extend the measurement PCR before the vCPUs first run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::Serialize;
use sha2::Digest as _;

use crate::digest::Sha256Digest;
use crate::event::{BootComponent, is_valid_vm_id};
use crate::policy::{Policy, PolicyDecision};
use crate::tpm::{BootDigests, ExtendError, Extended, Tpm};

/// The canonical JSON form (RFC 8785, JSON Canonicalization Scheme) of a VM config, the bytes
/// [`VmBoot::config`] should carry.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(value)
}

/// What to measure for one boot.
#[derive(Debug, Clone, Copy)]
pub struct VmBoot<'a> {
    /// The VM id (1-128 characters of `[A-Za-z0-9._:-]`).
    pub vm_id: &'a str,
    /// The kernel image file.
    pub kernel: &'a Path,
    /// The initrd file, if any.
    pub initrd: Option<&'a Path>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The canonical VM config bytes (see [`canonical_json`]).
    pub config: &'a [u8],
}

/// What to measure for one boot when the image digests are already known.
#[derive(Debug, Clone, Copy)]
pub struct VmBootDigests<'a> {
    /// The VM id (1-128 characters of `[A-Za-z0-9._:-]`).
    pub vm_id: &'a str,
    /// SHA-256 of the kernel image.
    pub kernel_sha256: Sha256Digest,
    /// SHA-256 of the initrd, if any.
    pub initrd_sha256: Option<Sha256Digest>,
    /// The kernel command line exactly as the guest sees it.
    pub cmdline: &'a str,
    /// The canonical VM config bytes.
    pub config: &'a [u8],
}

/// The digests of one boot, the policy decision and where the events landed. This is what goes
/// into the audit entry for the boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootMeasurement {
    /// The VM.
    pub vm_id: String,
    /// SHA-256 of the kernel image.
    pub kernel_sha256: Sha256Digest,
    /// SHA-256 of the initrd.
    pub initrd_sha256: Option<Sha256Digest>,
    /// SHA-256 of the command line's UTF-8 bytes.
    pub cmdline_sha256: Sha256Digest,
    /// SHA-256 of the canonical config.
    pub config_sha256: Sha256Digest,
    /// The policy decision. When it refuses, nothing was extended.
    pub decision: PolicyDecision,
    /// The extended events (`None` when refused).
    pub extended: Option<Extended>,
}

impl BootMeasurement {
    /// True unless the policy refused the boot.
    pub fn may_boot(&self) -> bool {
        self.decision.allows_boot()
    }
}

/// Why an image could not be digested.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Opening or reading the file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file changed while it was being hashed.
    #[error("{0} changed while it was being hashed")]
    Changed(PathBuf),
}

/// Why a boot could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The VM id is not 1-128 characters of `[A-Za-z0-9._:-]`.
    #[error("invalid VM id")]
    BadVmId,
    /// The kernel could not be digested.
    #[error("cannot digest the kernel")]
    Kernel(#[source] DigestError),
    /// The initrd could not be digested.
    #[error("cannot digest the initrd")]
    Initrd(#[source] DigestError),
    /// The extend failed.
    #[error("cannot extend the measurement PCR")]
    Extend(#[source] ExtendError),
}

/// Identity and version of a file: if any of these change, the digest is recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Measures VM boots into the TPM, with a digest cache and the boot policy.
#[derive(Debug)]
pub struct MeasuredBoot {
    tpm: Tpm,
    cache: Mutex<HashMap<PathBuf, (FileStamp, Sha256Digest)>>,
    policy: RwLock<Policy>,
}

impl MeasuredBoot {
    /// Measure through `tpm` under `policy`.
    pub fn new(tpm: Tpm, policy: Policy) -> Self {
        Self {
            tpm,
            cache: Mutex::new(HashMap::new()),
            policy: RwLock::new(policy),
        }
    }

    /// The TPM handle.
    pub fn tpm(&self) -> &Tpm {
        &self.tpm
    }

    /// A copy of the current policy.
    pub fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the policy (e.g. when the image store or patch ledger changes).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Add one golden value.
    pub fn approve(
        &self,
        component: BootComponent,
        sha256: Sha256Digest,
        label: impl Into<String>,
    ) {
        self.policy
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .approve(component, sha256, label);
    }

    /// SHA-256 of a file, cached by the file's device, inode, size, mtime and ctime.
    pub fn image_digest(&self, path: &Path) -> Result<Sha256Digest, DigestError> {
        let io_err = |source| DigestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stamp = FileStamp::of(&std::fs::metadata(path).map_err(io_err)?);
        if let Some((s, d)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            && *s == stamp
        {
            return Ok(*d);
        }
        let mut file = File::open(path).map_err(io_err)?;
        let opened = FileStamp::of(&file.metadata().map_err(io_err)?);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let after = FileStamp::of(&file.metadata().map_err(io_err)?);
        if opened != after || opened != stamp {
            return Err(DigestError::Changed(path.to_path_buf()));
        }
        let digest = Sha256Digest(hasher.finalize().into());
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp, digest));
        Ok(digest)
    }

    /// Digest the boot's parts, decide by policy, and (unless refused) extend them into the
    /// measurement PCR and the event log. Call this before the VM's vCPUs first run, then
    /// record the returned [`BootMeasurement`] in the audit log.
    pub fn measure_vm(&self, boot: &VmBoot<'_>) -> Result<BootMeasurement, MeasureError> {
        if !is_valid_vm_id(boot.vm_id) {
            return Err(MeasureError::BadVmId);
        }
        let kernel_sha256 = self
            .image_digest(boot.kernel)
            .map_err(MeasureError::Kernel)?;
        let initrd_sha256 = boot
            .initrd
            .map(|p| self.image_digest(p))
            .transpose()
            .map_err(MeasureError::Initrd)?;
        self.measure_digests(&VmBootDigests {
            vm_id: boot.vm_id,
            kernel_sha256,
            initrd_sha256,
            cmdline: boot.cmdline,
            config: boot.config,
        })
    }

    /// Like [`MeasuredBoot::measure_vm`], for a caller that already has the image digests
    /// (the host supervisor hashes the images it loads).
    pub fn measure_digests(
        &self,
        boot: &VmBootDigests<'_>,
    ) -> Result<BootMeasurement, MeasureError> {
        if !is_valid_vm_id(boot.vm_id) {
            return Err(MeasureError::BadVmId);
        }
        let kernel = boot.kernel_sha256;
        let initrd = boot.initrd_sha256;
        let cmdline = Sha256Digest::of(boot.cmdline.as_bytes());
        let config = Sha256Digest::of(boot.config);
        let decision = self
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .decide(&kernel, initrd.as_ref());
        let extended = if decision.allows_boot() {
            let d = BootDigests {
                vm_id: boot.vm_id.to_owned(),
                kernel,
                initrd,
                cmdline,
                config,
            };
            Some(self.tpm.measure_boot(d).map_err(MeasureError::Extend)?)
        } else {
            None
        };
        match &decision {
            PolicyDecision::Approved => {}
            PolicyDecision::Flagged { unapproved } => tracing::warn!(
                vm.id = boot.vm_id,
                attest.unapproved = unapproved.len(),
                "booting unapproved image (audit mode)"
            ),
            PolicyDecision::Refused { unapproved } => tracing::warn!(
                vm.id = boot.vm_id,
                attest.unapproved = unapproved.len(),
                "refusing unapproved image"
            ),
        }
        Ok(BootMeasurement {
            vm_id: boot.vm_id.to_owned(),
            kernel_sha256: kernel,
            initrd_sha256: initrd,
            cmdline_sha256: cmdline,
            config_sha256: config,
            decision,
            extended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_strips_whitespace() {
        let v: serde_json::Value = serde_json::from_str(r#"{ "b": 1, "a": [true, "x"] }"#).unwrap();
        assert_eq!(canonical_json(&v).unwrap(), br#"{"a":[true,"x"],"b":1}"#);
    }

    #[test]
    fn file_stamp_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let a = FileStamp::of(&std::fs::metadata(&p).unwrap());
        std::fs::write(&p, b"three").unwrap();
        let b = FileStamp::of(&std::fs::metadata(&p).unwrap());
        assert_ne!(a, b);
    }
}
