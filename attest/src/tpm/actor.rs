//! The TPM actor: owns the tss-esapi context, the keys and the journal.

use std::str::FromStr;
use std::sync::mpsc;

use p256::pkcs8::EncodePublicKey as _;
use tss_esapi::abstraction::KeyCustomization;
use tss_esapi::abstraction::{DefaultKey, ak, ek};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::{CapabilityType, PropertyTag, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Data, Digest, DigestValues, HashScheme, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, SignatureScheme,
};
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, TctiNameConf};

use super::journal::{Journal, TpmState};
use super::{
    BootDigests, ExtendError, Extended, OpenError, OpenStep, QuoteError, Request, TpmConfig,
    TpmError, TpmInfo,
};
use crate::cel::CelRecord;
use crate::digest::HashAlg;
use crate::event::{BootComponent, MeasuredEvent};
use crate::quote::{PcrValues, Quote, TpmKind};
use crate::wire::{self, object_attributes as oa};

const TPMA_DECRYPT: u32 = 1 << 17;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_SHA256: u16 = 0x000B;
/// "IBM" and "SW  ": the manufacturer and first vendor string of libtpms (swtpm).
const LIBTPMS_MANUFACTURER: u32 = 0x4942_4d00;
const LIBTPMS_VENDOR_1: u32 = 0x5357_2020;

struct Actor {
    ctx: Context,
    ak: KeyHandle,
    journal: Journal,
    info: TpmInfo,
}

pub(super) fn run(
    cfg: TpmConfig,
    rx: mpsc::Receiver<Request>,
    init: mpsc::Sender<Result<TpmInfo, OpenError>>,
) {
    let mut actor = match Actor::open(&cfg) {
        Ok(a) => {
            let _ = init.send(Ok(a.info.clone()));
            a
        }
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    drop(init);
    while let Ok(req) = rx.recv() {
        match req {
            Request::MeasureBoot(d, reply) => {
                let _ = reply.send(actor.measure_boot(d));
            }
            Request::AuditCheckpoint(size, hash, reply) => {
                let ev = MeasuredEvent::AuditCheckpoint {
                    tree_size: size,
                    checkpoint_sha256: hash,
                };
                let _ = reply.send(actor.extend(vec![ev]));
            }
            Request::Quote(nonce, reply) => {
                let _ = reply.send(actor.quote(nonce));
            }
            Request::Log(reply) => {
                let _ = reply.send(actor.journal.log().clone());
            }
            Request::ReadPcr(reply) => {
                let banks = actor.info.banks.clone();
                let pcr = actor.info.pcr;
                let _ =
                    reply.send(read_pcr_banks(&mut actor.ctx, pcr, &banks).map_err(TpmError::Tpm));
            }
        }
    }
    if is_simulator(&cfg.tcti) {
        // The simulator stops with the appliance: shut it down in order so its next start does
        // not count a non-orderly shutdown against the dictionary-attack lockout. The next start
        // is TPM2_Startup(CLEAR), so this is a TPM Reset (resetCount + 1), which is what the
        // journal expects after a restart. A platform TPM is shut down by the OS, never here.
        match actor.ctx.shutdown(StartupType::Clear) {
            Ok(()) => tracing::debug!("TPM actor stopping; sent TPM2_Shutdown(CLEAR)"),
            Err(e) => tracing::warn!(error = %e, "TPM2_Shutdown(CLEAR) failed"),
        }
    } else {
        tracing::debug!("TPM actor stopping");
    }
}

/// True for TCTIs that reach a TPM simulator process (swtpm, mssim) rather than a platform TPM.
fn is_simulator(tcti: &str) -> bool {
    matches!(tcti.split(':').next(), Some("swtpm" | "mssim"))
}

fn to_tss_alg(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn pcr_slot(pcr: u32) -> Result<PcrSlot, tss_esapi::Error> {
    PcrSlot::try_from(1u32 << pcr)
}

fn selection(alg: HashAlg, pcr: u32) -> Result<PcrSelectionList, tss_esapi::Error> {
    PcrSelectionListBuilder::new()
        .with_selection(to_tss_alg(alg), &[pcr_slot(pcr)?])
        .build()
}

fn read_pcr_banks(
    ctx: &mut Context,
    pcr: u32,
    banks: &[HashAlg],
) -> Result<Vec<(HashAlg, Vec<u8>)>, tss_esapi::Error> {
    let mut out = Vec::with_capacity(banks.len());
    for &alg in banks {
        let (_, _, digests) = ctx.pcr_read(selection(alg, pcr)?)?;
        let value = digests
            .value()
            .first()
            .map(|d| d.value().to_vec())
            .unwrap_or_default();
        out.push((alg, value));
    }
    Ok(out)
}

impl Actor {
    fn open(cfg: &TpmConfig) -> Result<Self, OpenError> {
        let tpm_err = |step| move |source| OpenError::Tpm { step, source };
        let tcti = TctiNameConf::from_str(&cfg.tcti).map_err(tpm_err(OpenStep::Tcti))?;
        let mut ctx = Context::new(tcti).map_err(tpm_err(OpenStep::Connect))?;
        let kind = detect_kind(&mut ctx, &cfg.tcti).map_err(tpm_err(OpenStep::Capabilities))?;
        let banks = active_banks(&mut ctx, cfg.pcr)?;
        ensure_ek(&mut ctx, cfg.ek_handle)?;
        let (ak, ak_public) = ensure_ak(&mut ctx, cfg.ek_handle, cfg.ak_handle)?;
        let ak_public_pem = ak_pem(&ak_public).ok_or(OpenError::ForeignObject(cfg.ak_handle))?;
        write_state_file(cfg, "ak.pub.pem", ak_public_pem.as_bytes())?;
        write_state_file(cfg, "ak.pub", &ak_public)?;

        let values =
            read_pcr_banks(&mut ctx, cfg.pcr, &banks).map_err(tpm_err(OpenStep::ReadState))?;
        let reset_count =
            reset_count(&mut ctx, ak, cfg.pcr).map_err(tpm_err(OpenStep::ReadState))?;
        let values: Vec<Vec<u8>> = values.into_iter().map(|(_, v)| v).collect();
        let journal = Journal::open(
            &cfg.state_dir,
            &TpmState {
                pcr: cfg.pcr,
                banks: &banks,
                reset_count,
                values: &values,
            },
        )?;
        tracing::info!(
            attest.tpm.kind = ?kind,
            attest.tpm.pcr = cfg.pcr,
            attest.tpm.banks = ?banks,
            attest.tpm.reset_count = reset_count,
            attest.log.records = journal.log().len(),
            "TPM opened"
        );
        if kind == TpmKind::Software {
            tracing::warn!("{}", kind.notice());
        }
        let info = TpmInfo {
            kind,
            pcr: cfg.pcr,
            banks,
            ak_public_pem,
            ak_public,
        };
        Ok(Actor {
            ctx,
            ak,
            journal,
            info,
        })
    }

    fn measure_boot(&mut self, d: BootDigests) -> Result<Extended, ExtendError> {
        let boot = self.journal.log().len() as u64;
        let ev = |component, sha256| MeasuredEvent::Boot {
            component,
            vm_id: d.vm_id.clone(),
            boot,
            sha256,
        };
        let mut events = vec![ev(BootComponent::Kernel, d.kernel)];
        if let Some(initrd) = d.initrd {
            events.push(ev(BootComponent::Initrd, initrd));
        }
        events.push(ev(BootComponent::Cmdline, d.cmdline));
        events.push(ev(BootComponent::Config, d.config));
        self.extend(events)
    }

    /// Write the records, extend every bank for each, then commit.
    fn extend(&mut self, events: Vec<MeasuredEvent>) -> Result<Extended, ExtendError> {
        let pcr = self.journal.pcr();
        let banks = self.journal.banks().to_vec();
        let first = self.journal.log().len() as u64;
        let records: Vec<CelRecord> = events
            .iter()
            .zip(first..)
            .map(|(e, recnum)| CelRecord::build(recnum, pcr, &banks, e))
            .collect();
        let before = self
            .journal
            .write_pending(&records)
            .map_err(ExtendError::Journal)?;
        let mut extended = 0;
        let mut failure = None;
        let pcr_handle = PcrHandle::try_from(pcr).map_err(ExtendError::Tpm)?;
        for r in &records {
            let mut values = DigestValues::new();
            for d in &r.digests {
                match Digest::try_from(d.digest.clone()) {
                    Ok(v) => values.set(to_tss_alg(d.alg), v),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            match self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.pcr_extend(pcr_handle, values)
                }) {
                Ok(()) => extended += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let count = records.len() as u64;
        self.journal
            .commit(records, extended, before)
            .map_err(ExtendError::Journal)?;
        if let Some(e) = failure {
            return Err(ExtendError::Tpm(e));
        }
        tracing::debug!(
            attest.pcr = pcr,
            attest.first_recnum = first,
            attest.count = count,
            "extended"
        );
        Ok(Extended {
            pcr,
            first_recnum: first,
            count,
        })
    }

    fn quote(&mut self, nonce: Vec<u8>) -> Result<Quote, QuoteError> {
        let pcr = self.info.pcr;
        // Another TPM user could extend the PCR between the read and the quote; retry then.
        let mut attempts = 0;
        let (attest, signature, value) = loop {
            attempts += 1;
            let value = read_pcr_banks(&mut self.ctx, pcr, &[HashAlg::Sha256])
                .map_err(QuoteError::Tpm)?
                .pop()
                .map(|(_, v)| v)
                .unwrap_or_default();
            let (attest, signature) =
                raw_quote(&mut self.ctx, self.ak, &nonce, pcr).map_err(QuoteError::Tpm)?;
            let info = wire::parse_quote_attest(&attest).map_err(QuoteError::Malformed)?;
            if info.pcr_digest == HashAlg::Sha256.digest(&value) {
                break (attest, signature, value);
            }
            if attempts == 3 {
                return Err(QuoteError::PcrChanged);
            }
        };
        Ok(Quote {
            attest,
            signature,
            pcrs: PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(pcr, value)],
            },
            event_log: self.journal.log().clone(),
            ak_public_pem: self.info.ak_public_pem.clone(),
            ak_public: self.info.ak_public.clone(),
            tpm_kind: self.info.kind,
            nonce,
        })
    }
}

/// TPM2_Quote of `pcr` (sha256 bank) with ECDSA-SHA256; returns marshalled TPMS_ATTEST and
/// TPMT_SIGNATURE.
fn raw_quote(
    ctx: &mut Context,
    ak: KeyHandle,
    nonce: &[u8],
    pcr: u32,
) -> Result<(Vec<u8>, Vec<u8>), tss_esapi::Error> {
    let sel = selection(HashAlg::Sha256, pcr)?;
    let data = Data::try_from(nonce.to_vec())?;
    let scheme = SignatureScheme::EcDsa {
        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
    };
    // A password session (empty AK auth): no StartAuthSession round trip or session HMACs,
    // which would cost ~4 ms per quote.
    let (attest, sig) = ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.quote(ak, data, scheme, sel)
    })?;
    Ok((attest.marshall()?, sig.marshall()?))
}

/// The TPM's reset counter, from the clock info of a throwaway quote (the AK is in the
/// endorsement hierarchy, so the counters are not obfuscated).
fn reset_count(ctx: &mut Context, ak: KeyHandle, pcr: u32) -> Result<u32, tss_esapi::Error> {
    let (attest, _) = raw_quote(ctx, ak, b"sakshi-open", pcr)?;
    let info = wire::parse_quote_attest(&attest).map_err(|_| {
        tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm)
    })?;
    Ok(info.clock.reset_count)
}

fn detect_kind(ctx: &mut Context, tcti: &str) -> Result<TpmKind, tss_esapi::Error> {
    if is_simulator(tcti) {
        return Ok(TpmKind::Software);
    }
    let (data, _) = ctx.get_capability(
        CapabilityType::TpmProperties,
        u32::from(PropertyTag::Manufacturer),
        8,
    )?;
    if let CapabilityData::TpmProperties(props) = data {
        let get = |tag| props.find(tag).map(|p| p.value());
        if get(PropertyTag::Manufacturer) == Some(LIBTPMS_MANUFACTURER)
            && get(PropertyTag::VendorString1) == Some(LIBTPMS_VENDOR_1)
        {
            return Ok(TpmKind::Software);
        }
    }
    Ok(TpmKind::Hardware)
}

fn active_banks(ctx: &mut Context, pcr: u32) -> Result<Vec<HashAlg>, OpenError> {
    let tpm_err = |source| OpenError::Tpm {
        step: OpenStep::Capabilities,
        source,
    };
    let (data, _) = ctx
        .get_capability(CapabilityType::AssignedPcr, 0, 16)
        .map_err(tpm_err)?;
    let CapabilityData::AssignedPcr(list) = data else {
        return Err(OpenError::PcrUnavailable(pcr));
    };
    let slot = pcr_slot(pcr).map_err(tpm_err)?;
    let mut banks = Vec::new();
    for sel in list.get_selections() {
        if sel.is_empty() {
            continue;
        }
        let id = tss_esapi::constants::AlgorithmIdentifier::from(sel.hashing_algorithm());
        let id = u16::from(id);
        let alg = HashAlg::from_tpm_alg_id(id).ok_or(OpenError::UnsupportedBank(id))?;
        if !sel.is_selected(slot) {
            return Err(OpenError::PcrUnavailable(pcr));
        }
        banks.push(alg);
    }
    banks.sort();
    if !banks.contains(&HashAlg::Sha256) {
        return Err(OpenError::PcrUnavailable(pcr));
    }
    Ok(banks)
}

fn persistent_handles(ctx: &mut Context) -> Result<Vec<u32>, tss_esapi::Error> {
    let (data, _) = ctx.get_capability(CapabilityType::Handles, 0x8100_0000, 256)?;
    Ok(match data {
        CapabilityData::Handles(list) => list.iter().map(|h| u32::from(*h)).collect(),
        _ => Vec::new(),
    })
}

/// The marshalled TPM2B_PUBLIC of a loaded object.
fn tpm2b_public(ctx: &mut Context, handle: KeyHandle) -> Result<Vec<u8>, tss_esapi::Error> {
    let (public, _, _) = ctx.read_public(handle)?;
    let tpmt = public.marshall()?;
    let mut out = (tpmt.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&tpmt);
    Ok(out)
}

fn persistent(handle: u32) -> Result<(TpmHandle, Persistent), tss_esapi::Error> {
    let p = PersistentTpmHandle::new(handle)?;
    Ok((TpmHandle::Persistent(p), Persistent::Persistent(p)))
}

/// Make sure an ECC P-256 EK lives at `handle`.
fn ensure_ek(ctx: &mut Context, handle: u32) -> Result<(), OpenError> {
    let tpm_err = |source| OpenError::Tpm {
        step: OpenStep::EndorsementKey,
        source,
    };
    let (tpm_handle, persistent_handle) = persistent(handle).map_err(tpm_err)?;
    if persistent_handles(ctx).map_err(tpm_err)?.contains(&handle) {
        let mut obj = ctx.tr_from_tpm_public(tpm_handle).map_err(tpm_err)?;
        let public = tpm2b_public(ctx, obj.into()).map_err(tpm_err)?;
        let _ = ctx.tr_close(&mut obj);
        let ok = wire::parse_tpm2b_public_ecc(&public).is_ok_and(|a| {
            a.attributes & (oa::RESTRICTED | TPMA_DECRYPT) == (oa::RESTRICTED | TPMA_DECRYPT)
        });
        return if ok {
            Ok(())
        } else {
            Err(OpenError::ForeignObject(handle))
        };
    }
    let transient =
        ek::create_ek_object(ctx, AsymmetricAlgorithm::Ecc, None::<DefaultKey>).map_err(tpm_err)?;
    let evicted = ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.evict_control(Provision::Owner, transient.into(), persistent_handle)
    });
    let flushed = ctx.flush_context(transient.into());
    let mut persisted = evicted.map_err(tpm_err)?;
    flushed.map_err(tpm_err)?;
    let _ = ctx.tr_close(&mut persisted);
    tracing::info!(
        attest.ek_handle = format_args!("{handle:#x}"),
        "created and persisted the endorsement key"
    );
    Ok(())
}

/// Make sure a restricted ECDSA-SHA256 P-256 AK under the EK lives at `ak_handle`; returns its
/// handle and TPM2B_PUBLIC.
fn ensure_ak(
    ctx: &mut Context,
    ek_handle: u32,
    ak_handle: u32,
) -> Result<(KeyHandle, Vec<u8>), OpenError> {
    let tpm_err = |source| OpenError::Tpm {
        step: OpenStep::AttestationKey,
        source,
    };
    let (ak_tpm, ak_persistent) = persistent(ak_handle).map_err(tpm_err)?;
    if persistent_handles(ctx)
        .map_err(tpm_err)?
        .contains(&ak_handle)
    {
        let obj = ctx.tr_from_tpm_public(ak_tpm).map_err(tpm_err)?;
        let key = KeyHandle::from(obj);
        let public = tpm2b_public(ctx, key).map_err(tpm_err)?;
        if !is_sakshi_ak(&public) {
            return Err(OpenError::ForeignObject(ak_handle));
        }
        return Ok((key, public));
    }
    let (ek_tpm, _) = persistent(ek_handle).map_err(tpm_err)?;
    let mut ek_obj = ctx.tr_from_tpm_public(ek_tpm).map_err(tpm_err)?;
    let ek_key = KeyHandle::from(ek_obj);
    let created = ak::create_ak(
        ctx,
        ek_key,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::EcDsa,
        None,
        NoDa,
    )
    .map_err(tpm_err)?;
    let transient =
        ak::load_ak(ctx, ek_key, None, created.out_private, created.out_public).map_err(tpm_err)?;
    let _ = ctx.tr_close(&mut ek_obj);
    let evicted = ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.evict_control(Provision::Owner, transient.into(), ak_persistent)
    });
    let flushed = ctx.flush_context(transient.into());
    let persisted: ObjectHandle = evicted.map_err(tpm_err)?;
    flushed.map_err(tpm_err)?;
    let key = KeyHandle::from(persisted);
    let public = tpm2b_public(ctx, key).map_err(tpm_err)?;
    if !is_sakshi_ak(&public) {
        return Err(OpenError::ForeignObject(ak_handle));
    }
    tracing::info!(
        attest.ak_handle = format_args!("{ak_handle:#x}"),
        "created and persisted the attestation key"
    );
    Ok((key, public))
}

/// AK template customisation: `noDA`. The AK has an empty auth value and quotes use a password
/// session, so dictionary-attack protection guards nothing, while a TPM in DA lockout (after
/// non-orderly restarts) would otherwise refuse every quote.
struct NoDa;

impl KeyCustomization for NoDa {
    fn attributes(&self, builder: ObjectAttributesBuilder) -> ObjectAttributesBuilder {
        builder.with_no_da(true)
    }
}

fn is_sakshi_ak(public: &[u8]) -> bool {
    let required = oa::FIXED_TPM
        | oa::FIXED_PARENT
        | oa::SENSITIVE_DATA_ORIGIN
        | oa::RESTRICTED
        | oa::SIGN_ENCRYPT;
    wire::parse_tpm2b_public_ecc(public).is_ok_and(|a| {
        a.attributes & required == required && a.scheme == Some((TPM_ALG_ECDSA, TPM_ALG_SHA256))
    })
}

fn ak_pem(public: &[u8]) -> Option<String> {
    let area = wire::parse_tpm2b_public_ecc(public).ok()?;
    let point = p256::EncodedPoint::from_affine_coordinates(&area.x.into(), &area.y.into(), false);
    let key = p256::PublicKey::from_sec1_bytes(point.as_bytes()).ok()?;
    key.to_public_key_pem(p256::pkcs8::LineEnding::LF).ok()
}

fn write_state_file(cfg: &TpmConfig, name: &str, bytes: &[u8]) -> Result<(), OpenError> {
    let path = cfg.state_dir.join(name);
    let tmp = cfg.state_dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| OpenError::StateDir { path, source })
}
