//! The SQLite-backed log (feature `sqlite`).

mod pending;
mod read;
mod retention;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::canonical::PreparedEntry;
use crate::checkpoint::SignedCheckpoint;
use crate::entry::{Action, Entry, InvalidEntry, NewEntry, TraceId};
use crate::export::ExportBundle;
use crate::key::{ApplianceKey, AppliancePublicKey, PublicKeyError, SignError};
use crate::merkle::{Hash, ProofError, hex_hash, hex_hashes};
use crate::verify::VerifyReport;
use crate::witness::CheckpointWitness;

pub use pending::PendingAppend;
pub use retention::{
    RetentionError, RetentionPolicy, RetentionPolicyError, RetentionReport, SegmentInfo,
};

/// Settings of an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The log's origin line, used only when the database is created. Default:
    /// `sakshi.appliance/audit/<random UUID>`.
    pub origin: Option<String>,
    /// Write a checkpoint every this many entries (at exact multiples of it).
    pub checkpoint_every: u64,
    /// ... and at least this often, even when no entries arrived.
    pub checkpoint_interval: Duration,
    /// Most entries committed in one group-commit transaction.
    pub max_batch: usize,
    /// Refuse to grow the database beyond this many bytes (appends then fail with
    /// [`AppendError::Full`]); `None` for no limit beyond the disk.
    pub max_db_bytes: Option<u64>,
    /// Retention (sealing into archive segments, expiry).
    pub retention: RetentionPolicy,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_batch: 4096,
            max_db_bytes: None,
            retention: RetentionPolicy::default(),
        }
    }
}

/// What the log returns once an append is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Sequence number (leaf index).
    pub seq: u64,
    /// Time assigned to the entry.
    pub time: DateTime<Utc>,
    /// Leaf hash.
    #[serde(with = "hex_hash")]
    pub leaf_hash: Hash,
    /// Chain value.
    #[serde(with = "hex_hash")]
    pub chain: Hash,
}

/// Errors opening the log. Nothing is changed when opening fails.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or initialise the database.
    #[error("opening audit database {path}")]
    Database {
        /// The file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file (or its directory) is read-only.
    #[error("audit database {path} is read-only; the log needs write access")]
    ReadOnly {
        /// The file.
        path: String,
    },
    /// The disk is full.
    #[error("no space to initialise audit database {path}")]
    Full {
        /// The file.
        path: String,
    },
    /// The database was created by a newer or unknown schema.
    #[error("audit database schema version {found:?} is not supported")]
    SchemaVersion {
        /// Version found.
        found: String,
    },
    /// The database belongs to a different appliance key.
    #[error(
        "audit database was created with key sha256:{expected}, not the given key sha256:{given}"
    )]
    KeyMismatch {
        /// Fingerprint stored in the log.
        expected: String,
        /// Fingerprint of the key given.
        given: String,
    },
    /// The database's stored state is inconsistent (e.g. metadata missing).
    #[error("audit database state is inconsistent: {what}")]
    Inconsistent {
        /// What is wrong.
        what: &'static str,
    },
    /// Writing the first checkpoint failed.
    #[error("signing the first checkpoint failed")]
    Sign(#[source] Arc<SignError>),
    /// The configuration is invalid.
    #[error("invalid audit configuration")]
    Config(#[source] RetentionPolicyError),
    /// The writer thread could not be started.
    #[error("starting the audit writer thread")]
    Thread(#[source] std::io::Error),
}

/// Errors appending. An append that fails wrote nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The entry is invalid.
    #[error("invalid audit entry")]
    Invalid(#[source] InvalidEntry),
    /// The disk (or the configured size limit) is full.
    #[error("audit database is full; the entry was not recorded")]
    Full,
    /// The database became read-only.
    #[error("audit database is read-only; the entry was not recorded")]
    ReadOnly,
    /// Any other database failure.
    #[error("audit database write failed; the entry was not recorded")]
    Database(#[source] Arc<rusqlite::Error>),
    /// Signing a checkpoint failed (the batch was rolled back).
    #[error("signing a checkpoint failed; the entry was not recorded")]
    Sign(#[source] Arc<SignError>),
    /// The log is closed.
    #[error("the audit log is closed")]
    Closed,
}

/// Errors forcing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Writing failed.
    #[error("writing the checkpoint failed")]
    Write(#[source] AppendError),
    /// Reading it back failed.
    #[error("reading checkpoints failed")]
    Database(#[source] rusqlite::Error),
    /// A stored checkpoint does not parse.
    #[error("stored checkpoint #{id} is malformed")]
    Malformed {
        /// Its id.
        id: u64,
        /// Why.
        #[source]
        source: crate::checkpoint::CheckpointParseError,
    },
}

/// Sort order of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first; the cursor is the last `seq` seen, the next page has larger seqs.
    #[default]
    Ascending,
    /// Newest first; the next page has smaller seqs.
    Descending,
}

/// A query over the hot (not yet archived) entries, with keyset pagination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    /// Continue after this seq (exclusive), in the query's order.
    pub cursor: Option<u64>,
    /// Order.
    pub order: Order,
    /// Page size, 1..=[`MAX_PAGE`] (0 means the default, 100).
    pub limit: usize,
    /// Only these actions (any of them).
    pub actions: Vec<Action>,
    /// Only this actor id.
    pub actor: Option<String>,
    /// Only this target id (VM id, image digest, user name, ...).
    pub target: Option<String>,
    /// Only this trace id.
    pub trace_id: Option<TraceId>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only successes (`Some(true)`) or failures (`Some(false)`).
    pub success: Option<bool>,
}

/// Largest page a query returns.
pub const MAX_PAGE: usize = 1000;

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The entries, in the query's order.
    pub entries: Vec<Entry>,
    /// Pass as [`Query::cursor`] for the next page; `None` when there are no more.
    pub next_cursor: Option<u64>,
}

/// Errors querying.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The limit is above [`MAX_PAGE`].
    #[error("page size {0} exceeds {MAX_PAGE}")]
    Limit(usize),
    /// The database failed.
    #[error("audit query failed")]
    Database(#[source] rusqlite::Error),
    /// A stored entry does not decode.
    #[error("stored entry {seq} does not decode")]
    Decode {
        /// Which.
        seq: u64,
        /// Why.
        #[source]
        source: crate::entry::DecodeEntryError,
    },
}

/// An RFC 9162 inclusion proof, with what it proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size the proof is for.
    pub tree_size: u64,
    /// The leaf hash.
    #[serde(with = "hex_hash")]
    pub leaf_hash: Hash,
    /// Audit path, leaf first.
    #[serde(with = "hex_hashes")]
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Verify against a root of `tree_size` leaves.
    pub fn verify(&self, root: &Hash) -> Result<(), ProofError> {
        crate::merkle::verify_inclusion(
            self.index,
            self.tree_size,
            &self.leaf_hash,
            &self.hashes,
            root,
        )
    }
}

/// An RFC 9162 consistency proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Old tree size.
    pub old_size: u64,
    /// New tree size.
    pub new_size: u64,
    /// Proof hashes.
    #[serde(with = "hex_hashes")]
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Verify between two roots.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), ProofError> {
        crate::merkle::verify_consistency(
            self.old_size,
            self.new_size,
            old_root,
            new_root,
            &self.hashes,
        )
    }
}

/// Errors building proofs or exports.
#[derive(Debug, thiserror::Error)]
pub enum ProofRequestError {
    /// Index or sizes beyond the log.
    #[error("proof request out of range: {what} (log size {log_size})")]
    OutOfRange {
        /// What is wrong.
        what: &'static str,
        /// Current log size.
        log_size: u64,
    },
    /// The proof needs hashes of entries that have expired.
    #[error("the proof needs entries that expired (retained from {base})")]
    Expired {
        /// First retained index.
        base: u64,
    },
    /// The entries are archived; export from their segment instead.
    #[error("entry {seq} is sealed in an archive segment")]
    Archived {
        /// First archived entry hit.
        seq: u64,
    },
    /// No checkpoint covers the range yet.
    #[error("no checkpoint covers the range yet")]
    NoCheckpoint,
    /// Stored data is inconsistent.
    #[error("stored tree data is inconsistent at entry {seq}")]
    Corrupt {
        /// Where.
        seq: u64,
    },
    /// The database failed.
    #[error("reading the audit database failed")]
    Database(#[source] rusqlite::Error),
}

/// Options for [`verify_database`] and [`AuditLog::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The trusted public key. `None` reads it from the log's metadata, which proves only
    /// self-consistency (the report says so).
    pub trusted_key: Option<AppliancePublicKey>,
    /// Checkpoints held outside the appliance (files kept by an auditor, a witness, a SIEM).
    pub external_checkpoints: Vec<SignedCheckpoint>,
}

/// Errors that stop a verification from running (damage is reported, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The database cannot be opened.
    #[error("opening audit database {path} for verification")]
    Open {
        /// The file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file does not exist.
    #[error("audit database {path} does not exist")]
    Missing {
        /// The file.
        path: String,
    },
    /// The file is not a Sakshi audit database (no metadata).
    #[error("{path} is not a Sakshi audit database")]
    NotAnAuditLog {
        /// The file.
        path: String,
    },
    /// The public key stored in the log does not parse.
    #[error("the public key stored in the log is unusable")]
    StoredKey(#[source] PublicKeyError),
    /// Reading failed part way.
    #[error("reading the audit database failed")]
    Database(#[source] rusqlite::Error),
}

pub(crate) enum Request {
    Append {
        entries: Vec<PreparedEntry>,
        reply: pending::Reply,
    },
    Checkpoint {
        reply: mpsc::SyncSender<Result<SignedCheckpoint, AppendError>>,
    },
    Retention {
        now: DateTime<Utc>,
        reply: mpsc::SyncSender<Result<RetentionReport, RetentionError>>,
    },
}

/// The audit log. Cheap to share (`Arc<AuditLog>`); appends from many threads are group
/// committed by one writer thread. Dropping it writes a final checkpoint and stops the writer.
pub struct AuditLog {
    path: PathBuf,
    origin: String,
    public_key: AppliancePublicKey,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: AuditReader,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn classify_open(path: &Path, source: rusqlite::Error) -> OpenError {
    let path = path.display().to_string();
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) => OpenError::ReadOnly { path },
        Some(rusqlite::ErrorCode::DiskFull) => OpenError::Full { path },
        _ => OpenError::Database { path, source },
    }
}

pub(crate) fn configure(conn: &Connection, max_db_bytes: Option<u64>) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    // 64 MiB page cache: index tails and recent tree rows stay in memory.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if let Some(bytes) = max_db_bytes {
        let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = (bytes as i64 / page.max(512)).max(1);
        conn.pragma_update(None, "max_page_count", pages)?;
    }
    Ok(())
}

/// Read-only connections also map the file (up to SQLite's mmap limit) to skip read copies.
pub(crate) fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    configure(conn, None)?;
    conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
    Ok(())
}

impl AuditLog {
    /// Open (or create) the log at `path`, signing checkpoints with `key`. A new log gets a
    /// signed checkpoint of the empty tree at once; a log whose tail is not covered by a
    /// checkpoint (e.g. after a crash) gets one before `open` returns.
    pub fn open(
        path: impl AsRef<Path>,
        config: AuditConfig,
        key: Arc<ApplianceKey>,
        witness: Option<Arc<dyn CheckpointWitness>>,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        config.retention.validate().map_err(OpenError::Config)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify_open(&path, e))?;
        if conn
            .is_readonly("main")
            .map_err(|e| classify_open(&path, e))?
        {
            return Err(OpenError::ReadOnly {
                path: path.display().to_string(),
            });
        }
        configure(&conn, config.max_db_bytes).map_err(|e| classify_open(&path, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| classify_open(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Inconsistent {
                what: "the database cannot use WAL journaling",
            });
        }
        // FULL: the WAL is fsynced at every commit, so a commit survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| classify_open(&path, e))?;
        let origin = init_schema(&conn, &config, key.public_key()).map_err(|e| match e {
            InitError::Sql(e) => classify_open(&path, e),
            InitError::Open(e) => e,
        })?;

        let state = writer::WriterState::load(conn, key.clone(), origin.clone(), &config, witness)
            .map_err(|e| match e {
                writer::LoadError::Sql(e) => classify_open(&path, e),
                writer::LoadError::Sign(e) => OpenError::Sign(e),
                writer::LoadError::Inconsistent(what) => OpenError::Inconsistent { what },
            })?;

        let reader = AuditReader::open(&path)?;

        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("sakshi-audit-writer".into())
            .spawn(move || state.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(AuditLog {
            path,
            origin,
            public_key: key.public_key().clone(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader,
        })
    }

    /// The log's origin line (checkpoint first line and key name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public key checkpoints are signed with.
    pub fn public_key(&self) -> &AppliancePublicKey {
        &self.public_key
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, req: Request) -> Result<(), AppendError> {
        let guard = self.tx.lock().map_err(|_| AppendError::Closed)?;
        let tx = guard.as_ref().ok_or(AppendError::Closed)?;
        tx.send(req).map_err(|_| AppendError::Closed)
    }

    /// Append one entry. Returns once the entry is durable: committed in SQLite's WAL with
    /// `synchronous=FULL` (fsynced). Concurrent callers share one transaction and one fsync.
    pub fn append(&self, entry: NewEntry) -> Result<Receipt, AppendError> {
        let mut r = self.append_batch(vec![entry])?;
        r.pop().ok_or(AppendError::Closed)
    }

    /// Append several entries atomically (all or none), in order, and wait until durable.
    pub fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<Receipt>, AppendError> {
        self.submit(entries)?.wait()
    }

    /// Append one entry from async code: resolves once the entry is durable, without
    /// blocking a thread meanwhile (no runtime needed; any executor works).
    pub async fn append_async(&self, entry: NewEntry) -> Result<Receipt, AppendError> {
        let mut r = self.submit(vec![entry])?.await?;
        r.pop().ok_or(AppendError::Closed)
    }

    /// Hand entries to the writer and return at once; the returned [`PendingAppend`] resolves
    /// (`wait()` or `.await`) when they are durable. Invalid entries are refused here, on the
    /// caller's thread, and nothing is written.
    pub fn submit(&self, entries: Vec<NewEntry>) -> Result<PendingAppend, AppendError> {
        // Validate and canonicalise the details here, on the caller's thread.
        let entries = entries
            .into_iter()
            .map(PreparedEntry::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AppendError::Invalid)?;
        let (reply, pending) = pending::pair();
        if entries.is_empty() {
            reply.send(Ok(Vec::new()));
            return Ok(pending);
        }
        self.send(Request::Append { entries, reply })?;
        Ok(pending)
    }

    /// Write a signed checkpoint of the current tree now and return it.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, CheckpointError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(Request::Checkpoint { reply })
            .map_err(CheckpointError::Write)?;
        rx.recv()
            .map_err(|_| CheckpointError::Write(AppendError::Closed))?
            .map_err(CheckpointError::Write)
    }

    /// Seal entries older than the hot window into archive segments and expire segments past
    /// the retention period, as of `now`. Both are recorded in the log (`audit.archive`,
    /// `audit.expire`).
    pub fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionReport, RetentionError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(Request::Retention { now, reply })
            .map_err(RetentionError::Append)?;
        rx.recv()
            .map_err(|_| RetentionError::Append(AppendError::Closed))?
    }

    /// See [`AuditReader::release_memory`].
    pub fn release_read_memory(&self) {
        self.reader.release_memory();
    }

    /// The read side (queries, proofs, exports), also usable on its own ([`AuditReader`]).
    pub fn reader(&self) -> &AuditReader {
        &self.reader
    }

    /// The latest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, CheckpointError> {
        self.reader.latest_checkpoint()
    }

    /// All checkpoints with tree size in `[from_size, to_size]`, in log order.
    pub fn checkpoints(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<SignedCheckpoint>, CheckpointError> {
        self.reader.checkpoints(from_size, to_size)
    }

    /// Number of entries (the next sequence number).
    pub fn size(&self) -> Result<u64, QueryError> {
        self.reader.size()
    }

    /// Query hot entries with filters and keyset pagination.
    pub fn query(&self, q: &Query) -> Result<Page, QueryError> {
        self.reader.query(q)
    }

    /// Read one hot entry by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, QueryError> {
        self.reader.get(seq)
    }

    /// Inclusion proof of entry `index` in the tree of `tree_size` entries.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ProofRequestError> {
        self.reader.inclusion_proof(index, tree_size)
    }

    /// Consistency proof between two tree sizes.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, ProofRequestError> {
        self.reader.consistency_proof(old_size, new_size)
    }

    /// Root hash of the tree of `tree_size` entries.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, ProofRequestError> {
        self.reader.root_at(tree_size)
    }

    /// Export hot entries `[start, end)` with the latest checkpoint and a range proof.
    /// Write a checkpoint first ([`AuditLog::checkpoint`]) if the range is newer than it.
    pub fn export(&self, start: u64, end: u64) -> Result<ExportBundle, ProofRequestError> {
        self.reader.export(start, end)
    }

    /// Verify the whole log (see [`verify_database`]); uses the log's own key unless
    /// `options.trusted_key` is set.
    pub fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
        let mut opts = options.clone();
        if opts.trusted_key.is_none() {
            opts.trusted_key = Some(self.public_key.clone());
        }
        verify_database(&self.path, &opts)
    }

    /// Stop the writer after writing a final checkpoint. Also done on drop.
    pub fn close(self) {
        self.shutdown();
    }

    fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.writer.lock()
            && let Some(h) = w.take()
            && h.join().is_err()
        {
            tracing::error!("audit writer thread panicked");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Read-only access to a log: queries, proofs, exports and checkpoints, without the key and
/// without the writer (e.g. for CLI commands next to a running appliance).
pub struct AuditReader {
    path: PathBuf,
    origin: String,
    public_key: AppliancePublicKey,
    conn: Mutex<ReaderState>,
}

struct ReaderState {
    conn: Connection,
    cache: read::NodeCache,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl AuditReader {
    /// Open an existing log read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| configure_reader(&c).map(|_| c))
        .map_err(|e| classify_open(&path, e))?;
        let meta = |k: &str| -> Result<String, OpenError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(|_| OpenError::Inconsistent {
                what: "not a Sakshi audit database",
            })?
            .ok_or(OpenError::Inconsistent {
                what: "not a Sakshi audit database",
            })
        };
        let origin = meta("origin")?;
        let public_key = AppliancePublicKey::from_pem(&meta("public_key_pem")?).map_err(|_| {
            OpenError::Inconsistent {
                what: "stored public key unusable",
            }
        })?;
        Ok(AuditReader {
            path,
            origin,
            public_key,
            conn: Mutex::new(ReaderState {
                conn,
                cache: read::NodeCache::default(),
            }),
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public key recorded in the log (trust it only as far as you trust the file).
    pub fn stored_public_key(&self) -> &AppliancePublicKey {
        &self.public_key
    }

    fn with_reader<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        self.with_cache(|c, _| f(c))
    }

    fn with_cache<T, E>(
        &self,
        f: impl FnOnce(&mut Connection, Option<&read::NodeCache>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let ReaderState { conn, cache } = &mut *guard;
        f(conn, Some(cache))
    }

    /// The latest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, CheckpointError> {
        self.with_reader(read::latest_checkpoint)
    }

    /// Gives back what a bulk read (verification, an export, a review) left resident: unmaps
    /// the database file (re-mapped lazily by the next read) and frees the page cache. A
    /// long-running process calls this after a scan so its resident size returns to its idle
    /// size.
    pub fn release_memory(&self) {
        let released = self.with_reader(|c| -> rusqlite::Result<()> {
            c.pragma_update(None, "mmap_size", 0)?;
            c.pragma_update(None, "mmap_size", 1i64 << 40)?;
            c.execute_batch("PRAGMA shrink_memory")
        });
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release the audit reader's memory");
        }
    }

    /// All checkpoints with tree size in `[from_size, to_size]`, in log order.
    pub fn checkpoints(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<SignedCheckpoint>, CheckpointError> {
        self.with_reader(|c| read::checkpoints_between(c, from_size, to_size))
    }

    /// Number of entries (the next sequence number).
    pub fn size(&self) -> Result<u64, QueryError> {
        self.with_reader(|c| read::log_size(c).map_err(QueryError::Database))
    }

    /// Query hot entries with filters and keyset pagination.
    pub fn query(&self, q: &Query) -> Result<Page, QueryError> {
        self.with_reader(|c| read::query(c, q))
    }

    /// Read one hot entry by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, QueryError> {
        self.with_reader(|c| read::get(c, seq))
    }

    /// Inclusion proof of entry `index` in the tree of `tree_size` entries.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ProofRequestError> {
        self.with_cache(|c, k| read::inclusion(c, k, index, tree_size))
    }

    /// Consistency proof between two tree sizes.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, ProofRequestError> {
        self.with_cache(|c, k| read::consistency(c, k, old_size, new_size))
    }

    /// Root hash of the tree of `tree_size` entries.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, ProofRequestError> {
        self.with_cache(|c, k| read::root_at(c, k, tree_size))
    }

    /// Export hot entries `[start, end)` with the latest checkpoint and a range proof.
    /// Write a checkpoint first ([`AuditLog::checkpoint`]) if the range is newer than it.
    pub fn export(&self, start: u64, end: u64) -> Result<ExportBundle, ProofRequestError> {
        self.with_cache(|c, k| read::export(c, k, start, end, None))
    }

    /// Verify the whole log (see [`verify_database`]).
    pub fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
        verify_database(&self.path, options)
    }
}

enum InitError {
    Sql(rusqlite::Error),
    Open(OpenError),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sql(e)
    }
}

fn init_schema(
    conn: &Connection,
    config: &AuditConfig,
    key: &AppliancePublicKey,
) -> Result<String, InitError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let res = (|| {
        conn.execute_batch(schema::SCHEMA)?;
        let get = |k: &str| -> rusqlite::Result<Option<String>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
        };
        match get("schema_version")? {
            None => {
                let origin = config
                    .origin
                    .clone()
                    .unwrap_or_else(|| format!("sakshi.appliance/audit/{}", uuid::Uuid::new_v4()));
                let mut ins = conn.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
                ins.execute(["schema_version", schema::SCHEMA_VERSION])?;
                ins.execute(["origin", origin.as_str()])?;
                ins.execute(["public_key_pem", key.to_pem()])?;
                ins.execute(["created", &crate::entry::format_time(&Utc::now())])?;
                Ok(origin)
            }
            Some(v) if v == schema::SCHEMA_VERSION => {
                let origin = get("origin")?.ok_or(InitError::Open(OpenError::Inconsistent {
                    what: "origin missing",
                }))?;
                let pem =
                    get("public_key_pem")?.ok_or(InitError::Open(OpenError::Inconsistent {
                        what: "public key missing",
                    }))?;
                let stored = AppliancePublicKey::from_pem(&pem).map_err(|_| {
                    InitError::Open(OpenError::Inconsistent {
                        what: "stored public key unusable",
                    })
                })?;
                if &stored != key {
                    return Err(InitError::Open(OpenError::KeyMismatch {
                        expected: stored.fingerprint(),
                        given: key.fingerprint(),
                    }));
                }
                Ok(origin)
            }
            Some(found) => Err(InitError::Open(OpenError::SchemaVersion { found })),
        }
    })();
    match res {
        Ok(origin) => {
            conn.execute_batch("COMMIT")?;
            Ok(origin)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Verify the log in the database at `path` without opening it for writing: the hash chain,
/// every leaf against the tree, every checkpoint's signature, chain and root, the record of
/// expired entries, and consistency with `options.external_checkpoints`. Damage is reported
/// in the returned [`VerifyReport`] (first bad index and kind); `Err` means the check could
/// not run.
pub fn verify_database(
    path: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    read::verify_database(path.as_ref(), options)
}
