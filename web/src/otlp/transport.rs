//! Sending OTLP requests over gRPC (tonic) or HTTP/protobuf (reqwest), with TLS (OpenSSL through
//! native-tls) and custom headers. One call is one request; it returns when the receiver has answered.

use std::io;
use std::path::{Path, PathBuf};

use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
};
use prost::Message;
use tokio_native_tls::native_tls;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::config::{OtlpConfig, Protocol, TlsConfig};

/// The receiver accepted the request; it may still have rejected some items (OTLP partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Items the receiver rejected permanently (they must not be retried, per the OTLP spec).
    pub rejected: i64,
    /// The receiver's message, if any.
    pub message: String,
}

/// Building the exporter from its configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ExporterBuildError {
    /// A TLS file could not be read.
    #[error("cannot read {path}")]
    ReadTlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TLS material was refused by OpenSSL.
    #[error("invalid TLS configuration")]
    Tls(#[source] native_tls::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The endpoint is not a valid gRPC endpoint.
    #[error("invalid gRPC endpoint")]
    Endpoint(#[source] tonic::transport::Error),
    /// A header could not be turned into gRPC metadata or an HTTP header.
    #[error("invalid header {name:?}")]
    Header {
        /// The header's name.
        name: String,
    },
}

/// One export request failed; nothing is known to have been accepted.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The gRPC call failed (connection refused, unavailable, unauthenticated, deadline, ...).
    #[error("gRPC export failed")]
    Grpc(#[source] Box<tonic::Status>),
    /// The HTTP request could not be completed (connection, TLS, timeout).
    #[error("HTTP export request failed")]
    Http(#[source] reqwest::Error),
    /// The HTTP receiver answered with a non-2xx status.
    #[error("receiver answered HTTP {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The receiver's answer is not a valid OTLP response message.
    #[error("receiver's answer is not an OTLP response")]
    Decode(#[source] prost::DecodeError),
}

impl ExportError {
    /// The error with its causes, on one line (for logs and audit details).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// An OTLP exporter for one receiver.
#[derive(Debug, Clone)]
pub struct Exporter {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        timeout: std::time::Duration,
    },
    Http {
        client: reqwest::Client,
        base: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ExporterBuildError> {
    std::fs::read(path).map_err(|source| ExporterBuildError::ReadTlsFile {
        path: path.to_owned(),
        source,
    })
}

fn native_tls_connector(
    tls: Option<&TlsConfig>,
    alpn: &[&str],
) -> Result<native_tls::TlsConnector, ExporterBuildError> {
    let mut b = native_tls::TlsConnector::builder();
    b.request_alpns(alpn);
    if let Some(tls) = tls {
        if let Some(ca) = &tls.ca_file {
            let pem = read(ca)?;
            b.add_root_certificate(
                native_tls::Certificate::from_pem(&pem).map_err(ExporterBuildError::Tls)?,
            );
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
            let identity = native_tls::Identity::from_pkcs8(&read(cert)?, &read(key)?)
                .map_err(ExporterBuildError::Tls)?;
            b.identity(identity);
        }
    }
    b.build().map_err(ExporterBuildError::Tls)
}

/// The connection an [`Exporter`] sends over, lent to the SDK exporters.
pub(crate) enum Transport<'a> {
    Grpc {
        channel: &'a Channel,
        metadata: &'a MetadataMap,
    },
    Http {
        client: &'a reqwest::Client,
        base: &'a str,
    },
}

impl Exporter {
    /// The underlying connection.
    pub(crate) fn transport(&self) -> Transport<'_> {
        match &self.inner {
            Inner::Grpc {
                channel, metadata, ..
            } => Transport::Grpc { channel, metadata },
            Inner::Http { client, base } => Transport::Http { client, base },
        }
    }

    /// Build an exporter. Nothing is connected yet: connections are made (and remade) on demand, so a
    /// receiver that is down now does not fail this call. Needs a Tokio runtime for gRPC.
    pub fn new(config: &OtlpConfig) -> Result<Self, ExporterBuildError> {
        let base = config.endpoint.trim_end_matches('/').to_owned();
        let inner = match config.protocol {
            Protocol::Grpc => {
                let tls = native_tls_connector(config.tls.as_ref(), &["h2"])?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                let connector = HttpsConnector::from((http, tls.into()));
                let endpoint = Endpoint::from_shared(base)
                    .map_err(ExporterBuildError::Endpoint)?
                    .timeout(config.timeout())
                    .connect_timeout(config.timeout())
                    .tcp_nodelay(true);
                let channel = endpoint.connect_with_connector_lazy(connector);
                let mut metadata = MetadataMap::new();
                for (name, value) in &config.headers {
                    let bad = || ExporterBuildError::Header { name: name.clone() };
                    let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|_| bad())?;
                    let value: MetadataValue<_> = value.expose().parse().map_err(|_| bad())?;
                    metadata.insert(key, value);
                }
                Inner::Grpc {
                    channel,
                    metadata,
                    timeout: config.timeout(),
                }
            }
            Protocol::HttpProtobuf => {
                let tls = native_tls_connector(config.tls.as_ref(), &["http/1.1"])?;
                let mut headers = http::HeaderMap::new();
                for (name, value) in &config.headers {
                    let bad = || ExporterBuildError::Header { name: name.clone() };
                    let key = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
                    let mut value =
                        http::HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
                    value.set_sensitive(true);
                    headers.insert(key, value);
                }
                let client = reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .default_headers(headers)
                    .timeout(config.timeout())
                    .connect_timeout(config.timeout())
                    .no_proxy()
                    .user_agent(concat!("sakshi/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(ExporterBuildError::HttpClient)?;
                Inner::Http { client, base }
            }
        };
        Ok(Exporter { inner })
    }

    fn grpc_request<T>(
        metadata: &MetadataMap,
        timeout: std::time::Duration,
        msg: T,
    ) -> tonic::Request<T> {
        let mut request = tonic::Request::new(msg);
        *request.metadata_mut() = metadata.clone();
        request.set_timeout(timeout);
        request
    }

    /// Export log records; returns when the receiver has acknowledged them.
    pub async fn export_logs(&self, request: ExportLogsServiceRequest) -> Result<Ack, ExportError> {
        let response: ExportLogsServiceResponse = match &self.inner {
            Inner::Grpc {
                channel,
                metadata,
                timeout,
            } => LogsServiceClient::new(channel.clone())
                .export(Self::grpc_request(metadata, *timeout, request))
                .await
                .map_err(|s| ExportError::Grpc(Box::new(s)))?
                .into_inner(),
            Inner::Http { client, base } => post(client, base, "/v1/logs", &request).await?,
        };
        Ok(response
            .partial_success
            .map(|p| Ack {
                rejected: p.rejected_log_records,
                message: p.error_message,
            })
            .unwrap_or_default())
    }

    /// Export spans.
    pub async fn export_traces(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<Ack, ExportError> {
        let response: ExportTraceServiceResponse = match &self.inner {
            Inner::Grpc {
                channel,
                metadata,
                timeout,
            } => TraceServiceClient::new(channel.clone())
                .export(Self::grpc_request(metadata, *timeout, request))
                .await
                .map_err(|s| ExportError::Grpc(Box::new(s)))?
                .into_inner(),
            Inner::Http { client, base } => post(client, base, "/v1/traces", &request).await?,
        };
        Ok(response
            .partial_success
            .map(|p| Ack {
                rejected: p.rejected_spans,
                message: p.error_message,
            })
            .unwrap_or_default())
    }

    /// Export metric data points.
    pub async fn export_metrics(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<Ack, ExportError> {
        let response: ExportMetricsServiceResponse = match &self.inner {
            Inner::Grpc {
                channel,
                metadata,
                timeout,
            } => MetricsServiceClient::new(channel.clone())
                .export(Self::grpc_request(metadata, *timeout, request))
                .await
                .map_err(|s| ExportError::Grpc(Box::new(s)))?
                .into_inner(),
            Inner::Http { client, base } => post(client, base, "/v1/metrics", &request).await?,
        };
        Ok(response
            .partial_success
            .map(|p| Ack {
                rejected: p.rejected_data_points,
                message: p.error_message,
            })
            .unwrap_or_default())
    }
}

async fn post<Req: Message, Resp: Message + Default>(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    request: &Req,
) -> Result<Resp, ExportError> {
    let response = client
        .post(format!("{base}{path}"))
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .map_err(ExportError::Http)?;
    let status = response.status();
    let body = response.bytes().await.map_err(ExportError::Http)?;
    if !status.is_success() {
        return Err(ExportError::HttpStatus {
            status: status.as_u16(),
        });
    }
    Resp::decode(body).map_err(ExportError::Decode)
}
