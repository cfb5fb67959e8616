//! Evaluation of a catalog's rules against the evidence of a period.
//!
//! Every rule yields pass, fail or needs-review with reasons a person can read and the
//! sequence numbers of audit entries that support them. A control's status is the worst of
//! its rules' (fail > needs-review > pass). Missing evidence is never a pass.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{
    Catalog, Control, EntryMatch, EvidenceKind, FailurePair, Framework, Rule, Severity,
};
use crate::evidence::{Evidence, Period};
use crate::patch::cve_statuses;
use crate::stats::{Counter, EntryStats, SAMPLES};

/// Most supporting entries listed per control.
pub const MAX_CONTROL_ENTRIES: usize = 50;

/// The outcome of a rule or control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The evidence shows the control operating.
    Pass,
    /// A person must decide (evidence missing, nothing to judge, or manual by nature).
    NeedsReview,
    /// The evidence shows a failure.
    Fail,
}

impl Status {
    /// `pass`, `needs-review` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::NeedsReview => "needs-review",
            Status::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleResult {
    /// Rule kind (`events_recorded`, ...).
    pub kind: String,
    /// Outcome.
    pub status: Status,
    /// Why, in sentences.
    pub reasons: Vec<String>,
    /// Supporting audit entries (sequence numbers), a sample.
    pub entries: Vec<u64>,
}

/// The result of one control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlResult {
    /// Clause id.
    pub id: String,
    /// Title.
    pub title: String,
    /// The requirement summary from the catalog.
    pub summary: String,
    /// Whether the summary was checked against the official text.
    pub wording_verified: bool,
    /// Worst of the rules.
    pub status: Status,
    /// Evidence used.
    pub evidence: Vec<EvidenceKind>,
    /// Per rule.
    pub rules: Vec<RuleResult>,
    /// Supporting entries of all rules (sorted, at most [`MAX_CONTROL_ENTRIES`]).
    pub entries: Vec<u64>,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCounts {
    /// Passed.
    pub pass: usize,
    /// Need review.
    pub needs_review: usize,
    /// Failed.
    pub fail: usize,
}

/// A catalog evaluated for a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkResult {
    /// The framework.
    pub framework: Framework,
    /// The period.
    pub period: Period,
    /// When the evaluation ran.
    pub generated_at: DateTime<Utc>,
    /// Counts per status.
    pub summary: StatusCounts,
    /// One per control, in catalog order.
    pub controls: Vec<ControlResult>,
}

/// Evaluate every control of `catalog` against `evidence`.
pub fn evaluate(
    catalog: &Catalog,
    evidence: &Evidence,
    generated_at: DateTime<Utc>,
) -> FrameworkResult {
    let controls: Vec<ControlResult> = catalog
        .controls
        .iter()
        .map(|c| evaluate_control(c, evidence))
        .collect();
    let mut summary = StatusCounts::default();
    for c in &controls {
        match c.status {
            Status::Pass => summary.pass += 1,
            Status::NeedsReview => summary.needs_review += 1,
            Status::Fail => summary.fail += 1,
        }
    }
    FrameworkResult {
        framework: catalog.framework.clone(),
        period: evidence.period,
        generated_at,
        summary,
        controls,
    }
}

fn evaluate_control(control: &Control, ev: &Evidence) -> ControlResult {
    let rules: Vec<RuleResult> = control.rules.iter().map(|r| evaluate_rule(r, ev)).collect();
    let status = rules
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Status::NeedsReview);
    let entries: BTreeSet<u64> = rules
        .iter()
        .flat_map(|r| r.entries.iter().copied())
        .collect();
    ControlResult {
        id: control.id.clone(),
        title: control.title.clone(),
        summary: control.summary.clone(),
        wording_verified: control.wording_verified,
        status,
        evidence: control.evidence.clone(),
        rules,
        entries: entries.into_iter().take(MAX_CONTROL_ENTRIES).collect(),
    }
}

struct Out {
    status: Status,
    reasons: Vec<String>,
    entries: Vec<u64>,
}

impl Out {
    fn new() -> Self {
        Out {
            status: Status::Pass,
            reasons: Vec::new(),
            entries: Vec::new(),
        }
    }
    fn with(status: Status, reason: String) -> Self {
        Out {
            status,
            reasons: vec![reason],
            entries: Vec::new(),
        }
    }
    fn add(&mut self, status: Status, reason: String) {
        self.status = self.status.max(status);
        self.reasons.push(reason);
    }
    fn cite(&mut self, c: &Counter) {
        for s in &c.samples {
            if !self.entries.contains(s) {
                self.entries.push(*s);
            }
        }
    }
}

fn missing(kind: EvidenceKind) -> Out {
    Out::with(
        Status::NeedsReview,
        format!("No {kind} evidence is available for this period."),
    )
}

fn seqs(c: &Counter) -> String {
    let list: Vec<String> = c.samples.iter().map(|s| format!("#{s}")).collect();
    if c.count as usize > c.samples.len() {
        format!("{}, ...", list.join(", "))
    } else {
        list.join(", ")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn evaluate_rule(rule: &Rule, ev: &Evidence) -> RuleResult {
    let out = match rule {
        Rule::EventsRecorded { matches } => with_entries(ev, |s| events_recorded(s, matches)),
        Rule::RecordFields => with_entries(ev, record_fields),
        Rule::ActionsAuthenticated { matches } => {
            with_entries(ev, |s| actions_authenticated(s, matches))
        }
        Rule::LogIntegrity {
            max_checkpoint_gap_minutes,
        } => log_integrity(ev, *max_checkpoint_gap_minutes),
        Rule::Periodic {
            matches,
            every_hours,
            what,
        } => with_entries(ev, |s| periodic(s, matches, *every_hours, what)),
        Rule::FailuresResponded {
            pairs,
            within_hours,
        } => with_entries(ev, |s| failures_responded(s, pairs, *within_hours)),
        Rule::Retention {
            online_days,
            total_days,
        } => retention(ev, *online_days, *total_days),
        Rule::TimeSync {
            max_offset_ms,
            approved_sources,
        } => time_sync(ev, *max_offset_ms, approved_sources),
        Rule::PatchSla { max_days } => patch_sla(ev, max_days),
        Rule::BootIntegrity => boot_integrity(ev),
        Rule::Attestation => attestation(ev),
        Rule::DataLocation { countries } => data_location(ev, countries),
        Rule::InventoryLabels { labels } => inventory_labels(ev, labels),
        Rule::OffboxDelivery { max_lag_minutes } => offbox(ev, *max_lag_minutes),
        Rule::Manual { reason } => {
            Out::with(Status::NeedsReview, format!("Manual review: {reason}"))
        }
    };
    RuleResult {
        kind: rule.kind().to_owned(),
        status: out.status,
        reasons: out.reasons,
        entries: out.entries,
    }
}

fn with_entries(ev: &Evidence, f: impl FnOnce(&EntryStats) -> Out) -> Out {
    match &ev.entries {
        Some(s) => f(s),
        None => missing(EvidenceKind::AuditEntries),
    }
}

/// Statistics of a matcher, or a needs-review explaining they were not collected.
fn stats_for<'a>(s: &'a EntryStats, m: &EntryMatch) -> Result<&'a crate::stats::MatchStats, Out> {
    s.index(m).map(|i| &s.stats[i]).ok_or_else(|| {
        Out::with(
            Status::NeedsReview,
            format!("Statistics for '{m}' were not collected; evaluate with the same catalogs."),
        )
    })
}

fn events_recorded(s: &EntryStats, matches: &[EntryMatch]) -> Out {
    let mut out = Out::new();
    let mut found = Vec::new();
    let mut absent = Vec::new();
    for m in matches {
        let st = match stats_for(s, m) {
            Ok(st) => st,
            Err(o) => return o,
        };
        if st.hits.count > 0 {
            found.push(format!(
                "{} '{m}' ({})",
                plural(st.hits.count, "entry", "entries"),
                seqs(&st.hits)
            ));
            out.cite(&st.hits);
        } else {
            absent.push(format!("'{m}'"));
        }
    }
    if found.is_empty() {
        out.add(
            Status::NeedsReview,
            format!(
                "No {} entries were recorded in the period; confirm that no such event occurred.",
                absent.join(", ")
            ),
        );
    } else {
        out.add(Status::Pass, format!("Recorded: {}.", found.join("; ")));
        if !absent.is_empty() {
            out.reasons
                .push(format!("None in the period: {}.", absent.join(", ")));
        }
    }
    out
}

fn record_fields(s: &EntryStats) -> Out {
    if s.total == 0 {
        return Out::with(
            Status::NeedsReview,
            "The period has no audit entries to check.".into(),
        );
    }
    let f = &s.fields;
    let mut out = Out::new();
    let checks = [
        (&f.empty_actor, "have no actor id"),
        (
            &f.internal_origin_for_person,
            "by a user or token have no origin (marked internal)",
        ),
        (&f.missing_target, "act on an object but name no target"),
        (
            &f.failure_without_reason,
            "record a failure without a reason",
        ),
        (&f.outside_period, "have a time outside the period"),
    ];
    for (c, what) in checks {
        if c.count > 0 {
            out.add(
                Status::Fail,
                format!(
                    "{} {what} ({}).",
                    plural(c.count, "entry", "entries"),
                    seqs(c)
                ),
            );
            out.cite(c);
        }
    }
    if out.reasons.is_empty() {
        out.add(
            Status::Pass,
            format!(
                "All {} entries record the actor and how it authenticated, the action, the time (UTC, ns), the outcome with a reason for failures, the origin, and the target of object actions.",
                s.total
            ),
        );
    }
    out
}

fn actions_authenticated(s: &EntryStats, matches: &[EntryMatch]) -> Out {
    let mut out = Out::new();
    let mut checked = 0;
    for m in matches {
        let st = match stats_for(s, m) {
            Ok(st) => st,
            Err(o) => return o,
        };
        checked += st.hits.count;
        if st.unauthenticated.count > 0 {
            out.add(
                Status::Fail,
                format!(
                    "{} '{m}' succeeded without an authenticated user or token ({}).",
                    plural(st.unauthenticated.count, "entry", "entries"),
                    seqs(&st.unauthenticated)
                ),
            );
            out.cite(&st.unauthenticated);
        }
    }
    if checked == 0 {
        let names: Vec<String> = matches.iter().map(|m| format!("'{m}'")).collect();
        out.add(
            Status::NeedsReview,
            format!("No {} entries in the period to check.", names.join(", ")),
        );
    } else if out.reasons.is_empty() {
        out.add(
            Status::Pass,
            format!(
                "All {} checked entries were made by authenticated actors.",
                checked
            ),
        );
    }
    out
}

fn log_integrity(ev: &Evidence, max_gap_minutes: u32) -> Out {
    let Some(log) = &ev.log else {
        return missing(EvidenceKind::Checkpoints);
    };
    let mut out = Out::new();
    for p in &log.problems {
        out.add(Status::Fail, format!("Verification failed: {p}."));
    }
    let limit = u64::from(max_gap_minutes) * 60;
    if log.checkpoints == 0 {
        out.add(
            Status::Fail,
            "No signed checkpoint covers the period.".into(),
        );
    } else if log.max_checkpoint_gap_secs > limit {
        out.add(
            Status::Fail,
            format!(
                "The largest gap between checkpoints is {} minutes; the limit is {max_gap_minutes}.",
                log.max_checkpoint_gap_secs.div_ceil(60)
            ),
        );
    }
    if out.reasons.is_empty() {
        let mut r = format!(
            "Entries #{}..#{} verify against the hash chain and {} signed checkpoints; the largest gap between checkpoints is {} minutes.",
            log.start,
            log.end,
            log.checkpoints,
            log.max_checkpoint_gap_secs.div_ceil(60)
        );
        match log.consistent_from {
            Some(size) => {
                let _ = write!(
                    r,
                    " The log is consistent with the previous bundle's checkpoint (tree size {size})."
                );
            }
            None => r.push_str(
                " No previous bundle checkpoint was given, so consistency with it was not checked.",
            ),
        }
        out.add(Status::Pass, r);
    }
    out
}

fn periodic(s: &EntryStats, matches: &[EntryMatch], every_hours: u32, what: &str) -> Out {
    let period = s.period();
    let total_hours = (period.to() - period.from()).num_hours().max(0) as u64;
    let windows = total_hours / u64::from(every_hours);
    if windows == 0 {
        return Out::with(
            Status::NeedsReview,
            format!(
                "The period is shorter than one {every_hours}-hour window, so {what} cannot be judged."
            ),
        );
    }
    let mut hours = BTreeSet::new();
    let mut out = Out::new();
    for m in matches {
        let st = match stats_for(s, m) {
            Ok(st) => st,
            Err(o) => return o,
        };
        hours.extend(st.hours.iter().copied());
        out.cite(&st.hits);
    }
    let covered: BTreeSet<u64> = hours
        .iter()
        .map(|h| u64::from(*h) / u64::from(every_hours))
        .collect();
    let missing: Vec<u64> = (0..windows).filter(|w| !covered.contains(w)).collect();
    if missing.is_empty() {
        out.add(
            Status::Pass,
            format!("Every one of the {windows} {every_hours}-hour windows has a {what}."),
        );
    } else {
        let shown: Vec<String> = missing
            .iter()
            .take(SAMPLES)
            .map(|w| {
                let start = period.from() + TimeDelta::hours((*w * u64::from(every_hours)) as i64);
                start.format("%Y-%m-%d %H:%M").to_string()
            })
            .collect();
        let more = if missing.len() > SAMPLES { ", ..." } else { "" };
        out.add(
            Status::Fail,
            format!(
                "{} of {windows} {every_hours}-hour windows have no {what} (windows starting {}{more} UTC).",
                missing.len(),
                shown.join(", ")
            ),
        );
    }
    out
}

fn failures_responded(s: &EntryStats, pairs: &[FailurePair], within_hours: u32) -> Out {
    let mut out = Out::new();
    let limit = i64::from(within_hours) * 3600;
    let end = s.period().to();
    let mut failures = 0;
    for p in pairs {
        let (Some(fi), Some(ri)) = (s.index(&p.failure), s.index(&p.recovery)) else {
            return Out::with(
                Status::NeedsReview,
                "Failure statistics were not collected; evaluate with the same catalogs.".into(),
            );
        };
        let Some(st) = s.pairs.iter().find(|x| x.failure == fi && x.recovery == ri) else {
            return Out::with(
                Status::NeedsReview,
                "Failure statistics were not collected.".into(),
            );
        };
        failures += st.failures;
        if st.failures == 0 {
            continue;
        }
        let late: Vec<&(u64, u64, i64)> = st.answered.iter().filter(|a| a.2 > limit).collect();
        if !late.is_empty() {
            let list: Vec<String> = late
                .iter()
                .map(|(f, r, d)| format!("#{f} answered by #{r} after {} h", d / 3600))
                .collect();
            out.add(
                Status::Fail,
                format!(
                    "'{}' failures answered later than {within_hours} h: {}.",
                    p.failure,
                    list.join(", ")
                ),
            );
            for (f, r, _) in &late {
                out.entries.extend([*f, *r]);
            }
        }
        let (old, recent): (Vec<_>, Vec<_>) = st
            .pending
            .iter()
            .partition(|f| (end - f.time).num_seconds() > limit);
        if !old.is_empty() || st.overflow > 0 {
            let list: Vec<String> = old
                .iter()
                .take(SAMPLES)
                .map(|f| format!("#{}", f.seq))
                .collect();
            out.add(
                Status::Fail,
                format!(
                    "{} '{}' failures have no '{}' within {within_hours} h ({}).",
                    old.len() as u64 + st.overflow,
                    p.failure,
                    p.recovery,
                    list.join(", ")
                ),
            );
            out.entries.extend(old.iter().take(SAMPLES).map(|f| f.seq));
        }
        if !recent.is_empty() {
            let list: Vec<String> = recent
                .iter()
                .take(SAMPLES)
                .map(|f| format!("#{}", f.seq))
                .collect();
            out.add(
                Status::NeedsReview,
                format!(
                    "{} '{}' failures near the end of the period are still open ({}).",
                    recent.len(),
                    p.failure,
                    list.join(", ")
                ),
            );
            out.entries
                .extend(recent.iter().take(SAMPLES).map(|f| f.seq));
        }
        if st.answered_count > 0 && late.is_empty() {
            out.reasons.push(format!(
                "{} '{}' answered by '{}' within {within_hours} h.",
                plural(st.answered_count, "failure", "failures"),
                p.failure,
                p.recovery
            ));
            out.entries
                .extend(st.answered.iter().flat_map(|(f, r, _)| [*f, *r]));
        }
    }
    if failures == 0 {
        let names: Vec<String> = pairs.iter().map(|p| format!("'{}'", p.failure)).collect();
        out.add(
            Status::Pass,
            format!(
                "No failures ({}) were recorded in the period.",
                names.join(", ")
            ),
        );
    }
    out
}

fn retention(ev: &Evidence, online_days: u32, total_days: u32) -> Out {
    let Some(r) = &ev.retention else {
        return missing(EvidenceKind::Retention);
    };
    let mut out = Out::new();
    if r.online_days < online_days {
        out.add(
            Status::Fail,
            format!(
                "Entries stay online {} days; {online_days} are required.",
                r.online_days
            ),
        );
    }
    if r.total_days < total_days {
        out.add(
            Status::Fail,
            format!(
                "Entries are kept {} days in total; {total_days} are required.",
                r.total_days
            ),
        );
    }
    let age = |t: DateTime<Utc>| (r.collected_at - t).num_days();
    let history = age(r.log_created);
    if history >= i64::from(online_days) && online_days > 0 {
        match r.oldest_online {
            Some(t) if age(t) >= i64::from(online_days) => {}
            Some(t) => out.add(
                Status::Fail,
                format!("The log is {history} days old but the oldest online entry is only {} days old.", age(t)),
            ),
            None => out.add(Status::Fail, format!("The log is {history} days old but no entry is online.")),
        }
    }
    if history >= i64::from(total_days) {
        match r.oldest_retained {
            Some(t) if age(t) >= i64::from(total_days) => {}
            Some(t) => out.add(
                Status::Fail,
                format!("The log is {history} days old but the oldest retained entry is only {} days old.", age(t)),
            ),
            None => out.add(Status::Fail, format!("The log is {history} days old but no entry is retained.")),
        }
    }
    if out.reasons.is_empty() {
        let mut reason = format!(
            "Configured retention: {} days online, {} days in total (required {online_days} and {total_days}).",
            r.online_days, r.total_days
        );
        if history < i64::from(total_days) {
            let _ = write!(
                reason,
                " The log is {history} days old, so the full retention period is not yet observable."
            );
        }
        out.add(Status::Pass, reason);
    }
    out
}

fn time_sync(ev: &Evidence, max_offset_ms: u32, approved: &[String]) -> Out {
    let Some(t) = &ev.time_sync else {
        return missing(EvidenceKind::TimeSync);
    };
    let mut out = Out::new();
    if !t.synchronized {
        out.add(
            Status::Fail,
            format!(
                "{} reports the clock as not synchronised at {}.",
                t.daemon, t.collected_at
            ),
        );
    }
    match t.offset_ms {
        Some(o) if o.is_finite() && o.abs() <= f64::from(max_offset_ms) => {}
        Some(o) => out.add(
            Status::Fail,
            format!("Clock offset {o:.3} ms exceeds {max_offset_ms} ms."),
        ),
        None => out.add(
            Status::NeedsReview,
            "The clock offset was not reported.".into(),
        ),
    }
    let ok = |s: &str| approved.iter().any(|a| a.eq_ignore_ascii_case(s.trim()));
    if !approved.is_empty() {
        match &t.selected_source {
            Some(s) if ok(s) => {}
            Some(s) => out.add(
                Status::Fail,
                format!("The selected time source {s} is not an approved source."),
            ),
            None => out.add(
                Status::NeedsReview,
                "No selected time source was reported.".into(),
            ),
        }
        let others: Vec<&str> = t
            .configured_sources
            .iter()
            .map(String::as_str)
            .filter(|s| !ok(s))
            .collect();
        if !others.is_empty() {
            out.add(
                Status::NeedsReview,
                format!(
                    "Configured sources not in the approved list: {}.",
                    others.join(", ")
                ),
            );
        }
    }
    if out.reasons.is_empty() {
        out.add(
            Status::Pass,
            format!(
                "{} reports the clock synchronised to {} with offset {:.3} ms (limit {max_offset_ms} ms) at {}.",
                t.daemon,
                t.selected_source.as_deref().unwrap_or("an unnamed source"),
                t.offset_ms.unwrap_or_default(),
                t.collected_at
            ),
        );
    }
    out
}

fn patch_sla(ev: &Evidence, max_days: &std::collections::BTreeMap<Severity, u32>) -> Out {
    let Some(patches) = &ev.patches else {
        return missing(EvidenceKind::PatchLedger);
    };
    let period = ev.period;
    let statuses = cve_statuses(patches, period.to());
    let mut out = Out::new();
    let mut in_scope = 0;
    let mut on_time = Vec::new();
    let recorded_in_period: std::collections::BTreeSet<&str> = patches
        .iter()
        .filter(|p| period.contains(p.recorded_at))
        .map(|p| p.id.as_str())
        .collect();
    for s in &statuses {
        // Applied in the period, still pending at its end, or recorded in it (late records).
        let relevant = match s.applied_at {
            Some(t) => period.contains(t) || recorded_in_period.contains(s.patch_id.as_str()),
            None => true,
        };
        let Some(limit) = max_days.get(&s.severity) else {
            continue;
        };
        if !relevant {
            continue;
        }
        in_scope += 1;
        let limit = i64::from(*limit);
        match s.applied_at {
            Some(t) if s.days > limit => out.add(
                Status::Fail,
                format!(
                    "{} ({}, {}) released {} was applied on {} after {} days; the limit is {limit} ({}).",
                    s.cve,
                    s.severity,
                    s.component,
                    s.vendor_released,
                    t.date_naive(),
                    s.days,
                    s.patch_id
                ),
            ),
            None if s.days > limit => out.add(
                Status::Fail,
                format!(
                    "{} ({}, {}) released {} is still unpatched after {} days; the limit is {limit} ({}).",
                    s.cve, s.severity, s.component, s.vendor_released, s.days, s.patch_id
                ),
            ),
            Some(_) => on_time.push(format!("{} in {} days", s.cve, s.days)),
            None => on_time.push(format!("{} pending, {} of {limit} days used", s.cve, s.days)),
        }
    }
    if in_scope == 0 {
        let sev: Vec<&str> = max_days.keys().map(|s| s.as_str()).collect();
        out.add(
            Status::NeedsReview,
            format!(
                "No {} vulnerability was patched in or pending at the end of the period; confirm none was released for the appliance, VMM or guest images.",
                sev.join("/")
            ),
        );
    } else if !on_time.is_empty() {
        out.add(
            Status::Pass,
            format!("Within the deadline: {}.", on_time.join("; ")),
        );
    }
    out
}

fn boot_integrity(ev: &Evidence) -> Out {
    let mut out = Out::new();
    match &ev.entries {
        Some(s) => {
            if s.policy_violations.count > 0 {
                out.add(
                    Status::Fail,
                    format!(
                        "{} recorded image policy violations ({}).",
                        plural(s.policy_violations.count, "boot", "boots"),
                        seqs(&s.policy_violations)
                    ),
                );
                out.cite(&s.policy_violations);
            } else {
                out.reasons.push(format!(
                    "{} in the period, no image policy violation recorded.",
                    plural(s.boots.count, "VM boot", "VM boots")
                ));
                out.cite(&s.boots);
            }
        }
        None => out.add(
            Status::NeedsReview,
            "No audit-entries evidence is available for this period.".into(),
        ),
    }
    match &ev.attestation {
        Some(a) if !a.verified => out.add(
            Status::Fail,
            format!(
                "The TPM quote did not verify: {}.",
                a.error.as_deref().unwrap_or("unknown reason")
            ),
        ),
        Some(a) if !a.findings.is_empty() => out.add(
            Status::Fail,
            format!("Measured boot appraisal: {}.", a.findings.join("; ")),
        ),
        Some(a) => out.reasons.push(format!(
            "The quote's event log replays and all {} measured boots match the golden values.",
            a.vm_boots
        )),
        None => out.add(
            Status::NeedsReview,
            "No attestation evidence is available for this period.".into(),
        ),
    }
    out
}

fn attestation(ev: &Evidence) -> Out {
    let Some(a) = &ev.attestation else {
        return missing(EvidenceKind::Attestation);
    };
    let mut out = Out::new();
    if !a.verified {
        out.add(
            Status::Fail,
            format!(
                "The TPM quote did not verify: {}.",
                a.error.as_deref().unwrap_or("unknown reason")
            ),
        );
        return out;
    }
    if !a.findings.is_empty() {
        out.add(
            Status::Fail,
            format!("Appraisal findings: {}.", a.findings.join("; ")),
        );
    }
    if a.software_tpm {
        out.add(
            Status::NeedsReview,
            "The quote comes from a software TPM: no hardware root of trust. Accept only for test appliances.".into(),
        );
    }
    if out.reasons.is_empty() {
        out.add(
            Status::Pass,
            format!("A fresh TPM quote bound to this bundle verifies and its event log replays ({} VM boots).", a.vm_boots),
        );
    }
    out
}

fn data_location(ev: &Evidence, countries: &[String]) -> Out {
    let Some(d) = &ev.location else {
        return missing(EvidenceKind::DataLocation);
    };
    if d.locations.is_empty() {
        return Out::with(
            Status::Fail,
            "The data-location statement lists no storage location.".into(),
        );
    }
    let mut out = Out::new();
    for l in &d.locations {
        if !countries.iter().any(|c| c.eq_ignore_ascii_case(&l.country)) {
            out.add(
                Status::Fail,
                format!(
                    "{} is stored in {} ({}), outside {}.",
                    l.what,
                    l.country,
                    l.site,
                    countries.join(", ")
                ),
            );
        }
    }
    if out.reasons.is_empty() {
        let list: Vec<String> = d
            .locations
            .iter()
            .map(|l| format!("{} in {} ({})", l.what, l.country, l.site))
            .collect();
        out.add(
            Status::Pass,
            format!(
                "Declared by {} on {}: {}.",
                d.declared_by,
                d.declared_at.date_naive(),
                list.join("; ")
            ),
        );
    }
    out
}

fn inventory_labels(ev: &Evidence, labels: &[String]) -> Out {
    let Some(inv) = &ev.inventory else {
        return missing(EvidenceKind::Inventory);
    };
    if inv.is_empty() {
        return Out::with(Status::NeedsReview, "The inventory has no VMs.".into());
    }
    let mut out = Out::new();
    for label in labels {
        let lacking: Vec<&str> = inv
            .iter()
            .filter(|v| v.labels.get(label).is_none_or(|x| x.trim().is_empty()))
            .map(|v| v.id.as_str())
            .collect();
        if !lacking.is_empty() {
            let more = if lacking.len() > SAMPLES { ", ..." } else { "" };
            out.add(
                Status::Fail,
                format!(
                    "{} of {} VMs have no '{label}' label ({}{more}).",
                    lacking.len(),
                    inv.len(),
                    lacking[..lacking.len().min(SAMPLES)].join(", ")
                ),
            );
        }
    }
    if out.reasons.is_empty() {
        out.add(
            Status::Pass,
            format!(
                "All {} VMs carry the labels {}.",
                inv.len(),
                labels.join(", ")
            ),
        );
    }
    out
}

fn offbox(ev: &Evidence, max_lag_minutes: u32) -> Out {
    let Some(s) = &ev.siem else {
        return missing(EvidenceKind::SiemDelivery);
    };
    let lag = s.log_size.saturating_sub(s.acked_size);
    if lag == 0 {
        return Out::with(
            Status::Pass,
            format!(
                "{} acknowledged all {} entries at {}.",
                s.endpoint, s.log_size, s.collected_at
            ),
        );
    }
    match s.oldest_unacked {
        Some(t) => {
            let minutes = (s.collected_at - t).num_minutes();
            if minutes > i64::from(max_lag_minutes) {
                Out::with(
                    Status::Fail,
                    format!(
                        "{lag} entries await acknowledgement by {}; the oldest is {minutes} minutes old (limit {max_lag_minutes}).",
                        s.endpoint
                    ),
                )
            } else {
                Out::with(
                    Status::Pass,
                    format!(
                        "{lag} entries await acknowledgement by {}, the oldest {minutes} minutes old (limit {max_lag_minutes}).",
                        s.endpoint
                    ),
                )
            }
        }
        None => Out::with(
            Status::NeedsReview,
            format!("{lag} entries are unacknowledged and their age is unknown."),
        ),
    }
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
