//! The offline verifier: pure Rust, no libtss2, no TPM.
//!
//! [`verify_quote`] checks, in order: the AK public key and public area agree and the AK is a
//! restricted, TPM-resident signing key (optionally pinned to a trusted key); the ECDSA P-256
//! signature over `TPMS_ATTEST`; the `TPM_GENERATED` magic and quote type; the nonce; the
//! quoted PCR selection and the PCR digest; a full replay of the event log against every quoted
//! PCR; each record's digests against its event data; that every event is a known Sakshi
//! event. It then appraises every event against the golden values and returns a [`Report`]
//! with a per-VM account of what booted. Appraisal problems are findings in the report
//! ([`Report::passed`]); everything before is a hard [`VerifyError`].

use std::collections::BTreeMap;
use std::path::Path;

use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePublicKey as _;
use serde::Serialize;

use crate::digest::{HashAlg, Sha256Digest};
use crate::event::{BootComponent, EventDecodeError, MeasuredEvent};
use crate::policy::{Appraisal, Policy};
use crate::quote::{Quote, ReadDirError, TpmKind};
use crate::wire::{self, ClockInfo, WireError, object_attributes as oa};

/// What the verifier is told out of band.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The nonce the verifier sent; the quote must carry exactly this.
    pub nonce: &'a [u8],
    /// Golden values for appraisal.
    pub golden: &'a Policy,
    /// If set, the AK must be this key (PEM SubjectPublicKeyInfo).
    pub trusted_ak_pem: Option<&'a str>,
    /// If set, every audit checkpoint in the log must be one of these (tree size -> hash).
    pub known_checkpoints: Option<&'a BTreeMap<u64, Sha256Digest>>,
}

impl<'a> VerifyOptions<'a> {
    /// Options with a nonce and golden values, no pinned AK and no checkpoint list.
    pub fn new(nonce: &'a [u8], golden: &'a Policy) -> Self {
        Self {
            nonce,
            golden,
            trusted_ak_pem: None,
            known_checkpoints: None,
        }
    }
}

/// Why a quote failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `ak.pub.pem` is not a P-256 public key.
    #[error("AK public key is not a PEM P-256 public key")]
    AkPem(#[source] p256::pkcs8::spki::Error),
    /// The trusted AK given to the verifier is not a PEM P-256 public key.
    #[error("trusted AK is not a PEM P-256 public key")]
    TrustedAkPem(#[source] p256::pkcs8::spki::Error),
    /// The AK public area is malformed.
    #[error("AK public area is malformed")]
    AkPublic(#[source] WireError),
    /// The AK public area and the PEM key differ.
    #[error("AK public area and AK PEM key differ")]
    AkMismatch,
    /// The AK is not a restricted, fixed, TPM-generated signing key.
    #[error("AK attributes {0:#010x} do not make it a restricted TPM-resident signing key")]
    AkNotRestricted(u32),
    /// The AK is not the trusted one.
    #[error("AK is not the trusted attestation key")]
    AkNotTrusted,
    /// The signature is malformed or not ECDSA.
    #[error("quote signature is malformed")]
    SignatureFormat(#[source] WireError),
    /// The signature uses a hash other than SHA-256.
    #[error("quote signature uses {0}, expected sha256")]
    SignatureHash(HashAlg),
    /// The signature does not verify under the AK.
    #[error("quote signature does not verify under the AK")]
    BadSignature,
    /// The signed message does not start with `TPM_GENERATED_VALUE`.
    #[error("signed message magic {0:#010x} is not TPM_GENERATED")]
    NotTpmGenerated(u32),
    /// The signed message is not a quote.
    #[error("signed message type {0:#06x} is not a quote")]
    NotAQuote(u16),
    /// The signed message is otherwise malformed.
    #[error("signed quote message is malformed")]
    Attest(#[source] WireError),
    /// The quote's qualifying data is not the verifier's nonce.
    #[error("quote nonce {found} does not match the expected nonce {expected}")]
    NonceMismatch {
        /// Hex of the nonce in the quote.
        found: String,
        /// Hex of the expected nonce.
        expected: String,
    },
    /// The quoted PCR selection is not the one the PCR values describe.
    #[error("quoted PCR selection does not match the supplied PCR values")]
    PcrSelection,
    /// The PCR values do not hash to the quoted PCR digest.
    #[error("PCR values do not match the quoted PCR digest")]
    PcrDigestMismatch,
    /// A record extends a PCR the quote does not cover.
    #[error("record {recnum} extends PCR {pcr}, which the quote does not cover")]
    UnquotedPcr {
        /// The record.
        recnum: u64,
        /// The PCR.
        pcr: u32,
    },
    /// A record lacks a digest for the quoted bank.
    #[error("record {recnum} has no {alg} digest")]
    MissingBank {
        /// The record.
        recnum: u64,
        /// The bank.
        alg: HashAlg,
    },
    /// Replaying the log does not give the quoted PCR value.
    #[error("replaying the event log gives PCR {pcr} = {replayed}, but the quote says {quoted}")]
    ReplayMismatch {
        /// The PCR.
        pcr: u32,
        /// Hex of the replayed value.
        replayed: String,
        /// Hex of the quoted value.
        quoted: String,
    },
    /// A record's digest is not the hash of its event data.
    #[error("record {recnum}: {alg} digest does not match the event data")]
    EventDigest {
        /// The record.
        recnum: u64,
        /// The bank.
        alg: HashAlg,
    },
    /// A record is not a known Sakshi event.
    #[error("record {recnum} is not a known Sakshi event")]
    UnknownEvent {
        /// The record.
        recnum: u64,
        /// Why.
        #[source]
        source: EventDecodeError,
    },
}

/// Why a quote directory failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyDirError {
    /// The directory could not be read.
    #[error("cannot read the quote directory")]
    Read(#[from] ReadDirError),
    /// The quote did not verify.
    #[error("quote verification failed")]
    Verify(#[from] VerifyError),
}

/// One appraised boot component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentReport {
    /// Record number.
    pub recnum: u64,
    /// The measured digest.
    pub sha256: Sha256Digest,
    /// Against the golden values.
    pub appraisal: Appraisal,
}

/// What one VM boot measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmBootReport {
    /// The VM.
    pub vm_id: String,
    /// The boot (record number of its first event).
    pub boot: u64,
    /// Kernel.
    pub kernel: Option<ComponentReport>,
    /// Initrd (absent when the VM booted without one).
    pub initrd: Option<ComponentReport>,
    /// Command line.
    pub cmdline: Option<ComponentReport>,
    /// Canonical VM config.
    pub config: Option<ComponentReport>,
}

/// An audit checkpoint bound into the PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// Record number.
    pub recnum: u64,
    /// Tree size.
    pub tree_size: u64,
    /// Checkpoint hash.
    pub checkpoint_sha256: Sha256Digest,
    /// `Some(true)` when it is in the known list, `Some(false)` when not, `None` without a list.
    pub known: Option<bool>,
}

/// A problem the appraisal found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// A measured digest is not in the golden set.
    NotApproved {
        /// Record number.
        recnum: u64,
        /// The VM.
        vm_id: String,
        /// Which part.
        component: BootComponent,
        /// The digest.
        sha256: Sha256Digest,
    },
    /// An audit checkpoint is not in the known list.
    UnknownCheckpoint {
        /// Record number.
        recnum: u64,
        /// Its tree size.
        tree_size: u64,
    },
    /// A boot lacks its kernel, command line or config, or measured a part twice.
    MalformedBoot {
        /// The VM.
        vm_id: String,
        /// The boot.
        boot: u64,
    },
}

/// The verifier's result for a quote that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The TPM kind the appliance reported (not authenticated by the quote).
    pub tpm_kind: TpmKind,
    /// The notice for that kind.
    pub tpm_notice: &'static str,
    /// Whether the AK was pinned to a trusted key.
    pub ak_trusted: bool,
    /// The AK's TPM name (hex).
    pub ak_name: String,
    /// The TPM's clock and reset counters at the quote.
    pub clock: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// The quoted bank.
    pub bank: HashAlg,
    /// Quoted PCR values (hex).
    pub pcrs: BTreeMap<u32, String>,
    /// Number of records replayed.
    pub records: usize,
    /// Every VM boot in the log, in order.
    pub vm_boots: Vec<VmBootReport>,
    /// Every audit checkpoint in the log, in order.
    pub audit_checkpoints: Vec<CheckpointReport>,
    /// Appraisal problems; empty when the evidence passes.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when the appraisal found nothing.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Read a quote directory written by [`Quote::write_dir`] and verify it.
pub fn verify_dir(dir: &Path, opts: &VerifyOptions<'_>) -> Result<Report, VerifyDirError> {
    let quote = Quote::read_dir(dir)?;
    Ok(verify_quote(&quote, opts)?)
}

/// Verify a quote and appraise its event log.
pub fn verify_quote(quote: &Quote, opts: &VerifyOptions<'_>) -> Result<Report, VerifyError> {
    // 1. The attestation key.
    let ak =
        p256::PublicKey::from_public_key_pem(&quote.ak_public_pem).map_err(VerifyError::AkPem)?;
    let area = wire::parse_tpm2b_public_ecc(&quote.ak_public).map_err(VerifyError::AkPublic)?;
    let point = p256::EncodedPoint::from_affine_coordinates(&area.x.into(), &area.y.into(), false);
    if ak.to_encoded_point(false) != point {
        return Err(VerifyError::AkMismatch);
    }
    let required = oa::FIXED_TPM
        | oa::FIXED_PARENT
        | oa::SENSITIVE_DATA_ORIGIN
        | oa::RESTRICTED
        | oa::SIGN_ENCRYPT;
    if area.attributes & required != required {
        return Err(VerifyError::AkNotRestricted(area.attributes));
    }
    let ak_trusted = match opts.trusted_ak_pem {
        Some(pem) => {
            let trusted =
                p256::PublicKey::from_public_key_pem(pem).map_err(VerifyError::TrustedAkPem)?;
            if trusted != ak {
                return Err(VerifyError::AkNotTrusted);
            }
            true
        }
        None => false,
    };

    // 2. The signature over the exact attest bytes.
    let sig = wire::parse_signature(&quote.signature).map_err(VerifyError::SignatureFormat)?;
    if sig.hash != HashAlg::Sha256 {
        return Err(VerifyError::SignatureHash(sig.hash));
    }
    let ecdsa_sig = p256::ecdsa::Signature::from_scalars(sig.r, sig.s)
        .map_err(|_| VerifyError::BadSignature)?;
    p256::ecdsa::VerifyingKey::from(&ak)
        .verify(&quote.attest, &ecdsa_sig)
        .map_err(|_| VerifyError::BadSignature)?;

    // 3. What was signed.
    let info = wire::parse_quote_attest(&quote.attest).map_err(|e| match e {
        WireError::NotTpmGenerated(m) => VerifyError::NotTpmGenerated(m),
        WireError::NotAQuote(t) => VerifyError::NotAQuote(t),
        other => VerifyError::Attest(other),
    })?;
    if info.extra_data != opts.nonce {
        return Err(VerifyError::NonceMismatch {
            found: hex::encode(&info.extra_data),
            expected: hex::encode(opts.nonce),
        });
    }
    let alg = quote.pcrs.alg;
    let pcr_list: Vec<u32> = quote.pcrs.values.iter().map(|(p, _)| *p).collect();
    let selection_ok = info.selection.len() == 1
        && info.selection[0].alg == alg
        && info.selection[0].pcrs == pcr_list;
    if !selection_ok
        || quote
            .pcrs
            .values
            .iter()
            .any(|(_, v)| v.len() != alg.digest_len())
    {
        return Err(VerifyError::PcrSelection);
    }
    let concat: Vec<u8> = quote
        .pcrs
        .values
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    if HashAlg::Sha256.digest(&concat) != info.pcr_digest {
        return Err(VerifyError::PcrDigestMismatch);
    }

    // 4. The log: every record covered, digests consistent, full replay.
    let log = &quote.event_log;
    let mut events = Vec::with_capacity(log.len());
    for r in log.records() {
        if !pcr_list.contains(&r.pcr) {
            return Err(VerifyError::UnquotedPcr {
                recnum: r.recnum,
                pcr: r.pcr,
            });
        }
        if r.digest(alg).is_none() {
            return Err(VerifyError::MissingBank {
                recnum: r.recnum,
                alg,
            });
        }
        for d in &r.digests {
            if d.alg.digest(&r.event_data) != d.digest {
                return Err(VerifyError::EventDigest {
                    recnum: r.recnum,
                    alg: d.alg,
                });
            }
        }
    }
    for (pcr, quoted) in &quote.pcrs.values {
        let replayed = log.replay(*pcr, alg).unwrap_or_default();
        if &replayed != quoted {
            return Err(VerifyError::ReplayMismatch {
                pcr: *pcr,
                replayed: hex::encode(replayed),
                quoted: hex::encode(quoted),
            });
        }
    }
    for r in log.records() {
        let ev = r.event().map_err(|source| VerifyError::UnknownEvent {
            recnum: r.recnum,
            source,
        })?;
        events.push((r.recnum, ev));
    }

    // 5. Appraisal.
    let (vm_boots, audit_checkpoints, findings) = appraise(&events, opts);
    Ok(Report {
        tpm_kind: quote.tpm_kind,
        tpm_notice: quote.tpm_kind.notice(),
        ak_trusted,
        ak_name: hex::encode(area.name()),
        clock: info.clock,
        firmware_version: info.firmware_version,
        bank: alg,
        pcrs: quote
            .pcrs
            .values
            .iter()
            .map(|(p, v)| (*p, hex::encode(v)))
            .collect(),
        records: log.len(),
        vm_boots,
        audit_checkpoints,
        findings,
    })
}

type Appraised = (Vec<VmBootReport>, Vec<CheckpointReport>, Vec<Finding>);

fn appraise(events: &[(u64, MeasuredEvent)], opts: &VerifyOptions<'_>) -> Appraised {
    let mut boots: Vec<VmBootReport> = Vec::new();
    let mut index: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    let mut findings = Vec::new();
    let mut malformed: Vec<(String, u64)> = Vec::new();
    for (recnum, ev) in events {
        match ev {
            MeasuredEvent::Boot {
                component,
                vm_id,
                boot,
                sha256,
            } => {
                let appraisal = opts.golden.appraise(*component, sha256);
                if !appraisal.is_acceptable() {
                    findings.push(Finding::NotApproved {
                        recnum: *recnum,
                        vm_id: vm_id.clone(),
                        component: *component,
                        sha256: *sha256,
                    });
                }
                let key = (vm_id.clone(), *boot);
                let i = *index.entry(key.clone()).or_insert_with(|| {
                    boots.push(VmBootReport {
                        vm_id: vm_id.clone(),
                        boot: *boot,
                        kernel: None,
                        initrd: None,
                        cmdline: None,
                        config: None,
                    });
                    boots.len() - 1
                });
                let b = &mut boots[i];
                let slot = match component {
                    BootComponent::Kernel => &mut b.kernel,
                    BootComponent::Initrd => &mut b.initrd,
                    BootComponent::Cmdline => &mut b.cmdline,
                    BootComponent::Config => &mut b.config,
                };
                if slot.is_some() {
                    malformed.push(key);
                }
                *slot = Some(ComponentReport {
                    recnum: *recnum,
                    sha256: *sha256,
                    appraisal,
                });
            }
            MeasuredEvent::AuditCheckpoint {
                tree_size,
                checkpoint_sha256,
            } => {
                let known = opts
                    .known_checkpoints
                    .map(|k| k.get(tree_size) == Some(checkpoint_sha256));
                if known == Some(false) {
                    findings.push(Finding::UnknownCheckpoint {
                        recnum: *recnum,
                        tree_size: *tree_size,
                    });
                }
                checkpoints.push(CheckpointReport {
                    recnum: *recnum,
                    tree_size: *tree_size,
                    checkpoint_sha256: *checkpoint_sha256,
                    known,
                });
            }
        }
    }
    for b in &boots {
        if b.kernel.is_none() || b.cmdline.is_none() || b.config.is_none() {
            malformed.push((b.vm_id.clone(), b.boot));
        }
    }
    malformed.sort();
    malformed.dedup();
    findings.extend(
        malformed
            .into_iter()
            .map(|(vm_id, boot)| Finding::MalformedBoot { vm_id, boot }),
    );
    (boots, checkpoints, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::PcrValues;
    use crate::testdata;
    use crate::wire::{EcdsaSignature, marshal_signature};

    fn real_quote() -> Quote {
        Quote {
            attest: hex::decode(testdata::QUOTE_MSG).unwrap(),
            signature: hex::decode(testdata::QUOTE_SIG).unwrap(),
            pcrs: PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(16, hex::decode(testdata::PCR16).unwrap())],
            },
            event_log: crate::cel::EventLog::new(),
            ak_public_pem: testdata::AK_PEM.to_owned(),
            ak_public: hex::decode(testdata::AK_TSS_PUB).unwrap(),
            tpm_kind: TpmKind::Software,
            nonce: hex::decode(testdata::NONCE).unwrap(),
        }
    }

    fn nonce() -> Vec<u8> {
        hex::decode(testdata::NONCE).unwrap()
    }

    /// The tpm2-tools vector's PCR 16 was extended outside any log, so a full replay of the
    /// empty log must fail, and only that: signature, magic, nonce and PCR digest all pass.
    #[test]
    fn real_tpm2_tools_quote_passes_crypto_checks_then_fails_replay() {
        let policy = Policy::default();
        let nonce = nonce();
        let err = verify_quote(&real_quote(), &VerifyOptions::new(&nonce, &policy)).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReplayMismatch { pcr: 16, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn ak_name_matches_tpm2_tools() {
        let area =
            wire::parse_tpm2b_public_ecc(&hex::decode(testdata::AK_TSS_PUB).unwrap()).unwrap();
        assert_eq!(hex::encode(area.name()), testdata::AK_NAME);
    }

    #[test]
    fn tampering_is_caught_at_the_right_step() {
        let policy = Policy::default();
        let nonce = nonce();
        let opts = VerifyOptions::new(&nonce, &policy);

        let wrong_nonce = [0xab, 0xce];
        let e =
            verify_quote(&real_quote(), &VerifyOptions::new(&wrong_nonce, &policy)).unwrap_err();
        assert!(matches!(e, VerifyError::NonceMismatch { .. }), "{e:?}");

        let mut q = real_quote();
        let last = q.attest.len() - 1;
        q.attest[last] ^= 1;
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::BadSignature)
        ));

        let mut q = real_quote();
        q.signature[10] ^= 1;
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::BadSignature)
        ));

        let mut q = real_quote();
        q.pcrs.values[0].1[0] ^= 1;
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::PcrDigestMismatch)
        ));

        let mut q = real_quote();
        q.pcrs.values[0].0 = 15;
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::PcrSelection)
        ));

        let mut q = real_quote();
        q.signature.truncate(20);
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::SignatureFormat(_))
        ));

        let mut q = real_quote();
        let other = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key();
        q.ak_public_pem =
            p256::pkcs8::EncodePublicKey::to_public_key_pem(&other, Default::default()).unwrap();
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::AkMismatch)
        ));

        let trusted = q.ak_public_pem.clone();
        let pinned = VerifyOptions {
            trusted_ak_pem: Some(&trusted),
            ..opts
        };
        assert!(matches!(
            verify_quote(&real_quote(), &pinned),
            Err(VerifyError::AkNotTrusted)
        ));
    }

    /// A key that is not restricted could sign a forged TPMS_ATTEST; the verifier refuses it
    /// even when the signature and magic are fine.
    #[test]
    fn unrestricted_key_and_forged_magic_are_refused() {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let vk = sk.verifying_key();
        let pt = vk.to_encoded_point(false);
        let mut area = hex::decode(testdata::AK_TSS_PUB).unwrap();
        // x and y are the last two TPM2B fields: 2 + 32 + 2 + 32 bytes.
        let n = area.len();
        area[n - 66..n - 34].copy_from_slice(pt.x().unwrap());
        area[n - 32..].copy_from_slice(pt.y().unwrap());
        let mut attest = hex::decode(testdata::QUOTE_MSG).unwrap();
        attest[0] = 0xfe;
        let sign = |msg: &[u8]| {
            let s: p256::ecdsa::Signature = sk.sign(msg);
            let (r, s) = s.split_bytes();
            marshal_signature(&EcdsaSignature {
                hash: HashAlg::Sha256,
                r: r.into(),
                s: s.into(),
            })
        };
        let mut q = real_quote();
        q.ak_public_pem =
            p256::pkcs8::EncodePublicKey::to_public_key_pem(vk, Default::default()).unwrap();
        q.ak_public = area.clone();
        q.signature = sign(&attest);
        q.attest = attest;
        let policy = Policy::default();
        let nonce = nonce();
        let opts = VerifyOptions::new(&nonce, &policy);
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::NotTpmGenerated(0xfe54_4347))
        ));
        // Clear the restricted bit (objectAttributes are bytes 6..10 of TPM2B_PUBLIC).
        let attrs = u32::from_be_bytes(area[6..10].try_into().unwrap()) & !oa::RESTRICTED;
        area[6..10].copy_from_slice(&attrs.to_be_bytes());
        q.ak_public = area;
        assert!(matches!(
            verify_quote(&q, &opts),
            Err(VerifyError::AkNotRestricted(_))
        ));
    }

    #[test]
    fn appraisal_groups_boots_and_flags_problems() {
        let k = Sha256Digest::of(b"k");
        let bad = Sha256Digest::of(b"bad");
        let mut golden = Policy::default();
        golden.approve(BootComponent::Kernel, k, "kernel-1");
        let boot = |c, vm: &str, b, d| MeasuredEvent::Boot {
            component: c,
            vm_id: vm.into(),
            boot: b,
            sha256: d,
        };
        let events = vec![
            (0, boot(BootComponent::Kernel, "a", 0, k)),
            (1, boot(BootComponent::Cmdline, "a", 0, bad)),
            (2, boot(BootComponent::Config, "a", 0, bad)),
            (3, boot(BootComponent::Kernel, "b", 3, bad)),
            (
                4,
                MeasuredEvent::AuditCheckpoint {
                    tree_size: 9,
                    checkpoint_sha256: k,
                },
            ),
        ];
        let known: BTreeMap<u64, Sha256Digest> = [(9, bad)].into();
        let nonce = [1u8];
        let opts = VerifyOptions {
            known_checkpoints: Some(&known),
            ..VerifyOptions::new(&nonce, &golden)
        };
        let (boots, cps, findings) = appraise(&events, &opts);
        assert_eq!(boots.len(), 2);
        assert_eq!(
            boots[0].kernel.as_ref().unwrap().appraisal,
            Appraisal::Approved {
                label: "kernel-1".into()
            }
        );
        assert_eq!(
            boots[0].cmdline.as_ref().unwrap().appraisal,
            Appraisal::NoGoldenValues
        );
        assert_eq!(cps[0].known, Some(false));
        assert_eq!(
            findings,
            vec![
                Finding::NotApproved {
                    recnum: 3,
                    vm_id: "b".into(),
                    component: BootComponent::Kernel,
                    sha256: bad
                },
                Finding::UnknownCheckpoint {
                    recnum: 4,
                    tree_size: 9
                },
                Finding::MalformedBoot {
                    vm_id: "b".into(),
                    boot: 3
                },
            ]
        );
    }
}
