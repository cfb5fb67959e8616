//! Read side: node lookups, proofs, queries, exports and whole-log verification.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter, types::Value};
use sha2::{Digest, Sha256};

use super::{
    CheckpointError, ConsistencyProof, InclusionProof, MAX_PAGE, Order, Page, ProofRequestError,
    Query, QueryError, VerifyError, VerifyOptions,
};
use crate::checkpoint::SignedCheckpoint;
use crate::entry::{Entry, format_time};
use crate::export::{EXPORT_FORMAT, ExportBundle, ExportedEntry};
use crate::key::AppliancePublicKey;
use crate::merkle::{
    Frontier, GENESIS_CHAIN, Hash, NodeSource, ProofBuildError, consistency_proof, inclusion_proof,
    range_hash, range_proof,
};
use crate::verify::{Damage, KeySource, LeafRow, LogVerifier, RetainedBase, VerifyReport};

pub(crate) enum BaseError {
    Sql(rusqlite::Error),
    Corrupt,
}

/// The record of expired entries, if any expired.
pub(crate) fn retained_base(conn: &Connection) -> Result<Option<RetainedBase>, BaseError> {
    let row: Option<(i64, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT size, chain, frontier FROM retained_base WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(BaseError::Sql)?;
    let Some((size, chain, frontier)) = row else {
        return Ok(None);
    };
    let size = u64::try_from(size).map_err(|_| BaseError::Corrupt)?;
    let chain: Hash = chain
        .as_slice()
        .try_into()
        .map_err(|_| BaseError::Corrupt)?;
    if frontier.len() % 32 != 0 {
        return Err(BaseError::Corrupt);
    }
    let nodes: Vec<Hash> = frontier
        .chunks(32)
        .map(|c| c.try_into().expect("32-byte chunk"))
        .collect();
    let frontier = Frontier::from_parts(size, nodes).map_err(|_| BaseError::Corrupt)?;
    Ok(Some(RetainedBase {
        size,
        chain,
        frontier,
    }))
}

/// Why a node could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("database")]
    Sql(#[source] rusqlite::Error),
    #[error("node expired")]
    Expired { base: u64 },
    #[error("node missing")]
    Missing { seq: u64 },
}

impl From<NodeError> for ProofRequestError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Sql(e) => ProofRequestError::Database(e),
            NodeError::Expired { base } => ProofRequestError::Expired { base },
            NodeError::Missing { seq } => ProofRequestError::Corrupt { seq },
        }
    }
}

impl From<ProofBuildError<NodeError>> for ProofRequestError {
    fn from(e: ProofBuildError<NodeError>) -> Self {
        match e {
            ProofBuildError::OutOfRange(what) => {
                ProofRequestError::OutOfRange { what, log_size: 0 }
            }
            ProofBuildError::Source(e) => e.into(),
        }
    }
}

/// Perfect-subtree hashes from the `entries` table: node (level, index) is stored in the row
/// of its last leaf, `(index + 1) * 2^level - 1`, at offset `(level - 1) * 32` of `nodes`
/// (level 0 is `leaf_hash`). Nodes of expired entries come from the retained base frontier.
pub(crate) struct DbNodes<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) base: Option<&'a RetainedBase>,
    pub(crate) cache: Option<&'a NodeCache>,
}

/// Perfect-subtree hashes never change once stored, so a reader keeps the upper levels in
/// memory: a proof then reads only its few lowest levels from SQLite.
#[derive(Default)]
pub(crate) struct NodeCache {
    map: std::cell::RefCell<std::collections::HashMap<(u32, u64), Hash>>,
}

impl NodeCache {
    const MIN_LEVEL: u32 = 6;
    const MAX_ENTRIES: usize = 1 << 20;

    fn get(&self, level: u32, index: u64) -> Option<Hash> {
        (level >= Self::MIN_LEVEL)
            .then(|| self.map.borrow().get(&(level, index)).copied())
            .flatten()
    }

    fn put(&self, level: u32, index: u64, hash: Hash) {
        if level >= Self::MIN_LEVEL {
            let mut m = self.map.borrow_mut();
            if m.len() >= Self::MAX_ENTRIES {
                m.clear();
            }
            m.insert((level, index), hash);
        }
    }
}

impl NodeSource for DbNodes<'_> {
    type Error = NodeError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, NodeError> {
        if let Some(h) = self.cache.and_then(|c| c.get(level, index)) {
            return Ok(h);
        }
        let h = self.lookup(level, index)?;
        if let Some(c) = self.cache {
            c.put(level, index, h);
        }
        Ok(h)
    }
}

impl DbNodes<'_> {
    fn lookup(&self, level: u32, index: u64) -> Result<Hash, NodeError> {
        let last = ((index + 1) << level) - 1;
        if let Some(b) = self.base
            && last < b.size
        {
            // Frontier node of [0, base): level L set in the size, covering (size >> (L+1)) << (L+1).
            if (b.size >> level) & 1 == 1 && ((b.size >> (level + 1)) << 1) == index {
                // Nodes are stored highest level first: skip the set bits above this level.
                let position = (b.size >> (level + 1)).count_ones() as usize;
                return Ok(b.frontier.nodes()[position]);
            }
            return Err(NodeError::Expired { base: b.size });
        }
        let (sql, off) = if level == 0 {
            ("SELECT leaf_hash FROM entries WHERE seq = ?1", 0usize)
        } else {
            (
                "SELECT nodes FROM entries WHERE seq = ?1",
                (level as usize - 1) * 32,
            )
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(NodeError::Sql)?;
        let blob: Option<Vec<u8>> = stmt
            .query_row([last as i64], |r| {
                let v = r.get_ref(0)?.as_blob()?;
                Ok(v.get(off..off + 32).map(<[u8]>::to_vec))
            })
            .optional()
            .map_err(NodeError::Sql)?
            .flatten();
        let blob = blob.ok_or(NodeError::Missing { seq: last })?;
        Ok(blob.try_into().expect("32 bytes"))
    }
}

/// The frontier of `[0, size)` from stored nodes.
pub(crate) fn frontier_at(
    conn: &Connection,
    size: u64,
    base: Option<&RetainedBase>,
) -> Result<Frontier, NodeError> {
    let src = DbNodes {
        conn,
        base,
        cache: None,
    };
    let mut nodes = Vec::new();
    for level in (0..64u32).rev() {
        if (size >> level) & 1 == 1 {
            let index = (size >> (level + 1)) << 1;
            nodes.push(src.node(level, index)?);
        }
    }
    Ok(Frontier::from_parts(size, nodes).expect("one node per set bit"))
}

fn base_or_corrupt(conn: &Connection) -> Result<Option<RetainedBase>, ProofRequestError> {
    retained_base(conn).map_err(|e| match e {
        BaseError::Sql(e) => ProofRequestError::Database(e),
        BaseError::Corrupt => ProofRequestError::Corrupt { seq: 0 },
    })
}

/// First retained index (entries before it expired).
pub(crate) fn log_base(conn: &Connection) -> rusqlite::Result<u64> {
    let b: Option<i64> = conn
        .query_row("SELECT size FROM retained_base WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(b.unwrap_or(0).max(0) as u64)
}

/// Entries in the log: one past the highest sequence number.
pub(crate) fn log_size(conn: &Connection) -> rusqlite::Result<u64> {
    let max: Option<i64> = conn.query_row("SELECT MAX(seq) FROM entries", [], |r| r.get(0))?;
    match max {
        Some(m) => Ok(m as u64 + 1),
        None => {
            let b: Option<i64> = conn
                .query_row("SELECT size FROM retained_base WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(b.unwrap_or(0) as u64)
        }
    }
}

fn parse_cp(id: i64, note: &str) -> Result<SignedCheckpoint, CheckpointError> {
    SignedCheckpoint::parse(note).map_err(|source| CheckpointError::Malformed {
        id: id as u64,
        source,
    })
}

pub(crate) fn latest_checkpoint(
    conn: &mut Connection,
) -> Result<Option<SignedCheckpoint>, CheckpointError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(CheckpointError::Database)?;
    row.map(|(id, note)| parse_cp(id, &note)).transpose()
}

pub(crate) fn checkpoints_between(
    conn: &mut Connection,
    from: u64,
    to: u64,
) -> Result<Vec<SignedCheckpoint>, CheckpointError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, note FROM checkpoints WHERE tree_size BETWEEN ?1 AND ?2 ORDER BY id",
        )
        .map_err(CheckpointError::Database)?;
    let rows = stmt
        .query_map(
            [
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64,
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(CheckpointError::Database)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, note) = row.map_err(CheckpointError::Database)?;
        out.push(parse_cp(id, &note)?);
    }
    Ok(out)
}

pub(crate) fn get(conn: &mut Connection, seq: u64) -> Result<Option<Entry>, QueryError> {
    let body: Option<Option<String>> = conn
        .query_row(
            "SELECT body FROM entries WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(QueryError::Database)?;
    match body.flatten() {
        None => Ok(None),
        Some(b) => Entry::decode(b.as_bytes())
            .map(Some)
            .map_err(|source| QueryError::Decode { seq, source }),
    }
}

pub(crate) fn query(conn: &mut Connection, q: &Query) -> Result<Page, QueryError> {
    let limit = if q.limit == 0 { 100 } else { q.limit };
    if limit > MAX_PAGE {
        return Err(QueryError::Limit(limit));
    }
    let mut sql = String::from("SELECT seq, body FROM entries WHERE body IS NOT NULL");
    let mut args: Vec<Value> = Vec::new();
    let (cmp, order) = match q.order {
        Order::Ascending => (">", "ASC"),
        Order::Descending => ("<", "DESC"),
    };
    if let Some(c) = q.cursor {
        sql.push_str(&format!(" AND seq {cmp} ?"));
        args.push(Value::Integer(c.min(i64::MAX as u64) as i64));
    }
    if !q.actions.is_empty() {
        let marks = vec!["?"; q.actions.len()].join(",");
        sql.push_str(&format!(" AND action IN ({marks})"));
        args.extend(q.actions.iter().map(|a| Value::Text(a.as_str().to_owned())));
    }
    if let Some(a) = &q.actor {
        sql.push_str(" AND actor_id = ?");
        args.push(Value::Text(a.clone()));
    }
    if let Some(t) = &q.target {
        sql.push_str(" AND target_id = ?");
        args.push(Value::Text(t.clone()));
    }
    if let Some(t) = &q.trace_id {
        sql.push_str(" AND trace_id = ?");
        args.push(Value::Text(t.to_string()));
    }
    if let Some(t) = &q.since {
        sql.push_str(" AND time >= ?");
        args.push(Value::Text(format_time(t)));
    }
    if let Some(t) = &q.until {
        sql.push_str(" AND time < ?");
        args.push(Value::Text(format_time(t)));
    }
    if let Some(s) = q.success {
        sql.push_str(" AND outcome = ?");
        args.push(Value::Text(
            if s { "success" } else { "failure" }.to_owned(),
        ));
    }
    sql.push_str(&format!(" ORDER BY seq {order} LIMIT ?"));
    args.push(Value::Integer(limit as i64 + 1));

    let mut stmt = conn.prepare_cached(&sql).map_err(QueryError::Database)?;
    let mut rows = stmt
        .query(params_from_iter(args))
        .map_err(QueryError::Database)?;
    let mut entries = Vec::new();
    let mut more = false;
    while let Some(row) = rows.next().map_err(QueryError::Database)? {
        if entries.len() == limit {
            more = true;
            break;
        }
        let seq = row.get::<_, i64>(0).map_err(QueryError::Database)? as u64;
        let body = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_bytes()?))
            .map_err(QueryError::Database)?;
        entries.push(Entry::decode(body).map_err(|source| QueryError::Decode { seq, source })?);
    }
    let next_cursor = if more {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Page {
        entries,
        next_cursor,
    })
}

fn out_of_range(what: &'static str, log_size: u64) -> ProofRequestError {
    ProofRequestError::OutOfRange { what, log_size }
}

fn fix_size(e: ProofRequestError, size: u64) -> ProofRequestError {
    match e {
        ProofRequestError::OutOfRange { what, .. } => ProofRequestError::OutOfRange {
            what,
            log_size: size,
        },
        other => other,
    }
}

pub(crate) fn inclusion(
    conn: &mut Connection,
    cache: Option<&NodeCache>,
    index: u64,
    tree_size: u64,
) -> Result<InclusionProof, ProofRequestError> {
    let tx = conn.transaction().map_err(ProofRequestError::Database)?;
    let size = log_size(&tx).map_err(ProofRequestError::Database)?;
    if tree_size > size {
        return Err(out_of_range("tree size beyond the log", size));
    }
    if index >= tree_size {
        return Err(out_of_range("index must be below the tree size", size));
    }
    let base = base_or_corrupt(&tx)?;
    let src = DbNodes {
        conn: &tx,
        base: base.as_ref(),
        cache,
    };
    let leaf = src.node(0, index)?;
    let hashes = inclusion_proof(&src, index, tree_size).map_err(|e| fix_size(e.into(), size))?;
    Ok(InclusionProof {
        index,
        tree_size,
        leaf_hash: leaf,
        hashes,
    })
}

pub(crate) fn consistency(
    conn: &mut Connection,
    cache: Option<&NodeCache>,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof, ProofRequestError> {
    let tx = conn.transaction().map_err(ProofRequestError::Database)?;
    let size = log_size(&tx).map_err(ProofRequestError::Database)?;
    if new > size || old > new {
        return Err(out_of_range("need old size <= new size <= log size", size));
    }
    let base = base_or_corrupt(&tx)?;
    let src = DbNodes {
        conn: &tx,
        base: base.as_ref(),
        cache,
    };
    let hashes = consistency_proof(&src, old, new).map_err(|e| fix_size(e.into(), size))?;
    Ok(ConsistencyProof {
        old_size: old,
        new_size: new,
        hashes,
    })
}

pub(crate) fn root_at(
    conn: &mut Connection,
    cache: Option<&NodeCache>,
    tree_size: u64,
) -> Result<Hash, ProofRequestError> {
    let tx = conn.transaction().map_err(ProofRequestError::Database)?;
    let size = log_size(&tx).map_err(ProofRequestError::Database)?;
    if tree_size > size {
        return Err(out_of_range("tree size beyond the log", size));
    }
    if tree_size == 0 {
        return Ok(crate::merkle::empty_root());
    }
    let base = base_or_corrupt(&tx)?;
    let src = DbNodes {
        conn: &tx,
        base: base.as_ref(),
        cache,
    };
    Ok(range_hash(&src, 0, tree_size)?)
}

/// Export entries `[start, end)` against the latest checkpoint (or the given one).
pub(crate) fn export(
    conn: &mut Connection,
    cache: Option<&NodeCache>,
    start: u64,
    end: u64,
    checkpoint: Option<&SignedCheckpoint>,
) -> Result<ExportBundle, ProofRequestError> {
    let tx = conn.transaction().map_err(ProofRequestError::Database)?;
    let size = log_size(&tx).map_err(ProofRequestError::Database)?;
    if start > end || end > size {
        return Err(out_of_range("need start <= end <= log size", size));
    }
    let cp = match checkpoint {
        Some(cp) => cp.clone(),
        None => {
            let row: Option<String> = tx
                .query_row(
                    "SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(ProofRequestError::Database)?;
            let note = row.ok_or(ProofRequestError::NoCheckpoint)?;
            SignedCheckpoint::parse(&note).map_err(|_| ProofRequestError::Corrupt { seq: size })?
        }
    };
    let tree_size = cp.checkpoint().tree_size;
    if tree_size < end {
        return Err(ProofRequestError::NoCheckpoint);
    }
    let base = base_or_corrupt(&tx)?;
    if let Some(b) = &base
        && start < b.size
    {
        return Err(ProofRequestError::Expired { base: b.size });
    }
    let prev_chain = if start == 0 {
        GENESIS_CHAIN
    } else if base.as_ref().is_some_and(|b| b.size == start) {
        base.as_ref().map(|b| b.chain).unwrap_or(GENESIS_CHAIN)
    } else {
        let c: Vec<u8> = tx
            .query_row(
                "SELECT chain FROM entries WHERE seq = ?1",
                [(start - 1) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(ProofRequestError::Database)?
            .ok_or(ProofRequestError::Corrupt { seq: start - 1 })?;
        c.as_slice()
            .try_into()
            .map_err(|_| ProofRequestError::Corrupt { seq: start - 1 })?
    };
    let mut entries = Vec::with_capacity((end - start) as usize);
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, body, chain FROM entries WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
            )
            .map_err(ProofRequestError::Database)?;
        let mut rows = stmt
            .query([start as i64, end as i64])
            .map_err(ProofRequestError::Database)?;
        while let Some(r) = rows.next().map_err(ProofRequestError::Database)? {
            let seq = r.get::<_, i64>(0).map_err(ProofRequestError::Database)? as u64;
            let body: Option<String> = r.get(1).map_err(ProofRequestError::Database)?;
            let body = body.ok_or(ProofRequestError::Archived { seq })?;
            let chain: Vec<u8> = r.get(2).map_err(ProofRequestError::Database)?;
            let chain: Hash = chain
                .as_slice()
                .try_into()
                .map_err(|_| ProofRequestError::Corrupt { seq })?;
            if seq != start + entries.len() as u64 {
                return Err(ProofRequestError::Corrupt { seq });
            }
            entries.push(ExportedEntry {
                seq,
                canonical: body,
                chain,
            });
        }
    }
    if entries.len() as u64 != end - start {
        return Err(ProofRequestError::Corrupt {
            seq: start + entries.len() as u64,
        });
    }
    let src = DbNodes {
        conn: &tx,
        base: base.as_ref(),
        cache,
    };
    let proof = range_proof(&src, start, end, tree_size).map_err(|e| fix_size(e.into(), size))?;
    let origin: String = tx
        .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| {
            r.get(0)
        })
        .map_err(ProofRequestError::Database)?;
    let pem: String = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'public_key_pem'",
            [],
            |r| r.get(0),
        )
        .map_err(ProofRequestError::Database)?;
    Ok(ExportBundle {
        format: EXPORT_FORMAT.to_owned(),
        origin,
        start,
        prev_chain,
        entries,
        checkpoint: cp.as_str().to_owned(),
        proof,
        public_key_pem: pem,
    })
}

pub(crate) fn verify_database(
    path: &Path,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(VerifyError::Missing { path: shown });
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| super::configure_reader(&c).map(|_| c))
    .map_err(|source| VerifyError::Open {
        path: shown.clone(),
        source,
    })?;
    let tx = conn.transaction().map_err(VerifyError::Database)?;
    let meta = |k: &str| -> Result<Option<String>, VerifyError> {
        match tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()
        {
            Ok(v) => Ok(v),
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
                Ok(None)
            }
            Err(e) => Err(VerifyError::Database(e)),
        }
    };
    let not_log = || VerifyError::NotAnAuditLog {
        path: shown.clone(),
    };
    let origin = meta("origin")?.ok_or_else(not_log)?;
    let (key, key_source) = match &options.trusted_key {
        Some(k) => (k.clone(), KeySource::Given),
        None => {
            let pem = meta("public_key_pem")?.ok_or_else(not_log)?;
            (
                AppliancePublicKey::from_pem(&pem).map_err(VerifyError::StoredKey)?,
                KeySource::LogMetadata,
            )
        }
    };
    let mut v = LogVerifier::new(key, key_source, &origin, &shown);
    match retained_base(&tx) {
        Ok(Some(base)) => v.set_base(base),
        Ok(None) => {}
        Err(BaseError::Sql(e)) => return Err(VerifyError::Database(e)),
        Err(BaseError::Corrupt) => {
            let size: i64 = tx
                .query_row("SELECT size FROM retained_base WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .map_err(VerifyError::Database)?;
            v.report(Damage::BadRetentionBase {
                size: size.max(0) as u64,
            });
        }
    }
    {
        let mut stmt = tx
            .prepare("SELECT note FROM checkpoints ORDER BY id")
            .map_err(VerifyError::Database)?;
        let notes: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(VerifyError::Database)?
            .collect::<Result<_, _>>()
            .map_err(VerifyError::Database)?;
        v.add_checkpoints(notes.iter().map(String::as_str));
    }
    v.add_external(&options.external_checkpoints);
    // Two-stage pipeline: this thread steps SQLite and copies rows into chunks; a second
    // thread runs the verifier over them (hashing, chain, tree). Chunk buffers are recycled.
    let mut v = std::thread::scope(|scope| -> Result<LogVerifier, VerifyError> {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Chunk>();
        let worker = scope.spawn(move || {
            for chunk in full_rx {
                for row in &chunk.rows {
                    v.push(chunk.leaf_row(row));
                }
                if empty_tx.send(chunk).is_err() {
                    break;
                }
            }
            v
        });
        let read = (|| {
            let mut stmt = tx
                .prepare("SELECT seq, body, leaf_hash, chain, nodes FROM entries ORDER BY seq")
                .map_err(VerifyError::Database)?;
            let mut rows = stmt.query([]).map_err(VerifyError::Database)?;
            let mut chunk = Chunk::default();
            while let Some(r) = rows.next().map_err(VerifyError::Database)? {
                chunk.push_row(r).map_err(VerifyError::Database)?;
                if chunk.rows.len() == CHUNK_ROWS {
                    let next = empty_rx.try_recv().unwrap_or_default();
                    if full_tx
                        .send(std::mem::replace(&mut chunk, next.cleared()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
            if !chunk.rows.is_empty() {
                let _ = full_tx.send(chunk);
            }
            Ok(())
        })();
        drop(full_tx);
        let v = worker.join().expect("verifier thread panicked");
        read.map(|_| v)
    })?;
    check_segments(&tx, &mut v, path)?;
    Ok(v.finish())
}

const CHUNK_ROWS: usize = 2048;

/// Rows copied out of SQLite for the verifier thread: fixed fields plus byte ranges into one
/// shared buffer.
#[derive(Default)]
struct Chunk {
    rows: Vec<ChunkRow>,
    data: Vec<u8>,
}

struct ChunkRow {
    seq: u64,
    body: Option<(usize, usize)>,
    leaf: (usize, usize),
    chain: (usize, usize),
    nodes: (usize, usize),
}

impl Chunk {
    fn cleared(mut self) -> Self {
        self.rows.clear();
        self.data.clear();
        self
    }

    fn put(&mut self, bytes: &[u8]) -> (usize, usize) {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        (at, at + bytes.len())
    }

    fn push_row(&mut self, r: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let seq = r.get::<_, i64>(0)?.max(0) as u64;
        let body = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Null => None,
            other => Some(self.put(other.as_bytes().unwrap_or_default())),
        };
        let leaf = self.put(r.get_ref(2)?.as_bytes().unwrap_or_default());
        let chain = self.put(r.get_ref(3)?.as_bytes().unwrap_or_default());
        let nodes = self.put(r.get_ref(4)?.as_bytes().unwrap_or_default());
        self.rows.push(ChunkRow {
            seq,
            body,
            leaf,
            chain,
            nodes,
        });
        Ok(())
    }

    fn leaf_row(&self, row: &ChunkRow) -> LeafRow<'_> {
        let at = |(a, b): (usize, usize)| &self.data[a..b];
        LeafRow {
            seq: row.seq,
            body: row.body.map(at),
            leaf_hash: at(row.leaf),
            chain: at(row.chain),
            nodes: at(row.nodes),
        }
    }
}

/// Every archive segment that has not expired must exist, hash to its recorded SHA-256, and
/// verify on its own (signed checkpoint + range proof) with the trusted key.
fn check_segments(tx: &Connection, v: &mut LogVerifier, db: &Path) -> Result<(), VerifyError> {
    use std::io::Read;
    let mut stmt = tx
        .prepare(
            "SELECT start, end, file, sha256 FROM segments WHERE expired_at IS NULL ORDER BY start",
        )
        .map_err(VerifyError::Database)?;
    let segs: Vec<(i64, i64, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(VerifyError::Database)?
        .collect::<Result<_, _>>()
        .map_err(VerifyError::Database)?;
    for (start, end, file, sha) in segs {
        let (start, end) = (start.max(0) as u64, end.max(0) as u64);
        let mut path = std::path::PathBuf::from(&file);
        if path.is_relative()
            && let Some(dir) = db.parent()
        {
            path = dir.join(path);
        }
        let Ok(data) = std::fs::read(&path) else {
            v.report(Damage::MissingSegment { start, end });
            continue;
        };
        let ok = (|| {
            if Sha256::digest(&data).as_slice() != sha.as_slice() {
                return false;
            }
            let mut json = Vec::new();
            if flate2::read::GzDecoder::new(data.as_slice())
                .read_to_end(&mut json)
                .is_err()
            {
                return false;
            }
            let Ok(bundle) = serde_json::from_slice::<ExportBundle>(&json) else {
                return false;
            };
            bundle.start == start
                && bundle.entries.len() as u64 == end - start
                && bundle.verify(v.key()).is_ok()
        })();
        if ok {
            v.segment_ok();
        } else {
            v.report(Damage::BadSegment { start, end });
        }
    }
    Ok(())
}
