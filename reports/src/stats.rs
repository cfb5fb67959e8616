//! Streaming statistics over a period's audit entries.
//!
//! [`EntryStats`] sees each entry once ([`EntryStats::observe`]) and keeps only what the rules
//! of the given catalogs need: counts and a few sample sequence numbers per matcher, the hours
//! in which each periodic matcher fired, pending failures, and samples of malformed records.
//! Its memory is bounded by the catalogs and the period's length in hours, not by the number
//! of entries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use sakshi_audit::{Action, ActorKind, AuthMethod, Entry, Origin, Outcome};

use crate::catalog::{Catalog, EntryMatch, Rule};
use crate::evidence::Period;

/// Sample sequence numbers kept per counter.
pub(crate) const SAMPLES: usize = 10;
/// Pending failures remembered per failure/recovery pair.
const MAX_PENDING: usize = 1000;

#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    pub(crate) count: u64,
    pub(crate) samples: Vec<u64>,
}

impl Counter {
    fn hit(&mut self, seq: u64) {
        self.count += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(seq);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MatchStats {
    pub(crate) hits: Counter,
    /// Successful entries by users or tokens that were not authenticated, or by services
    /// from outside the appliance.
    pub(crate) unauthenticated: Counter,
    /// Hours since the period start in which the matcher fired (periodic matchers only).
    pub(crate) hours: BTreeSet<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) seq: u64,
    pub(crate) time: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PairStats {
    pub(crate) failure: usize,
    pub(crate) recovery: usize,
    pub(crate) pending: VecDeque<Failure>,
    /// Failures dropped from `pending` because it was full (counted as unanswered).
    pub(crate) overflow: u64,
    pub(crate) failures: u64,
    /// `(failure seq, recovery seq, delay seconds)`, the slowest kept first.
    pub(crate) answered: Vec<(u64, u64, i64)>,
    pub(crate) answered_count: u64,
}

/// Records that lack a PCI 10.2.2 element.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldStats {
    pub(crate) empty_actor: Counter,
    pub(crate) internal_origin_for_person: Counter,
    pub(crate) missing_target: Counter,
    pub(crate) failure_without_reason: Counter,
    pub(crate) outside_period: Counter,
}

/// Per-period statistics for the rules of a set of catalogs.
#[derive(Debug, Clone)]
pub struct EntryStats {
    period: Period,
    matchers: Vec<EntryMatch>,
    pub(crate) stats: Vec<MatchStats>,
    periodic: Vec<bool>,
    pub(crate) pairs: Vec<PairStats>,
    pub(crate) fields: FieldStats,
    pub(crate) boots: Counter,
    pub(crate) policy_violations: Counter,
    pub(crate) total: u64,
    pub(crate) by_action: BTreeMap<Action, ActionCount>,
    scratch: Vec<bool>,
    /// For each action (by position in `Action::ALL`), the matchers whose pattern names it.
    candidates: Vec<Vec<usize>>,
}

/// Entries of one action in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionCount {
    /// Entries.
    pub total: u64,
    /// Of which failures.
    pub failures: u64,
    /// First few failure sequence numbers.
    pub failure_samples: Vec<u64>,
}

impl EntryStats {
    /// Statistics for the rules of `catalogs` over `period`.
    pub fn new(period: Period, catalogs: &[Catalog]) -> Self {
        let mut s = EntryStats {
            period,
            matchers: Vec::new(),
            stats: Vec::new(),
            periodic: Vec::new(),
            pairs: Vec::new(),
            fields: FieldStats::default(),
            boots: Counter::default(),
            policy_violations: Counter::default(),
            total: 0,
            by_action: BTreeMap::new(),
            scratch: Vec::new(),
            candidates: Vec::new(),
        };
        for rule in catalogs
            .iter()
            .flat_map(|c| &c.controls)
            .flat_map(|c| &c.rules)
        {
            let periodic = matches!(rule, Rule::Periodic { .. });
            for m in rule.matchers() {
                let i = s.intern(m);
                s.periodic[i] |= periodic;
            }
            if let Rule::FailuresResponded { pairs, .. } = rule {
                for p in pairs {
                    let failure = s.intern(&p.failure);
                    let recovery = s.intern(&p.recovery);
                    if !s
                        .pairs
                        .iter()
                        .any(|x| x.failure == failure && x.recovery == recovery)
                    {
                        s.pairs.push(PairStats {
                            failure,
                            recovery,
                            ..PairStats::default()
                        });
                    }
                }
            }
        }
        s.candidates = Action::ALL
            .iter()
            .map(|a| {
                (0..s.matchers.len())
                    .filter(|i| s.matchers[*i].action.matches(*a))
                    .collect()
            })
            .collect();
        s
    }

    fn intern(&mut self, m: &EntryMatch) -> usize {
        if let Some(i) = self.matchers.iter().position(|x| x == m) {
            return i;
        }
        self.matchers.push(m.clone());
        self.stats.push(MatchStats::default());
        self.periodic.push(false);
        self.matchers.len() - 1
    }

    /// Index of a matcher registered by [`EntryStats::new`].
    pub(crate) fn index(&self, m: &EntryMatch) -> Option<usize> {
        self.matchers.iter().position(|x| x == m)
    }

    /// The period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// Number of entries observed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Entries per action.
    pub fn by_action(&self) -> &BTreeMap<Action, ActionCount> {
        &self.by_action
    }

    /// Account for one entry (entries must come in sequence order).
    pub fn observe(&mut self, e: &Entry) {
        self.total += 1;
        let a = self.by_action.entry(e.action).or_default();
        a.total += 1;
        if !e.outcome.is_success() {
            a.failures += 1;
            if a.failure_samples.len() < SAMPLES {
                a.failure_samples.push(e.seq);
            }
        }
        self.check_fields(e);
        let person = matches!(e.actor.kind, ActorKind::User | ActorKind::ApiToken);
        let unauthenticated = e.outcome.is_success()
            && if person {
                matches!(e.actor.auth, AuthMethod::None | AuthMethod::Internal)
            } else {
                !matches!(e.origin, Origin::Internal)
            };
        let hour = u32::try_from((e.time - self.period.from()).num_hours()).ok();
        let mut hit = std::mem::take(&mut self.scratch);
        hit.clear();
        hit.resize(self.matchers.len(), false);
        let candidates = Action::ALL
            .iter()
            .position(|a| *a == e.action)
            .and_then(|p| self.candidates.get(p))
            .map_or(&[][..], Vec::as_slice);
        for &i in candidates {
            let m = &self.matchers[i];
            if !m.matches(e) {
                continue;
            }
            hit[i] = true;
            let st = &mut self.stats[i];
            st.hits.hit(e.seq);
            if unauthenticated {
                st.unauthenticated.hit(e.seq);
            }
            if self.periodic[i]
                && let Some(h) = hour
                && self.period.contains(e.time)
            {
                st.hours.insert(h);
            }
        }
        for p in &mut self.pairs {
            if hit[p.recovery] {
                while let Some(f) = p.pending.pop_front() {
                    let delay = (e.time - f.time).num_seconds();
                    p.answered_count += 1;
                    p.answered.push((f.seq, e.seq, delay));
                    p.answered.sort_by_key(|a| std::cmp::Reverse(a.2));
                    p.answered.truncate(SAMPLES);
                }
            }
            if hit[p.failure] {
                p.failures += 1;
                if p.pending.len() >= MAX_PENDING {
                    p.pending.pop_front();
                    p.overflow += 1;
                }
                p.pending.push_back(Failure {
                    seq: e.seq,
                    time: e.time,
                });
            }
        }
        self.scratch = hit;
        match e.action {
            Action::VmBoot if e.outcome.is_success() => self.boots.hit(e.seq),
            Action::ImagePolicyViolation => self.policy_violations.hit(e.seq),
            _ => {}
        }
    }

    fn check_fields(&mut self, e: &Entry) {
        let f = &mut self.fields;
        if e.actor.id.trim().is_empty() {
            f.empty_actor.hit(e.seq);
        }
        if matches!(e.actor.kind, ActorKind::User | ActorKind::ApiToken)
            && matches!(e.origin, Origin::Internal)
        {
            f.internal_origin_for_person.hit(e.seq);
        }
        let name = e.action.as_str();
        let object_action = ["vm.", "image.", "patch.", "user.", "token."]
            .iter()
            .any(|p| name.starts_with(p))
            || e.action == Action::ConfigChange;
        if object_action && e.target.is_none() {
            f.missing_target.hit(e.seq);
        }
        if let Outcome::Failure { reason } = &e.outcome
            && reason.trim().is_empty()
        {
            f.failure_without_reason.hit(e.seq);
        }
        if !self.period.contains(e.time) {
            f.outside_period.hit(e.seq);
        }
    }
}
