//! The configuration of one micro-VM (`vm.json`), with validation.
//!
//! The file is parsed once at the edge (`sakshi-vmm --config`), strictly: unknown fields are
//! rejected, and [`VmConfig::validate`] checks every bound before anything is created.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Smallest guest memory accepted, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest memory accepted, in MiB (64 GiB).
pub const MAX_MEMORY_MIB: u64 = 64 * 1024;
/// Largest number of vCPUs accepted.
pub const MAX_VCPUS: u32 = 32;
/// Longest kernel command line accepted, in bytes, without the terminating NUL
/// (the x86 boot protocol's `COMMAND_LINE_SIZE` is 2048 including the NUL).
pub const MAX_CMDLINE_LEN: usize = 2047;
/// Smallest console ring accepted, in bytes.
pub const MIN_RING_BYTES: usize = 4096;
/// Largest console ring accepted, in bytes.
pub const MAX_RING_BYTES: usize = 1 << 20;
/// Longest graceful-stop timeout accepted, in milliseconds.
pub const MAX_STOP_TIMEOUT_MS: u64 = 60_000;

/// The configuration of one micro-VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Kernel image: an ELF `vmlinux` (or the test guest) or a bzImage.
    pub kernel: PathBuf,
    /// Expected SHA-256 (hex) of the kernel file; the VMM refuses to run on mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_sha256: Option<String>,
    /// Optional initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Expected SHA-256 (hex) of the initrd file; the VMM refuses to run on mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_sha256: Option<String>,
    /// Kernel command line (printable ASCII, at most [`MAX_CMDLINE_LEN`] bytes).
    #[serde(default)]
    pub cmdline: String,
    /// Which kernel entry to use.
    #[serde(default)]
    pub boot: BootMode,
    /// Guest memory in MiB ([`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`]).
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Where the guest console (COM1) goes.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// CPU feature policy.
    #[serde(default)]
    pub cpu: CpuConfig,
    /// How long a graceful stop waits for the guest before stopping it hard, in milliseconds.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
}

fn default_memory_mib() -> u64 {
    128
}

fn default_vcpus() -> u32 {
    1
}

fn default_stop_timeout_ms() -> u64 {
    2000
}

fn default_true() -> bool {
    true
}

fn default_ring_bytes() -> usize {
    64 * 1024
}

impl VmConfig {
    /// A configuration with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            kernel_sha256: None,
            initrd: None,
            initrd_sha256: None,
            cmdline: String::new(),
            boot: BootMode::default(),
            memory_mib: default_memory_mib(),
            vcpus: default_vcpus(),
            console: ConsoleConfig::default(),
            cpu: CpuConfig::default(),
            stop_timeout_ms: default_stop_timeout_ms(),
        }
    }

    /// Parses a configuration from JSON text (strict: unknown fields are errors) and validates it.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_str(text).map_err(ConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Checks every field; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemoryOutOfRange(self.memory_mib));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::VcpusOutOfRange(self.vcpus));
        }
        check_cmdline(&self.cmdline)?;
        check_file(Field::Kernel, &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file(Field::Initrd, initrd)?;
        }
        if let Some(digest) = &self.kernel_sha256 {
            parse_sha256(Field::KernelSha256, digest)?;
        }
        if let Some(digest) = &self.initrd_sha256 {
            if self.initrd.is_none() {
                return Err(ConfigError::DigestWithoutInitrd);
            }
            parse_sha256(Field::InitrdSha256, digest)?;
        }
        if !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&self.console.ring_bytes) {
            return Err(ConfigError::RingOutOfRange(self.console.ring_bytes));
        }
        if let Some(file) = &self.console.file {
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(ConfigError::ConsoleDirMissing(file.clone()));
            }
        }
        if self.stop_timeout_ms > MAX_STOP_TIMEOUT_MS {
            return Err(ConfigError::StopTimeoutOutOfRange(self.stop_timeout_ms));
        }
        Ok(())
    }

    /// The expected kernel digest, decoded (validated configs only carry well-formed digests).
    pub(crate) fn kernel_digest(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        self.kernel_sha256
            .as_deref()
            .map(|d| parse_sha256(Field::KernelSha256, d))
            .transpose()
    }

    /// The expected initrd digest, decoded.
    pub(crate) fn initrd_digest(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        self.initrd_sha256
            .as_deref()
            .map(|d| parse_sha256(Field::InitrdSha256, d))
            .transpose()
    }
}

/// Which kernel entry point the VMM uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// PVH when the ELF carries a PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// The 64-bit Linux boot protocol (long mode, `RSI` = boot_params).
    Linux64,
    /// The PVH entry (32-bit protected mode, `EBX` = hvm_start_info); ELF kernels only.
    Pvh,
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Copy guest output to the VMM's stdout.
    #[serde(default = "default_true")]
    pub stdout: bool,
    /// Append guest output to this file (created if missing; its directory must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Size of the in-memory ring served by `console_tail`, in bytes.
    #[serde(default = "default_ring_bytes")]
    pub ring_bytes: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            ring_bytes: default_ring_bytes(),
        }
    }
}

/// CPU feature policy applied to the CPUID the guest sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// Features to hide from the guest, in addition to the PVM workarounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hide: Vec<CpuFeature>,
    /// Whether to hide the features a PVM host cannot run (xsave, cx16, popcnt, smap, smep).
    #[serde(default)]
    pub pvm_workarounds: PvmWorkarounds,
}

/// Whether the PVM workarounds apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PvmWorkarounds {
    /// Apply them when the host's KVM is PVM (`/sys/module/kvm_pvm` exists).
    #[default]
    Auto,
    /// Always apply them.
    On,
    /// Never apply them.
    Off,
}

/// A CPU feature the policy can hide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuFeature {
    /// XSAVE/XRSTOR (and OSXSAVE; the XSAVE leaf 0xd is cleared too).
    Xsave,
    /// CMPXCHG16B.
    Cx16,
    /// POPCNT.
    Popcnt,
    /// Supervisor-mode access prevention.
    Smap,
    /// Supervisor-mode execution prevention.
    Smep,
    /// AVX.
    Avx,
    /// AVX2.
    Avx2,
    /// AVX-512 foundation.
    Avx512f,
    /// x2APIC.
    X2apic,
    /// Process-context identifiers.
    Pcid,
    /// INVPCID.
    Invpcid,
    /// RDRAND.
    Rdrand,
    /// RDSEED.
    Rdseed,
    /// 1 GiB pages.
    Pdpe1gb,
    /// TSC deadline timer mode.
    TscDeadline,
    /// User-mode instruction prevention.
    Umip,
    /// RDFSBASE and friends.
    Fsgsbase,
}

impl CpuFeature {
    /// The features a PVM host cannot run.
    pub const PVM_HIDDEN: [CpuFeature; 5] = [
        CpuFeature::Xsave,
        CpuFeature::Cx16,
        CpuFeature::Popcnt,
        CpuFeature::Smap,
        CpuFeature::Smep,
    ];

    /// The lower-case name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            CpuFeature::Xsave => "xsave",
            CpuFeature::Cx16 => "cx16",
            CpuFeature::Popcnt => "popcnt",
            CpuFeature::Smap => "smap",
            CpuFeature::Smep => "smep",
            CpuFeature::Avx => "avx",
            CpuFeature::Avx2 => "avx2",
            CpuFeature::Avx512f => "avx512f",
            CpuFeature::X2apic => "x2apic",
            CpuFeature::Pcid => "pcid",
            CpuFeature::Invpcid => "invpcid",
            CpuFeature::Rdrand => "rdrand",
            CpuFeature::Rdseed => "rdseed",
            CpuFeature::Pdpe1gb => "pdpe1gb",
            CpuFeature::TscDeadline => "tscdeadline",
            CpuFeature::Umip => "umip",
            CpuFeature::Fsgsbase => "fsgsbase",
        }
    }
}

impl fmt::Display for CpuFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration field that failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `kernel`.
    Kernel,
    /// `initrd`.
    Initrd,
    /// `kernel_sha256`.
    KernelSha256,
    /// `initrd_sha256`.
    InitrdSha256,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Kernel => "kernel",
            Field::Initrd => "initrd",
            Field::KernelSha256 => "kernel_sha256",
            Field::InitrdSha256 => "initrd_sha256",
        })
    }
}

/// Why a configuration was refused. Each message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed, has an unknown field or a value of the wrong type.
    #[error("invalid config")]
    Parse(#[source] serde_json::Error),
    /// `memory_mib` is out of bounds.
    #[error("field `memory_mib`: {0} MiB is outside {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")]
    MemoryOutOfRange(u64),
    /// `vcpus` is out of bounds.
    #[error("field `vcpus`: {0} is outside 1..={MAX_VCPUS}")]
    VcpusOutOfRange(u32),
    /// `cmdline` is too long.
    #[error("field `cmdline`: {0} bytes is longer than {MAX_CMDLINE_LEN}")]
    CmdlineTooLong(usize),
    /// `cmdline` has a byte that is not printable ASCII.
    #[error("field `cmdline`: byte {byte:#04x} at offset {offset} is not printable ASCII")]
    CmdlineInvalidByte {
        /// Offset of the byte.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A path field does not name a readable regular file.
    #[error("field `{field}`: {} is not a readable file", .path.display())]
    FileMissing {
        /// The field.
        field: Field,
        /// The path.
        path: PathBuf,
        /// The I/O error, if the path could not be inspected.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A digest field is not 64 hexadecimal digits.
    #[error("field `{field}`: expected 64 hexadecimal digits")]
    BadDigest {
        /// The field.
        field: Field,
    },
    /// `initrd_sha256` without `initrd`.
    #[error("field `initrd_sha256`: given without `initrd`")]
    DigestWithoutInitrd,
    /// `console.ring_bytes` is out of bounds.
    #[error("field `console.ring_bytes`: {0} is outside {MIN_RING_BYTES}..={MAX_RING_BYTES}")]
    RingOutOfRange(usize),
    /// The directory of `console.file` does not exist.
    #[error("field `console.file`: the directory of {} does not exist", .0.display())]
    ConsoleDirMissing(PathBuf),
    /// `stop_timeout_ms` is too large.
    #[error("field `stop_timeout_ms`: {0} is larger than {MAX_STOP_TIMEOUT_MS}")]
    StopTimeoutOutOfRange(u64),
}

fn check_cmdline(cmdline: &str) -> Result<(), ConfigError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(ConfigError::CmdlineTooLong(cmdline.len()));
    }
    if let Some((offset, &byte)) = cmdline
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, b)| !(b' '..=b'~').contains(*b))
    {
        return Err(ConfigError::CmdlineInvalidByte { offset, byte });
    }
    Ok(())
}

fn check_file(field: Field, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::FileMissing {
            field,
            path: path.to_owned(),
            source: None,
        }),
        Err(source) => Err(ConfigError::FileMissing {
            field,
            path: path.to_owned(),
            source: Some(source),
        }),
    }
}

fn parse_sha256(field: Field, text: &str) -> Result<[u8; 32], ConfigError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| ConfigError::BadDigest { field })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kernel_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\x7fELF").unwrap();
        f
    }

    fn json_with(kernel: &Path, extra: &str) -> String {
        format!(
            r#"{{"kernel": {}{}}}"#,
            serde_json::to_string(kernel).unwrap(),
            extra
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let k = kernel_file();
        let c = VmConfig::from_json(&json_with(k.path(), "")).unwrap();
        assert_eq!(c.memory_mib, 128);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.boot, BootMode::Auto);
        assert!(c.console.stdout);
        assert_eq!(c.console.ring_bytes, 65536);
        assert_eq!(c, VmConfig::new(k.path()));
    }

    #[test]
    fn round_trips_through_json() {
        let k = kernel_file();
        let mut c = VmConfig::new(k.path());
        c.boot = BootMode::Pvh;
        c.cpu.hide = vec![CpuFeature::Avx2];
        c.cpu.pvm_workarounds = PvmWorkarounds::Off;
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(VmConfig::from_json(&text).unwrap(), c);
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let k = kernel_file();
        let err = VmConfig::from_json(&json_with(k.path(), r#", "memroy_mib": 64"#)).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("memroy_mib"), "{chain}");
    }

    #[test]
    fn unknown_nested_field_is_rejected() {
        let k = kernel_file();
        let err = VmConfig::from_json(&json_with(k.path(), r#", "console": {"colour": true}"#))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
    }

    #[test]
    fn zero_vcpus_rejected() {
        let k = kernel_file();
        let err = VmConfig::from_json(&json_with(k.path(), r#", "vcpus": 0"#)).unwrap_err();
        assert!(matches!(err, ConfigError::VcpusOutOfRange(0)));
        assert!(err.to_string().contains("`vcpus`"));
        let err = VmConfig::from_json(&json_with(k.path(), r#", "vcpus": 33"#)).unwrap_err();
        assert!(matches!(err, ConfigError::VcpusOutOfRange(33)));
        assert!(VmConfig::from_json(&json_with(k.path(), r#", "vcpus": 32"#)).is_ok());
    }

    #[test]
    fn negative_vcpus_is_a_parse_error() {
        let k = kernel_file();
        let err = VmConfig::from_json(&json_with(k.path(), r#", "vcpus": -1"#)).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
    }

    #[test]
    fn memory_bounds() {
        let k = kernel_file();
        for (mib, ok) in [
            (15, false),
            (16, true),
            (65536, true),
            (65537, false),
            (0, false),
        ] {
            let r = VmConfig::from_json(&json_with(k.path(), &format!(r#", "memory_mib": {mib}"#)));
            match (ok, r) {
                (true, Ok(c)) => assert_eq!(c.memory_mib, mib),
                (false, Err(ConfigError::MemoryOutOfRange(m))) => assert_eq!(m, mib),
                (ok, r) => panic!("memory {mib}: expected ok={ok}, got {r:?}"),
            }
        }
    }

    #[test]
    fn missing_kernel_names_field() {
        let err = VmConfig::from_json(r#"{"kernel": "/nonexistent/sakshi-kernel"}"#).unwrap_err();
        match &err {
            ConfigError::FileMissing { field, source, .. } => {
                assert_eq!(*field, Field::Kernel);
                assert!(source.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("field `kernel`"));
    }

    #[test]
    fn directory_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let err = VmConfig::new(dir.path()).validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::FileMissing {
                field: Field::Kernel,
                source: None,
                ..
            }
        ));
    }

    #[test]
    fn missing_initrd_names_field() {
        let k = kernel_file();
        let mut c = VmConfig::new(k.path());
        c.initrd = Some("/nonexistent/initrd".into());
        let err = c.validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::FileMissing {
                field: Field::Initrd,
                ..
            }
        ));
    }

    #[test]
    fn cmdline_too_long_and_invalid_bytes() {
        let k = kernel_file();
        let mut c = VmConfig::new(k.path());
        c.cmdline = "a".repeat(MAX_CMDLINE_LEN);
        assert!(c.validate().is_ok());
        c.cmdline = "a".repeat(MAX_CMDLINE_LEN + 1);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineTooLong(2048))
        ));
        c.cmdline = "console=ttyS0\nx".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineInvalidByte {
                offset: 13,
                byte: b'\n'
            })
        ));
        c.cmdline = "caf\u{e9}".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineInvalidByte { offset: 3, .. })
        ));
    }

    #[test]
    fn digests_must_be_hex() {
        let k = kernel_file();
        let mut c = VmConfig::new(k.path());
        c.kernel_sha256 = Some("zz".into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadDigest {
                field: Field::KernelSha256
            })
        ));
        c.kernel_sha256 = Some("ab".repeat(32));
        assert!(c.validate().is_ok());
        assert_eq!(c.kernel_digest().unwrap(), Some([0xab; 32]));
        c.initrd_sha256 = Some("00".repeat(32));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DigestWithoutInitrd)
        ));
    }

    #[test]
    fn console_bounds() {
        let k = kernel_file();
        let mut c = VmConfig::new(k.path());
        c.console.ring_bytes = 10;
        assert!(matches!(c.validate(), Err(ConfigError::RingOutOfRange(10))));
        c.console.ring_bytes = 4096;
        c.console.file = Some("/nonexistent-dir/console.log".into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ConsoleDirMissing(_))
        ));
    }

    #[test]
    fn boot_mode_names() {
        for (text, mode) in [
            ("auto", BootMode::Auto),
            ("linux64", BootMode::Linux64),
            ("pvh", BootMode::Pvh),
        ] {
            let parsed: BootMode = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(parsed, mode);
        }
        assert!(serde_json::from_str::<BootMode>("\"bios\"").is_err());
    }
}
