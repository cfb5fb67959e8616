//! The on-disk measurement journal (`STATE/eventlog.jsonl`).
//!
//! Line 1 is a header (`format`, `pcr`, `banks`, `tpm_reset_count`); then CEL-JSON record
//! lines and commit lines `{"committed":N}`. A batch of records is written before its PCR
//! extends and committed after them, so after a crash the records past the last commit are the
//! only ones that may be missing from the PCR; [`Journal::open`] keeps exactly those the PCR
//! shows were extended. No fsync: page-cache data is lost only when the host crashes, and that
//! resets the TPM (and with it the PCR), which starts a new journal anyway.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cel::{self, CelRecord, EventLog};
use crate::digest::HashAlg;

pub(crate) const JOURNAL_FILE: &str = "eventlog.jsonl";
const FORMAT: &str = "sakshi-eventlog-journal-v1";

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    pcr: u32,
    banks: Vec<HashAlg>,
    tpm_reset_count: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    committed: u64,
}

/// Why the journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("cannot access event log journal {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A line is not a header, record or commit, or records are out of sequence.
    #[error("event log journal {path} is corrupt at line {line}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The PCR does not hold the value the journal replays to: it was reset, or something
    /// else extended it.
    #[error(
        "PCR {pcr} ({alg}) is {actual} but the event log replays to {expected}; the PCR was reset or extended outside Sakshi"
    )]
    OutOfSync {
        /// The PCR.
        pcr: u32,
        /// The bank that disagrees.
        alg: HashAlg,
        /// Hex of the replayed value.
        expected: String,
        /// Hex of the TPM's value.
        actual: String,
    },
}

pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    log: EventLog,
    pcr: u32,
    banks: Vec<HashAlg>,
}

/// The TPM state the journal must agree with.
pub(crate) struct TpmState<'a> {
    pub pcr: u32,
    pub banks: &'a [HashAlg],
    pub reset_count: u32,
    /// Current value of `pcr` in every bank, same order as `banks`.
    pub values: &'a [Vec<u8>],
}

impl Journal {
    pub(crate) fn open(state_dir: &Path, tpm: &TpmState<'_>) -> Result<Self, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let want = Header {
            format: FORMAT.to_owned(),
            pcr: tpm.pcr,
            banks: tpm.banks.to_vec(),
            tpm_reset_count: tpm.reset_count,
        };
        match File::open(&path) {
            Ok(f) => {
                let (header, log, committed, torn) = read_journal(&path, f)?;
                if header == want {
                    return Self::resume(path, tpm, log, committed, torn);
                }
                // A new TPM reset cycle (or another PCR or bank set): keep the old journal.
                let archive =
                    state_dir.join(format!("eventlog.reset-{}.jsonl", header.tpm_reset_count));
                fs::rename(&path, &archive).map_err(io_err)?;
                tracing::info!(
                    attest.journal.archived = %archive.display(),
                    attest.tpm.reset_count = tpm.reset_count,
                    "TPM reset cycle changed; starting a new event log"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        check_in_sync(&EventLog::new(), 0, tpm)?;
        // Write the header to a temporary file and rename, so a crash never leaves a journal
        // without its header.
        let tmp = state_dir.join(format!("{JOURNAL_FILE}.tmp"));
        let mut line = serde_json::to_vec(&want).unwrap_or_default();
        line.push(b'\n');
        fs::write(&tmp, &line).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        Ok(Journal {
            path,
            file,
            log: EventLog::new(),
            pcr: tpm.pcr,
            banks: tpm.banks.to_vec(),
        })
    }

    fn resume(
        path: PathBuf,
        tpm: &TpmState<'_>,
        mut log: EventLog,
        committed: usize,
        torn: bool,
    ) -> Result<Self, JournalError> {
        // The PCR holds the first k records, for some k in committed..=len.
        let k = (committed..=log.len())
            .rev()
            .find(|&k| check_in_sync(&log, k, tpm).is_ok());
        let Some(k) = k else {
            return Err(check_in_sync(&log, committed, tpm)
                .err()
                .unwrap_or(JournalError::Corrupt { path, line: 1 }));
        };
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let needs_rewrite = torn || k != log.len() || committed != log.len();
        if k != log.len() {
            tracing::warn!(
                attest.journal.dropped = log.len() - k,
                "dropping event log records that were written but never extended (crash during a measurement)"
            );
            log.truncate(k);
        }
        if needs_rewrite {
            rewrite(&path, tpm, &log).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        Ok(Journal {
            path,
            file,
            log,
            pcr: tpm.pcr,
            banks: tpm.banks.to_vec(),
        })
    }

    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    pub(crate) fn pcr(&self) -> u32 {
        self.pcr
    }

    pub(crate) fn banks(&self) -> &[HashAlg] {
        &self.banks
    }

    /// Write `records` (not yet extended) and return the file length before them.
    pub(crate) fn write_pending(&mut self, records: &[CelRecord]) -> Result<u64, JournalError> {
        let io_err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let before = self.file.seek(SeekFrom::End(0)).map_err(io_err)?;
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(cel::record_to_json_line(r).as_bytes());
            buf.push(b'\n');
        }
        if let Err(e) = self.file.write_all(&buf) {
            // Best effort: do not leave a partial line for the next batch to append to.
            let _ = self.file.set_len(before);
            return Err(io_err(e));
        }
        Ok(before)
    }

    /// Commit the first `extended` of the pending `records` (those the TPM extended); the rest
    /// are removed from the file.
    pub(crate) fn commit(
        &mut self,
        records: Vec<CelRecord>,
        extended: usize,
        before: u64,
    ) -> Result<(), JournalError> {
        let io_err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        if extended < records.len() {
            // Cut the file back to just after the extended records.
            let mut keep = before;
            for r in &records[..extended] {
                keep += cel::record_to_json_line(r).len() as u64 + 1;
            }
            self.file.set_len(keep).map_err(io_err)?;
        }
        for r in records.into_iter().take(extended) {
            self.log.push(r);
        }
        let line = format!("{{\"committed\":{}}}\n", self.log.len());
        self.file.write_all(line.as_bytes()).map_err(io_err)
    }
}

fn check_in_sync(log: &EventLog, upto: usize, tpm: &TpmState<'_>) -> Result<(), JournalError> {
    for (alg, actual) in tpm.banks.iter().zip(tpm.values) {
        let expected = log.replay_prefix(tpm.pcr, *alg, upto).unwrap_or_default();
        if &expected != actual {
            return Err(JournalError::OutOfSync {
                pcr: tpm.pcr,
                alg: *alg,
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
    }
    Ok(())
}

fn rewrite(path: &Path, tpm: &TpmState<'_>, log: &EventLog) -> io::Result<()> {
    let header = Header {
        format: FORMAT.to_owned(),
        pcr: tpm.pcr,
        banks: tpm.banks.to_vec(),
        tpm_reset_count: tpm.reset_count,
    };
    let mut buf = serde_json::to_vec(&header).unwrap_or_default();
    buf.push(b'\n');
    for r in log.records() {
        buf.extend_from_slice(cel::record_to_json_line(r).as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(format!("{{\"committed\":{}}}\n", log.len()).as_bytes());
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, &buf)?;
    fs::rename(&tmp, path)
}

/// Read header, records, the committed count, and whether a torn final line (no newline, left
/// by a crash) was ignored.
fn read_journal(path: &Path, f: File) -> Result<(Header, EventLog, usize, bool), JournalError> {
    let io_err = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |line| JournalError::Corrupt {
        path: path.to_path_buf(),
        line,
    };
    let mut reader = BufReader::new(f);
    let mut header: Option<Header> = None;
    let mut log = EventLog::new();
    let mut committed = 0usize;
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    let torn = loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            break false;
        }
        if buf.last() != Some(&b'\n') {
            break true;
        }
        lineno += 1;
        let line = &buf[..buf.len() - 1];
        if header.is_none() {
            header = Some(serde_json::from_slice(line).map_err(|_| corrupt(lineno))?);
            continue;
        }
        if let Ok(c) = serde_json::from_slice::<Commit>(line) {
            if c.committed as usize > log.len() || (c.committed as usize) < committed {
                return Err(corrupt(lineno));
            }
            committed = c.committed as usize;
            continue;
        }
        let rec = cel::record_from_json_line(line).map_err(|_| corrupt(lineno))?;
        let index = log.len();
        log.check_and_push(index, rec)
            .map_err(|_| corrupt(lineno))?;
    };
    let header = header.ok_or_else(|| corrupt(1))?;
    if header.format != FORMAT || log.banks().iter().any(|b| !header.banks.contains(b)) {
        return Err(corrupt(1));
    }
    Ok((header, log, committed, torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::event::MeasuredEvent;

    const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

    fn ev(i: u64) -> MeasuredEvent {
        MeasuredEvent::AuditCheckpoint {
            tree_size: i,
            checkpoint_sha256: Sha256Digest::of(&i.to_le_bytes()),
        }
    }

    /// A fake PCR: the replay of `log`'s first `n` records.
    fn values(log: &EventLog, n: usize) -> Vec<Vec<u8>> {
        BANKS
            .iter()
            .map(|a| log.replay_prefix(16, *a, n).unwrap())
            .collect()
    }

    fn state<'a>(values: &'a [Vec<u8>], reset_count: u32) -> TpmState<'a> {
        TpmState {
            pcr: 16,
            banks: &BANKS,
            reset_count,
            values,
        }
    }

    fn batch(j: &Journal, events: &[MeasuredEvent]) -> Vec<CelRecord> {
        let first = j.log().len() as u64;
        events
            .iter()
            .zip(first..)
            .map(|(e, n)| CelRecord::build(n, 16, &BANKS, e))
            .collect()
    }

    #[test]
    fn journal_resumes_and_recovers_an_unextended_tail() {
        let dir = tempfile::tempdir().unwrap();
        let zero = values(&EventLog::new(), 0);
        let mut j = Journal::open(dir.path(), &state(&zero, 1)).unwrap();
        let recs = batch(&j, &[ev(1), ev(2)]);
        let before = j.write_pending(&recs).unwrap();
        j.commit(recs, 2, before).unwrap();
        let full = j.log().clone();
        assert_eq!(full.len(), 2);
        // Crash after writing a batch of two but extending only one of them.
        let recs = batch(&j, &[ev(3), ev(4)]);
        j.write_pending(&recs).unwrap();
        drop(j);
        let mut shadow = full.clone();
        shadow.push(recs[0].clone());
        let v = values(&shadow, 3);
        let j = Journal::open(dir.path(), &state(&v, 1)).unwrap();
        assert_eq!(j.log(), &shadow);
        drop(j);
        // Reopening again is stable.
        assert_eq!(
            Journal::open(dir.path(), &state(&v, 1))
                .unwrap()
                .log()
                .len(),
            3
        );
    }

    #[test]
    fn journal_detects_a_reset_pcr_and_starts_over_on_a_new_tpm_reset() {
        let dir = tempfile::tempdir().unwrap();
        let zero = values(&EventLog::new(), 0);
        let mut j = Journal::open(dir.path(), &state(&zero, 1)).unwrap();
        let recs = batch(&j, &[ev(1)]);
        let before = j.write_pending(&recs).unwrap();
        j.commit(recs, 1, before).unwrap();
        drop(j);
        // Same reset cycle, PCR back at zero: someone reset it.
        let err = Journal::open(dir.path(), &state(&zero, 1)).err().unwrap();
        assert!(
            matches!(err, JournalError::OutOfSync { pcr: 16, .. }),
            "{err:?}"
        );
        // A new TPM reset cycle archives the journal and starts empty.
        let j = Journal::open(dir.path(), &state(&zero, 2)).unwrap();
        assert!(j.log().is_empty());
        assert!(dir.path().join("eventlog.reset-1.jsonl").is_file());
        // A PCR that is not at its initial value cannot start a new log.
        drop(j);
        fs::remove_file(dir.path().join(JOURNAL_FILE)).unwrap();
        let other = vec![vec![1u8; 20], vec![1u8; 32]];
        assert!(matches!(
            Journal::open(dir.path(), &state(&other, 2)),
            Err(JournalError::OutOfSync { .. })
        ));
    }

    #[test]
    fn journal_rejects_corrupt_lines_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let zero = values(&EventLog::new(), 0);
        drop(Journal::open(dir.path(), &state(&zero, 1)).unwrap());
        let path = dir.path().join(JOURNAL_FILE);
        let mut text = fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"recnum\":0,\"pcr\""); // torn, no newline
        fs::write(&path, &text).unwrap();
        assert!(
            Journal::open(dir.path(), &state(&zero, 1))
                .unwrap()
                .log()
                .is_empty()
        );
        // The torn tail was removed, so later appends start on a fresh line.
        assert!(fs::read(&path).unwrap().ends_with(b"}\n"));
        text.extend_from_slice(b"\n");
        fs::write(&path, &text).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), &state(&zero, 1)),
            Err(JournalError::Corrupt { line: 2, .. })
        ));
    }
}
