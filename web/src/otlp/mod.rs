//! SIEM streaming over OTLP: audit entries as log records (at-least-once, from a durable cursor),
//! guest console lines as log records, spans for API requests and VM lifecycles, and metrics (OTLP and
//! Prometheus text).
//!
//! Audit entries and console lines are built from the `opentelemetry-proto` 0.33 types and sent with
//! tonic (gRPC) or reqwest (HTTP/protobuf) by [`Exporter`], so that the shipper sees each receiver
//! acknowledgement before it moves its cursor and can set every field from owned data. Spans and
//! metrics go through the OpenTelemetry SDK (`SdkTracerProvider`, `SdkMeterProvider`) with the
//! `opentelemetry-otlp` 0.33 exporters over the same connection (OpenSSL TLS). See `docs/OTLP.md`.
//!
//! Wiring in `sakshi serve`:
//! 1. load [`OtlpConfig`] from the `[otlp]` table and `validate()` it;
//! 2. share one [`Metrics`] (serve [`Metrics::render_prometheus`] at `/metrics`, guarded per
//!    [`OtlpConfig::prometheus`]);
//! 3. [`Shipper::spawn`] with an [`AuditSource`] over the audit log; call [`ShipperHandle::nudge`] after
//!    appends and show [`ShipperHandle::health`] on the dashboard;
//! 4. [`Telemetry::spawn`] for spans, console lines and periodic metric export (kept in the app
//!    state; `trace_request` wraps every request in a server span, the host backend reports VM
//!    phases and follows guest consoles with a [`ConsoleFollower`]).

mod audit_log;
mod config;
mod console;
mod console_tail;
mod cursor;
mod encode;
mod http;
mod metrics;
mod sdk;
mod shipper;
mod source;
mod telemetry;
mod trace;
mod transport;

pub use audit_log::AuditLogSource;
pub use config::{
    OtlpConfig, OtlpConfigError, PrometheusAccess, Protocol, Secret, TlsConfig, redact_endpoint,
};
pub use console::{ConsoleLimiter, GuestLine, MAX_GUEST_ATTRS, MAX_LINE_BYTES, parse_guest_line};
pub use console_tail::ConsoleFollower;
pub use cursor::{Cursor, CursorLoadError, CursorStoreError};
pub use encode::{AUDIT_SCOPE, ResourceInfo, SERVICE_NAME};
pub(crate) use http::trace_request;
pub use metrics::{Counter, Gauge, Histogram, MAX_STATE_LABELS, Metrics, VmsByState};
pub use shipper::{DeliveryHealth, DeliveryState, Shipper, ShipperHandle, ShipperStartError};
pub use source::{AuditRecord, AuditSource, DeliveryEvent, SourceError};
pub use telemetry::{Span, Telemetry, TelemetryStartError};
pub use trace::{IdParseError, SpanId, SpanKind, SpanStatus, TraceId, VmPhase};
pub use transport::{Ack, ExportError, Exporter, ExporterBuildError};

/// Now, as UTC nanoseconds since the Unix epoch.
pub(crate) fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
