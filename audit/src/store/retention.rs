//! Retention: seal old entries into compressed, self-verifying archive segments; expire
//! segments past the retention period. Both steps are audited entries in the log itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::writer::{WriterState, classify};
use super::{AppendError, ProofRequestError, read};
use crate::canonical::PreparedEntry;
use crate::entry::{Action, Actor, NewEntry, Origin, Target, TargetKind, format_time};
use crate::merkle::Hash;

const DAY: u64 = 24 * 3600;

/// How long entries stay hot (in the database, queryable) and how long they are kept at all.
///
/// The defaults satisfy PCI-DSS v4.0.1 10.5.1 (keep 12 months, the last 3 months immediately
/// available: `hot` = 92 days, `retain` = 366 days) and CERT-In 2022 direction (iv)
/// (180 days), and the DPDP Rules' one year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Entries younger than this stay in the database with their bodies.
    pub hot: Duration,
    /// Entries older than this (and their archive segment) are deleted.
    pub retain: Duration,
    /// Where segments go; default: `<database file>.archive/`.
    pub archive_dir: Option<PathBuf>,
    /// Most entries per segment file.
    pub max_segment_entries: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            hot: Duration::from_secs(92 * DAY),
            retain: Duration::from_secs(366 * DAY),
            archive_dir: None,
            max_segment_entries: 100_000,
        }
    }
}

/// An impossible retention policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionPolicyError {
    /// `retain` is shorter than `hot`.
    #[error("retention ({retain_days} days) is shorter than the hot window ({hot_days} days)")]
    RetainShorterThanHot {
        /// Hot window in days.
        hot_days: u64,
        /// Retention in days.
        retain_days: u64,
    },
    /// `max_segment_entries` is zero.
    #[error("segments must hold at least one entry")]
    EmptySegments,
}

impl RetentionPolicy {
    /// Check the policy.
    pub fn validate(&self) -> Result<(), RetentionPolicyError> {
        if self.retain < self.hot {
            return Err(RetentionPolicyError::RetainShorterThanHot {
                hot_days: self.hot.as_secs() / DAY,
                retain_days: self.retain.as_secs() / DAY,
            });
        }
        if self.max_segment_entries == 0 {
            return Err(RetentionPolicyError::EmptySegments);
        }
        Ok(())
    }
}

/// One archive segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First entry.
    pub start: u64,
    /// One past the last entry.
    pub end: u64,
    /// The file.
    pub file: PathBuf,
    /// SHA-256 of the file.
    pub sha256: Hash,
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments written (entries sealed).
    pub sealed: Vec<SegmentInfo>,
    /// Segments expired (entries deleted).
    pub expired: Vec<SegmentInfo>,
}

/// Errors during retention. Each step is all-or-nothing; steps done before the error stay done.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Writing to the log failed.
    #[error("recording retention in the log failed")]
    Append(#[source] AppendError),
    /// Building the segment failed.
    #[error("building an archive segment failed")]
    Export(#[source] ProofRequestError),
    /// Reading the database failed.
    #[error("reading the audit database failed")]
    Database(#[source] rusqlite::Error),
    /// Writing or removing a segment file failed.
    #[error("archive segment file {path}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the segment failed.
    #[error("encoding an archive segment failed")]
    Encode(#[source] serde_json::Error),
}

fn archive_dir(state: &WriterState) -> PathBuf {
    match &state.config.retention.archive_dir {
        Some(d) => d.clone(),
        None => {
            let db = state
                .conn
                .path()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("audit.db"));
            let mut name = db.file_name().unwrap_or_default().to_os_string();
            name.push(".archive");
            db.with_file_name(name)
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RetentionError + '_ {
    move |source| RetentionError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write `data` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_durable(path: &Path, data: &[u8]) -> Result<(), RetentionError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

/// Run a closure in one IMMEDIATE transaction with the retention gate open; roll back and
/// restore the in-memory head on any error.
fn gated<T>(
    state: &mut WriterState,
    f: impl FnOnce(&mut WriterState) -> Result<T, RetentionError>,
) -> Result<T, RetentionError> {
    let saved = state.head.clone();
    state
        .conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| RetentionError::Append(classify(e)))?;
    let r = (|| {
        state
            .conn
            .execute("UPDATE retention_gate SET open = 1 WHERE id = 1", [])
            .map_err(|e| RetentionError::Append(classify(e)))?;
        let v = f(state)?;
        state
            .conn
            .execute("UPDATE retention_gate SET open = 0 WHERE id = 1", [])
            .map_err(|e| RetentionError::Append(classify(e)))?;
        state
            .conn
            .execute_batch("COMMIT")
            .map_err(|e| RetentionError::Append(classify(e)))?;
        Ok(v)
    })();
    if r.is_err() {
        let _ = state.conn.execute_batch("ROLLBACK");
        state.head = saved;
    }
    r
}

fn prepared(e: NewEntry) -> Result<PreparedEntry, RetentionError> {
    PreparedEntry::new(e).map_err(|e| RetentionError::Append(AppendError::Invalid(e)))
}

fn maybe_checkpoint(state: &mut WriterState) -> Result<(), RetentionError> {
    if state
        .head
        .next_seq
        .is_multiple_of(state.config.checkpoint_every.max(1))
    {
        state.insert_checkpoint().map_err(RetentionError::Append)?;
    }
    Ok(())
}

pub(crate) fn apply(
    state: &mut WriterState,
    now: DateTime<Utc>,
) -> Result<RetentionReport, RetentionError> {
    let mut report = RetentionReport::default();
    seal(state, now, &mut report)?;
    expire(state, now, &mut report)?;
    Ok(report)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn seal(
    state: &mut WriterState,
    now: DateTime<Utc>,
    report: &mut RetentionReport,
) -> Result<(), RetentionError> {
    let cutoff = format_time(&(now - to_chrono(state.config.retention.hot)));
    // Decide the range once: the `audit.archive` entries this run appends are not sealed by it.
    let young: Option<i64> = state
        .conn
        .query_row(
            "SELECT MIN(seq) FROM entries WHERE body IS NOT NULL AND time >= ?1",
            [&cutoff],
            |r| r.get(0),
        )
        .map_err(RetentionError::Database)?;
    let limit = young.map_or(state.head.next_seq, |y| y as u64);
    loop {
        let first: Option<i64> = state
            .conn
            .query_row(
                "SELECT MIN(seq) FROM entries WHERE body IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(RetentionError::Database)?;
        let Some(a) = first.map(|a| a as u64) else {
            return Ok(());
        };
        let b = limit.min(a + state.config.retention.max_segment_entries);
        if b <= a {
            return Ok(());
        }
        // The segment's proof needs a checkpoint that covers it.
        if state.head.last_cp_size < b {
            state
                .standalone_checkpoint()
                .map_err(RetentionError::Append)?;
        }
        let cp = read::latest_checkpoint(&mut state.conn).map_err(|e| match e {
            super::CheckpointError::Database(e) => RetentionError::Database(e),
            _ => RetentionError::Export(ProofRequestError::NoCheckpoint),
        })?;
        let cp = cp.ok_or(RetentionError::Export(ProofRequestError::NoCheckpoint))?;
        let newest: String = state
            .conn
            .query_row(
                "SELECT json_extract(body, '$.time') FROM entries WHERE seq = ?1",
                [(b - 1) as i64],
                |r| r.get(0),
            )
            .map_err(RetentionError::Database)?;
        let bundle =
            read::export(&mut state.conn, None, a, b, Some(&cp)).map_err(RetentionError::Export)?;
        let json = serde_json::to_vec(&bundle).map_err(RetentionError::Encode)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let dir = archive_dir(state);
        let file = dir.join(format!("segment-{a:020}-{b:020}.json.gz"));
        gz.write_all(&json).map_err(io_err(&file))?;
        let data = gz.finish().map_err(io_err(&file))?;
        let sha: Hash = Sha256::digest(&data).into();
        write_durable(&file, &data)?;
        let file_text = file.display().to_string();
        gated(state, |st| {
            st.conn
                .execute(
                    "UPDATE entries SET body = NULL WHERE seq >= ?1 AND seq < ?2",
                    [a as i64, b as i64],
                )
                .map_err(|e| RetentionError::Append(classify(e)))?;
            st.conn
                .execute(
                    "INSERT INTO segments (start, end, file, sha256, newest_time, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![a as i64, b as i64, file_text, &sha[..], newest, format_time(&now)],
                )
                .map_err(|e| RetentionError::Append(classify(e)))?;
            st.insert_entry(&prepared(
                NewEntry::new(
                    Action::AuditArchive,
                    Actor::service("retention"),
                    Origin::Internal,
                )
                .target(Target::new(TargetKind::AuditLog, format!("{a}..{b}")))
                .details(serde_json::json!({
                    "start": a,
                    "end": b,
                    "file": file_text,
                    "sha256": hex::encode(sha),
                    "checkpoint_size": cp.checkpoint().tree_size,
                    "hot_days": st.config.retention.hot.as_secs() / DAY,
                })),
            )?)
            .map_err(RetentionError::Append)?;
            maybe_checkpoint(st)
        })?;
        tracing::info!(start = a, end = b, file = %file.display(), "audit.retention.sealed");
        report.sealed.push(SegmentInfo {
            start: a,
            end: b,
            file,
            sha256: sha,
        });
    }
}

fn expire(
    state: &mut WriterState,
    now: DateTime<Utc>,
    report: &mut RetentionReport,
) -> Result<(), RetentionError> {
    let cutoff = format_time(&(now - to_chrono(state.config.retention.retain)));
    loop {
        let base_size = read::log_base(&state.conn).map_err(RetentionError::Database)?;
        let seg: Option<(i64, i64, i64, String, Vec<u8>)> = state
            .conn
            .query_row(
                "SELECT id, start, end, file, sha256 FROM segments
                 WHERE expired_at IS NULL AND start = ?1 AND newest_time < ?2 ORDER BY start LIMIT 1",
                params![base_size as i64, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(RetentionError::Database)?;
        let Some((id, start, end, file, sha)) = seg else {
            return Ok(());
        };
        let (start, end) = (start as u64, end as u64);
        let base = read::retained_base(&state.conn).map_err(|e| match e {
            read::BaseError::Sql(e) => RetentionError::Database(e),
            read::BaseError::Corrupt => {
                RetentionError::Export(ProofRequestError::Corrupt { seq: 0 })
            }
        })?;
        let frontier = read::frontier_at(&state.conn, end, base.as_ref())
            .map_err(|e| RetentionError::Export(e.into()))?;
        let chain: Vec<u8> = state
            .conn
            .query_row(
                "SELECT chain FROM entries WHERE seq = ?1",
                [(end - 1) as i64],
                |r| r.get(0),
            )
            .map_err(RetentionError::Database)?;
        let frontier_blob: Vec<u8> = frontier.nodes().iter().flatten().copied().collect();
        let root = frontier.root();
        gated(state, |st| {
            let c = |e| RetentionError::Append(classify(e));
            st.conn
                .execute("DELETE FROM entries WHERE seq < ?1", [end as i64])
                .map_err(c)?;
            st.conn
                .execute(
                    "INSERT INTO retained_base (id, size, chain, frontier) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET size = excluded.size, chain = excluded.chain,
                     frontier = excluded.frontier",
                    params![end as i64, chain, frontier_blob],
                )
                .map_err(c)?;
            st.conn
                .execute(
                    "UPDATE segments SET expired_at = ?1 WHERE id = ?2",
                    params![format_time(&now), id],
                )
                .map_err(c)?;
            st.insert_entry(&prepared(
                NewEntry::new(
                    Action::AuditExpire,
                    Actor::service("retention"),
                    Origin::Internal,
                )
                .target(Target::new(TargetKind::AuditLog, format!("{start}..{end}")))
                .details(serde_json::json!({
                    "start": start,
                    "end": end,
                    "file": file,
                    "sha256": hex::encode(&sha),
                    "retained_from": end,
                    "chain_at_end": hex::encode(&chain),
                    "root_at_end": hex::encode(root),
                    "retain_days": st.config.retention.retain.as_secs() / DAY,
                })),
            )?)
            .map_err(RetentionError::Append)?;
            maybe_checkpoint(st)
        })?;
        let path = PathBuf::from(&file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        tracing::info!(start, end, file = %file, "audit.retention.expired");
        report.expired.push(SegmentInfo {
            start,
            end,
            file: path,
            sha256: sha.as_slice().try_into().unwrap_or([0; 32]),
        });
    }
}
