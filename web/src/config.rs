//! `sakshi.toml`: serde structs with unknown fields rejected, plus [`Config::validate`].

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The appliance configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener, TLS and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where state lives.
    #[serde(default)]
    pub data: DataConfig,
    /// Sessions, lockout, tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Micro-VM limits and shutdown behaviour.
    #[serde(default)]
    pub vms: VmConfig,
    /// The demo VM booted on first start.
    #[serde(default)]
    pub demo: DemoConfig,
    /// Which TPM measures boots.
    #[serde(default)]
    pub tpm: TpmConfig,
    /// Audit log checkpoints.
    #[serde(default)]
    pub audit: AuditLogConfig,
    /// SIEM streaming over OTLP (off when absent).
    #[serde(default)]
    pub otlp: Option<crate::otlp::OtlpConfig>,
    /// The operator's data-location statement for evidence bundles (RBI payment data storage,
    /// DPDP); absent: the statement is missing and its controls need review.
    #[serde(default)]
    pub data_location: Option<DataLocationConfig>,
}

/// `[data_location]`: where the appliance's data is stored, as declared by the operator.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataLocationConfig {
    /// Who declares it (name and role).
    pub declared_by: String,
    /// When it was declared (RFC 3339).
    pub declared_at: chrono::DateTime<chrono::Utc>,
    /// Every storage location.
    pub locations: Vec<StorageLocationConfig>,
}

/// One `[[data_location.locations]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageLocationConfig {
    /// What is stored there (`audit log`, `archive segments`, `SIEM`, `backups`, ...).
    pub what: String,
    /// ISO 3166-1 alpha-2 country code (`IN`).
    pub country: String,
    /// Site, region or data centre.
    pub site: String,
}

impl DataLocationConfig {
    /// The statement evidence bundles carry.
    pub fn statement(&self) -> sakshi_reports::DataLocation {
        sakshi_reports::DataLocation {
            locations: self
                .locations
                .iter()
                .map(|l| sakshi_reports::StorageLocation {
                    what: l.what.clone(),
                    country: l.country.clone(),
                    site: l.site.clone(),
                })
                .collect(),
            declared_by: self.declared_by.clone(),
            declared_at: self.declared_at,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditLogConfig {
    /// Sign a checkpoint every this many entries.
    pub checkpoint_every: u64,
    /// ... and at least this often, seconds.
    pub checkpoint_interval_seconds: u64,
    /// How often the daily review task wakes, seconds (60..=86400). Each wake reviews the
    /// previous UTC day (PCI DSS 10.4.1.1) unless its report is already stored, so a day is
    /// reviewed once however often it wakes; the first wake is shortly after start.
    pub review_check_seconds: u64,
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        AuditLogConfig {
            checkpoint_every: 1000,
            checkpoint_interval_seconds: 60,
            review_check_seconds: 3600,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key (PEM). Cookies get `Secure`.
    pub tls: Option<TlsConfig>,
    /// Largest accepted request body (JSON, forms), bytes.
    pub max_body_bytes: usize,
    /// Largest accepted image upload, bytes.
    pub max_image_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            max_body_bytes: 64 * 1024,
            max_image_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
}

/// `[data]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data directory: SQLite databases, images, console logs, snapshots.
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("/var/lib/sakshi"),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A session ends after this long without requests.
    pub session_idle_minutes: u32,
    /// A session ends this long after login, whatever happens.
    pub session_max_hours: u32,
    /// Failed logins (per user name, and per client address) before lockout.
    pub lockout_threshold: u32,
    /// First lockout duration; doubles with each further failure.
    pub lockout_base_seconds: u32,
    /// Longest lockout.
    pub lockout_max_seconds: u32,
    /// Longest API token lifetime.
    pub token_max_days: u32,
    /// Name of the admin account created on first start.
    pub initial_admin: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_idle_minutes: 30,
            session_max_hours: 12,
            lockout_threshold: 5,
            lockout_base_seconds: 30,
            lockout_max_seconds: 900,
            token_max_days: 365,
            initial_admin: "admin".to_owned(),
        }
    }
}

/// What happens to running VMs when the daemon shuts down.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnShutdown {
    /// Stop every VM.
    #[default]
    Stop,
    /// Leave VMM processes running; they are adopted or marked failed on restart.
    Leave,
}

/// `[vms]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    /// The `sakshi-vmm` binary (default: next to `sakshi`).
    pub vmm_binary: Option<PathBuf>,
    /// Stop or leave VMs on shutdown.
    pub on_shutdown: OnShutdown,
    /// Most VMs that may exist at once.
    pub max_vms: u32,
    /// Most vCPUs per VM.
    pub max_vcpus: u8,
    /// Most memory per VM, MiB.
    pub max_memory_mib: u32,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vmm_binary: None,
            on_shutdown: OnShutdown::Stop,
            max_vms: 64,
            max_vcpus: 8,
            max_memory_mib: 4096,
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Boot the demo VM on first start.
    pub enabled: bool,
    /// Its name.
    pub name: String,
    /// Kernel (default: the project's test guest).
    pub kernel: Option<PathBuf>,
    /// Initrd, if any.
    pub initrd: Option<PathBuf>,
    /// Command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory, MiB.
    pub memory_mib: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            name: "demo".to_owned(),
            kernel: None,
            initrd: None,
            cmdline: "console=ttyS0 marker=demo run=idle".to_owned(),
            vcpus: 1,
            memory_mib: 64,
        }
    }
}

/// `[tpm]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TpmConfig {
    /// `swtpm` (a software TPM the appliance starts) or `device:/dev/tpmrm0`.
    pub kind: String,
    /// Image policy: `audit` boots unapproved images and flags them, `enforce` refuses them.
    pub policy: PolicyMode,
}

/// What the boot policy does with images that are not approved.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Boot and flag.
    #[default]
    Audit,
    /// Refuse.
    Enforce,
}

impl Default for TpmConfig {
    fn default() -> Self {
        TpmConfig {
            kind: "swtpm".to_owned(),
            policy: PolicyMode::Audit,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("cannot parse {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why (line, column, field).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {field}: {reason}")]
    Invalid {
        /// Dotted field name, e.g. `auth.lockout_threshold`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The `[otlp]` table is invalid.
    #[error("invalid configuration: [otlp]")]
    Otlp(#[source] crate::otlp::OtlpConfigError),
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        }
        let s = &self.server;
        if let Some(tls) = &s.tls {
            if !tls.cert.is_file() {
                return bad(
                    "server.tls.cert",
                    format!("{} is not a file", tls.cert.display()),
                );
            }
            if !tls.key.is_file() {
                return bad(
                    "server.tls.key",
                    format!("{} is not a file", tls.key.display()),
                );
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&s.max_body_bytes) {
            return bad("server.max_body_bytes", "must be between 1024 and 16777216");
        }
        if s.max_image_bytes < 4096 {
            return bad("server.max_image_bytes", "must be at least 4096");
        }
        if self.data.dir.as_os_str().is_empty() {
            return bad("data.dir", "must not be empty");
        }
        let a = &self.auth;
        if a.session_idle_minutes == 0 {
            return bad("auth.session_idle_minutes", "must be at least 1");
        }
        if a.session_max_hours == 0 || a.session_max_hours > 24 * 30 {
            return bad("auth.session_max_hours", "must be between 1 and 720");
        }
        if u64::from(a.session_idle_minutes) > u64::from(a.session_max_hours) * 60 {
            return bad(
                "auth.session_idle_minutes",
                "must not exceed auth.session_max_hours",
            );
        }
        if a.lockout_threshold == 0 {
            return bad("auth.lockout_threshold", "must be at least 1");
        }
        if a.lockout_base_seconds == 0 {
            return bad("auth.lockout_base_seconds", "must be at least 1");
        }
        if a.lockout_max_seconds < a.lockout_base_seconds {
            return bad(
                "auth.lockout_max_seconds",
                "must be at least auth.lockout_base_seconds",
            );
        }
        if a.token_max_days == 0 || a.token_max_days > 3650 {
            return bad("auth.token_max_days", "must be between 1 and 3650");
        }
        if let Err(reason) = crate::auth::validate_username(&a.initial_admin) {
            return bad("auth.initial_admin", reason);
        }
        let v = &self.vms;
        if v.max_vms == 0 {
            return bad("vms.max_vms", "must be at least 1");
        }
        if v.max_vcpus == 0 || v.max_vcpus > 64 {
            return bad("vms.max_vcpus", "must be between 1 and 64");
        }
        if v.max_memory_mib < 16 {
            return bad("vms.max_memory_mib", "must be at least 16");
        }
        let d = &self.demo;
        if d.enabled {
            if d.vcpus == 0 || d.vcpus > v.max_vcpus {
                return bad("demo.vcpus", "must be between 1 and vms.max_vcpus");
            }
            if d.memory_mib < 16 || d.memory_mib > v.max_memory_mib {
                return bad(
                    "demo.memory_mib",
                    "must be between 16 and vms.max_memory_mib",
                );
            }
            if let Err(reason) = crate::ops::validate_cmdline(&d.cmdline) {
                return bad("demo.cmdline", reason);
            }
        }
        if self.audit.checkpoint_every == 0 {
            return bad("audit.checkpoint_every", "must be at least 1");
        }
        if self.audit.checkpoint_interval_seconds == 0 {
            return bad("audit.checkpoint_interval_seconds", "must be at least 1");
        }
        if !(60..=86_400).contains(&self.audit.review_check_seconds) {
            return bad("audit.review_check_seconds", "must be between 60 and 86400");
        }
        let kind = self.tpm.kind.as_str();
        if kind != "swtpm" && !kind.starts_with("device:/") {
            return bad(
                "tpm.kind",
                format!("{kind:?}: expected \"swtpm\" or \"device:/dev/tpmrm0\""),
            );
        }
        if let Some(o) = &self.otlp {
            o.validate().map_err(ConfigError::Otlp)?;
        }
        if let Some(d) = &self.data_location {
            let text = |s: &str| {
                !s.trim().is_empty() && s.len() <= 200 && !s.chars().any(char::is_control)
            };
            if !text(&d.declared_by) {
                return bad(
                    "data_location.declared_by",
                    "must be 1-200 printable characters",
                );
            }
            if d.locations.is_empty() {
                return bad("data_location.locations", "must list at least one location");
            }
            for l in &d.locations {
                if !text(&l.what) || !text(&l.site) {
                    return bad(
                        "data_location.locations",
                        "what and site must be 1-200 printable characters",
                    );
                }
                if l.country.len() != 2 || !l.country.bytes().all(|b| b.is_ascii_uppercase()) {
                    return bad(
                        "data_location.locations.country",
                        format!(
                            "{:?}: expected an ISO 3166-1 alpha-2 code such as IN",
                            l.country
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_that_validate() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn data_location_is_validated() {
        let ok = "[data_location]\ndeclared_by = \"Asha Rao, CISO\"\ndeclared_at = \"2026-11-01T00:00:00Z\"\n[[data_location.locations]]\nwhat = \"audit log\"\ncountry = \"IN\"\nsite = \"Mumbai DC-1\"\n";
        let c = Config::parse(ok).unwrap();
        c.validate().unwrap();
        let s = c.data_location.as_ref().unwrap().statement();
        assert_eq!(s.locations[0].country, "IN");
        assert_eq!(s.declared_by, "Asha Rao, CISO");
        let bad = Config::parse(&ok.replace("\"IN\"", "\"India\"")).unwrap();
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "data_location.locations.country",
                ..
            })
        ));
        let none = Config::parse(
            "[data_location]\ndeclared_by = \"x\"\ndeclared_at = \"2026-11-01T00:00:00Z\"\nlocations = []\n",
        )
        .unwrap();
        assert!(none.validate().is_err());
        assert!(Config::parse(&ok.replace("site =", "bogus = 1\nsite =")).is_err());
    }

    #[test]
    fn otlp_table_is_optional_parsed_and_validated() {
        assert_eq!(Config::parse("").unwrap().otlp, None);
        let c = Config::parse(
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\ncursor_path = \"/tmp/c\"\nbatch_size = 10\n",
        )
        .unwrap();
        let o = c.otlp.as_ref().unwrap();
        assert_eq!(o.batch_size, 10);
        assert_eq!(o.endpoint, "http://127.0.0.1:4317");
        c.validate().unwrap();
        let c =
            Config::parse("[otlp]\nendpoint = \"ftp://x\"\ncursor_path = \"/tmp/c\"\n").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Otlp(
                crate::otlp::OtlpConfigError::Endpoint { .. }
            ))
        ));
        assert!(
            Config::parse("[otlp]\nendpoint = \"http://x:1\"\ncursor_path = \"c\"\nbogus = 1\n")
                .is_err()
        );
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:9000\"\nlisen = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lisen"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let c = Config::parse("[auth]\nlockout_threshold = 0\n").unwrap();
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "auth.lockout_threshold"),
            other => panic!("unexpected {other:?}"),
        }
        let c = Config::parse("[vms]\nmax_memory_mib = 32\n").unwrap();
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "demo.memory_mib"),
            other => panic!("unexpected {other:?}"),
        }
        let c = Config::parse("[tpm]\nkind = \"hardware\"\n").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "tpm.kind",
                ..
            })
        ));
        let c = Config::parse(
            "[server.tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n",
        )
        .unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "server.tls.cert",
                ..
            })
        ));
    }

    #[test]
    fn review_check_interval_defaults_to_hourly_and_is_bounded() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.audit.review_check_seconds, 3600);
        let c = Config::parse("[audit]\nreview_check_seconds = 600\n").unwrap();
        assert_eq!(c.audit.review_check_seconds, 600);
        c.validate().unwrap();
        for bad in ["0", "59", "86401"] {
            let c = Config::parse(&format!("[audit]\nreview_check_seconds = {bad}\n")).unwrap();
            match c.validate() {
                Err(ConfigError::Invalid { field, .. }) => {
                    assert_eq!(field, "audit.review_check_seconds", "{bad}")
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn load_reports_path_and_parse_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Config::load(&missing),
            Err(ConfigError::Read { .. })
        ));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[vms]\non_shutdown = \"explode\"\n").unwrap();
        match Config::load(&bad) {
            Err(e @ ConfigError::Parse { .. }) => {
                let chain = format!("{}", std::error::Error::source(&e).unwrap());
                assert!(chain.contains("explode"), "{chain}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
