//! Content-addressed boot images: `images/<sha256>` holds the bytes and `images/<sha256>.json`
//! the metadata. Files are written to a temporary name, synced, then renamed, so a crash never
//! leaves a partial image under its digest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A kernel (ELF or bzImage).
    Kernel,
    /// An initial ramdisk.
    Initrd,
}

impl ImageKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Initrd => "initrd",
        }
    }
}

/// Metadata of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Label given at upload.
    pub name: String,
    /// Kernel or initrd.
    pub kind: ImageKind,
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339 upload time.
    pub added_at: String,
    /// Who uploaded it.
    pub added_by: String,
}

/// Storing or reading an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a kernel this host can load.
    #[error("not a kernel image: expected an ELF64 file or a bzImage")]
    NotAKernel,
    /// The image is empty.
    #[error("image is empty")]
    Empty,
    /// No image with this digest.
    #[error("no image with sha256 {0}")]
    NotFound(String),
    /// The image exists but is of the other kind.
    #[error("image {sha256} is a {actual}, not a {expected}")]
    WrongKind {
        /// Digest.
        sha256: String,
        /// Its kind.
        actual: &'static str,
        /// The kind asked for.
        expected: &'static str,
    },
    /// Filesystem failure.
    #[error("image store I/O failed on {}", path.display())]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A metadata file is unreadable.
    #[error("corrupt image metadata {}", path.display())]
    Corrupt {
        /// Path involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Whether `s` is a lowercase hex SHA-256 digest.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn looks_like_kernel(bytes: &[u8]) -> bool {
    let elf64 = bytes.len() >= 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2;
    let bzimage = bytes.len() >= 0x206 && bytes[0x202..0x206] == *b"HdrS";
    elf64 || bzimage
}

/// The image directory, with its metadata indexed in memory.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    index: std::sync::RwLock<Option<Vec<ImageInfo>>>,
}

impl ImageStore {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> Result<ImageStore, ImageError> {
        fs::create_dir_all(dir).map_err(|source| ImageError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(ImageStore {
            dir: dir.to_owned(),
            index: std::sync::RwLock::new(None),
        })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}", crate::auth::random_hex(8)));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(Self::io(path))
    }

    /// Stores an image (idempotent by digest; the first metadata wins).
    pub fn put(
        &self,
        name: &str,
        kind: ImageKind,
        bytes: &[u8],
        added_by: &str,
    ) -> Result<(ImageInfo, bool), ImageError> {
        if bytes.is_empty() {
            return Err(ImageError::Empty);
        }
        if kind == ImageKind::Kernel && !looks_like_kernel(bytes) {
            return Err(ImageError::NotAKernel);
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Ok(existing) = self.get(&sha256) {
            return Ok((existing, false));
        }
        let info = ImageInfo {
            sha256: sha256.clone(),
            name: name.to_owned(),
            kind,
            size: bytes.len() as u64,
            added_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            added_by: added_by.to_owned(),
        };
        self.write_atomically(&self.dir.join(&sha256), bytes)?;
        let meta = serde_json::to_vec_pretty(&info).map_err(|source| ImageError::Corrupt {
            path: self.meta_path(&sha256),
            source,
        })?;
        self.write_atomically(&self.meta_path(&sha256), &meta)?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok((info, true))
    }

    fn meta_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.json"))
    }

    /// Path of the bytes of an image.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Metadata of one image.
    pub fn get(&self, sha256: &str) -> Result<ImageInfo, ImageError> {
        if !is_sha256_hex(sha256) {
            return Err(ImageError::NotFound(sha256.to_owned()));
        }
        let path = self.meta_path(sha256);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(sha256.to_owned()));
            }
            Err(source) => return Err(ImageError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Corrupt { path, source })
    }

    /// An image of the expected kind, for booting.
    pub fn resolve(
        &self,
        sha256: &str,
        expected: ImageKind,
    ) -> Result<crate::backend::ImageRef, ImageError> {
        let info = self.get(sha256)?;
        if info.kind != expected {
            return Err(ImageError::WrongKind {
                sha256: sha256.to_owned(),
                actual: info.kind.as_str(),
                expected: expected.as_str(),
            });
        }
        Ok(crate::backend::ImageRef {
            sha256: info.sha256,
            path: self.path(sha256),
        })
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        if let Some(cached) = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(cached.clone());
        }
        let fresh = self.scan()?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    fn scan(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let rd = fs::read_dir(&self.dir).map_err(Self::io(&self.dir))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if is_sha256_hex(stem) {
                out.push(self.get(stem)?);
            }
        }
        out.sort_by(|a, b| b.added_at.cmp(&a.added_at).then(a.sha256.cmp(&b.sha256)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_elf() -> Vec<u8> {
        let mut v = vec![0u8; 128];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v
    }

    #[test]
    fn put_get_resolve_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let (k, fresh) = store
            .put("guest", ImageKind::Kernel, &fake_elf(), "alice")
            .unwrap();
        assert!(fresh);
        assert_eq!(k.sha256, hex::encode(Sha256::digest(fake_elf())));
        let (again, fresh) = store
            .put("other", ImageKind::Kernel, &fake_elf(), "bob")
            .unwrap();
        assert!(!fresh);
        assert_eq!(again.name, "guest");
        assert_eq!(fs::read(store.path(&k.sha256)).unwrap(), fake_elf());
        let (i, _) = store
            .put("rd", ImageKind::Initrd, b"initrd bytes", "alice")
            .unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        assert!(store.resolve(&k.sha256, ImageKind::Kernel).is_ok());
        assert!(matches!(
            store.resolve(&i.sha256, ImageKind::Kernel),
            Err(ImageError::WrongKind { .. })
        ));
        assert!(matches!(
            store.resolve(&"0".repeat(64), ImageKind::Kernel),
            Err(ImageError::NotFound(_))
        ));
        assert!(matches!(
            store.get("../etc/passwd"),
            Err(ImageError::NotFound(_))
        ));
    }

    #[test]
    fn rejects_non_kernels_and_empty_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.put("x", ImageKind::Kernel, b"MZ not a kernel at all", "a"),
            Err(ImageError::NotAKernel)
        ));
        assert!(matches!(
            store.put("x", ImageKind::Initrd, b"", "a"),
            Err(ImageError::Empty)
        ));
        assert!(store.list().unwrap().is_empty());
        // Nothing left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
