//! A quote with everything needed to check it, and its on-disk form.
//!
//! [`Quote::write_dir`] writes files `tpm2_checkquote` and `tpm2_eventlog` read:
//!
//! | file | content |
//! |---|---|
//! | `quote.msg` | marshalled `TPMS_ATTEST` (`tpm2_quote -m`) |
//! | `quote.sig` | marshalled `TPMT_SIGNATURE` (`tpm2_quote -s`, tss format) |
//! | `quote.pcrs` | PCR values, tpm2-tools serialized format (`tpm2_quote -o`) |
//! | `ak.pub.pem` | AK public key, PEM SubjectPublicKeyInfo |
//! | `ak.pub` | AK public area, `TPM2B_PUBLIC` (tpm2-tools tss format) |
//! | `eventlog.cel.json` | the measurement log, CEL-JSON |
//! | `eventlog.bin` | the same log, TCG PC Client crypto-agile binary |
//! | `quote.json` | metadata: format, TPM kind and notice, nonce, PCR, bank |
//!
//! Check with `tpm2_checkquote -u ak.pub.pem -m quote.msg -s quote.sig -f quote.pcrs -g sha256
//! -q NONCE_HEX`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cel::{CelParseError, EventLog};
use crate::digest::HashAlg;
use crate::wire::{self, WireError};

/// File names inside a quote directory.
pub mod files {
    /// Marshalled TPMS_ATTEST.
    pub const MESSAGE: &str = "quote.msg";
    /// Marshalled TPMT_SIGNATURE.
    pub const SIGNATURE: &str = "quote.sig";
    /// tpm2-tools serialized PCR values.
    pub const PCRS: &str = "quote.pcrs";
    /// AK public key (PEM).
    pub const AK_PEM: &str = "ak.pub.pem";
    /// AK public area (TPM2B_PUBLIC).
    pub const AK_PUBLIC: &str = "ak.pub";
    /// CEL-JSON event log.
    pub const EVENTLOG_CEL: &str = "eventlog.cel.json";
    /// TCG2 binary event log.
    pub const EVENTLOG_BIN: &str = "eventlog.bin";
    /// Metadata.
    pub const META: &str = "quote.json";
}

/// The metadata format tag in `quote.json`.
pub const QUOTE_FORMAT: &str = "sakshi-quote-v1";

/// Largest file read from a quote directory (the event log may be large).
const MAX_FILE_LEN: u64 = 64 << 20;

/// What kind of TPM produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TpmKind {
    /// A hardware (discrete or firmware) TPM.
    Hardware,
    /// A software TPM (swtpm): no hardware root of trust.
    Software,
}

impl TpmKind {
    /// The notice every surface shows for this kind (empty for hardware).
    pub fn notice(self) -> &'static str {
        match self {
            TpmKind::Hardware => "",
            TpmKind::Software => "software TPM: no hardware root of trust",
        }
    }

    /// True for [`TpmKind::Software`].
    pub fn is_software(self) -> bool {
        self == TpmKind::Software
    }
}

/// PCR values of one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValues {
    /// The bank.
    pub alg: HashAlg,
    /// `(pcr, value)` in ascending PCR order.
    pub values: Vec<(u32, Vec<u8>)>,
}

/// A TPM quote with the PCR values, the event log and the AK public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled `TPMS_ATTEST`.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// The quoted PCR values.
    pub pcrs: PcrValues,
    /// The measurement log at the time of the quote.
    pub event_log: EventLog,
    /// AK public key, PEM.
    pub ak_public_pem: String,
    /// AK public area (`TPM2B_PUBLIC`).
    pub ak_public: Vec<u8>,
    /// The kind of TPM (as the appliance reports it; unauthenticated).
    pub tpm_kind: TpmKind,
    /// The nonce the caller supplied.
    pub nonce: Vec<u8>,
}

/// The JSON form of a quote (for the REST API): binary fields in hex.
#[derive(Serialize)]
struct QuoteJson<'a> {
    format: &'static str,
    tpm_kind: TpmKind,
    notice: &'static str,
    nonce: String,
    tpms_attest: String,
    tpmt_signature: String,
    pcr_bank: HashAlg,
    pcrs: std::collections::BTreeMap<u32, String>,
    ak_public_pem: &'a str,
    ak_public: String,
    event_log: &'a EventLog,
}

/// Serializes as a JSON object: `format`, `tpm_kind`, `notice`, hex `nonce`, `tpms_attest`
/// and `tpmt_signature`, `pcr_bank`, `pcrs` (index -> hex), `ak_public_pem`, hex `ak_public`
/// and the CEL-JSON `event_log`.
impl Serialize for Quote {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QuoteJson {
            format: QUOTE_FORMAT,
            tpm_kind: self.tpm_kind,
            notice: self.tpm_kind.notice(),
            nonce: hex::encode(&self.nonce),
            tpms_attest: hex::encode(&self.attest),
            tpmt_signature: hex::encode(&self.signature),
            pcr_bank: self.pcrs.alg,
            pcrs: self
                .pcrs
                .values
                .iter()
                .map(|(p, v)| (*p, hex::encode(v)))
                .collect(),
            ak_public_pem: &self.ak_public_pem,
            ak_public: hex::encode(&self.ak_public),
            event_log: &self.event_log,
        }
        .serialize(s)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    tpm_kind: TpmKind,
    notice: String,
    nonce: String,
    bank: HashAlg,
    pcrs: Vec<u32>,
    files: Vec<String>,
    check_with: String,
}

/// Why a quote directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteDirError {
    /// The target exists and is not an empty directory.
    #[error("{0} exists and is not an empty directory")]
    NotEmpty(PathBuf),
    /// The target has no parent directory or file name.
    #[error("{0} is not a usable output directory path")]
    BadPath(PathBuf),
    /// Creating, writing or renaming failed.
    #[error("cannot write {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Why a quote directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadDirError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A file is larger than the limit.
    #[error("{0} is too large")]
    TooLarge(PathBuf),
    /// `quote.pcrs` is malformed.
    #[error("malformed {}", files::PCRS)]
    Pcrs(#[source] WireError),
    /// `eventlog.cel.json` is malformed.
    #[error("malformed {}", files::EVENTLOG_CEL)]
    EventLog(#[source] CelParseError),
    /// `quote.json` is malformed or of another format.
    #[error("malformed {}", files::META)]
    Meta(#[source] serde_json::Error),
    /// `quote.json` names another format.
    #[error("quote.json has format {0:?}, expected {QUOTE_FORMAT:?}")]
    Format(String),
    /// `quote.json`'s nonce is not hex.
    #[error("{}: nonce is not hex", files::META)]
    Nonce,
    /// `ak.pub.pem` is not UTF-8.
    #[error("{} is not UTF-8 text", files::AK_PEM)]
    PemText,
}

impl Quote {
    /// Write the quote files into `dir`, which must not exist or be an empty directory. Files
    /// are written into a temporary sibling directory that is renamed into place, so `dir`
    /// either gets every file or none.
    pub fn write_dir(&self, dir: &Path) -> Result<(), WriteDirError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteDirError::Io { path, source }
        };
        let parent = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => return Err(WriteDirError::BadPath(dir.to_path_buf())),
        };
        let name = dir
            .file_name()
            .ok_or_else(|| WriteDirError::BadPath(dir.to_path_buf()))?;
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(WriteDirError::NotEmpty(dir.to_path_buf()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(WriteDirError::NotEmpty(dir.to_path_buf()));
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = parent.join(tmp_name);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let result = self
            .write_files(&tmp)
            .and_then(|()| fs::rename(&tmp, dir).map_err(io_err(dir)));
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_files(&self, dir: &Path) -> Result<(), WriteDirError> {
        let meta = Meta {
            format: QUOTE_FORMAT.to_owned(),
            tpm_kind: self.tpm_kind,
            notice: self.tpm_kind.notice().to_owned(),
            nonce: hex::encode(&self.nonce),
            bank: self.pcrs.alg,
            pcrs: self.pcrs.values.iter().map(|(p, _)| *p).collect(),
            files: [
                files::MESSAGE,
                files::SIGNATURE,
                files::PCRS,
                files::AK_PEM,
                files::AK_PUBLIC,
                files::EVENTLOG_CEL,
                files::EVENTLOG_BIN,
            ]
            .map(String::from)
            .to_vec(),
            check_with: format!(
                "tpm2_checkquote -u {} -m {} -s {} -f {} -g {} -q {}",
                files::AK_PEM,
                files::MESSAGE,
                files::SIGNATURE,
                files::PCRS,
                self.pcrs.alg,
                hex::encode(&self.nonce)
            ),
        };
        let mut meta_json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        meta_json.push(b'\n');
        let pcrs = wire::encode_tpm2_tools_pcrs(self.pcrs.alg, &self.pcrs.values);
        let cel = self.event_log.to_cel_json();
        let bin = self.event_log.to_tcg2_binary();
        let contents: [(&str, &[u8]); 8] = [
            (files::MESSAGE, &self.attest),
            (files::SIGNATURE, &self.signature),
            (files::PCRS, &pcrs),
            (files::AK_PEM, self.ak_public_pem.as_bytes()),
            (files::AK_PUBLIC, &self.ak_public),
            (files::EVENTLOG_CEL, cel.as_bytes()),
            (files::EVENTLOG_BIN, &bin),
            (files::META, &meta_json),
        ];
        for (name, bytes) in contents {
            let path = dir.join(name);
            let write = || -> io::Result<()> {
                let mut f = fs::File::create(&path)?;
                f.write_all(bytes)?;
                f.sync_all()
            };
            write().map_err(|source| WriteDirError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Read a directory written by [`Quote::write_dir`].
    pub fn read_dir(dir: &Path) -> Result<Self, ReadDirError> {
        let meta_bytes = read_limited(&dir.join(files::META))?;
        let meta: Meta = serde_json::from_slice(&meta_bytes).map_err(ReadDirError::Meta)?;
        if meta.format != QUOTE_FORMAT {
            return Err(ReadDirError::Format(meta.format));
        }
        let nonce = hex::decode(&meta.nonce).map_err(|_| ReadDirError::Nonce)?;
        let attest = read_limited(&dir.join(files::MESSAGE))?;
        let signature = read_limited(&dir.join(files::SIGNATURE))?;
        let pcrs = wire::decode_tpm2_tools_pcrs(&read_limited(&dir.join(files::PCRS))?)
            .map_err(ReadDirError::Pcrs)?;
        let ak_public_pem = String::from_utf8(read_limited(&dir.join(files::AK_PEM))?)
            .map_err(|_| ReadDirError::PemText)?;
        let ak_public = read_limited(&dir.join(files::AK_PUBLIC))?;
        let event_log = EventLog::from_cel_json(&read_limited(&dir.join(files::EVENTLOG_CEL))?)
            .map_err(ReadDirError::EventLog)?;
        Ok(Quote {
            attest,
            signature,
            pcrs,
            event_log,
            ak_public_pem,
            ak_public,
            tpm_kind: meta.tpm_kind,
            nonce,
        })
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, ReadDirError> {
    let io_err = |source| ReadDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io_err)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(ReadDirError::TooLarge(path.to_path_buf()));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    pub(crate) fn sample_quote() -> Quote {
        Quote {
            attest: hex::decode(testdata::QUOTE_MSG).unwrap(),
            signature: hex::decode(testdata::QUOTE_SIG).unwrap(),
            pcrs: PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(16, hex::decode(testdata::PCR16).unwrap())],
            },
            event_log: EventLog::new(),
            ak_public_pem: testdata::AK_PEM.to_owned(),
            ak_public: hex::decode(testdata::AK_TSS_PUB).unwrap(),
            tpm_kind: TpmKind::Software,
            nonce: hex::decode(testdata::NONCE).unwrap(),
        }
    }

    #[test]
    fn write_then_read_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = sample_quote();
        q.write_dir(&dir).unwrap();
        assert_eq!(Quote::read_dir(&dir).unwrap(), q);
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(files::META)).unwrap()).unwrap();
        assert_eq!(meta["notice"], "software TPM: no hardware root of trust");
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["tpms_attest"], testdata::QUOTE_MSG);
        assert_eq!(json["pcrs"]["16"], testdata::PCR16);
        assert_eq!(json["notice"], "software TPM: no hardware root of trust");
        // An existing, non-empty directory is refused and left alone.
        assert!(matches!(q.write_dir(&dir), Err(WriteDirError::NotEmpty(_))));
        // An existing empty directory is filled.
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        q.write_dir(&empty).unwrap();
        assert!(empty.join(files::EVENTLOG_BIN).is_file());
        // No temporary directories are left behind.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn read_dir_reports_missing_and_malformed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        sample_quote().write_dir(&dir).unwrap();
        fs::write(dir.join(files::PCRS), b"short").unwrap();
        assert!(matches!(Quote::read_dir(&dir), Err(ReadDirError::Pcrs(_))));
        fs::remove_file(dir.join(files::SIGNATURE)).unwrap();
        assert!(matches!(
            Quote::read_dir(&dir),
            Err(ReadDirError::Io { .. })
        ));
        fs::write(dir.join(files::META), b"{}").unwrap();
        assert!(matches!(Quote::read_dir(&dir), Err(ReadDirError::Meta(_))));
    }
}
