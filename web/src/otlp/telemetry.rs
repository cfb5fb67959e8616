//! Best-effort telemetry: spans, guest console lines and periodic metrics, exported in batches by one
//! background task. Unlike audit entries these are not replayed after an outage: a failed export is
//! counted (`sakshi_otlp_export_failures_total`) and dropped, and a full queue drops new items.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{OtlpConfig, OtlpConfigError};
use super::console::{ConsoleLimiter, console_log_record};
use super::encode::{ResourceInfo, scope};
use super::metrics::Metrics;
use super::now_unix_nano;
use super::sdk::{self, Providers, SdkBuildError};
use super::trace::{FinishedSpan, SpanId, SpanKind, SpanStatus, TraceId, VmPhase, VmTracker};
use super::transport::{Exporter, ExporterBuildError};

/// Items waiting for export at most.
const QUEUE_CAPACITY: usize = 8192;
/// Items per export request at most.
const BATCH: usize = 512;
/// Longest time an item waits for its batch.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Most API requests whose server span is remembered as the parent for VM lifecycles.
const MAX_OPEN_REQUESTS: usize = 4096;

/// Instrumentation scope of console log records.
const CONSOLE_SCOPE: &str = "sakshi.console";

/// Starting telemetry export failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryStartError {
    /// The configuration is invalid.
    #[error("invalid OTLP configuration")]
    Config(#[from] OtlpConfigError),
    /// The exporter cannot be built.
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] ExporterBuildError),
    /// The OpenTelemetry SDK span or metric exporter cannot be built.
    #[error("cannot build the OpenTelemetry SDK exporter")]
    Sdk(#[from] SdkBuildError),
}

enum Item {
    Console(LogRecord),
    Flush(oneshot::Sender<()>),
}

struct Inner {
    tx: Option<mpsc::Sender<Item>>,
    tracer: Option<SdkTracer>,
    metrics: Arc<Metrics>,
    limiter: Mutex<ConsoleLimiter>,
    vms: Mutex<VmTracker>,
    /// Server spans of requests in flight, by trace id (the parent of a VM lifecycle started by
    /// the request).
    requests: Mutex<HashMap<TraceId, SpanId>>,
}

/// The handle the web layer and the supervisor glue use to emit spans and console lines. Cheap to
/// clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.tx.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Start the export task on the current Tokio runtime. The returned task ends once every clone
    /// of the handle is dropped and the queue is drained.
    pub fn spawn(
        config: &OtlpConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Telemetry, JoinHandle<()>), TelemetryStartError> {
        config.validate()?;
        let exporter = Exporter::new(config)?;
        let resource = ResourceInfo::detect(config);
        let providers = Providers::new(config, &exporter, &resource, metrics.clone())?;
        let tracer = providers.tracer();
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let worker = Worker {
            exporter,
            resource,
            metrics: metrics.clone(),
            providers,
        };
        let task = tokio::spawn(worker.run(rx));
        let inner = Inner {
            tx: Some(tx),
            tracer: Some(tracer),
            metrics,
            limiter: Mutex::new(ConsoleLimiter::new(
                config.console_lines_per_sec,
                config.console_burst,
            )),
            vms: Mutex::new(VmTracker::default()),
            requests: Mutex::new(HashMap::new()),
        };
        Ok((
            Telemetry {
                inner: Arc::new(inner),
            },
            task,
        ))
    }

    /// A handle that exports nothing (no `[otlp]` section); metrics still count.
    pub fn disabled(metrics: Arc<Metrics>) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                tx: None,
                tracer: None,
                metrics,
                limiter: Mutex::new(ConsoleLimiter::new(1, 1)),
                vms: Mutex::new(VmTracker::default()),
                requests: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether anything is exported (an `[otlp]` table was configured).
    pub fn enabled(&self) -> bool {
        self.inner.tx.is_some()
    }

    /// The metrics registry this handle counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    fn send(&self, item: Item) -> bool {
        match &self.inner.tx {
            Some(tx) => tx.try_send(item).is_ok(),
            None => false,
        }
    }

    fn send_span(&self, span: FinishedSpan) {
        if let Some(tracer) = &self.inner.tracer {
            sdk::emit(tracer, span);
        }
    }

    /// Start a span in `trace_id` (a child of `parent` when given). It is exported when ended.
    pub fn start_span(
        &self,
        name: impl Into<String>,
        trace_id: TraceId,
        parent: Option<SpanId>,
        kind: SpanKind,
    ) -> Span {
        Span {
            telemetry: self.clone(),
            registered: false,
            data: Some(FinishedSpan {
                name: name.into(),
                trace_id,
                span_id: SpanId::random(),
                parent,
                kind,
                start_unix_nano: now_unix_nano(),
                end_unix_nano: 0,
                attributes: Vec::new(),
                status: SpanStatus::Unset,
            }),
        }
    }

    /// Start the server span of an API request (`GET /api/v1/vms/{id}`): set
    /// `http.response.status_code` with [`Span::set_int`] before it ends.
    pub fn request_span(&self, method: &str, route: &str, trace_id: TraceId) -> Span {
        self.request_span_with_parent(method, route, trace_id, None)
    }

    /// [`Telemetry::request_span`] continuing a caller's trace: `remote_parent` is the parent id
    /// of an incoming W3C `traceparent` header. While the span is open it is the parent that
    /// [`Telemetry::request_parent`] returns for `trace_id`.
    pub fn request_span_with_parent(
        &self,
        method: &str,
        route: &str,
        trace_id: TraceId,
        remote_parent: Option<SpanId>,
    ) -> Span {
        let name = if route.is_empty() {
            method.to_owned()
        } else {
            format!("{method} {route}")
        };
        let mut span = self.start_span(name, trace_id, remote_parent, SpanKind::Server);
        span.set_str("http.request.method", method);
        if !route.is_empty() {
            span.set_str("http.route", route);
        }
        let mut open = self.requests();
        if open.len() < MAX_OPEN_REQUESTS || open.contains_key(&trace_id) {
            open.insert(trace_id, span.span_id());
            span.registered = true;
        }
        drop(open);
        span
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, HashMap<TraceId, SpanId>> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The server span of the request in flight in `trace_id`, if any: the parent of work the
    /// request starts (a VM lifecycle).
    pub fn request_parent(&self, trace_id: TraceId) -> Option<SpanId> {
        self.requests().get(&trace_id).copied()
    }

    /// Report a VM lifecycle phase; spans are exported as phases complete.
    pub fn vm_phase(&self, vm_id: &str, trace_id: TraceId, phase: VmPhase) {
        let spans = self
            .inner
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .phase(vm_id, trace_id, phase, now_unix_nano());
        for s in spans {
            self.send_span(s);
        }
    }

    /// Export one guest console line of VM `vm_id` (rate-limited per VM).
    pub fn console_line(&self, vm_id: &str, trace_id: Option<TraceId>, line: &str) {
        if self.inner.tx.is_none() {
            return;
        }
        let allowed = self
            .inner
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(vm_id, Instant::now());
        if !allowed {
            self.inner.metrics.console_dropped.inc();
            return;
        }
        let record = console_log_record(vm_id, trace_id, line, now_unix_nano());
        if self.send(Item::Console(record)) {
            self.inner.metrics.console_lines.inc();
        } else {
            self.inner.metrics.console_dropped.inc();
        }
    }

    /// Forget a destroyed VM's rate-limit state.
    pub fn forget_vm(&self, vm_id: &str) {
        self.inner
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(vm_id);
    }

    /// Export everything queued so far, metrics included, and wait until those requests were
    /// answered (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if let Some(sender) = &self.inner.tx
            && sender.send(Item::Flush(tx)).await.is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// An open span; it is exported when [`Span::end`] is called or it is dropped.
#[derive(Debug)]
pub struct Span {
    telemetry: Telemetry,
    /// Listed in the open requests (removed when it ends).
    registered: bool,
    data: Option<FinishedSpan>,
}

impl Span {
    /// The span's id (the parent of child spans; logged with audit entries).
    pub fn span_id(&self) -> SpanId {
        self.data
            .as_ref()
            .map_or_else(SpanId::random, |d| d.span_id)
    }

    /// The span's trace id.
    pub fn trace_id(&self) -> TraceId {
        self.data
            .as_ref()
            .map_or_else(TraceId::random, |d| d.trace_id)
    }

    fn attr(&mut self, attribute: KeyValue) {
        if let Some(d) = &mut self.data {
            d.attributes.push(attribute);
        }
    }

    /// Add a string attribute.
    pub fn set_str(&mut self, key: &str, value: &str) {
        self.attr(KeyValue::new(key.to_owned(), value.to_owned()));
    }

    /// Add an integer attribute.
    pub fn set_int(&mut self, key: &str, value: i64) {
        self.attr(KeyValue::new(key.to_owned(), value));
    }

    /// Set how the span ended.
    pub fn set_status(&mut self, status: SpanStatus) {
        if let Some(d) = &mut self.data {
            d.status = status;
        }
    }

    /// End the span now.
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(mut d) = self.data.take() {
            if self.registered {
                let mut open = self.telemetry.requests();
                if open.get(&d.trace_id) == Some(&d.span_id) {
                    open.remove(&d.trace_id);
                }
            }
            d.end_unix_nano = now_unix_nano().max(d.start_unix_nano);
            self.telemetry.send_span(d);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Worker {
    exporter: Exporter,
    resource: ResourceInfo,
    metrics: Arc<Metrics>,
    providers: Providers,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Item>) {
        let mut logs = Vec::new();
        let mut flush_tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Item::Console(r)) => logs.push(r),
                    Some(Item::Flush(done)) => {
                        self.export(&mut logs).await;
                        self.sdk(Providers::flush).await;
                        let _ = done.send(());
                    }
                    None => {
                        self.export(&mut logs).await;
                        self.sdk(Providers::shutdown).await;
                        return;
                    }
                },
                _ = flush_tick.tick() => self.export(&mut logs).await,
            }
            if logs.len() >= BATCH {
                self.export(&mut logs).await;
            }
        }
    }

    /// Run a blocking SDK call (flush or shutdown) off the runtime's threads: the SDK's batch
    /// processor and periodic reader run as tasks on this runtime and must keep running meanwhile.
    async fn sdk(&self, f: fn(&Providers)) {
        let providers = self.providers.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || f(&providers)).await {
            tracing::warn!(error = %e, "OpenTelemetry SDK flush did not complete");
        }
    }

    async fn export(&self, logs: &mut Vec<LogRecord>) {
        if !logs.is_empty() {
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(self.resource.resource()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope(CONSOLE_SCOPE)),
                        log_records: std::mem::take(logs),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            if let Err(e) = self.exporter.export_logs(request).await {
                self.metrics.export_failures.inc();
                tracing::warn!(error = %e.chain(), "console log export failed; lines dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_request_span_parents_work_in_its_trace_until_it_ends() {
        let t = Telemetry::disabled(Arc::new(Metrics::new()));
        let trace = TraceId::random();
        let remote = SpanId::random();
        assert_eq!(t.request_parent(trace), None);
        let span = t.request_span_with_parent("POST", "/api/v1/vms", trace, Some(remote));
        let id = span.span_id();
        assert_ne!(
            id, remote,
            "the server span is the caller's child, not the caller"
        );
        assert_eq!(span.data.as_ref().and_then(|d| d.parent), Some(remote));
        assert_eq!(t.request_parent(trace), Some(id));
        assert_eq!(t.request_parent(TraceId::random()), None);
        span.end();
        assert_eq!(t.request_parent(trace), None);
        assert!(!t.enabled());
    }
}
