//! The durable delivery cursor: the first audit sequence number the receiver has not acknowledged.
//!
//! Stored as a one-line JSON file (`{"v":1,"next_seq":N}`) replaced atomically: write a temporary file in
//! the same directory, fsync it, rename it over the old one, fsync the directory. A crash at any point
//! leaves either the old or the new cursor, never a torn one; the cursor only ever moves after an
//! acknowledgement, so at worst a batch is sent twice (receivers deduplicate by `log.record.uid`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const CURSOR_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    v: u32,
    next_seq: u64,
}

/// Loading the cursor failed.
#[derive(Debug, thiserror::Error)]
pub enum CursorLoadError {
    /// The file exists but cannot be read.
    #[error("cannot read the OTLP cursor {path}")]
    Read {
        /// The cursor file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a cursor of a known version.
    #[error("the OTLP cursor {path} is corrupt")]
    Corrupt {
        /// The cursor file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file has a version this build does not know.
    #[error("the OTLP cursor {path} has version {found}")]
    Version {
        /// The cursor file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// Storing the cursor failed; the previous value is still in place.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the OTLP cursor {path}")]
pub struct CursorStoreError {
    /// The cursor file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    /// A cursor stored at `path` (created on the first store).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Cursor { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position; 0 (ship from the first entry) when no cursor was ever stored.
    pub fn load(&self) -> Result<u64, CursorLoadError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(CursorLoadError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: CursorFile =
            serde_json::from_slice(&bytes).map_err(|source| CursorLoadError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if file.v != CURSOR_VERSION {
            return Err(CursorLoadError::Version {
                path: self.path.clone(),
                found: file.v,
            });
        }
        Ok(file.next_seq)
    }

    /// Store `next_seq` atomically and durably.
    pub fn store(&self, next_seq: u64) -> Result<(), CursorStoreError> {
        self.write(next_seq).map_err(|source| CursorStoreError {
            path: self.path.clone(),
            source,
        })
    }

    fn write(&self, next_seq: u64) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let body = serde_json::to_vec(&CursorFile {
            v: CURSOR_VERSION,
            next_seq,
        })
        .map_err(io::Error::other)?;
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cursor_starts_at_zero_and_stores_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path().join("otlp.cursor"));
        assert_eq!(c.load().unwrap(), 0);
        c.store(41).unwrap();
        c.store(42).unwrap();
        assert_eq!(c.load().unwrap(), 42);
        assert_eq!(Cursor::new(c.path()).load().unwrap(), 42);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["otlp.cursor"], "no temporary file left behind");
    }

    #[test]
    fn corrupt_or_future_cursor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        fs::write(&p, b"{\"v\":1,\"next_seq\":").unwrap();
        assert!(matches!(
            Cursor::new(&p).load(),
            Err(CursorLoadError::Corrupt { .. })
        ));
        fs::write(&p, b"{\"v\":2,\"next_seq\":5}").unwrap();
        assert!(matches!(
            Cursor::new(&p).load(),
            Err(CursorLoadError::Version { found: 2, .. })
        ));
    }

    #[test]
    fn failed_store_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        let c = Cursor::new(&p);
        c.store(9).unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir(dir.path().join("c.tmp")).unwrap();
        assert!(c.store(10).is_err());
        assert_eq!(c.load().unwrap(), 9);
    }
}
