//! [`AuditSource`] over the appliance's real audit log (`sakshi_audit::AuditLog`).

use std::sync::Arc;

use sakshi_audit::{
    Action, Actor, ActorKind, AuditLog, Entry, MAX_PAGE, NewEntry, Order, Origin, Outcome, Query,
    Target, TargetKind, leaf_hash,
};

use super::source::{AuditRecord, AuditSource, DeliveryEvent, SourceError};

/// Reads entries from an [`AuditLog`] and appends `siem.delivery` entries to it.
///
/// Each record's `log.record.uid` is `<log origin>/<seq>` (unique across appliances, since the
/// origin carries a per-log UUID) and `sakshi.audit.hash` is the entry's RFC 9162 leaf hash, which
/// a SIEM can check against the log's signed checkpoints with an inclusion proof.
#[derive(Debug, Clone)]
pub struct AuditLogSource {
    log: Arc<AuditLog>,
}

impl AuditLogSource {
    /// Wrap an open log.
    pub fn new(log: Arc<AuditLog>) -> Self {
        AuditLogSource { log }
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError(Box::new(e))
}

fn actor_text(actor: &Actor) -> String {
    let kind = match actor.kind {
        ActorKind::User => "user",
        ActorKind::ApiToken => "token",
        ActorKind::Service => "service",
    };
    format!("{kind}:{}", actor.id)
}

fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Ip { addr } => addr.to_string(),
        Origin::LocalSocket {
            path,
            peer_uid: Some(uid),
        } => format!("unix:{path} uid={uid}"),
        Origin::LocalSocket {
            path,
            peer_uid: None,
        } => format!("unix:{path}"),
        Origin::Internal => "internal".to_owned(),
    }
}

fn target_kind(kind: TargetKind) -> String {
    // The serde name (`vm`, `image`, `audit_log`, ...).
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

fn record(origin: &str, entry: Entry) -> Result<AuditRecord, SourceError> {
    let canonical = entry.canonical().map_err(err)?;
    let hash = hex::encode(leaf_hash(canonical.as_bytes()));
    let time_unix_nano = entry
        .time
        .timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let (outcome, outcome_reason) = match entry.outcome {
        Outcome::Success => ("success".to_owned(), None),
        Outcome::Failure { reason } => ("failure".to_owned(), Some(reason)),
    };
    let vm_id = entry
        .target
        .as_ref()
        .filter(|t| t.kind == TargetKind::Vm)
        .map(|t| t.id.clone());
    Ok(AuditRecord {
        seq: entry.seq,
        uid: format!("{origin}/{}", entry.seq),
        time_unix_nano,
        action: entry.action.as_str().to_owned(),
        actor: actor_text(&entry.actor),
        origin: origin_text(&entry.origin),
        target: entry
            .target
            .as_ref()
            .map(|t| format!("{}:{}", target_kind(t.kind), t.id)),
        outcome,
        outcome_reason,
        details: entry.details,
        trace_id: entry.trace_id.map(|t| *t.as_bytes()),
        span_id: None,
        vm_id,
        vm_seq: entry.vm_seq,
        hash,
    })
}

impl AuditSource for AuditLogSource {
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, SourceError> {
        let query = Query {
            cursor: from.checked_sub(1),
            order: Order::Ascending,
            limit: limit.clamp(1, MAX_PAGE),
            ..Query::default()
        };
        let page = self.log.query(&query).map_err(err)?;
        let origin = self.log.origin();
        page.entries
            .into_iter()
            .map(|e| record(origin, e))
            .collect()
    }

    fn next_seq(&self) -> Result<u64, SourceError> {
        self.log.size().map_err(err)
    }

    fn record_delivery(&self, event: &DeliveryEvent) -> Result<(), SourceError> {
        let outcome = if event.is_failure() {
            Outcome::failure(format!("SIEM delivery {}", event.kind()))
        } else {
            Outcome::Success
        };
        let entry = NewEntry::new(
            Action::SiemDelivery,
            Actor::service("otlp-shipper"),
            Origin::Internal,
        )
        .target(Target::new(TargetKind::Siem, "otlp"))
        .outcome(outcome)
        .details(event.details());
        self.log.append(entry).map(|_| ()).map_err(err)
    }
}
