//! [`AuditStore`] over the real audit log ([`sakshi_audit::AuditLog`]): maps the web layer's
//! records onto the log's typed entries (action, actor with authentication method, origin,
//! target kind, outcome, trace id) and back, and its queries onto keyset pages.

use super::audit_port::{
    ActorAuth, AuditAppendError, AuditCursor, AuditEntryView, AuditFilter, AuditPage,
    AuditQueryError, AuditRecord, AuditStore, CheckpointView, ConsistencyProofView,
    InclusionProofView, Outcome, PendingAuditAppend, VerifyReport,
};
use sakshi_audit::{
    Action, Actor, ActorKind, AuditLog, AuditReader, AuthMethod, Entry, NewEntry, Order, Origin,
    ProofRequestError, Query, SignedCheckpoint, Target, TargetKind, TraceId, VerifyOptions,
};
use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Extra read-only connections for page and entry reads. One reader connection serialises
/// every query (and its entry decoding) behind one lock; with a few, concurrent page reads use
/// every core.
const EXTRA_READERS: usize = 2;

/// Newest pages kept (one per filter and page size), so a repeated newest-page read decodes
/// only the entries appended since the last one.
const NEWEST_PAGES_KEPT: usize = 8;
/// A kept page older than this is read afresh (retention may have archived its entries).
const NEWEST_PAGE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The newest page for one filter and page size, as last read.
struct NewestPage {
    filter: AuditFilter,
    limit: u32,
    read_at: std::time::Instant,
    /// Newest first, each shared (a page built from this one copies only what it returns).
    entries: Vec<Arc<AuditEntryView>>,
    /// Whether older matching entries exist beyond `entries`.
    more: bool,
}

type AppendHook = Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>;

/// The real audit log behind the web layer's [`AuditStore`] port.
pub struct AuditLogStore {
    log: Arc<AuditLog>,
    readers: Vec<AuditReader>,
    next_reader: AtomicUsize,
    checkpoint_every: u64,
    on_append: AppendHook,
    newest: std::sync::Mutex<Vec<NewestPage>>,
}

impl AuditLogStore {
    /// Wraps an open log; `checkpoint_every` is the log's checkpoint spacing (for finding the
    /// latest checkpoints quickly).
    pub fn new(log: Arc<AuditLog>, checkpoint_every: u64) -> AuditLogStore {
        // Extra readers are an optimisation: when one cannot be opened, the log's own serves.
        let readers = (0..EXTRA_READERS)
            .map_while(|_| match AuditReader::open(log.path()) {
                Ok(r) => Some(r),
                Err(error) => {
                    tracing::warn!(%error, "cannot open an extra audit reader");
                    None
                }
            })
            .collect();
        AuditLogStore {
            log,
            readers,
            next_reader: AtomicUsize::new(0),
            checkpoint_every: checkpoint_every.max(1),
            on_append: Arc::new(OnceLock::new()),
            newest: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The kept newest page for `filter` and `limit`, if it is fresh enough.
    fn kept_newest(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Option<(Vec<Arc<AuditEntryView>>, bool)> {
        let kept = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|p| p.limit == limit && p.filter == *filter)
            .filter(|p| p.read_at.elapsed() < NEWEST_PAGE_MAX_AGE)
            .map(|p| (p.entries.clone(), p.more))
    }

    /// Remembers a newest page (replacing an older one for the same filter and size).
    fn keep_newest(&self, page: NewestPage) {
        let mut kept = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        let top = |p: &NewestPage| p.entries.first().map(|e| e.index);
        match kept
            .iter()
            .position(|p| p.limit == page.limit && p.filter == page.filter)
        {
            Some(i) => {
                // Another reader may have stored a newer page meanwhile; keep the newest.
                if top(&page) >= top(&kept[i]) {
                    kept[i] = page;
                }
            }
            None => {
                if kept.len() >= NEWEST_PAGES_KEPT {
                    kept.remove(0);
                }
                kept.push(page);
            }
        }
    }

    /// The newest page: the kept one plus the entries appended since (entries never change,
    /// so only those are read and decoded), or a full read when nothing fresh is kept or more
    /// than a page arrived. `details`: copy each entry's details into the page.
    fn newest_page(
        &self,
        filter: &AuditFilter,
        q: Query,
        limit: u32,
        details: bool,
    ) -> Result<AuditPage, AuditQueryError> {
        let page_len = q.limit;
        let merged = match self.kept_newest(filter, limit) {
            Some((kept, more)) => {
                let delta = Query {
                    cursor: kept.first().map(|e| e.index),
                    order: Order::Ascending,
                    ..q.clone()
                };
                let fresh = self.reader().query(&delta).map_err(store_err)?;
                if fresh.next_cursor.is_some() {
                    None
                } else {
                    let mut all: Vec<Arc<AuditEntryView>> = fresh
                        .entries
                        .into_iter()
                        .rev()
                        .map(|e| Arc::new(to_view(e)))
                        .collect();
                    let truncated = all.len() + kept.len() > page_len;
                    let room = page_len.saturating_sub(all.len());
                    all.extend(kept.into_iter().take(room));
                    Some((all, more || truncated))
                }
            }
            None => None,
        };
        let (entries, more) = match merged {
            Some(m) => m,
            None => {
                let page = self.reader().query(&q).map_err(store_err)?;
                let more = page.next_cursor.is_some();
                let views = page
                    .entries
                    .into_iter()
                    .map(|e| Arc::new(to_view(e)))
                    .collect();
                (views, more)
            }
        };
        let next_before = if more {
            entries.last().map(|e| e.index)
        } else {
            None
        };
        let page = AuditPage {
            entries: entries.iter().map(|e| copy_view(e, details)).collect(),
            next_before,
            prev_after: None,
        };
        self.keep_newest(NewestPage {
            filter: filter.clone(),
            limit,
            read_at: std::time::Instant::now(),
            entries,
            more,
        });
        Ok(page)
    }

    /// One page, newest first (see [`AuditStore::query`]); `details`: fill each entry's details.
    fn page(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
        details: bool,
    ) -> Result<AuditPage, AuditQueryError> {
        let mut actions = match &filter.action {
            Some(a) => actions_for(a)?,
            None => Vec::new(),
        };
        let mut success = None;
        match filter.outcome {
            None => {}
            Some(Outcome::Success) => success = Some(true),
            Some(o) => {
                success = Some(false);
                let base = if actions.is_empty() {
                    Action::ALL.to_vec()
                } else {
                    actions.clone()
                };
                let denied = o == Outcome::Denied;
                actions = base
                    .into_iter()
                    .filter(|a| (*a == Action::AuthDenied) == denied)
                    .collect();
                if actions.is_empty() {
                    return Ok(AuditPage {
                        entries: Vec::new(),
                        next_before: None,
                        prev_after: None,
                    });
                }
            }
        }
        let (order, cur) = match cursor {
            AuditCursor::Newest => (Order::Descending, None),
            AuditCursor::Before(b) => (Order::Descending, Some(b)),
            AuditCursor::After(a) => (Order::Ascending, Some(a)),
        };
        let q = Query {
            cursor: cur,
            order,
            limit: limit as usize,
            actions,
            actor: filter.actor.clone(),
            target: filter
                .target
                .as_deref()
                .map(|t| t.split_once(':').map_or(t, |(_, id)| id).to_owned()),
            trace_id: None,
            since: filter
                .since
                .as_deref()
                .map(|s| parse_time("since", s))
                .transpose()?,
            until: filter
                .until
                .as_deref()
                .map(|s| parse_time("until", s))
                .transpose()?,
            success,
        };
        if cursor == AuditCursor::Newest && limit > 0 {
            return self.newest_page(filter, q, limit, details);
        }
        let page = self.reader().query(&q).map_err(store_err)?;
        let mut entries: Vec<AuditEntryView> = page.entries.into_iter().map(to_view).collect();
        let (next_before, prev_after) = match cursor {
            AuditCursor::Newest => (page.next_cursor, None),
            AuditCursor::Before(_) => (page.next_cursor, entries.first().map(|e| e.index)),
            AuditCursor::After(_) => {
                entries.reverse();
                (
                    entries.last().map(|e| e.index),
                    page.next_cursor.and(entries.first().map(|e| e.index)),
                )
            }
        };
        Ok(AuditPage {
            entries,
            next_before,
            prev_after,
        })
    }

    /// A reader for one page or entry read, round robin over the pool.
    fn reader(&self) -> &AuditReader {
        if self.readers.is_empty() {
            return self.log.reader();
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        &self.readers[i]
    }

    /// Runs `hook` after every successful append (the OTLP shipper's nudge); first call wins.
    pub fn set_on_append(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_append.set(hook);
    }
}

impl AuditLogStore {
    /// Writes a signed checkpoint now (at shutdown, so the whole log is covered).
    pub fn checkpoint(&self) -> Result<(), sakshi_audit::CheckpointError> {
        self.log.checkpoint().map(|_| ())
    }
}

fn store_err(e: impl StdError + Send + Sync + 'static) -> AuditQueryError {
    AuditQueryError::Store(Box::new(e))
}

/// The log's target kind for a web-layer `<kind>:<id>` target.
fn target_of(s: &str) -> Option<Target> {
    let (kind, id) = s.split_once(':')?;
    let kind = TargetKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    Some(Target::new(kind, id))
}

fn actor_of(r: &AuditRecord) -> Actor {
    match r.auth {
        ActorAuth::Session => Actor::user(&r.actor, AuthMethod::Session),
        ActorAuth::Token => Actor::user(&r.actor, AuthMethod::BearerToken),
        ActorAuth::Password => Actor::user(&r.actor, AuthMethod::Password),
        ActorAuth::Anonymous => Actor::user(&r.actor, AuthMethod::None),
        ActorAuth::System => Actor::service(&r.actor),
    }
}

fn reason_of(r: &AuditRecord) -> String {
    let d = &r.details;
    let text = ["reason", "error"]
        .iter()
        .find_map(|k| d.get(k).and_then(|v| v.as_str()))
        .map(str::to_owned);
    text.unwrap_or_else(|| match r.outcome {
        Outcome::Denied => "denied".to_owned(),
        _ => "failed".to_owned(),
    })
}

/// Converts a web-layer record into the log's entry.
pub fn to_new_entry(r: AuditRecord) -> Result<NewEntry, AuditAppendError> {
    let action: Action = r
        .action
        .as_str()
        .parse()
        .map_err(|e| AuditAppendError(Box::new(e)))?;
    let origin = match r.origin.parse() {
        Ok(addr) => Origin::Ip { addr },
        Err(_) => Origin::Internal,
    };
    let outcome = match r.outcome {
        Outcome::Success => sakshi_audit::Outcome::Success,
        Outcome::Failure | Outcome::Denied => sakshi_audit::Outcome::failure(reason_of(&r)),
    };
    let mut e = NewEntry::new(action, actor_of(&r), origin)
        .outcome(outcome)
        .details(r.details.clone());
    if let Some(t) = target_of(&r.target) {
        e = e.target(t);
    }
    if let Some(t) = r
        .trace_id
        .as_deref()
        .and_then(|t| t.parse::<TraceId>().ok())
    {
        e = e.trace_id(t);
    }
    Ok(e)
}

/// The entry's RFC 9162 leaf hash, lowercase hex.
fn leaf_hex(e: &Entry) -> Option<String> {
    e.canonical()
        .ok()
        .map(|c| hex::encode(sakshi_audit::leaf_hash(c.as_bytes())))
}

/// A copy of a kept view for a page: whole, or without its details (`null`) for listings.
fn copy_view(e: &AuditEntryView, details: bool) -> AuditEntryView {
    if details {
        return e.clone();
    }
    AuditEntryView {
        index: e.index,
        time: e.time.clone(),
        actor: e.actor.clone(),
        origin: e.origin.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        outcome: e.outcome,
        details: serde_json::Value::Null,
        trace_id: e.trace_id.clone(),
        entry_hash: e.entry_hash.clone(),
    }
}

/// Converts a stored entry into the web layer's view (without its leaf hash).
pub fn to_view(e: Entry) -> AuditEntryView {
    let entry_hash = None;
    let outcome = match (&e.outcome, e.action) {
        (sakshi_audit::Outcome::Success, _) => Outcome::Success,
        (_, Action::AuthDenied) => Outcome::Denied,
        _ => Outcome::Failure,
    };
    let origin = match &e.origin {
        Origin::Ip { addr } => addr.to_string(),
        Origin::LocalSocket { path, .. } => format!("unix:{path}"),
        Origin::Internal => "local".to_owned(),
    };
    let actor = match e.actor.kind {
        ActorKind::ApiToken => format!("token:{}", e.actor.id),
        _ => e.actor.id,
    };
    AuditEntryView {
        index: e.seq,
        time: sakshi_audit::format_time(&e.time),
        actor,
        origin,
        action: e.action.as_str().to_owned(),
        target: e
            .target
            .as_ref()
            .map(|t| format!("{}:{}", t.kind.as_str(), t.id))
            .unwrap_or_default(),
        outcome,
        details: e.details,
        trace_id: e.trace_id.map(|t| t.to_string()),
        entry_hash,
    }
}

fn parse_time(
    field: &'static str,
    s: &str,
) -> Result<chrono::DateTime<chrono::Utc>, AuditQueryError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|e| AuditQueryError::Invalid {
            field,
            reason: e.to_string(),
        })
}

/// The actions an action filter selects: an exact name, or every action under a prefix ending
/// in `.`.
fn actions_for(filter: &str) -> Result<Vec<Action>, AuditQueryError> {
    if filter.ends_with('.') {
        let all: Vec<Action> = Action::ALL
            .iter()
            .copied()
            .filter(|a| a.as_str().starts_with(filter))
            .collect();
        if all.is_empty() {
            return Err(AuditQueryError::Invalid {
                field: "action",
                reason: format!("no action starts with {filter:?}"),
            });
        }
        Ok(all)
    } else {
        filter
            .parse::<Action>()
            .map(|a| vec![a])
            .map_err(|e| AuditQueryError::Invalid {
                field: "action",
                reason: e.to_string(),
            })
    }
}

fn proof_err(e: ProofRequestError) -> AuditQueryError {
    match e {
        ProofRequestError::OutOfRange { .. }
        | ProofRequestError::Expired { .. }
        | ProofRequestError::Archived { .. }
        | ProofRequestError::NoCheckpoint => AuditQueryError::NotFound(e.to_string()),
        other => store_err(other),
    }
}

fn checkpoint_view(cp: &SignedCheckpoint) -> CheckpointView {
    let c = cp.checkpoint();
    CheckpointView {
        size: c.tree_size,
        root: hex::encode(c.root),
        time: sakshi_audit::format_time(&c.time),
        text: cp.as_str().to_owned(),
    }
}

impl AuditStore for AuditLogStore {
    fn append(&self, record: AuditRecord) -> Result<u64, AuditAppendError> {
        let entry = to_new_entry(record)?;
        let seq = self
            .log
            .append(entry)
            .map(|r| r.seq)
            .map_err(|e| AuditAppendError(Box::new(e)))?;
        if let Some(hook) = self.on_append.get() {
            hook();
        }
        Ok(seq)
    }

    fn append_async(&self, record: AuditRecord) -> PendingAuditAppend {
        // Validation and canonicalisation happen here; the future only waits for the commit.
        let pending = to_new_entry(record).and_then(|entry| {
            self.log
                .submit(vec![entry])
                .map_err(|e| AuditAppendError(Box::new(e)))
        });
        let hook = self.on_append.clone();
        Box::pin(async move {
            let receipts = pending?.await.map_err(|e| AuditAppendError(Box::new(e)))?;
            let seq = receipts
                .first()
                .map(|r| r.seq)
                .ok_or_else(|| AuditAppendError(Box::new(sakshi_audit::AppendError::Closed)))?;
            if let Some(hook) = hook.get() {
                hook();
            }
            Ok(seq)
        })
    }

    fn query(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
    ) -> Result<AuditPage, AuditQueryError> {
        self.page(filter, cursor, limit, true)
    }

    fn query_summaries(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
    ) -> Result<AuditPage, AuditQueryError> {
        self.page(filter, cursor, limit, false)
    }
    fn entry(&self, index: u64) -> Result<AuditEntryView, AuditQueryError> {
        match self.reader().get(index).map_err(store_err)? {
            Some(e) => {
                let entry_hash = leaf_hex(&e);
                Ok(AuditEntryView {
                    entry_hash,
                    ..to_view(e)
                })
            }
            None => Err(AuditQueryError::NotFound(format!(
                "no audit entry {index} (or it is archived)"
            ))),
        }
    }

    fn size(&self) -> Result<u64, AuditQueryError> {
        self.log.size().map_err(store_err)
    }

    fn head(&self) -> Result<(u64, String), AuditQueryError> {
        let size = self.log.size().map_err(store_err)?;
        let root = if size == 0 {
            sakshi_audit::empty_root()
        } else {
            self.log.root_at(size).map_err(proof_err)?
        };
        Ok((size, hex::encode(root)))
    }

    fn verify(&self) -> Result<VerifyReport, AuditQueryError> {
        let r = self
            .log
            .verify(&VerifyOptions::default())
            .map_err(store_err)?;
        let damage = r.first_damage();
        let root = if r.log_size == 0 {
            hex::encode(sakshi_audit::empty_root())
        } else {
            self.log
                .root_at(r.log_size)
                .map(hex::encode)
                .unwrap_or_default()
        };
        Ok(VerifyReport {
            ok: r.is_intact(),
            entries: r.entries_checked,
            root,
            checkpoints_checked: r.checkpoint_roots_checked,
            first_bad_index: damage.and_then(|d| d.first_bad_index()),
            problem: damage.map(|d| d.to_string()),
        })
    }

    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProofView, AuditQueryError> {
        let proof = self
            .log
            .inclusion_proof(index, tree_size)
            .map_err(proof_err)?;
        let root = self.log.root_at(tree_size).map_err(proof_err)?;
        // Never hand out a proof that does not check.
        proof.verify(&root).map_err(store_err)?;
        Ok(InclusionProofView {
            index,
            tree_size,
            leaf_hash: hex::encode(proof.leaf_hash),
            root: hex::encode(root),
            path: proof.hashes.iter().map(hex::encode).collect(),
        })
    }

    fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProofView, AuditQueryError> {
        let proof = self
            .log
            .consistency_proof(from_size, to_size)
            .map_err(proof_err)?;
        let from_root = self.log.root_at(from_size).map_err(proof_err)?;
        let to_root = self.log.root_at(to_size).map_err(proof_err)?;
        proof.verify(&from_root, &to_root).map_err(store_err)?;
        Ok(ConsistencyProofView {
            from_size,
            to_size,
            from_root: hex::encode(from_root),
            to_root: hex::encode(to_root),
            path: proof.hashes.iter().map(hex::encode).collect(),
        })
    }

    fn checkpoints(&self, limit: u32) -> Result<Vec<CheckpointView>, AuditQueryError> {
        if limit <= 1 {
            return Ok(self
                .log
                .latest_checkpoint()
                .map_err(store_err)?
                .iter()
                .map(checkpoint_view)
                .collect());
        }
        let size = self.log.size().map_err(store_err)?;
        let span = self.checkpoint_every.saturating_mul(u64::from(limit) + 1);
        let mut cps = self
            .log
            .checkpoints(size.saturating_sub(span), size)
            .map_err(store_err)?;
        if cps.len() < limit as usize {
            cps = self.log.checkpoints(0, size).map_err(store_err)?;
        }
        Ok(cps
            .iter()
            .rev()
            .take(limit as usize)
            .map(checkpoint_view)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditAction;

    fn record(action: AuditAction, target: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            actor: "alice".into(),
            auth: ActorAuth::Session,
            origin: "10.1.2.3".into(),
            action,
            target: target.into(),
            outcome,
            details: serde_json::json!({ "reason": "because" }),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        }
    }

    fn open_store(dir: &std::path::Path) -> AuditLogStore {
        let key = Arc::new(sakshi_audit::ApplianceKey::generate().unwrap());
        let log = AuditLog::open(
            dir.join("audit.sqlite"),
            sakshi_audit::AuditConfig::default(),
            key,
            None,
        )
        .unwrap();
        AuditLogStore::new(Arc::new(log), 1000)
    }

    #[test]
    fn newest_pages_built_from_a_kept_page_match_a_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut n = 0u32;
        let mut add = |store: &AuditLogStore, count: u32| {
            for _ in 0..count {
                let mut r = record(AuditAction::VmStart, "vm:abc", Outcome::Success);
                // Every third entry is by bob: a filtered page skips the others.
                if n.is_multiple_of(3) {
                    r.actor = "bob".into();
                }
                n += 1;
                store.append(r).unwrap();
            }
        };
        let filters = [
            AuditFilter::default(),
            AuditFilter {
                actor: Some("bob".into()),
                ..Default::default()
            },
        ];
        let idx = |p: &AuditPage| p.entries.iter().map(|e| e.index).collect::<Vec<_>>();
        // Growth steps: none, a few (merged into the kept page), more than a page (full read).
        for step in [2, 0, 1, 3, 9, 1] {
            add(&store, step);
            for f in &filters {
                let page = store.query(f, AuditCursor::Newest, 4).unwrap();
                // The reference: the same page read in full, without the kept page.
                let full = store.query(f, AuditCursor::Before(u64::MAX), 4).unwrap();
                assert_eq!(idx(&page), idx(&full), "filter {f:?} after step {step}");
                assert_eq!(page.next_before, full.next_before);
                assert_eq!(page.prev_after, None);
                assert_eq!(page.entries, full.entries);
                // Summaries: the same entries without their details.
                let brief = store.query_summaries(f, AuditCursor::Newest, 4).unwrap();
                assert_eq!(idx(&brief), idx(&full));
                assert_eq!(brief.next_before, full.next_before);
                for (b, e) in brief.entries.iter().zip(&full.entries) {
                    assert!(b.details.is_null() && !e.details.is_null());
                    assert_eq!(
                        (&b.actor, &b.time, &b.action),
                        (&e.actor, &e.time, &e.action)
                    );
                }
            }
        }
        // 16 entries, bob wrote every third one: 0, 3, ..., 15.
        let bob = store.query(&filters[1], AuditCursor::Newest, 4).unwrap();
        assert_eq!(idx(&bob), [15, 12, 9, 6]);
        assert_eq!(bob.next_before, Some(6));
    }

    #[test]
    fn every_web_action_is_an_audit_log_action() {
        for a in crate::actions::ALL {
            assert!(a.as_str().parse::<Action>().is_ok(), "{}", a.as_str());
        }
    }

    #[test]
    fn records_round_trip_through_a_real_log() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(sakshi_audit::ApplianceKey::generate().unwrap());
        let log = AuditLog::open(
            dir.path().join("audit.sqlite"),
            sakshi_audit::AuditConfig::default(),
            key,
            None,
        )
        .unwrap();
        let store = AuditLogStore::new(Arc::new(log), 1000);
        let i0 = store
            .append(record(AuditAction::VmStart, "vm:abc", Outcome::Success))
            .unwrap();
        let i1 = store
            .append(record(
                AuditAction::AccessDenied,
                "appliance:GET /users",
                Outcome::Denied,
            ))
            .unwrap();
        let i2 = store
            .append(record(
                AuditAction::LoginFailed,
                "user:bob",
                Outcome::Failure,
            ))
            .unwrap();
        assert_eq!((i0, i1, i2), (0, 1, 2));
        let e = store.entry(0).unwrap();
        assert_eq!(e.action, "vm.boot");
        assert_eq!(e.target, "vm:abc");
        assert_eq!(e.origin, "10.1.2.3");
        assert_eq!(e.actor, "alice");
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(store.entry(1).unwrap().outcome, Outcome::Denied);
        assert_eq!(store.entry(2).unwrap().outcome, Outcome::Failure);

        let f = |outcome| AuditFilter {
            outcome: Some(outcome),
            ..Default::default()
        };
        let idx = |p: AuditPage| p.entries.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(
            idx(store
                .query(&f(Outcome::Denied), AuditCursor::Newest, 10)
                .unwrap()),
            [1]
        );
        assert_eq!(
            idx(store
                .query(&f(Outcome::Failure), AuditCursor::Newest, 10)
                .unwrap()),
            [2]
        );
        assert_eq!(
            idx(store
                .query(&f(Outcome::Success), AuditCursor::Newest, 10)
                .unwrap()),
            [0]
        );
        let by_target = AuditFilter {
            target: Some("vm:abc".into()),
            ..Default::default()
        };
        assert_eq!(
            idx(store.query(&by_target, AuditCursor::Newest, 10).unwrap()),
            [0]
        );
        let prefix = AuditFilter {
            action: Some("auth.".into()),
            ..Default::default()
        };
        assert_eq!(
            idx(store.query(&prefix, AuditCursor::Newest, 10).unwrap()),
            [2, 1]
        );

        let p = store
            .query(&AuditFilter::default(), AuditCursor::Newest, 2)
            .unwrap();
        assert_eq!(idx(p.clone()), [2, 1]);
        let next = store
            .query(
                &AuditFilter::default(),
                AuditCursor::Before(p.next_before.unwrap()),
                2,
            )
            .unwrap();
        assert_eq!(idx(next.clone()), [0]);
        assert_eq!(next.next_before, None);
        let back = store
            .query(
                &AuditFilter::default(),
                AuditCursor::After(next.prev_after.unwrap()),
                2,
            )
            .unwrap();
        assert_eq!(idx(back), [2, 1]);

        let (size, root) = store.head().unwrap();
        assert_eq!(size, 3);
        let proof = store.inclusion_proof(1, 3).unwrap();
        assert_eq!(proof.root, root);
        assert_eq!(Some(proof.leaf_hash), store.entry(1).unwrap().entry_hash);
        assert!(matches!(
            store.inclusion_proof(5, 3),
            Err(AuditQueryError::NotFound(_))
        ));
        let c = store.consistency_proof(1, 3).unwrap();
        assert_eq!(c.to_root, root);
        let v = store.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries, 3);
        assert!(!store.checkpoints(5).unwrap().is_empty());
        assert!(matches!(
            store.query(
                &AuditFilter {
                    action: Some("nope".into()),
                    ..Default::default()
                },
                AuditCursor::Newest,
                5
            ),
            Err(AuditQueryError::Invalid {
                field: "action",
                ..
            })
        ));
    }
}
