//! The `[otlp]` section of `sakshi.toml`: where to send, how, and when to raise the alarm.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The wire protocol of the OTLP receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.*.v1.*Service/Export`), usually port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`POST <endpoint>/v1/logs`, ...), usually port 4318.
    HttpProtobuf,
}

/// Who may read the Prometheus text at `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrometheusAccess {
    /// Only authenticated callers with the metrics permission.
    #[default]
    Authenticated,
    /// Anyone connecting from a loopback address (for a local scraper); no authentication.
    Loopback,
}

/// A header value that never shows up in `Debug` output (SIEM tokens live here).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS towards the receiver (OpenSSL through native-tls, like the rest of the appliance). The endpoint
/// must then use `https://`. Without a `ca_file` the system roots are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that sign the receiver's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM PKCS#8 private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

/// The OTLP exporter settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Receiver base URL, `http://host:port` or `https://host:port`. For `http_protobuf` the signal
    /// paths (`/v1/logs`, `/v1/traces`, `/v1/metrics`) are appended to it.
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    #[serde(default)]
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata), e.g. `authorization = "Bearer ..."` for SIEM auth.
    /// Names are lowercase ASCII.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// TLS settings; required for `https://` endpoints that use a private CA or mutual TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Where the durable delivery cursor lives (a small file replaced atomically).
    pub cursor_path: PathBuf,
    /// Per-request timeout, milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Most audit records in one export request.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// How often the shipper looks for new entries when nobody nudges it, milliseconds.
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First retry delay after a failed export, milliseconds (doubles up to `retry_max_ms`).
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, milliseconds.
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// PCI-DSS 10.7 threshold, seconds: when the oldest unshipped audit entry is older than this, or exports
    /// have failed continuously for this long, the shipper raises the "logging failure" state.
    #[serde(default = "defaults::failure_threshold_secs")]
    pub failure_threshold_secs: u64,
    /// Guest console lines exported per VM per second (token bucket rate).
    #[serde(default = "defaults::console_lines_per_sec")]
    pub console_lines_per_sec: u32,
    /// Guest console burst per VM (token bucket size).
    #[serde(default = "defaults::console_burst")]
    pub console_burst: u32,
    /// Interval between metric exports, milliseconds.
    #[serde(default = "defaults::metrics_interval_ms")]
    pub metrics_interval_ms: u64,
    /// Who may scrape `/metrics`.
    #[serde(default)]
    pub prometheus: PrometheusAccess,
    /// Override `host.id` (default: `/etc/machine-id`).
    #[serde(default)]
    pub host_id: Option<String>,
    /// Override `host.name` (default: the kernel host name).
    #[serde(default)]
    pub host_name: Option<String>,
}

mod defaults {
    pub(super) fn timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn batch_size() -> usize {
        1_000
    }
    pub(super) fn poll_interval_ms() -> u64 {
        250
    }
    pub(super) fn retry_initial_ms() -> u64 {
        200
    }
    pub(super) fn retry_max_ms() -> u64 {
        30_000
    }
    pub(super) fn failure_threshold_secs() -> u64 {
        300
    }
    pub(super) fn console_lines_per_sec() -> u32 {
        50
    }
    pub(super) fn console_burst() -> u32 {
        200
    }
    pub(super) fn metrics_interval_ms() -> u64 {
        10_000
    }
}

/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// A setting in `[otlp]` is out of range or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpConfigError {
    /// The endpoint is not an absolute `http://` or `https://` URL with a host.
    #[error(
        "otlp.endpoint {endpoint:?} must be an http:// or https:// URL with a host and no query"
    )]
    Endpoint {
        /// The value given.
        endpoint: String,
    },
    /// TLS files were given for a plain-text endpoint.
    #[error("otlp.tls is set but otlp.endpoint is not https://")]
    TlsWithoutHttps,
    /// Only one of the client certificate and key was given.
    #[error("otlp.tls.client_cert_file and otlp.tls.client_key_file go together")]
    HalfClientIdentity,
    /// A header name is not a lowercase HTTP token, or is reserved.
    #[error("otlp.headers: {name:?} is not a lowercase header name the exporter may set")]
    HeaderName {
        /// The name given.
        name: String,
    },
    /// A header value has characters HTTP does not allow.
    #[error("otlp.headers.{name}: the value has characters HTTP headers cannot carry")]
    HeaderValue {
        /// The header's name.
        name: String,
    },
    /// A number is out of its range.
    #[error("otlp.{field} = {value} is out of range ({range})")]
    Range {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range.
        range: &'static str,
    },
}

/// Headers the exporter sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "te",
    "user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "connection",
    "transfer-encoding",
];

impl OtlpConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(endpoint: impl Into<String>, protocol: Protocol, cursor_path: PathBuf) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol,
            headers: BTreeMap::new(),
            tls: None,
            cursor_path,
            timeout_ms: defaults::timeout_ms(),
            batch_size: defaults::batch_size(),
            poll_interval_ms: defaults::poll_interval_ms(),
            retry_initial_ms: defaults::retry_initial_ms(),
            retry_max_ms: defaults::retry_max_ms(),
            failure_threshold_secs: defaults::failure_threshold_secs(),
            console_lines_per_sec: defaults::console_lines_per_sec(),
            console_burst: defaults::console_burst(),
            metrics_interval_ms: defaults::metrics_interval_ms(),
            prometheus: PrometheusAccess::default(),
            host_id: None,
            host_name: None,
        }
    }

    /// Check every setting; the first problem found is returned.
    pub fn validate(&self) -> Result<(), OtlpConfigError> {
        let uri: http::Uri = self.endpoint.parse().map_err(|_| self.endpoint_error())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(self.endpoint_error()),
        };
        if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(self.endpoint_error());
        }
        if let Some(tls) = &self.tls {
            if !https {
                return Err(OtlpConfigError::TlsWithoutHttps);
            }
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                return Err(OtlpConfigError::HalfClientIdentity);
            }
        }
        for (name, value) in &self.headers {
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
                && !name.starts_with("grpc-")
                && !name.ends_with("-bin")
                && !RESERVED_HEADERS.contains(&name.as_str());
            if !valid_name {
                return Err(OtlpConfigError::HeaderName { name: name.clone() });
            }
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(OtlpConfigError::HeaderValue { name: name.clone() });
            }
        }
        let ranges: [(&'static str, u64, u64, u64, &'static str); 9] = [
            ("timeout_ms", self.timeout_ms, 100, 300_000, "100..=300000"),
            (
                "batch_size",
                self.batch_size as u64,
                1,
                MAX_BATCH_SIZE as u64,
                "1..=10000",
            ),
            (
                "poll_interval_ms",
                self.poll_interval_ms,
                1,
                60_000,
                "1..=60000",
            ),
            (
                "retry_initial_ms",
                self.retry_initial_ms,
                1,
                60_000,
                "1..=60000",
            ),
            (
                "retry_max_ms",
                self.retry_max_ms,
                self.retry_initial_ms.max(1),
                3_600_000,
                "retry_initial_ms..=3600000",
            ),
            (
                "failure_threshold_secs",
                self.failure_threshold_secs,
                1,
                86_400,
                "1..=86400",
            ),
            (
                "console_lines_per_sec",
                u64::from(self.console_lines_per_sec),
                1,
                100_000,
                "1..=100000",
            ),
            (
                "console_burst",
                u64::from(self.console_burst),
                1,
                1_000_000,
                "1..=1000000",
            ),
            (
                "metrics_interval_ms",
                self.metrics_interval_ms,
                100,
                3_600_000,
                "100..=3600000",
            ),
        ];
        for (field, value, lo, hi, range) in ranges {
            if value < lo || value > hi {
                return Err(OtlpConfigError::Range {
                    field,
                    value,
                    range,
                });
            }
        }
        Ok(())
    }

    fn endpoint_error(&self) -> OtlpConfigError {
        OtlpConfigError::Endpoint {
            endpoint: self.endpoint.chars().take(200).collect(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub(crate) fn failure_threshold(&self) -> Duration {
        Duration::from_secs(self.failure_threshold_secs)
    }
}

/// The endpoint without credentials, for dashboards and evidence: scheme, host, port and path
/// only (user information and query are dropped).
pub fn redact_endpoint(endpoint: &str) -> String {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) => {
            let host = uri.host().unwrap_or("");
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{host}{port}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.path().trim_end_matches('/')
            )
        }
        Err(_) => "(unparsable endpoint)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shown_without_credentials() {
        assert_eq!(
            redact_endpoint("https://user:secret@siem.example.in:4318/otlp?x=1"),
            "https://siem.example.in:4318/otlp"
        );
        assert_eq!(
            redact_endpoint("http://127.0.0.1:4317"),
            "http://127.0.0.1:4317"
        );
        assert_eq!(redact_endpoint("::"), "(unparsable endpoint)");
    }

    fn parse(toml_text: &str) -> Result<OtlpConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn minimal_config_gets_defaults_and_validates() {
        let c = parse("endpoint = \"http://127.0.0.1:4317\"\ncursor_path = \"/tmp/c\"\n").unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.batch_size, 1_000);
        assert_eq!(
            c,
            OtlpConfig::new("http://127.0.0.1:4317", Protocol::Grpc, "/tmp/c".into())
        );
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            parse("endpoint = \"http://x:1\"\ncursor_path = \"/c\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_settings_get_typed_errors() {
        let base = OtlpConfig::new("https://siem.example:4317", Protocol::Grpc, "/c".into());
        base.validate().unwrap();
        for bad in ["ftp://x:1", "http://", "not a url", "http://x:1/?q=1"] {
            let c = OtlpConfig {
                endpoint: bad.into(),
                ..base.clone()
            };
            assert!(
                matches!(c.validate(), Err(OtlpConfigError::Endpoint { .. })),
                "{bad}"
            );
        }
        let c = OtlpConfig {
            endpoint: "http://x:1".into(),
            tls: Some(TlsConfig::default()),
            ..base.clone()
        };
        assert_eq!(c.validate(), Err(OtlpConfigError::TlsWithoutHttps));
        let c = OtlpConfig {
            tls: Some(TlsConfig {
                client_cert_file: Some("/c.pem".into()),
                ..TlsConfig::default()
            }),
            ..base.clone()
        };
        assert_eq!(c.validate(), Err(OtlpConfigError::HalfClientIdentity));
        for name in ["Authorization", "content-type", "grpc-status", "x-bin", ""] {
            let mut c = base.clone();
            c.headers.insert(name.into(), Secret::new("v"));
            assert!(
                matches!(c.validate(), Err(OtlpConfigError::HeaderName { .. })),
                "{name}"
            );
        }
        let mut c = base.clone();
        c.headers
            .insert("authorization".into(), Secret::new("Bearer a\nb"));
        assert!(matches!(
            c.validate(),
            Err(OtlpConfigError::HeaderValue { .. })
        ));
        let c = OtlpConfig {
            batch_size: 0,
            ..base.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(OtlpConfigError::Range {
                field: "batch_size",
                ..
            })
        ));
        let c = OtlpConfig {
            retry_max_ms: 10,
            retry_initial_ms: 20,
            ..base
        };
        assert!(matches!(
            c.validate(),
            Err(OtlpConfigError::Range {
                field: "retry_max_ms",
                ..
            })
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut c = OtlpConfig::new("http://x:1", Protocol::HttpProtobuf, "/c".into());
        c.headers
            .insert("authorization".into(), Secret::new("Bearer hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
