//! Time-synchronisation evidence for bundles (PCI DSS 10.6.x, CERT-In direction (ii)): asks
//! chrony (`chronyc -c tracking` / `-c sources`), then systemd (`timedatectl show`). When neither
//! answers, the evidence says so (`daemon = "none"`, not synchronised) and the controls that use
//! it fail or need review rather than pass on nothing.

use chrono::{DateTime, Utc};
use sakshi_reports::TimeSync;
use std::process::Command;
use std::time::Duration;

/// Runs `cmd args` and returns its stdout when it exits 0 within a few seconds.
fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `chronyc -c tracking` (CSV: reference id, reference name, stratum, reference time,
/// system time offset in seconds, ..., leap status last) and `chronyc -c sources`.
pub fn parse_chrony(tracking: &str, sources: Option<&str>, now: DateTime<Utc>) -> Option<TimeSync> {
    let line = tracking.lines().find(|l| !l.trim().is_empty())?;
    let f: Vec<&str> = line.split(',').collect();
    if f.len() < 14 {
        return None;
    }
    let stratum: u32 = f[2].trim().parse().ok()?;
    let offset_s: f64 = f[4].trim().parse().ok()?;
    let leap = f[f.len() - 1].trim();
    let name = f[1].trim();
    let configured_sources = sources
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split(',').nth(2))
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(TimeSync {
        collected_at: now,
        daemon: "chrony".to_owned(),
        // Stratum 0 or "Not synchronised" means no usable reference.
        synchronized: stratum > 0 && !leap.eq_ignore_ascii_case("Not synchronised"),
        selected_source: (!name.is_empty()).then(|| name.to_owned()),
        configured_sources,
        offset_ms: Some(offset_s * 1000.0),
        stratum: Some(stratum),
        raw: Some(tracking.trim().to_owned()),
    })
}

/// Parses `timedatectl show` (`NTPSynchronized=yes`, `NTP=yes`).
pub fn parse_timedatectl(show: &str, now: DateTime<Utc>) -> Option<TimeSync> {
    let get = |k: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
    };
    let synced = get("NTPSynchronized")?;
    Some(TimeSync {
        collected_at: now,
        daemon: "systemd-timesyncd".to_owned(),
        synchronized: synced == "yes",
        selected_source: None,
        configured_sources: Vec::new(),
        offset_ms: None,
        stratum: None,
        raw: Some(show.trim().to_owned()),
    })
}

/// What this host says about its clock now.
pub fn collect(now: DateTime<Utc>) -> TimeSync {
    if let Some(tracking) = run("chronyc", &["-c", "tracking"]) {
        let sources = run("chronyc", &["-c", "sources"]);
        if let Some(t) = parse_chrony(&tracking, sources.as_deref(), now) {
            return t;
        }
    }
    if let Some(t) = run("timedatectl", &["show"]).and_then(|s| parse_timedatectl(&s, now)) {
        return t;
    }
    TimeSync {
        collected_at: now,
        daemon: "none".to_owned(),
        synchronized: false,
        selected_source: None,
        configured_sources: Vec::new(),
        offset_ms: None,
        stratum: None,
        raw: Some(
            "no time synchronisation daemon answered (chronyc -c tracking, timedatectl show)"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACKING: &str = "A9FEA97B,169.254.169.123,4,1764200000.123,-0.000012345,0.000001,0.000020,-12.5,0.001,0.02,0.0005,0.0002,64.2,Normal\n";
    const SOURCES: &str = "^,*,169.254.169.123,3,6,377,38,0.000001,0.000002,0.000300\n^,-,time.example.in,2,6,377,40,0.001,0.001,0.020\n";

    #[test]
    fn chrony_tracking_and_sources() {
        let now = Utc::now();
        let t = parse_chrony(TRACKING, Some(SOURCES), now).unwrap();
        assert_eq!(t.daemon, "chrony");
        assert!(t.synchronized);
        assert_eq!(t.stratum, Some(4));
        assert_eq!(t.selected_source.as_deref(), Some("169.254.169.123"));
        assert_eq!(t.configured_sources, ["169.254.169.123", "time.example.in"]);
        assert!((t.offset_ms.unwrap() + 0.012345).abs() < 1e-9);
        let unsynced = TRACKING
            .replace(",4,", ",0,")
            .replace("Normal", "Not synchronised");
        assert!(!parse_chrony(&unsynced, None, now).unwrap().synchronized);
        assert!(parse_chrony("garbage", None, now).is_none());
    }

    #[test]
    fn timedatectl_show() {
        let now = Utc::now();
        let t = parse_timedatectl("Timezone=UTC\nNTP=yes\nNTPSynchronized=yes\n", now).unwrap();
        assert!(t.synchronized && t.daemon == "systemd-timesyncd");
        let t = parse_timedatectl("NTPSynchronized=no\n", now).unwrap();
        assert!(!t.synchronized);
        assert!(parse_timedatectl("Timezone=UTC\n", now).is_none());
    }

    #[test]
    fn collect_never_claims_sync_without_a_daemon_answer() {
        let t = collect(Utc::now());
        assert!(t.raw.as_deref().is_some_and(|r| !r.is_empty()));
        assert!(t.daemon != "none" || !t.synchronized);
    }
}
