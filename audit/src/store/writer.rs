//! The single writer thread: group commit, checkpoints, witness calls, retention.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{AppendError, AuditConfig, Receipt, Request, read, retention};
use crate::canonical::{PreparedEntry, encode};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::entry::{Action, Actor, NewEntry, Origin, Outcome, Target, TargetKind};
use crate::key::{ApplianceKey, SignError};

use crate::merkle::{Frontier, GENESIS_CHAIN, Hash, chain_hash, leaf_hash};
use crate::witness::CheckpointWitness;

/// An append request waiting for the next group commit, with where to send its answer.
type Pending = (Vec<PreparedEntry>, super::pending::Reply);

pub(crate) enum LoadError {
    Sql(rusqlite::Error),
    Sign(Arc<SignError>),
    Inconsistent(&'static str),
}

impl From<rusqlite::Error> for LoadError {
    fn from(e: rusqlite::Error) -> Self {
        LoadError::Sql(e)
    }
}

/// The in-memory head of the log; cloned before each transaction so a failed commit can be
/// undone exactly.
#[derive(Clone)]
pub(crate) struct Head {
    pub(crate) next_seq: u64,
    pub(crate) chain: Hash,
    pub(crate) frontier: Frontier,
    pub(crate) last_time: DateTime<Utc>,
    pub(crate) last_cp_size: u64,
    pub(crate) last_cp_hash: Option<Hash>,
    pub(crate) next_cp_id: u64,
}

pub(crate) struct WriterState {
    pub(crate) conn: Connection,
    pub(crate) key: Arc<ApplianceKey>,
    pub(crate) origin: String,
    pub(crate) head: Head,
    pub(crate) config: AuditConfig,
    witness: Option<Arc<dyn CheckpointWitness>>,
    last_cp_instant: Instant,
    /// Internal entries to append next (witness failures).
    internal: Vec<PreparedEntry>,
}

pub(crate) fn classify(e: rusqlite::Error) -> AppendError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => AppendError::Full,
        Some(rusqlite::ErrorCode::ReadOnly) => AppendError::ReadOnly,
        _ => AppendError::Database(Arc::new(e)),
    }
}

impl WriterState {
    pub(crate) fn load(
        conn: Connection,
        key: Arc<ApplianceKey>,
        origin: String,
        config: &AuditConfig,
        witness: Option<Arc<dyn CheckpointWitness>>,
    ) -> Result<Self, LoadError> {
        let base = read::retained_base(&conn).map_err(|e| match e {
            read::BaseError::Sql(e) => LoadError::Sql(e),
            read::BaseError::Corrupt => LoadError::Inconsistent("retained base is corrupt"),
        })?;
        let last: Option<(u64, Vec<u8>, String)> = conn
            .query_row(
                "SELECT seq, chain, json_extract(body, '$.time') FROM entries ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default())),
            )
            .optional()?;
        let (next_seq, chain) = match (&last, &base) {
            (Some((seq, chain, _)), _) => {
                let chain: Hash = chain
                    .as_slice()
                    .try_into()
                    .map_err(|_| LoadError::Inconsistent("chain value size"))?;
                (seq + 1, chain)
            }
            (None, Some(b)) => (b.size, b.chain),
            (None, None) => (0, GENESIS_CHAIN),
        };
        let frontier = read::frontier_at(&conn, next_seq, base.as_ref())
            .map_err(|_| LoadError::Inconsistent("stored Merkle nodes are incomplete"))?;
        let last_time = last
            .as_ref()
            .and_then(|(_, _, t)| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let cp: Option<(u64, u64, Vec<u8>)> = conn
            .query_row(
                "SELECT id, tree_size, hash FROM checkpoints ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                    ))
                },
            )
            .optional()?;
        let (last_cp_size, last_cp_hash, next_cp_id) = match cp {
            Some((id, size, hash)) => {
                let h: Hash = hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| LoadError::Inconsistent("checkpoint hash size"))?;
                (size, Some(h), id + 1)
            }
            None => (0, None, 0),
        };
        let mut state = WriterState {
            conn,
            key,
            origin,
            head: Head {
                next_seq,
                chain,
                frontier,
                last_time,
                last_cp_size,
                last_cp_hash,
                next_cp_id,
            },
            config: config.clone(),
            witness,
            last_cp_instant: Instant::now(),
            internal: Vec::new(),
        };
        // A new log gets a checkpoint of the empty tree. A log whose tail is not covered (the
        // process stopped after appends but before the next checkpoint) records that it adopts
        // the tail, then signs it, so the adoption itself is in the log.
        let uncovered = state.head.next_seq.saturating_sub(state.head.last_cp_size);
        if state.head.last_cp_hash.is_some() && uncovered > 0 {
            let (from, to) = (state.head.last_cp_size, state.head.next_seq);
            let (reply, _pending) = super::pending::pair();
            let recover = PreparedEntry::new(
                NewEntry::new(
                    Action::AuditRecover,
                    Actor::service("audit"),
                    Origin::Internal,
                )
                .target(Target::new(TargetKind::AuditLog, format!("{from}..{to}")))
                .details(serde_json::json!({ "unsigned_from": from, "unsigned_to": to })),
            )
            .map_err(|_| LoadError::Inconsistent("recovery entry"))?;
            state.commit_batch(vec![(vec![recover], reply)]);
        }
        if state.head.last_cp_hash.is_none() || state.head.last_cp_size != state.head.next_seq {
            let cp = state.standalone_checkpoint().map_err(|e| match e {
                AppendError::Sign(s) => LoadError::Sign(s),
                AppendError::Database(e) => {
                    LoadError::Sql(Arc::try_unwrap(e).unwrap_or(rusqlite::Error::InvalidQuery))
                }
                _ => LoadError::Inconsistent("could not write the recovery checkpoint"),
            })?;
            state.witness_all(&[cp]);
        }
        Ok(state)
    }

    pub(crate) fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut deferred: Vec<Request> = Vec::new();
        loop {
            let req = if let Some(r) = deferred.pop() {
                Some(r)
            } else {
                let wait = self
                    .config
                    .checkpoint_interval
                    .saturating_sub(self.last_cp_instant.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            match req {
                None => {
                    self.periodic_checkpoint();
                }
                Some(Request::Append { entries, reply }) => {
                    let mut batch = vec![(entries, reply)];
                    let mut count = batch[0].0.len();
                    // Group commit: take everything already waiting, up to max_batch.
                    while count < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(Request::Append { entries, reply }) => {
                                count += entries.len();
                                batch.push((entries, reply));
                            }
                            Ok(other) => {
                                deferred.push(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_batch(batch);
                }
                Some(Request::Checkpoint { reply }) => {
                    let r = self.standalone_checkpoint();
                    if let Ok(cp) = &r {
                        self.witness_all(std::slice::from_ref(cp));
                    }
                    let _ = reply.send(r);
                }
                Some(Request::Retention { now, reply }) => {
                    let r = retention::apply(&mut self, now);
                    let _ = reply.send(r);
                }
            }
            if !self.internal.is_empty() {
                let entries = std::mem::take(&mut self.internal);
                let (reply, _pending) = super::pending::pair();
                self.commit_batch(vec![(entries, reply)]);
            }
            if self.last_cp_instant.elapsed() >= self.config.checkpoint_interval {
                self.periodic_checkpoint();
            }
        }
        // Clean shutdown: cover the tail with a final checkpoint.
        if self.head.last_cp_size != self.head.next_seq
            && let Ok(cp) = self.standalone_checkpoint()
        {
            self.witness_all(&[cp]);
        }
    }

    fn periodic_checkpoint(&mut self) {
        match self.standalone_checkpoint() {
            Ok(cp) => self.witness_all(&[cp]),
            Err(e) => {
                tracing::error!(error = %crate_error_chain(&e), "audit.checkpoint.failed");
                // Try again after another interval rather than spinning.
                self.last_cp_instant = Instant::now();
            }
        }
    }

    /// Commit a group of append requests in one transaction (one fsync), then answer each.
    fn commit_batch(&mut self, batch: Vec<Pending>) {
        let saved = self.head.clone();
        let mut new_cps = Vec::new();
        let result = self.write_batch(&batch, &mut new_cps);
        match result {
            Ok(receipts) => {
                if !new_cps.is_empty() {
                    self.last_cp_instant = Instant::now();
                }
                for ((_, reply), r) in batch.into_iter().zip(receipts) {
                    reply.send(Ok(r));
                }
                self.witness_all(&new_cps);
            }
            Err(e) => {
                self.head = saved;
                tracing::error!(error = %crate_error_chain(&e), "audit.append.failed");
                for (_, reply) in batch {
                    reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn write_batch(
        &mut self,
        batch: &[Pending],
        new_cps: &mut Vec<SignedCheckpoint>,
    ) -> Result<Vec<Vec<Receipt>>, AppendError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(classify)?;
        let res = (|| {
            let mut out = Vec::with_capacity(batch.len());
            for (entries, _) in batch {
                let mut receipts = Vec::with_capacity(entries.len());
                for e in entries {
                    receipts.push(self.insert_entry(e)?);
                    if self
                        .head
                        .next_seq
                        .is_multiple_of(self.config.checkpoint_every.max(1))
                    {
                        new_cps.push(self.insert_checkpoint()?);
                    }
                }
                out.push(receipts);
            }
            Ok(out)
        })();
        match res {
            Ok(out) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(out),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(classify(e))
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Insert one entry inside the current transaction and advance the head.
    pub(crate) fn insert_entry(&mut self, new: &PreparedEntry) -> Result<Receipt, AppendError> {
        let now = Utc::now();
        let time = if now > self.head.last_time {
            now
        } else {
            self.head.last_time
        };
        let seq = self.head.next_seq;
        let body = encode(&new.entry, &new.details, seq, &time);
        let leaf = leaf_hash(body.as_bytes());
        let chain = chain_hash(&self.head.chain, &leaf);
        let mut nodes = Vec::new();
        self.head
            .frontier
            .push_with(leaf, |_, _, h| nodes.extend_from_slice(h));
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO entries (seq, body, leaf_hash, chain, nodes) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(classify)?;
        stmt.execute(params![seq as i64, body, &leaf[..], &chain[..], nodes])
            .map_err(classify)?;
        self.head.next_seq = seq + 1;
        self.head.chain = chain;
        self.head.last_time = time;
        Ok(Receipt {
            seq,
            time,
            leaf_hash: leaf,
            chain,
        })
    }

    /// Sign and insert a checkpoint of the current head inside the current transaction.
    pub(crate) fn insert_checkpoint(&mut self) -> Result<SignedCheckpoint, AppendError> {
        let now = Utc::now();
        let time = if now > self.head.last_time {
            now
        } else {
            self.head.last_time
        };
        let cp = Checkpoint {
            origin: self.origin.clone(),
            tree_size: self.head.next_seq,
            root: self.head.frontier.root(),
            time,
            prev: self.head.last_cp_hash,
        }
        .sign(&self.key)
        .map_err(|e| AppendError::Sign(Arc::new(e)))?;
        let hash = cp.hash();
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO checkpoints (id, tree_size, time, note, hash) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(classify)?;
        stmt.execute(params![
            self.head.next_cp_id as i64,
            self.head.next_seq as i64,
            crate::entry::format_time(&time),
            cp.as_str(),
            &hash[..]
        ])
        .map_err(classify)?;
        self.head.next_cp_id += 1;
        self.head.last_cp_hash = Some(hash);
        self.head.last_cp_size = self.head.next_seq;
        self.head.last_time = time;
        Ok(cp)
    }

    /// A checkpoint in its own transaction.
    pub(crate) fn standalone_checkpoint(&mut self) -> Result<SignedCheckpoint, AppendError> {
        let saved = self.head.clone();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(classify)?;
        let r = self.insert_checkpoint().and_then(|cp| {
            self.conn.execute_batch("COMMIT").map_err(classify)?;
            Ok(cp)
        });
        match r {
            Ok(cp) => {
                self.last_cp_instant = Instant::now();
                Ok(cp)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.head = saved;
                Err(e)
            }
        }
    }

    pub(crate) fn witness_all(&mut self, cps: &[SignedCheckpoint]) {
        let Some(w) = self.witness.clone() else {
            return;
        };
        for cp in cps {
            let size = cp.checkpoint().tree_size;
            if let Err(e) = w.witness(size, &cp.hash()) {
                let reason = crate_error_chain(&e);
                tracing::error!(tree_size = size, error = %reason, "audit.witness.failed");
                let failure = PreparedEntry::new(
                    NewEntry::new(
                        Action::AuditWitnessFailure,
                        Actor::service("audit"),
                        Origin::Internal,
                    )
                    .target(Target::new(
                        TargetKind::AuditLog,
                        format!("checkpoint@{size}"),
                    ))
                    .outcome(Outcome::failure(truncate(
                        &reason,
                        crate::entry::MAX_FIELD_BYTES,
                    )))
                    .details(serde_json::json!({
                        "tree_size": size,
                        "checkpoint_sha256": hex::encode(cp.hash()),
                        "witness": e.witness,
                    })),
                );
                if let Ok(failure) = failure {
                    self.internal.push(failure);
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The error and its sources, joined with ": " (for log lines and stored reasons).
pub(crate) fn crate_error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
