//! The audit shipper: reads the audit log from the durable cursor, exports each batch as OTLP log
//! records, and moves the cursor only after the receiver acknowledged the batch (at-least-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::config::{OtlpConfig, OtlpConfigError};
use super::cursor::{Cursor, CursorLoadError};
use super::encode::{AUDIT_SCOPE, ResourceInfo, audit_log_record, scope};
use super::metrics::Metrics;
use super::now_unix_nano;
use super::source::{AuditRecord, AuditSource, DeliveryEvent, SourceError};
use super::transport::{ExportError, Exporter, ExporterBuildError};

/// Where SIEM delivery stands, for the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Caught up, or shipping without errors.
    Healthy,
    /// The last attempt failed; retrying, below the alarm threshold.
    Retrying,
    /// PCI-DSS 10.7 "logging failure": delivery lag or failures passed the configured threshold.
    LoggingFailure,
}

/// A snapshot of the shipper's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryHealth {
    /// The state.
    pub state: DeliveryState,
    /// The first audit sequence number not yet acknowledged (the durable cursor).
    pub next_seq: u64,
    /// Entries appended but not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest unacknowledged entry, seconds (0 when caught up).
    pub lag_secs: f64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The last error, with its causes.
    pub last_error: Option<String>,
    /// When the receiver last acknowledged a batch, Unix milliseconds.
    pub last_ack_unix_ms: Option<u64>,
    /// Since when exports have been failing (the first failure after a success), Unix
    /// milliseconds; `None` while delivery works.
    #[serde(default)]
    pub failing_since_unix_ms: Option<u64>,
}

/// Starting the shipper failed; nothing runs.
#[derive(Debug, thiserror::Error)]
pub enum ShipperStartError {
    /// The configuration is invalid.
    #[error("invalid OTLP configuration")]
    Config(#[from] OtlpConfigError),
    /// The cursor cannot be loaded.
    #[error("cannot load the delivery cursor")]
    Cursor(#[from] CursorLoadError),
    /// The exporter cannot be built.
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] ExporterBuildError),
}

/// Why one shipping attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("reading the audit log failed")]
    Source(#[source] SourceError),
    #[error("the audit source returned entries out of order")]
    OutOfOrder,
    #[error("the audit reader task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("export failed")]
    Export(#[source] ExportError),
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The running shipper.
#[derive(Debug)]
pub struct ShipperHandle {
    notify: Arc<Notify>,
    health: watch::Receiver<DeliveryHealth>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ShipperHandle {
    /// Tell the shipper that entries were appended, so it ships them now instead of at the next poll.
    pub fn nudge(&self) {
        self.notify.notify_one();
    }

    /// The current delivery state.
    pub fn health(&self) -> DeliveryHealth {
        self.health.borrow().clone()
    }

    /// A receiver that sees every change of the delivery state.
    pub fn subscribe(&self) -> watch::Receiver<DeliveryHealth> {
        self.health.clone()
    }

    /// Stop after the request in flight (if any) has been answered or has timed out.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The audit shipper.
#[derive(Debug)]
pub struct Shipper;

impl Shipper {
    /// Validate `config`, load the cursor and start shipping on the current Tokio runtime.
    pub fn spawn(
        config: OtlpConfig,
        source: Arc<dyn AuditSource>,
        metrics: Arc<Metrics>,
    ) -> Result<ShipperHandle, ShipperStartError> {
        config.validate()?;
        let cursor = Cursor::new(config.cursor_path.clone());
        let next_seq = cursor.load()?;
        let exporter = Exporter::new(&config)?;
        let resource = ResourceInfo::detect(&config);
        let initial = DeliveryHealth {
            state: DeliveryState::Healthy,
            next_seq,
            pending: 0,
            lag_secs: 0.0,
            consecutive_failures: 0,
            last_error: None,
            last_ack_unix_ms: None,
            failing_since_unix_ms: None,
        };
        let (health_tx, health) = watch::channel(initial);
        let (stop, stop_rx) = watch::channel(false);
        let notify = Arc::new(Notify::new());
        let run = Run {
            config,
            source,
            metrics,
            exporter,
            resource,
            cursor,
            next_seq,
            notify: notify.clone(),
            health: health_tx,
            stop: stop_rx,
            failing_since: None,
            failing_since_unix_ms: None,
            consecutive_failures: 0,
            alarm: false,
            last_error: None,
            last_ack_unix_ms: None,
        };
        let task = tokio::spawn(run.run());
        Ok(ShipperHandle {
            notify,
            health,
            stop,
            task,
        })
    }
}

struct Run {
    config: OtlpConfig,
    source: Arc<dyn AuditSource>,
    metrics: Arc<Metrics>,
    exporter: Exporter,
    resource: ResourceInfo,
    cursor: Cursor,
    next_seq: u64,
    notify: Arc<Notify>,
    health: watch::Sender<DeliveryHealth>,
    stop: watch::Receiver<bool>,
    failing_since: Option<Instant>,
    failing_since_unix_ms: Option<u64>,
    consecutive_failures: u64,
    alarm: bool,
    last_error: Option<String>,
    last_ack_unix_ms: Option<u64>,
}

enum Step {
    /// Nothing to ship.
    Idle,
    /// A batch was acknowledged.
    Shipped,
    /// The attempt failed; `oldest` is the time of the oldest pending entry, when known.
    Failed(AttemptError, Option<u64>),
}

impl Run {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(self.config.retry_initial_ms);
        // The next batch, read while the previous one was in flight.
        let mut prefetched: Option<Vec<AuditRecord>> = None;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let step = self.step(&mut prefetched).await;
            let (wait, oldest) = match step {
                Step::Idle => (Some(self.config.poll_interval()), None),
                Step::Shipped => {
                    backoff = Duration::from_millis(self.config.retry_initial_ms);
                    (
                        None,
                        prefetched
                            .as_ref()
                            .and_then(|b| b.first())
                            .map(|r| r.time_unix_nano),
                    )
                }
                Step::Failed(error, oldest) => {
                    self.metrics.export_failures.inc();
                    self.on_failure(&error).await;
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.retry_max_ms));
                    (Some(wait), oldest)
                }
            };
            self.update_health(oldest).await;
            if let Some(wait) = wait {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = self.notify.notified(), if self.failing_since.is_none() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn read(&self, from: u64) -> Result<Vec<AuditRecord>, AttemptError> {
        let source = self.source.clone();
        let limit = self.config.batch_size;
        tokio::task::spawn_blocking(move || source.read_from(from, limit))
            .await
            .map_err(AttemptError::Join)?
            .map_err(AttemptError::Source)
    }

    async fn step(&mut self, prefetched: &mut Option<Vec<AuditRecord>>) -> Step {
        let batch = match prefetched.take() {
            Some(b) => b,
            None => match self.read(self.next_seq).await {
                Ok(b) => b,
                Err(e) => return Step::Failed(e, None),
            },
        };
        let Some(first) = batch.first() else {
            return Step::Idle;
        };
        let oldest = first.time_unix_nano;
        if batch.windows(2).any(|w| w[0].seq >= w[1].seq) || first.seq < self.next_seq {
            return Step::Failed(AttemptError::OutOfOrder, Some(oldest));
        }
        if first.seq > self.next_seq {
            tracing::warn!(
                otlp.expected_seq = self.next_seq,
                otlp.found_seq = first.seq,
                "audit entries are missing from the source (expired by retention?); shipping from the next one"
            );
        }
        let last_seq = batch[batch.len() - 1].seq;
        let request = self.request(&batch);
        // Read the next batch while this one is in flight.
        let source = self.source.clone();
        let limit = self.config.batch_size;
        let read_ahead = (batch.len() == limit)
            .then(|| tokio::task::spawn_blocking(move || source.read_from(last_seq + 1, limit)));
        let sent = batch.len() as u64;
        drop(batch);
        match self.exporter.export_logs(request).await {
            Ok(ack) => {
                if ack.rejected > 0 {
                    self.metrics
                        .rejected_records
                        .add(ack.rejected.unsigned_abs());
                    tracing::warn!(
                        otlp.rejected = ack.rejected,
                        otlp.message = %ack.message,
                        "the receiver rejected part of a batch (partial success); not retried, per OTLP"
                    );
                }
                self.metrics.exported_records.add(sent);
                self.next_seq = last_seq + 1;
                let cursor = self.cursor.clone();
                let next = self.next_seq;
                match tokio::task::spawn_blocking(move || cursor.store(next)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %chain(&e), "delivery cursor not stored; entries may be sent again after a restart")
                    }
                    Err(e) => tracing::error!(error = %e, "delivery cursor task failed"),
                }
                self.last_ack_unix_ms = Some(now_unix_nano() / 1_000_000);
                self.on_success().await;
                if let Some(Ok(Ok(next_batch))) = match read_ahead {
                    Some(h) => Some(h.await),
                    None => None,
                } {
                    *prefetched = Some(next_batch);
                }
                Step::Shipped
            }
            Err(e) => {
                if let Some(h) = read_ahead {
                    h.abort();
                }
                Step::Failed(AttemptError::Export(e), Some(oldest))
            }
        }
    }

    fn request(&self, batch: &[AuditRecord]) -> ExportLogsServiceRequest {
        let observed = now_unix_nano();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.resource()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope(AUDIT_SCOPE)),
                    log_records: batch
                        .iter()
                        .map(|r| audit_log_record(r, observed))
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    async fn record(&self, event: DeliveryEvent) {
        let source = self.source.clone();
        let kind = event.kind();
        match tokio::task::spawn_blocking(move || source.record_delivery(&event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(otlp.event = kind, error = %chain(&e), "cannot audit a SIEM delivery event")
            }
            Err(e) => {
                tracing::error!(otlp.event = kind, error = %e, "SIEM delivery audit task failed")
            }
        }
    }

    async fn on_failure(&mut self, error: &AttemptError) {
        let text = chain(error);
        tracing::warn!(otlp.next_seq = self.next_seq, error = %text, "SIEM export failed; will retry");
        self.consecutive_failures += 1;
        self.last_error = Some(text.clone());
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            self.failing_since_unix_ms = Some(now_unix_nano() / 1_000_000);
            self.record(DeliveryEvent::Failing {
                error: text,
                next_seq: self.next_seq,
            })
            .await;
        }
    }

    async fn on_success(&mut self) {
        self.failing_since_unix_ms = None;
        if let Some(since) = self.failing_since.take() {
            let event = DeliveryEvent::Recovered {
                failed_for_secs: since.elapsed().as_secs(),
                alarm_was_raised: self.alarm,
            };
            tracing::info!(
                otlp.failed_for_secs = since.elapsed().as_secs(),
                "SIEM delivery recovered"
            );
            self.record(event).await;
        }
        self.consecutive_failures = 0;
        self.last_error = None;
    }

    /// Recompute lag and pending, raise or clear the alarm, publish the health snapshot.
    async fn update_health(&mut self, oldest_pending_unix_nano: Option<u64>) {
        let source = self.source.clone();
        let head = tokio::task::spawn_blocking(move || source.next_seq())
            .await
            .ok()
            .and_then(Result::ok);
        let pending = head.map_or(0, |h| h.saturating_sub(self.next_seq));
        let lag = match oldest_pending_unix_nano {
            Some(t) if pending > 0 || self.failing_since.is_some() => {
                now_unix_nano().saturating_sub(t) as f64 / 1e9
            }
            _ => 0.0,
        };
        let threshold = self.config.failure_threshold();
        let failing_for = self.failing_since.map(|s| s.elapsed()).unwrap_or_default();
        if !self.alarm && (lag > threshold.as_secs_f64() || failing_for > threshold) {
            self.alarm = true;
            let reason = if failing_for > threshold {
                format!("exports have failed for {} s", failing_for.as_secs())
            } else {
                format!("the oldest unshipped entry is {lag:.0} s old")
            };
            tracing::error!(otlp.lag_secs = lag, otlp.pending = pending, %reason, "PCI-DSS 10.7 logging failure raised");
            self.record(DeliveryEvent::AlarmRaised {
                reason,
                lag_secs: lag as u64,
                pending,
            })
            .await;
        } else if self.alarm && self.failing_since.is_none() && lag <= threshold.as_secs_f64() {
            self.alarm = false;
        }
        self.metrics.export_lag.set(lag);
        self.metrics
            .logging_failure
            .set(if self.alarm { 1.0 } else { 0.0 });
        let state = if self.alarm {
            DeliveryState::LoggingFailure
        } else if self.failing_since.is_some() {
            DeliveryState::Retrying
        } else {
            DeliveryState::Healthy
        };
        let health = DeliveryHealth {
            state,
            next_seq: self.next_seq,
            pending,
            lag_secs: lag,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.clone(),
            last_ack_unix_ms: self.last_ack_unix_ms,
            failing_since_unix_ms: self.failing_since_unix_ms,
        };
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }
}
