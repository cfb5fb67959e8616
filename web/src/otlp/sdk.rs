//! The OpenTelemetry SDK path for spans and metrics: `SdkTracerProvider` and `SdkMeterProvider`
//! with `opentelemetry-otlp` 0.33 exporters (gRPC over the module's tonic channel, HTTP/protobuf over
//! its reqwest client, so TLS stays OpenSSL), batched on the Tokio runtime.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, metrics::MeterProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use super::config::OtlpConfig;
use super::encode::{ResourceInfo, SERVICE_NAME};
use super::metrics::Metrics;
use super::trace::{FinishedSpan, SpanKind, SpanStatus};
use super::transport::{Exporter, Transport};

/// Instrumentation scope of spans and metrics.
const SCOPE: &str = "sakshi";

/// Building an SDK exporter failed.
pub(crate) type SdkBuildError = opentelemetry_otlp::ExporterBuildError;

thread_local! {
    /// Ids the next span started on this thread must get (the VM's shared trace id, and span ids
    /// chosen before the span is emitted so that children can name their parent).
    static PRESET: Cell<Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)>> =
        const { Cell::new(None) };
}

/// Hands out the preset ids when set, random ones otherwise.
#[derive(Debug, Default)]
struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        PRESET
            .with(Cell::get)
            .map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        PRESET
            .with(Cell::get)
            .map_or_else(|| self.0.new_span_id(), |(_, s)| s)
    }
}

/// Counts failed exports in `sakshi_otlp_export_failures_total` (the SDK only logs them).
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

impl<E> Counted<E> {
    fn count(&self, result: OTelSdkResult) -> OTelSdkResult {
        if result.is_err() {
            self.metrics.export_failures.inc();
        }
        result
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.count(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.count(result)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The SDK providers for spans and metrics.
#[derive(Debug, Clone)]
pub(crate) struct Providers {
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) meter_provider: SdkMeterProvider,
}

fn sdk_resource(info: &ResourceInfo) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", SERVICE_NAME),
            KeyValue::new("service.version", info.service_version.clone()),
            KeyValue::new("host.id", info.host_id.clone()),
            KeyValue::new("host.name", info.host_name.clone()),
        ])
        .build()
}

impl Providers {
    /// Build both providers on the current Tokio runtime, sending through `exporter`'s connection.
    pub(crate) fn new(
        config: &OtlpConfig,
        exporter: &Exporter,
        resource: &ResourceInfo,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SdkBuildError> {
        let timeout = config.timeout();
        let (spans, metric_exporter) = match exporter.transport() {
            Transport::Grpc { channel, metadata } => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_channel(channel.clone())
                    .with_metadata(metadata.clone())
                    .with_timeout(timeout)
                    .build()?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_channel(channel.clone())
                    .with_metadata(metadata.clone())
                    .with_timeout(timeout)
                    .with_temporality(Temporality::Cumulative)
                    .build()?,
            ),
            Transport::Http { client, base } => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client.clone())
                    .with_endpoint(format!("{base}/v1/traces"))
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout)
                    .build()?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_http_client(client.clone())
                    .with_endpoint(format!("{base}/v1/metrics"))
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout)
                    .with_temporality(Temporality::Cumulative)
                    .build()?,
            ),
        };
        let resource = sdk_resource(resource);
        let processor = BatchSpanProcessor::builder(
            Counted {
                inner: spans,
                metrics: metrics.clone(),
            },
            Tokio,
        )
        .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .with_id_generator(PresetIds::default())
            .with_resource(resource.clone())
            .build();
        let reader = PeriodicReader::builder(
            Counted {
                inner: metric_exporter,
                metrics: metrics.clone(),
            },
            Tokio,
        )
        .with_interval(Duration::from_millis(config.metrics_interval_ms))
        .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        register_instruments(&meter_provider, &metrics);
        Ok(Providers {
            tracer_provider,
            meter_provider,
        })
    }

    pub(crate) fn tracer(&self) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.tracer_provider.tracer(SCOPE)
    }

    /// Export what is buffered and wait for the answers. Blocks: call from a blocking thread.
    pub(crate) fn flush(&self) {
        if let Err(e) = self.tracer_provider.force_flush() {
            tracing::warn!(error = %e, "span flush failed");
        }
        if let Err(e) = self.meter_provider.force_flush() {
            tracing::warn!(error = %e, "metric flush failed");
        }
    }

    /// Flush and stop both providers. Blocks: call from a blocking thread.
    pub(crate) fn shutdown(&self) {
        self.flush();
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

/// Register every metric of `metrics` with the SDK: counters and gauges as observable instruments
/// read at each collection, histograms as SDK histograms that [`super::Histogram::observe`] feeds.
fn register_instruments(provider: &SdkMeterProvider, metrics: &Arc<Metrics>) {
    let meter = provider.meter(SCOPE);
    let m = metrics.clone();
    let _ = meter
        .u64_observable_gauge("sakshi.vms")
        .with_description("Micro-VMs by state.")
        .with_unit("{vm}")
        .with_callback(move |o| {
            for (state, n) in m.vms.snapshot() {
                o.observe(n, &[KeyValue::new("state", state)]);
            }
        })
        .build();
    for (i, (name, _, help, _)) in metrics.counters().into_iter().enumerate() {
        let m = metrics.clone();
        let _ = meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_unit("1")
            .with_callback(move |o| o.observe(m.counters()[i].3.get(), &[]))
            .build();
    }
    for (i, (name, _, unit, help, _)) in metrics.gauges().into_iter().enumerate() {
        let m = metrics.clone();
        let _ = meter
            .f64_observable_gauge(name)
            .with_description(help)
            .with_unit(unit)
            .with_callback(move |o| o.observe(m.gauges()[i].4.get(), &[]))
            .build();
    }
    for (name, _, help, h) in metrics.histograms() {
        h.attach(
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit("s")
                .with_boundaries(h.bounds().to_vec())
                .build(),
        );
    }
}

fn system_time(unix_nano: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nano)
}

/// Record a finished span through the SDK with its own ids, parent and timestamps.
pub(crate) fn emit(tracer: &SdkTracer, span: FinishedSpan) {
    let trace_id = opentelemetry::trace::TraceId::from_bytes(span.trace_id.to_bytes());
    let span_id = opentelemetry::trace::SpanId::from_bytes(span.span_id.to_bytes());
    let cx = match span.parent {
        Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            opentelemetry::trace::SpanId::from_bytes(parent.to_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let builder = tracer
        .span_builder(span.name)
        .with_kind(match span.kind {
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
        })
        .with_start_time(system_time(span.start_unix_nano))
        .with_attributes(span.attributes);
    PRESET.with(|p| p.set(Some((trace_id, span_id))));
    let mut sdk_span = builder.start_with_context(tracer, &cx);
    PRESET.with(|p| p.set(None));
    match span.status {
        SpanStatus::Unset => {}
        SpanStatus::Ok => sdk_span.set_status(Status::Ok),
        SpanStatus::Error(message) => sdk_span.set_status(Status::error(message)),
    }
    sdk_span.end_with_timestamp(system_time(span.end_unix_nano));
}
