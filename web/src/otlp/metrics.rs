//! The appliance's metrics: a small fixed registry of counters, gauges and histograms, rendered as
//! Prometheus text for `/metrics` and converted to OTLP for export.
//!
//! Label cardinality is bounded by construction: the only labelled metric is `sakshi_vms{state}`, and
//! it keeps at most [`MAX_STATE_LABELS`] distinct states (anything beyond is counted under `other`). No
//! VM ids are used as labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Most distinct `state` label values kept by `sakshi_vms`.
pub const MAX_STATE_LABELS: usize = 16;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as an f64).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A distribution over fixed bucket upper bounds (seconds for every histogram here).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts, one per bound plus the overflow bucket.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_bits: AtomicU64,
    /// The SDK instrument fed alongside (attached by `Telemetry::spawn`).
    sdk: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            sdk: OnceLock::new(),
        }
    }

    /// The bucket upper bounds.
    pub(crate) fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Also record into `sdk` from now on (the first attached instrument wins).
    pub(crate) fn attach(&self, sdk: opentelemetry::metrics::Histogram<f64>) {
        let _ = self.sdk.set(sdk);
    }

    /// Record one observation; NaN and negative values are ignored.
    pub fn observe(&self, v: f64) {
        if v.is_nan() || v < 0.0 || !v.is_finite() {
            return;
        }
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(sdk) = self.sdk.get() {
            sdk.record(v, &[]);
        }
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let buckets = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect::<Vec<_>>();
        // Count from the buckets so that the three numbers agree with each other.
        let count = buckets.iter().sum();
        (
            buckets,
            count,
            f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        )
    }
}

const BOOT_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SNAPSHOT_BOUNDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Micro-VM counts by state, with a bounded label set.
#[derive(Debug, Default)]
pub struct VmsByState(Mutex<BTreeMap<String, u64>>);

impl VmsByState {
    /// Replace all counts (states not listed drop to zero and disappear).
    pub fn set_all<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut map = BTreeMap::new();
        for (state, n) in counts {
            let known = map.contains_key(state) || map.len() < MAX_STATE_LABELS - 1;
            let valid =
                !state.is_empty() && state.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            let key = if known && valid { state } else { "other" };
            *map.entry(key.to_owned()).or_insert(0) += n;
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = map;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Every metric the appliance exports.
#[derive(Debug)]
pub struct Metrics {
    /// Micro-VMs by state (`sakshi_vms{state}`).
    pub vms: VmsByState,
    /// API request to boot-complete, seconds.
    pub boot_latency: Histogram,
    /// Time to measure kernel, initrd, command line and config into the TPM, seconds.
    pub measured_boot_latency: Histogram,
    /// Forensic snapshot durations, seconds.
    pub snapshot_duration: Histogram,
    /// Audit entries appended.
    pub audit_appends: Counter,
    /// Audit entries acknowledged by the SIEM receiver.
    pub exported_records: Counter,
    /// Audit entries the receiver acknowledged but rejected (OTLP partial success).
    pub rejected_records: Counter,
    /// Failed export requests (all signals).
    pub export_failures: Counter,
    /// Age of the oldest audit entry not yet acknowledged, seconds (0 when caught up).
    pub export_lag: Gauge,
    /// 1 while the PCI-DSS 10.7 "logging failure" state is raised.
    pub logging_failure: Gauge,
    /// Guest console lines exported.
    pub console_lines: Counter,
    /// Guest console lines dropped by the per-VM rate limit or a full queue.
    pub console_dropped: Counter,
    /// Spans dropped by this module (kept for compatibility: the SDK batch processor drops spans
    /// internally and only logs it, so this stays 0).
    pub spans_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry; cumulative sums start now.
    pub fn new() -> Self {
        Metrics {
            vms: VmsByState::default(),
            boot_latency: Histogram::new(BOOT_BOUNDS),
            measured_boot_latency: Histogram::new(BOOT_BOUNDS),
            snapshot_duration: Histogram::new(SNAPSHOT_BOUNDS),
            audit_appends: Counter::default(),
            exported_records: Counter::default(),
            rejected_records: Counter::default(),
            export_failures: Counter::default(),
            export_lag: Gauge::default(),
            logging_failure: Gauge::default(),
            console_lines: Counter::default(),
            console_dropped: Counter::default(),
            spans_dropped: Counter::default(),
        }
    }

    pub(crate) fn counters(&self) -> [(&'static str, &'static str, &'static str, &Counter); 7] {
        [
            (
                "sakshi.audit.appends",
                "sakshi_audit_appends_total",
                "Audit entries appended.",
                &self.audit_appends,
            ),
            (
                "sakshi.otlp.exported",
                "sakshi_otlp_exported_records_total",
                "Audit entries acknowledged by the SIEM receiver.",
                &self.exported_records,
            ),
            (
                "sakshi.otlp.rejected",
                "sakshi_otlp_rejected_records_total",
                "Audit entries the receiver rejected (partial success).",
                &self.rejected_records,
            ),
            (
                "sakshi.otlp.export.failures",
                "sakshi_otlp_export_failures_total",
                "Failed OTLP export requests.",
                &self.export_failures,
            ),
            (
                "sakshi.console.lines",
                "sakshi_console_lines_total",
                "Guest console lines exported.",
                &self.console_lines,
            ),
            (
                "sakshi.console.dropped",
                "sakshi_console_dropped_total",
                "Guest console lines dropped (rate limit or full queue).",
                &self.console_dropped,
            ),
            (
                "sakshi.otlp.spans.dropped",
                "sakshi_otlp_spans_dropped_total",
                "Spans dropped (full export queue).",
                &self.spans_dropped,
            ),
        ]
    }

    pub(crate) fn gauges(
        &self,
    ) -> [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &Gauge,
    ); 2] {
        [
            (
                "sakshi.otlp.export.lag",
                "sakshi_otlp_export_lag_seconds",
                "s",
                "Age of the oldest audit entry not yet acknowledged by the SIEM.",
                &self.export_lag,
            ),
            (
                "sakshi.otlp.logging_failure",
                "sakshi_otlp_logging_failure",
                "1",
                "1 while the PCI-DSS 10.7 logging-failure state is raised.",
                &self.logging_failure,
            ),
        ]
    }

    pub(crate) fn histograms(&self) -> [(&'static str, &'static str, &'static str, &Histogram); 3] {
        [
            (
                "sakshi.vm.boot.duration",
                "sakshi_vm_boot_latency_seconds",
                "Micro-VM boot latency (request to boot-complete).",
                &self.boot_latency,
            ),
            (
                "sakshi.vm.measured_boot.duration",
                "sakshi_vm_measured_boot_latency_seconds",
                "Measured-boot latency (hash and extend into the TPM).",
                &self.measured_boot_latency,
            ),
            (
                "sakshi.snapshot.duration",
                "sakshi_snapshot_duration_seconds",
                "Forensic snapshot duration.",
                &self.snapshot_duration,
            ),
        ]
    }

    /// The Prometheus text exposition format (version 0.0.4) of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP sakshi_vms Micro-VMs by state.\n# TYPE sakshi_vms gauge\n");
        for (state, n) in self.vms.snapshot() {
            let _ = writeln!(out, "sakshi_vms{{state=\"{state}\"}} {n}");
        }
        for (_, name, help, c) in self.counters() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        for (_, name, _, help, g) in self.gauges() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        for (_, name, help, h) in self.histograms() {
            let (buckets, count, sum) = h.snapshot();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut cumulative = 0;
            for (bound, n) in h.bounds.iter().zip(&buckets) {
                cumulative += n;
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_and_sum() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let (b, n, s) = h.snapshot();
        assert_eq!(b, [2, 1, 1]);
        assert_eq!(n, 4);
        assert!((s - 6.0).abs() < 1e-9);
    }

    #[test]
    fn prometheus_text_has_cumulative_buckets_and_bounded_labels() {
        let m = Metrics::new();
        m.audit_appends.add(3);
        m.boot_latency.observe(0.004);
        m.boot_latency.observe(0.2);
        m.export_lag.set(1.5);
        let many: Vec<String> = (0..40).map(|i| format!("s{}", "x".repeat(i))).collect();
        m.vms.set_all(
            many.iter()
                .map(|s| (s.as_str(), 1))
                .chain([("running", 2), ("Bad-Label\"", 1)]),
        );
        let text = m.render_prometheus();
        assert!(text.contains("sakshi_audit_appends_total 3\n"), "{text}");
        assert!(text.contains("sakshi_vm_boot_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("sakshi_vm_boot_latency_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("sakshi_vm_boot_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("sakshi_vm_boot_latency_seconds_count 2\n"));
        assert!(text.contains("sakshi_otlp_export_lag_seconds 1.5\n"));
        let states = text
            .lines()
            .filter(|l| l.starts_with("sakshi_vms{"))
            .count();
        assert!(states <= MAX_STATE_LABELS, "{states} state labels");
        assert!(!text.contains("Bad-Label"));
        let total: u64 = text
            .lines()
            .filter(|l| l.starts_with("sakshi_vms{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 43, "no VM is lost by folding labels into `other`");
    }
}
