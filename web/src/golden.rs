//! The golden set: the digests measured boot approves, persisted in `<data>/golden.json` so that
//! approvals (image approvals, patched images from the patch ledger, the bundled demo guest)
//! survive restarts. A change is written to disk (temporary file, fsync, rename) before it takes
//! effect, so a failed write changes nothing.

use sakshi_attest::{BootComponent, Policy, PolicyMode, PolicyParseError, Sha256Digest};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Reading or writing the golden set failed.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The file could not be read.
    #[error("cannot read the golden set {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a policy document.
    #[error("the golden set {path} is malformed")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PolicyParseError,
    },
    /// The file could not be written; nothing changed.
    #[error("cannot write the golden set {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where a changed policy goes once it is on disk (measured boot's live policy).
pub type Apply = Box<dyn Fn(Policy) + Send + Sync>;

/// The persisted golden set.
pub struct GoldenStore {
    path: PathBuf,
    policy: Mutex<Policy>,
    apply: Apply,
}

impl std::fmt::Debug for GoldenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoldenStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn set_of(
    p: &Policy,
    component: BootComponent,
) -> &std::collections::BTreeMap<Sha256Digest, String> {
    match component {
        BootComponent::Kernel => &p.kernels,
        BootComponent::Initrd => &p.initrds,
        BootComponent::Cmdline => &p.cmdlines,
        BootComponent::Config => &p.configs,
    }
}

impl GoldenStore {
    /// Loads `path` (an empty set when it does not exist yet) under `mode` (the configuration
    /// decides the mode, whatever the file says) and hands the policy to `apply`.
    pub fn open(path: &Path, mode: PolicyMode, apply: Apply) -> Result<GoldenStore, GoldenError> {
        let mut policy = match std::fs::read(path) {
            Ok(bytes) => Policy::from_json(&bytes).map_err(|source| GoldenError::Parse {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Policy::new(mode),
            Err(source) => {
                return Err(GoldenError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        policy.mode = mode;
        apply(policy.clone());
        Ok(GoldenStore {
            path: path.to_owned(),
            policy: Mutex::new(policy),
            apply,
        })
    }

    /// A copy of the current policy.
    pub fn policy(&self) -> Policy {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `sha256` is approved as `component`.
    pub fn is_approved(&self, component: BootComponent, sha256: &Sha256Digest) -> bool {
        set_of(
            &self.policy.lock().unwrap_or_else(|e| e.into_inner()),
            component,
        )
        .contains_key(sha256)
    }

    /// Applies `f` to a copy of the policy; when it reports a change, the copy is written to
    /// disk and then takes effect. Returns whether anything changed.
    pub fn update(&self, f: impl FnOnce(&mut Policy) -> bool) -> Result<bool, GoldenError> {
        let mut current = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = current.clone();
        if !f(&mut next) {
            return Ok(false);
        }
        self.save(&next)?;
        *current = next.clone();
        (self.apply)(next);
        Ok(true)
    }

    /// Approves `sha256` as `component` with `label`; false when it already was (with any label).
    pub fn approve(
        &self,
        component: BootComponent,
        sha256: Sha256Digest,
        label: &str,
    ) -> Result<bool, GoldenError> {
        self.update(|p| {
            if set_of(p, component).contains_key(&sha256) {
                return false;
            }
            p.approve(component, sha256, label);
            true
        })
    }

    /// Withdraws an approval; false when it was not approved.
    pub fn revoke(
        &self,
        component: BootComponent,
        sha256: &Sha256Digest,
    ) -> Result<bool, GoldenError> {
        self.update(|p| p.revoke(component, sha256))
    }

    fn save(&self, p: &Policy) -> Result<(), GoldenError> {
        let err = |source| GoldenError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(p.to_json().as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sink() -> (Arc<Mutex<Option<Policy>>>, Apply) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        (seen, Box::new(move |p| *s.lock().unwrap() = Some(p)))
    }

    #[test]
    fn approvals_persist_and_the_config_decides_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("golden.json");
        let (seen, apply) = sink();
        let g = GoldenStore::open(&path, PolicyMode::Enforce, apply).unwrap();
        assert!(seen.lock().unwrap().as_ref().unwrap().kernels.is_empty());
        let k = Sha256Digest([7; 32]);
        assert!(g.approve(BootComponent::Kernel, k, "guest v1").unwrap());
        assert!(!g.approve(BootComponent::Kernel, k, "again").unwrap());
        assert!(g.is_approved(BootComponent::Kernel, &k));
        assert!(!g.is_approved(BootComponent::Initrd, &k));
        assert_eq!(
            seen.lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .kernels
                .get(&k)
                .map(String::as_str),
            Some("guest v1")
        );
        drop(g);

        let (seen, apply) = sink();
        let g = GoldenStore::open(&path, PolicyMode::Audit, apply).unwrap();
        let p = seen.lock().unwrap().clone().unwrap();
        assert_eq!(p.mode, PolicyMode::Audit);
        assert_eq!(p.kernels.get(&k).map(String::as_str), Some("guest v1"));
        assert!(g.revoke(BootComponent::Kernel, &k).unwrap());
        assert!(!g.revoke(BootComponent::Kernel, &k).unwrap());
        assert!(seen.lock().unwrap().as_ref().unwrap().kernels.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("golden.json");
        std::fs::write(&path, b"{\"mode\": \"enforce\", \"bogus\": 1}").unwrap();
        let (seen, apply) = sink();
        let err = GoldenStore::open(&path, PolicyMode::Enforce, apply).unwrap_err();
        assert!(matches!(err, GoldenError::Parse { .. }), "{err:?}");
        assert!(seen.lock().unwrap().is_none(), "nothing applied");
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("gone");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("golden.json");
        let (seen, apply) = sink();
        let g = GoldenStore::open(&path, PolicyMode::Enforce, apply).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let k = Sha256Digest([9; 32]);
        let err = g.approve(BootComponent::Kernel, k, "x").unwrap_err();
        assert!(matches!(err, GoldenError::Write { .. }), "{err:?}");
        assert!(!g.is_approved(BootComponent::Kernel, &k));
        assert!(seen.lock().unwrap().as_ref().unwrap().kernels.is_empty());
    }
}
