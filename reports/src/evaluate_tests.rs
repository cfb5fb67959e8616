use super::*;
use crate::evidence::{
    DataLocation, RetentionStatus, SiemStatus, StorageLocation, TimeSync, VmRecord,
};
use crate::patch::{Artifact, Component, CveFix, NewPatch};
use chrono::{NaiveDate, TimeZone};
use sakshi_audit::{Action, Actor, AuthMethod, Entry, NewEntry, Origin, Outcome, Target};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn period(days: i64) -> Period {
    Period::new(t0(), t0() + TimeDelta::days(days)).unwrap()
}

fn pci() -> Catalog {
    Catalog::builtin()
        .unwrap()
        .into_iter()
        .find(|c| c.framework.id == "pci-dss-4.0.1")
        .unwrap()
}

struct Log {
    entries: Vec<Entry>,
}

impl Log {
    fn new() -> Self {
        Log {
            entries: Vec::new(),
        }
    }
    fn push(&mut self, at: DateTime<Utc>, new: NewEntry) -> u64 {
        let seq = self.entries.len() as u64;
        self.entries.push(Entry::from_new(new, seq, at));
        seq
    }
    fn admin(&mut self, at: DateTime<Utc>, action: Action) -> u64 {
        let n = NewEntry::new(
            action,
            Actor::user("alice", AuthMethod::Password),
            Origin::Ip {
                addr: "192.0.2.1".parse().unwrap(),
            },
        )
        .target(Target::vm("vm-1"));
        self.push(at, n)
    }
    fn service(
        &mut self,
        at: DateTime<Utc>,
        action: Action,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> u64 {
        let n = NewEntry::new(action, Actor::service("sakshi"), Origin::Internal)
            .outcome(outcome)
            .details(details);
        self.push(at, n)
    }
    fn review(&mut self, at: DateTime<Utc>) -> u64 {
        self.service(
            at,
            Action::AuditVerify,
            Outcome::Success,
            serde_json::json!({"review": "daily"}),
        )
    }
    fn stats(&self, p: Period, catalogs: &[Catalog]) -> EntryStats {
        let mut s = EntryStats::new(p, catalogs);
        for e in &self.entries {
            s.observe(e);
        }
        s
    }
}

fn control<'a>(r: &'a FrameworkResult, id: &str) -> &'a ControlResult {
    r.controls
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no control {id}"))
}

fn evaluate_log(log: &Log, p: Period, f: impl FnOnce(&mut Evidence)) -> FrameworkResult {
    let cat = pci();
    let mut ev = Evidence::new(p);
    ev.entries = Some(log.stats(p, std::slice::from_ref(&cat)));
    f(&mut ev);
    evaluate(&cat, &ev, p.to())
}

#[test]
fn missing_evidence_never_passes() {
    for cat in Catalog::builtin().unwrap() {
        let r = evaluate(&cat, &Evidence::new(period(1)), t0());
        assert_eq!(r.summary.pass, 0, "{}", cat.framework.id);
        assert_eq!(r.summary.fail, 0, "{}", cat.framework.id);
        assert_eq!(r.summary.needs_review, cat.controls.len());
        for c in &r.controls {
            assert!(
                c.rules.iter().all(|r| !r.reasons.is_empty()),
                "{} {} has a rule without reasons",
                cat.framework.id,
                c.id
            );
        }
    }
}

#[test]
fn daily_review_needs_every_day() {
    let p = period(3);
    let mut log = Log::new();
    for day in [0, 2] {
        log.review(t0() + TimeDelta::days(day) + TimeDelta::hours(1));
    }
    let r = evaluate_log(&log, p, |_| {});
    let c = control(&r, "10.4.1.1");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.rules[0].reasons[0].contains("1 of 3 24-hour windows"),
        "{:?}",
        c.rules[0].reasons
    );
    assert!(
        c.rules[0].reasons[0].contains("2026-11-02 00:00"),
        "{:?}",
        c.rules[0].reasons
    );
    log.review(t0() + TimeDelta::days(1) + TimeDelta::hours(23));
    let r = evaluate_log(&log, p, |_| {});
    assert_eq!(control(&r, "10.4.1.1").status, Status::Pass);
    // A review by a user is a review (10.4.1) but not an automated one (10.4.1.1).
    let mut log = Log::new();
    for day in 0..3 {
        let n = NewEntry::new(
            Action::AuditVerify,
            Actor::user("bob", AuthMethod::Password),
            Origin::Ip {
                addr: "192.0.2.9".parse().unwrap(),
            },
        )
        .details(serde_json::json!({"review": "daily"}));
        log.push(t0() + TimeDelta::days(day), n);
    }
    let r = evaluate_log(&log, p, |_| {});
    assert_eq!(control(&r, "10.4.1").status, Status::Pass);
    assert_eq!(control(&r, "10.4.1.1").status, Status::Fail);
}

#[test]
fn events_recorded_cite_entries_or_ask_for_review() {
    let p = period(1);
    let mut log = Log::new();
    let r = evaluate_log(&log, p, |_| {});
    assert_eq!(control(&r, "10.2.1.7").status, Status::NeedsReview);
    let seq = log.admin(t0() + TimeDelta::hours(2), Action::VmCreate);
    let r = evaluate_log(&log, p, |_| {});
    let c = control(&r, "10.2.1.7");
    assert_eq!(c.status, Status::Pass);
    assert_eq!(c.entries, vec![seq]);
    assert!(c.rules[0].reasons[0].contains("'vm.create'"));
}

#[test]
fn record_fields_fail_names_the_entry() {
    let p = period(1);
    let mut log = Log::new();
    log.admin(t0() + TimeDelta::hours(1), Action::VmStop);
    let r = evaluate_log(&log, p, |_| {});
    assert_eq!(control(&r, "10.2.2").status, Status::Pass);
    // A user action without an origin, and a VM action without a target.
    let bad1 = log.push(
        t0() + TimeDelta::hours(2),
        NewEntry::new(
            Action::ConfigChange,
            Actor::user("eve", AuthMethod::Session),
            Origin::Internal,
        )
        .target(Target::new(sakshi_audit::TargetKind::Config, "k")),
    );
    let bad2 = log.push(
        t0() + TimeDelta::hours(3),
        NewEntry::new(
            Action::VmPause,
            Actor::service("supervisor"),
            Origin::Internal,
        ),
    );
    let r = evaluate_log(&log, p, |_| {});
    let c = control(&r, "10.2.2");
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.entries, vec![bad1, bad2]);
    let text = c.rules[0].reasons.join(" ");
    assert!(
        text.contains(&format!("#{bad1}")) && text.contains(&format!("#{bad2}")),
        "{text}"
    );
}

#[test]
fn unauthenticated_admin_actions_fail() {
    let p = period(1);
    let mut log = Log::new();
    log.admin(t0(), Action::VmCreate);
    let r = evaluate_log(&log, p, |_| {});
    assert_eq!(control(&r, "10.2.1.2").status, Status::Pass);
    let seq = log.push(
        t0() + TimeDelta::hours(1),
        NewEntry::new(
            Action::VmDestroy,
            Actor::user("mallory", AuthMethod::None),
            Origin::Ip {
                addr: "198.51.100.1".parse().unwrap(),
            },
        )
        .target(Target::vm("vm-1")),
    );
    let r = evaluate_log(&log, p, |_| {});
    let c = control(&r, "10.2.1.2");
    assert_eq!(c.status, Status::Fail);
    assert!(c.entries.contains(&seq));
}

#[test]
fn failures_need_a_recovery_in_time() {
    let p = period(3);
    let fail = |log: &mut Log, at| {
        log.service(
            at,
            Action::SiemDelivery,
            Outcome::failure("receiver down"),
            serde_json::Value::Null,
        )
    };
    let ok = |log: &mut Log, at| {
        log.service(
            at,
            Action::SiemDelivery,
            Outcome::Success,
            serde_json::Value::Null,
        )
    };
    // Answered within an hour: pass.
    let mut log = Log::new();
    fail(&mut log, t0() + TimeDelta::hours(1));
    ok(&mut log, t0() + TimeDelta::hours(2));
    assert_eq!(
        control(&evaluate_log(&log, p, |_| {}), "10.7.2").status,
        Status::Pass
    );
    // Answered after 30 hours: fail.
    let mut log = Log::new();
    let f = fail(&mut log, t0() + TimeDelta::hours(1));
    let o = ok(&mut log, t0() + TimeDelta::hours(31));
    let r = evaluate_log(&log, p, |_| {});
    let c = control(&r, "10.7.2");
    assert_eq!(c.status, Status::Fail);
    assert!(c.entries.contains(&f) && c.entries.contains(&o));
    // Never answered, two days before the end: fail; one hour before the end: needs review.
    let mut log = Log::new();
    fail(&mut log, t0() + TimeDelta::hours(20));
    assert_eq!(
        control(&evaluate_log(&log, p, |_| {}), "10.7.2").status,
        Status::Fail
    );
    let mut log = Log::new();
    fail(&mut log, t0() + TimeDelta::hours(71));
    assert_eq!(
        control(&evaluate_log(&log, p, |_| {}), "10.7.2").status,
        Status::NeedsReview
    );
}

fn critical_patch(released: NaiveDate, applied: DateTime<Utc>) -> crate::patch::PatchRecord {
    NewPatch {
        component: Component::Vmm,
        from_version: "0.1.0".into(),
        to_version: "0.1.1".into(),
        cves: vec![CveFix {
            id: "CVE-2026-0001".into(),
            severity: Severity::Critical,
            vendor_released: released,
        }],
        applied_at: Some(applied),
        artifacts: vec![Artifact {
            name: "sakshi-vmm".into(),
            sha256: "00".repeat(32),
        }],
        approver: "carol".into(),
        golden_image: None,
        notes: None,
    }
    .into_record("alice", applied)
    .unwrap()
}

#[test]
fn critical_patches_within_thirty_days() {
    let p = period(30);
    let log = Log::new();
    let r = evaluate_log(&log, p, |ev| ev.patches = Some(vec![]));
    assert_eq!(control(&r, "6.3.3").status, Status::NeedsReview);
    let late = critical_patch(
        NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        t0() + TimeDelta::days(4),
    );
    let r = evaluate_log(&log, p, |ev| ev.patches = Some(vec![late.clone()]));
    let c = control(&r, "6.3.3");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.rules[0].reasons[0].contains("after 35 days"),
        "{:?}",
        c.rules[0].reasons
    );
    let on_time = critical_patch(
        NaiveDate::from_ymd_opt(2026, 10, 20).unwrap(),
        t0() + TimeDelta::days(4),
    );
    let r = evaluate_log(&log, p, |ev| ev.patches = Some(vec![on_time.clone()]));
    assert_eq!(control(&r, "6.3.3").status, Status::Pass);
}

#[test]
fn statements_are_judged() {
    let p = period(1);
    let log = Log::new();
    let now = p.to();
    let sync = TimeSync {
        collected_at: now,
        daemon: "chrony".into(),
        synchronized: true,
        selected_source: Some("samay1.nic.in".into()),
        configured_sources: vec!["samay1.nic.in".into()],
        offset_ms: Some(0.4),
        stratum: Some(3),
        raw: None,
    };
    let retention = RetentionStatus {
        collected_at: now,
        online_days: 90,
        total_days: 365,
        oldest_online: Some(t0()),
        oldest_retained: Some(t0()),
        log_created: t0(),
    };
    let vm = VmRecord {
        id: "vm-1".into(),
        state: "running".into(),
        kernel_sha256: None,
        initrd_sha256: None,
        vcpus: 1,
        memory_mib: 64,
        created: t0(),
        labels: [("function".to_owned(), "payments-api".to_owned())].into(),
    };
    let siem = SiemStatus {
        collected_at: now,
        endpoint: "http://siem:4318".into(),
        acked_size: 10,
        log_size: 12,
        oldest_unacked: Some(now - TimeDelta::minutes(40)),
    };
    let r = evaluate_log(&log, p, |ev| {
        ev.time_sync = Some(sync.clone());
        ev.retention = Some(retention.clone());
        ev.inventory = Some(vec![vm.clone()]);
        ev.siem = Some(siem.clone());
    });
    assert_eq!(control(&r, "10.6.1").status, Status::Pass);
    assert_eq!(control(&r, "10.5.1").status, Status::Pass);
    assert_eq!(control(&r, "2.2.3").status, Status::Pass);
    assert_eq!(
        control(&r, "A1.1.2").status,
        Status::Fail,
        "no tenant label"
    );
    assert_eq!(
        control(&r, "10.3.3").status,
        Status::Fail,
        "40 minutes of lag"
    );

    let mut bad = sync.clone();
    bad.offset_ms = Some(2500.0);
    let mut short = retention.clone();
    short.total_days = 180;
    let r = evaluate_log(&log, p, |ev| {
        ev.time_sync = Some(bad);
        ev.retention = Some(short);
    });
    assert_eq!(control(&r, "10.6.1").status, Status::Fail);
    assert_eq!(control(&r, "10.5.1").status, Status::Fail);

    let cert = Catalog::builtin()
        .unwrap()
        .into_iter()
        .find(|c| c.framework.id == "cert-in-2022")
        .unwrap();
    let mut ev = Evidence::new(p);
    let mut foreign = sync.clone();
    foreign.selected_source = Some("pool.ntp.org".into());
    ev.time_sync = Some(foreign);
    ev.location = Some(DataLocation {
        locations: vec![
            StorageLocation {
                what: "audit log".into(),
                country: "IN".into(),
                site: "Mumbai".into(),
            },
            StorageLocation {
                what: "SIEM".into(),
                country: "SG".into(),
                site: "Singapore".into(),
            },
        ],
        declared_by: "dpo".into(),
        declared_at: t0(),
    });
    ev.retention = Some(retention);
    let r = evaluate(&cert, &ev, now);
    let c = control(&r, "CERT-IN-i");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.rules[0]
            .reasons
            .iter()
            .any(|r| r.contains("pool.ntp.org"))
    );
    let c = control(&r, "CERT-IN-iv");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.rules
            .iter()
            .any(|r| r.reasons.iter().any(|t| t.contains("SG")))
    );
}

#[test]
fn log_integrity_and_attestation() {
    let p = period(1);
    let log = Log::new();
    let integrity = crate::evidence::LogIntegrity {
        problems: vec![],
        start: 0,
        end: 10,
        checkpoints: 30,
        max_checkpoint_gap_secs: 61,
        consistent_from: Some(4),
    };
    let att = crate::evidence::AttestationSummary {
        verified: true,
        error: None,
        software_tpm: true,
        findings: vec![],
        vm_boots: 2,
    };
    let r = evaluate_log(&log, p, |ev| {
        ev.log = Some(integrity.clone());
        ev.attestation = Some(att.clone());
    });
    assert_eq!(control(&r, "10.3.2").status, Status::Pass);
    // A one-day period is shorter than the weekly window: a person must judge.
    assert_eq!(control(&r, "11.5.2").status, Status::NeedsReview);
    let mut bad = att.clone();
    bad.findings = vec!["vm-1 kernel not approved".into()];
    let mut broken = integrity.clone();
    broken.problems = vec!["hash chain broken at entry 7".into()];
    let r = evaluate_log(&log, p, |ev| {
        ev.log = Some(broken);
        ev.attestation = Some(bad);
    });
    assert_eq!(control(&r, "11.5.2").status, Status::Fail);
    assert!(control(&r, "10.3.2").rules[0].reasons[0].contains("entry 7"));
    let rbi = Catalog::builtin()
        .unwrap()
        .into_iter()
        .find(|c| c.framework.id == "rbi-itgrca-2023")
        .unwrap();
    let mut ev = Evidence::new(p);
    ev.attestation = Some(att);
    ev.entries = Some(log.stats(p, std::slice::from_ref(&rbi)));
    let r = evaluate(&rbi, &ev, p.to());
    let c = control(&r, "RBI-ITGRCA-INTEGRITY");
    assert_eq!(c.status, Status::NeedsReview);
    assert!(c.rules[1].reasons[0].contains("software TPM"));
}
