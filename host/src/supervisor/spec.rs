//! What a caller asks for ([`VmSpec`]) and the `vm.json` the supervisor writes for `sakshi-vmm`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ids::TraceId;
use crate::config::{ConfigError, VmConfig};

/// The VM a caller asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Kernel image (ELF with a 64-bit Linux-boot or PVH entry, or bzImage).
    pub kernel: PathBuf,
    /// Optional initrd.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line. The supervisor appends ` trace=<trace id>` unless a `trace=` word is present.
    #[serde(default)]
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Trace id to carry (from the API request); generated when absent.
    #[serde(default)]
    pub trace_id: Option<TraceId>,
}

fn one() -> u32 {
    1
}

/// Stands in for the trace id when validating: every trace id has the same length.
const PLACEHOLDER_TRACE: TraceId = TraceId::from_bytes([0xff; 16]);

impl VmSpec {
    /// A spec with one vCPU, no initrd and no trace id.
    pub fn new(kernel: impl Into<PathBuf>, cmdline: impl Into<String>, memory_mib: u64) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: cmdline.into(),
            memory_mib,
            vcpus: 1,
            trace_id: None,
        }
    }

    /// Checks the spec as the VMM will (bounds, command line with the trace id, files), without
    /// side effects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let trace = self.trace_id.as_ref().unwrap_or(&PLACEHOLDER_TRACE);
        self.vmm_config(trace).validate()
    }

    /// The command line the guest sees: the caller's, plus ` trace=<id>` unless it has a `trace=` word.
    pub(crate) fn guest_cmdline(&self, trace_id: &TraceId) -> String {
        if self
            .cmdline
            .split_ascii_whitespace()
            .any(|w| w.starts_with("trace="))
        {
            self.cmdline.clone()
        } else if self.cmdline.trim().is_empty() {
            format!("trace={trace_id}")
        } else {
            format!("{} trace={trace_id}", self.cmdline.trim_end())
        }
    }

    /// The `vm.json` for `sakshi-vmm`, without digests.
    pub(crate) fn vmm_config(&self, trace_id: &TraceId) -> VmConfig {
        let mut config = VmConfig::new(&self.kernel);
        config.initrd = self.initrd.clone();
        config.cmdline = self.guest_cmdline(trace_id);
        config.memory_mib = self.memory_mib;
        config.vcpus = self.vcpus;
        config
    }
}

/// RFC 8785 canonical JSON of a VMM configuration: the exact bytes written to `vm.json` and measured.
pub(crate) fn canonical_json(config: &VmConfig) -> serde_json::Result<Vec<u8>> {
    serde_json_canonicalizer::to_vec(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_kernel() -> (tempfile::TempDir, VmSpec) {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel");
        std::fs::write(&k, b"\x7fELF").unwrap();
        (dir, VmSpec::new(k, "exit=halt", 128))
    }

    #[test]
    fn valid_spec_passes() {
        let (_d, s) = spec_with_kernel();
        s.validate().unwrap();
    }

    #[test]
    fn bad_specs_are_rejected_with_typed_errors() {
        let (d, s) = spec_with_kernel();
        let mut m = s.clone();
        m.memory_mib = 0;
        assert!(matches!(
            m.validate(),
            Err(ConfigError::MemoryOutOfRange(0))
        ));
        let mut v = s.clone();
        v.vcpus = 0;
        assert!(matches!(v.validate(), Err(ConfigError::VcpusOutOfRange(0))));
        let mut c = s.clone();
        c.cmdline = "a\nb".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineInvalidByte { offset: 1, .. })
        ));
        // The appended ` trace=<32 hex>` counts against the limit.
        let mut l = s.clone();
        l.cmdline = "x".repeat(crate::config::MAX_CMDLINE_LEN - 10);
        assert!(matches!(l.validate(), Err(ConfigError::CmdlineTooLong(_))));
        let mut k = s.clone();
        k.kernel = d.path().join("missing");
        assert!(matches!(k.validate(), Err(ConfigError::FileMissing { .. })));
        let mut dirk = s.clone();
        dirk.kernel = d.path().to_path_buf();
        assert!(matches!(
            dirk.validate(),
            Err(ConfigError::FileMissing { .. })
        ));
        let mut i = s;
        i.initrd = Some(d.path().join("nope"));
        assert!(matches!(i.validate(), Err(ConfigError::FileMissing { .. })));
    }

    #[test]
    fn spec_json_rejects_unknown_fields() {
        let err = serde_json::from_str::<VmSpec>(r#"{"kernel":"/k","memory_mib":128,"bogus":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("bogus"));
        let ok: VmSpec = serde_json::from_str(r#"{"kernel":"/k","memory_mib":128}"#).unwrap();
        assert_eq!(ok.vcpus, 1);
    }

    #[test]
    fn trace_id_is_appended_once() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let mut s = VmSpec::new("/k", "exit=reboot", 128);
        assert_eq!(
            s.guest_cmdline(&t),
            "exit=reboot trace=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        s.cmdline = String::new();
        assert_eq!(
            s.guest_cmdline(&t),
            "trace=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        s.cmdline = "trace=abc run=spin".into();
        assert_eq!(s.guest_cmdline(&t), "trace=abc run=spin");
    }

    #[test]
    fn config_json_is_canonical_and_parses_back() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let mut cfg = VmSpec::new("/k", "a b", 128).vmm_config(&t);
        cfg.kernel_sha256 = Some("00".repeat(32));
        let bytes = canonical_json(&cfg).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        // Keys sorted, no whitespace.
        assert!(
            text.starts_with(
                r#"{"boot":"auto","cmdline":"a b trace=4bf92f3577b34da6a3ce929d0e0e4736","#
            ),
            "{text}"
        );
        assert!(!text.contains(": ") && !text.contains('\n'));
        let back: VmConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
}
