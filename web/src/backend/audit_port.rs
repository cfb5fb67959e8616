//! The audit-log port: append typed records, read pages, verify, prove, list checkpoints.

use serde::{Deserialize, Serialize};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// An append in flight: resolves to the entry's index once it is durable.
pub type PendingAuditAppend = Pin<Box<dyn Future<Output = Result<u64, AuditAppendError>> + Send>>;

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed (bad password, backend error, bad input).
    Failure,
    /// Refused by authorization.
    Denied,
}

impl Outcome {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the actor proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorAuth {
    /// A dashboard session cookie.
    Session,
    /// An API bearer token.
    Token,
    /// A password in this very request (login).
    Password,
    /// Not authenticated.
    Anonymous,
    /// The appliance itself.
    System,
}

/// One entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Who: `user:<name>`, `token:<id>`, `anonymous`, `system`.
    pub actor: String,
    /// How the actor authenticated.
    pub auth: ActorAuth,
    /// Where from: client IP, or `local`.
    pub origin: String,
    /// What was done.
    pub action: crate::AuditAction,
    /// What it acted on, `<kind>:<id>` with the audit log's target kinds: `vm:<id>`,
    /// `user:<name>`, `image:<sha256>`, `token:<id>`, `audit_log:<what>`, `appliance:<route>`.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Structured details (JSON object).
    pub details: serde_json::Value,
    /// Trace id of the request.
    pub trace_id: Option<String>,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntryView {
    /// Position in the log (0-based, also the Merkle leaf index).
    pub index: u64,
    /// RFC 3339 time of append.
    pub time: String,
    /// Actor.
    pub actor: String,
    /// Origin.
    pub origin: String,
    /// Dotted action name.
    pub action: String,
    /// Target.
    pub target: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Structured details.
    pub details: serde_json::Value,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Lowercase hex RFC 9162 leaf hash of the entry; filled for single-entry reads (pages
    /// leave it out: computing it means canonicalising every entry).
    pub entry_hash: Option<String>,
}

/// Filters for an audit query (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Action, exact or prefix when it ends with `.` (e.g. `vm.`).
    pub action: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// RFC 3339 lower bound (inclusive).
    pub since: Option<String>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<String>,
}

/// Keyset position for a page: entries are returned newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditCursor {
    /// The newest entries.
    #[default]
    Newest,
    /// Entries with index strictly below this one (the next, older page).
    Before(u64),
    /// Entries with index strictly above this one (the previous, newer page).
    After(u64),
}

/// One page of entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<u64>,
    /// Pass as `after` for the previous (newer) page; absent on the first page.
    pub prev_after: Option<u64>,
}

/// Result of verifying the whole log (hash chain, Merkle tree, checkpoint signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Everything checked out.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// Merkle root over all entries (lowercase hex).
    pub root: String,
    /// Checkpoints whose signatures were checked.
    pub checkpoints_checked: u64,
    /// First entry index that failed, when one did.
    pub first_bad_index: Option<u64>,
    /// What failed, when something did.
    pub problem: Option<String>,
}

/// RFC 9162 inclusion proof for one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProofView {
    /// Leaf index.
    pub index: u64,
    /// Tree size the proof is for.
    pub tree_size: u64,
    /// Leaf hash (lowercase hex).
    pub leaf_hash: String,
    /// Root of the tree of `tree_size` (lowercase hex).
    pub root: String,
    /// Audit path, bottom up (lowercase hex).
    pub path: Vec<String>,
}

/// RFC 9162 consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProofView {
    /// Older size.
    pub from_size: u64,
    /// Newer size.
    pub to_size: u64,
    /// Root at `from_size`.
    pub from_root: String,
    /// Root at `to_size`.
    pub to_root: String,
    /// Proof hashes (lowercase hex).
    pub path: Vec<String>,
}

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Tree size.
    pub size: u64,
    /// Root hash (lowercase hex).
    pub root: String,
    /// RFC 3339 time.
    pub time: String,
    /// The checkpoint in C2SP tlog-checkpoint signed-note text form.
    pub text: String,
}

/// Appending failed; the action that wanted to be audited must not proceed.
#[derive(Debug, thiserror::Error)]
#[error("audit log append failed")]
pub struct AuditAppendError(#[source] pub Box<dyn StdError + Send + Sync>);

/// Reading the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditQueryError {
    /// The entry or tree size does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A query parameter is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// Parameter name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error("audit store failure")]
    Store(#[source] Box<dyn StdError + Send + Sync>),
}

/// The audit log as the web layer sees it. Calls may block (SQLite); the router calls them from
/// blocking tasks.
pub trait AuditStore: Send + Sync + 'static {
    /// Append one entry; returns its index.
    fn append(&self, record: AuditRecord) -> Result<u64, AuditAppendError>;
    /// Append one entry from async code without holding a thread while it becomes durable
    /// (the router's path: a blocking thread parked on a group commit's fsync would starve the
    /// pool under load). The default runs [`append`](AuditStore::append) at once, which suits
    /// stores that never wait.
    fn append_async(&self, record: AuditRecord) -> PendingAuditAppend {
        let done = self.append(record);
        Box::pin(std::future::ready(done))
    }
    /// One page of entries matching `filter`, newest first, at most `limit`.
    fn query(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
    ) -> Result<AuditPage, AuditQueryError>;
    /// Like [`query`](AuditStore::query), for listings that show no details: a store may leave
    /// each entry's `details` out (`null`) when that is cheaper.
    fn query_summaries(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
    ) -> Result<AuditPage, AuditQueryError> {
        self.query(filter, cursor, limit)
    }
    /// One entry.
    fn entry(&self, index: u64) -> Result<AuditEntryView, AuditQueryError>;
    /// Current size and root.
    fn head(&self) -> Result<(u64, String), AuditQueryError>;
    /// Current size (without computing the root).
    fn size(&self) -> Result<u64, AuditQueryError> {
        self.head().map(|(size, _)| size)
    }
    /// Verify the whole log.
    fn verify(&self) -> Result<VerifyReport, AuditQueryError>;
    /// Inclusion proof of entry `index` in the tree of `tree_size` entries.
    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProofView, AuditQueryError>;
    /// Consistency proof between two tree sizes.
    fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProofView, AuditQueryError>;
    /// The most recent checkpoints, newest first.
    fn checkpoints(&self, limit: u32) -> Result<Vec<CheckpointView>, AuditQueryError>;
}
