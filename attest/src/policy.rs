//! Golden values and the boot policy.
//!
//! A [`Policy`] lists approved kernel and initrd images by SHA-256 (fed by the image store and
//! the patch ledger) and, optionally, approved command lines and VM configs. At boot it yields
//! a [`PolicyDecision`]; the verifier uses the same golden values to appraise every event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::event::BootComponent;

/// What the policy does with an unapproved image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Refuse to boot it.
    #[default]
    Enforce,
    /// Boot it and flag it.
    Audit,
}

/// Golden values and the mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Enforce or audit.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Approved kernels: digest -> label.
    #[serde(default)]
    pub kernels: BTreeMap<Sha256Digest, String>,
    /// Approved initrds: digest -> label.
    #[serde(default)]
    pub initrds: BTreeMap<Sha256Digest, String>,
    /// Approved command lines (digest of the UTF-8 bytes) -> label. Empty: not appraised.
    #[serde(default)]
    pub cmdlines: BTreeMap<Sha256Digest, String>,
    /// Approved canonical VM configs -> label. Empty: not appraised.
    #[serde(default)]
    pub configs: BTreeMap<Sha256Digest, String>,
}

/// An image that is not in the golden set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnapprovedImage {
    /// Kernel or initrd.
    pub component: BootComponent,
    /// Its digest.
    pub sha256: Sha256Digest,
}

/// The policy's answer for one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Every image is approved.
    Approved,
    /// Audit mode: boot, but these images are not approved.
    Flagged {
        /// The unapproved images.
        unapproved: Vec<UnapprovedImage>,
    },
    /// Enforce mode: do not boot; these images are not approved.
    Refused {
        /// The unapproved images.
        unapproved: Vec<UnapprovedImage>,
    },
}

impl PolicyDecision {
    /// True unless the decision is [`PolicyDecision::Refused`].
    pub fn allows_boot(&self) -> bool {
        !matches!(self, PolicyDecision::Refused { .. })
    }
}

/// How one measured digest compares with the golden values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "appraisal", rename_all = "snake_case")]
pub enum Appraisal {
    /// In the golden set, under this label.
    Approved {
        /// The label.
        label: String,
    },
    /// Not in the golden set.
    NotApproved,
    /// There are no golden values for this kind of event (command lines and configs when the
    /// policy lists none).
    NoGoldenValues,
}

impl Appraisal {
    /// True unless [`Appraisal::NotApproved`].
    pub fn is_acceptable(&self) -> bool {
        !matches!(self, Appraisal::NotApproved)
    }
}

/// Why a policy document was rejected.
#[derive(Debug, thiserror::Error)]
#[error("policy document is malformed")]
pub struct PolicyParseError(#[source] serde_json::Error);

impl Policy {
    /// An empty policy in `mode`.
    pub fn new(mode: PolicyMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Parse a JSON policy document (unknown fields are rejected).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyParseError> {
        serde_json::from_slice(bytes).map_err(PolicyParseError)
    }

    /// The policy as pretty JSON.
    pub fn to_json(&self) -> String {
        // Maps of strings always serialize.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn set(&self, component: BootComponent) -> &BTreeMap<Sha256Digest, String> {
        match component {
            BootComponent::Kernel => &self.kernels,
            BootComponent::Initrd => &self.initrds,
            BootComponent::Cmdline => &self.cmdlines,
            BootComponent::Config => &self.configs,
        }
    }

    fn set_mut(&mut self, component: BootComponent) -> &mut BTreeMap<Sha256Digest, String> {
        match component {
            BootComponent::Kernel => &mut self.kernels,
            BootComponent::Initrd => &mut self.initrds,
            BootComponent::Cmdline => &mut self.cmdlines,
            BootComponent::Config => &mut self.configs,
        }
    }

    /// Add a golden value.
    pub fn approve(
        &mut self,
        component: BootComponent,
        sha256: Sha256Digest,
        label: impl Into<String>,
    ) {
        self.set_mut(component).insert(sha256, label.into());
    }

    /// Remove a golden value; true if it was present.
    pub fn revoke(&mut self, component: BootComponent, sha256: &Sha256Digest) -> bool {
        self.set_mut(component).remove(sha256).is_some()
    }

    /// Appraise one measured digest. Kernels and initrds always have golden values (an empty
    /// set approves nothing); command lines and configs only when their set is non-empty.
    pub fn appraise(&self, component: BootComponent, sha256: &Sha256Digest) -> Appraisal {
        let set = self.set(component);
        let optional = matches!(component, BootComponent::Cmdline | BootComponent::Config);
        match set.get(sha256) {
            Some(label) => Appraisal::Approved {
                label: label.clone(),
            },
            None if optional && set.is_empty() => Appraisal::NoGoldenValues,
            None => Appraisal::NotApproved,
        }
    }

    /// Decide whether a VM with these images may boot.
    pub fn decide(&self, kernel: &Sha256Digest, initrd: Option<&Sha256Digest>) -> PolicyDecision {
        let mut unapproved = Vec::new();
        let images = [
            (BootComponent::Kernel, Some(kernel)),
            (BootComponent::Initrd, initrd),
        ];
        for (component, digest) in images {
            if let Some(d) = digest
                && !self.appraise(component, d).is_acceptable()
            {
                unapproved.push(UnapprovedImage {
                    component,
                    sha256: *d,
                });
            }
        }
        match (unapproved.is_empty(), self.mode) {
            (true, _) => PolicyDecision::Approved,
            (false, PolicyMode::Audit) => PolicyDecision::Flagged { unapproved },
            (false, PolicyMode::Enforce) => PolicyDecision::Refused { unapproved },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforce_refuses_and_audit_flags_an_unknown_kernel() {
        let good = Sha256Digest::of(b"good kernel");
        let bad = Sha256Digest::of(b"swapped kernel");
        let initrd = Sha256Digest::of(b"initrd");
        let mut p = Policy::new(PolicyMode::Enforce);
        p.approve(BootComponent::Kernel, good, "linux 6.1");
        p.approve(BootComponent::Initrd, initrd, "busybox");
        assert_eq!(p.decide(&good, Some(&initrd)), PolicyDecision::Approved);
        assert_eq!(p.decide(&good, None), PolicyDecision::Approved);
        let d = p.decide(&bad, Some(&initrd));
        assert!(!d.allows_boot());
        assert_eq!(
            d,
            PolicyDecision::Refused {
                unapproved: vec![UnapprovedImage {
                    component: BootComponent::Kernel,
                    sha256: bad
                }]
            }
        );
        p.mode = PolicyMode::Audit;
        let d = p.decide(&bad, Some(&bad));
        assert!(d.allows_boot());
        assert!(matches!(d, PolicyDecision::Flagged { ref unapproved } if unapproved.len() == 2));
        assert!(p.revoke(BootComponent::Kernel, &good));
        assert!(!p.decide(&good, None).eq(&PolicyDecision::Approved));
    }

    #[test]
    fn optional_golden_sets_and_json() {
        let mut p = Policy::new(PolicyMode::Audit);
        let c = Sha256Digest::of(b"console=ttyS0");
        assert_eq!(
            p.appraise(BootComponent::Cmdline, &c),
            Appraisal::NoGoldenValues
        );
        assert_eq!(
            p.appraise(BootComponent::Kernel, &c),
            Appraisal::NotApproved
        );
        p.approve(BootComponent::Cmdline, c, "default");
        assert_eq!(
            p.appraise(BootComponent::Cmdline, &Sha256Digest::of(b"x")),
            Appraisal::NotApproved
        );
        let back = Policy::from_json(p.to_json().as_bytes()).unwrap();
        assert_eq!(back, p);
        assert!(Policy::from_json(br#"{"mode":"audit","bogus":1}"#).is_err());
        assert!(Policy::from_json(br#"{"kernels":{"zz":"x"}}"#).is_err());
    }
}
