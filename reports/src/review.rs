//! The daily automated log review (PCI DSS 10.4.1 and 10.4.1.1).
//!
//! [`daily_review`] verifies one UTC day of the audit log (chain, checkpoints, proofs),
//! counts every kind of event with the failures and security-relevant ones highlighted,
//! evaluates a catalog for the day, and renders a printable report. The caller stores the
//! report and appends [`DailyReview::audit_entry`] (`audit.verify` by the `review` service
//! with `details.review = "daily"` and the report's SHA-256), which is what 10.4.1 and
//! 10.4.1.1 look for.

use askama::Template;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sakshi_audit::{
    Action, Actor, AppliancePublicKey, NewEntry, Origin, Outcome, Target, TargetKind,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::{AuditSource, ExportError, check_range, error_chain};
use crate::catalog::Catalog;
use crate::evaluate::{FrameworkResult, Status, evaluate};
use crate::evidence::{Evidence, LogIntegrity, Period};

/// Actions a reviewer must look at whenever they occur.
const ATTENTION: &[Action] = &[
    Action::AuthLoginFailure,
    Action::AuthDenied,
    Action::UserCreate,
    Action::UserDelete,
    Action::UserRoleChange,
    Action::UserCredentialChange,
    Action::UserLock,
    Action::TokenCreate,
    Action::ConfigChange,
    Action::TimeChange,
    Action::ImagePolicyViolation,
    Action::AttestFailure,
    Action::AuditWitnessFailure,
    Action::AuditExpire,
    Action::VmFailed,
    Action::ApplianceStop,
];

/// Events of one action during the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Highlight {
    /// Action name.
    pub action: String,
    /// Entries.
    pub total: u64,
    /// Failures among them.
    pub failures: u64,
    /// First failure entries.
    pub failure_entries: Vec<u64>,
    /// True when a reviewer must look at it.
    pub attention: bool,
}

/// A finished daily review.
#[derive(Debug, Clone)]
pub struct DailyReview {
    /// The UTC day reviewed.
    pub day: NaiveDate,
    /// `[day 00:00, next day 00:00)`.
    pub period: Period,
    /// Entries reviewed.
    pub entries: u64,
    /// Log verification: the summary, or why it failed.
    pub integrity: Result<LogIntegrity, String>,
    /// Events per action.
    pub highlights: Vec<Highlight>,
    /// The catalog evaluated for the day.
    pub result: FrameworkResult,
    /// The printable report.
    pub html: String,
    /// Hex SHA-256 of `html`.
    pub report_sha256: String,
}

/// Why the review could not run (verification failures are part of the review instead).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The log could not be read.
    #[error("reading the audit log for the daily review failed")]
    Log(#[source] ExportError),
    /// The day is not representable.
    #[error("day {0} is out of range")]
    Day(NaiveDate),
    /// The report could not be rendered.
    #[error("rendering the daily review report failed")]
    Render(#[source] askama::Error),
}

#[derive(Template)]
#[template(path = "daily_review.html")]
struct ReviewPage<'a> {
    day: String,
    generated: String,
    hostname: &'a str,
    integrity_ok: bool,
    integrity_text: String,
    entries: u64,
    highlights: &'a [Highlight],
    result: &'a FrameworkResult,
    statuses: Vec<(&'a str, &'a str, &'static str, &'static str)>,
}

/// Review `day` of the log.
pub fn daily_review(
    source: &dyn AuditSource,
    key: &AppliancePublicKey,
    hostname: &str,
    day: NaiveDate,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<DailyReview, ReviewError> {
    let from = day
        .and_hms_opt(0, 0, 0)
        .ok_or(ReviewError::Day(day))?
        .and_utc();
    let period = Period::new(from, from + TimeDelta::days(1)).map_err(|_| ReviewError::Day(day))?;
    let checked = check_range(
        source,
        key,
        period,
        &crate::bundle::Scope::All,
        None,
        std::slice::from_ref(catalog),
        &mut |_| Ok(()),
    );
    let (integrity, stats) = match checked {
        Ok(c) => (Ok(c.integrity), c.stats),
        Err(ExportError::Integrity(e)) => (Err(error_chain(&e)), None),
        Err(e) => return Err(ReviewError::Log(e)),
    };
    let highlights: Vec<Highlight> = stats
        .as_ref()
        .map(|s| {
            s.by_action()
                .iter()
                .map(|(a, c)| Highlight {
                    action: a.as_str().to_owned(),
                    total: c.total,
                    failures: c.failures,
                    failure_entries: c.failure_samples.clone(),
                    attention: c.failures > 0 || ATTENTION.contains(a),
                })
                .collect()
        })
        .unwrap_or_default();
    let entries = stats.as_ref().map_or(0, |s| s.total());
    let mut evidence = Evidence::new(period);
    evidence.entries = stats;
    evidence.log = Some(match &integrity {
        Ok(i) => i.clone(),
        Err(e) => LogIntegrity {
            problems: vec![e.clone()],
            start: 0,
            end: 0,
            checkpoints: 0,
            max_checkpoint_gap_secs: 0,
            consistent_from: None,
        },
    });
    let result = evaluate(catalog, &evidence, now);
    let class = |s: Status| match s {
        Status::Pass => "pass",
        Status::NeedsReview => "review",
        Status::Fail => "fail",
    };
    let integrity_text = match &integrity {
        Ok(i) => format!(
            "Entries #{}..#{} verified against the hash chain and {} signed checkpoints (largest gap {} min).",
            i.start,
            i.end,
            i.checkpoints,
            i.max_checkpoint_gap_secs.div_ceil(60)
        ),
        Err(e) => format!("VERIFICATION FAILED: {e}"),
    };
    let html = ReviewPage {
        day: day.to_string(),
        generated: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        hostname,
        integrity_ok: integrity.is_ok(),
        integrity_text,
        entries,
        highlights: &highlights,
        result: &result,
        statuses: result
            .controls
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.title.as_str(),
                    c.status.as_str(),
                    class(c.status),
                )
            })
            .collect(),
    }
    .render()
    .map_err(ReviewError::Render)?;
    let report_sha256 = hex::encode(Sha256::digest(html.as_bytes()));
    Ok(DailyReview {
        day,
        period,
        entries,
        integrity,
        highlights,
        result,
        html,
        report_sha256,
    })
}

impl DailyReview {
    /// The audit entry recording this review: `audit.verify` by the `review` service,
    /// `details.review = "daily"`, failed when the log did not verify.
    pub fn audit_entry(&self) -> NewEntry {
        let attention: Vec<&str> = self
            .highlights
            .iter()
            .filter(|h| h.attention)
            .map(|h| h.action.as_str())
            .collect();
        let (outcome, range) = match &self.integrity {
            Ok(i) => (Outcome::Success, format!("{}..{}", i.start, i.end)),
            Err(e) => (
                Outcome::failure(
                    format!("log verification failed: {e}")
                        .chars()
                        .take(1000)
                        .collect::<String>(),
                ),
                "unverified".to_owned(),
            ),
        };
        NewEntry::new(
            Action::AuditVerify,
            Actor::service("review"),
            Origin::Internal,
        )
        .target(Target::new(TargetKind::AuditLog, range))
        .outcome(outcome)
        .details(serde_json::json!({
            "review": "daily",
            "day": self.day.to_string(),
            "entries": self.entries,
            "attention": attention,
            "controls": {
                "pass": self.result.summary.pass,
                "needs_review": self.result.summary.needs_review,
                "fail": self.result.summary.fail,
            },
            "report_sha256": self.report_sha256,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::source::memory::MemorySource;
    use chrono::TimeZone;
    use sakshi_audit::{ApplianceKey, AuthMethod};

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
    }

    fn log() -> MemorySource {
        let mut log = MemorySource::new(ApplianceKey::generate().unwrap());
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let ip = || Origin::Ip {
            addr: "192.0.2.3".parse().unwrap(),
        };
        for h in 0..24 {
            let at = t0 + TimeDelta::hours(h);
            log.append(
                NewEntry::new(
                    Action::AuditRead,
                    Actor::user("alice", AuthMethod::Password),
                    ip(),
                ),
                at,
            );
            if h == 5 {
                log.append(
                    NewEntry::new(
                        Action::AuthLoginFailure,
                        Actor::user("mallory", AuthMethod::None),
                        ip(),
                    )
                    .outcome(Outcome::failure("bad password")),
                    at + TimeDelta::minutes(1),
                );
            }
            log.checkpoint(at + TimeDelta::minutes(30));
        }
        log.checkpoint(t0 + TimeDelta::days(1) + TimeDelta::minutes(1));
        log
    }

    fn pci() -> Catalog {
        Catalog::builtin()
            .unwrap()
            .into_iter()
            .find(|c| c.framework.id == "pci-dss-4.0.1")
            .unwrap()
    }

    #[test]
    fn a_daily_review_verifies_counts_and_records_itself() {
        let log = log();
        let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 5, 0).unwrap();
        let r = daily_review(
            &log,
            log.key.public_key(),
            "sakshi-test",
            day(),
            &pci(),
            now,
        )
        .unwrap();
        assert_eq!(r.entries, 25);
        let i = r.integrity.as_ref().unwrap();
        assert_eq!((i.start, i.end), (0, 25));
        let failures = r
            .highlights
            .iter()
            .find(|h| h.action == "auth.login.failure")
            .unwrap();
        assert_eq!(
            (failures.total, failures.failures, failures.attention),
            (1, 1, true)
        );
        assert_eq!(failures.failure_entries, vec![6]);
        assert!(
            r.html.contains("Daily log review: 2026-11-01")
                && r.html.contains("auth.login.failure")
        );
        assert_eq!(
            r.report_sha256,
            hex::encode(Sha256::digest(r.html.as_bytes()))
        );
        let e = r.audit_entry();
        assert!(e.validate().is_ok());
        assert_eq!(e.action, Action::AuditVerify);
        assert_eq!(e.details["review"], "daily");
        assert_eq!(e.details["report_sha256"], r.report_sha256.as_str());
        // The entry satisfies the daily-review matcher of 10.4.1.1.
        let entry = sakshi_audit::Entry::from_new(e, 99, now);
        let c = pci();
        let crate::catalog::Rule::Periodic { matches, .. } =
            &c.control("10.4.1.1").unwrap().rules[0]
        else {
            panic!("10.4.1.1 is periodic")
        };
        assert!(matches[0].matches(&entry));
    }

    #[test]
    fn a_tampered_day_is_reported_not_hidden() {
        let mut log = log();
        log.entries[3].0.canonical = log.entries[3].0.canonical.replace("alice", "alicf");
        let now = Utc.with_ymd_and_hms(2026, 11, 2, 0, 5, 0).unwrap();
        let r = daily_review(
            &log,
            log.key.public_key(),
            "sakshi-test",
            day(),
            &pci(),
            now,
        )
        .unwrap();
        let err = r.integrity.as_ref().unwrap_err();
        assert!(err.contains("entry #3 was altered"), "{err}");
        assert!(r.html.contains("VERIFICATION FAILED"));
        let e = r.audit_entry();
        assert!(matches!(&e.outcome, Outcome::Failure { reason } if reason.contains("entry #3")));
        let c = r.result.controls.iter().find(|c| c.id == "10.3.2").unwrap();
        assert_eq!(c.status, Status::Fail);
    }
}
