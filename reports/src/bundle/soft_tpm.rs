//! Unit-test stand-in for the TPM: builds genuinely signed quotes in the TPM wire formats
//! (TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC) with a P-256 key held in memory, so the
//! bundle tests exercise the real `sakshi_attest::verify_quote`. Integration tests use swtpm.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use sakshi_attest::{
    BootComponent, EventLog, HashAlg, MeasuredEvent, PcrValues, Policy, Quote, Sha256Digest,
    TpmKind,
};
use sha2::{Digest, Sha256};

use super::export::QuoteSource;
use super::source::SourceError;

pub(crate) const PCR: u32 = 15;

pub(crate) struct SoftTpm {
    key: SigningKey,
    pub(crate) log: EventLog,
    pub(crate) kernel: Sha256Digest,
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

impl SoftTpm {
    /// A TPM whose log holds one measured boot of `vm-1`.
    pub(crate) fn new() -> Self {
        let key = SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
        let kernel = Sha256Digest::of(b"test kernel");
        let mut log = EventLog::new();
        let banks = [HashAlg::Sha256];
        for (component, sha256) in [
            (BootComponent::Kernel, kernel),
            (BootComponent::Cmdline, Sha256Digest::of(b"console=ttyS0")),
            (BootComponent::Config, Sha256Digest::of(b"{}")),
        ] {
            log.append(
                PCR,
                &banks,
                &MeasuredEvent::Boot {
                    component,
                    vm_id: "vm-1".into(),
                    boot: 0,
                    sha256,
                },
            );
        }
        SoftTpm { key, log, kernel }
    }

    /// Golden values that approve the measured kernel.
    pub(crate) fn golden(&self) -> Policy {
        let mut p = Policy::default();
        p.approve(BootComponent::Kernel, self.kernel, "test kernel");
        p
    }

    fn tpmt_public(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut t = Vec::new();
        t.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
        t.extend_from_slice(&0x000bu16.to_be_bytes()); // nameAlg sha256
        let attrs: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 16) | (1 << 18);
        t.extend_from_slice(&attrs.to_be_bytes());
        tpm2b(&mut t, &[]); // authPolicy
        t.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric NULL
        t.extend_from_slice(&0x0018u16.to_be_bytes()); // scheme ECDSA
        t.extend_from_slice(&0x000bu16.to_be_bytes()); // sha256
        t.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
        t.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
        tpm2b(&mut t, point.x().unwrap());
        tpm2b(&mut t, point.y().unwrap());
        t
    }

    pub(crate) fn make_quote(&self, nonce: &[u8]) -> Quote {
        let tpmt = self.tpmt_public();
        let mut ak_public = Vec::new();
        tpm2b(&mut ak_public, &tpmt);
        let mut name = 0x000bu16.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&tpmt));
        let pcr_value = self.log.replay(PCR, HashAlg::Sha256).unwrap();

        let mut attest = Vec::new();
        attest.extend_from_slice(&0xff54_4347u32.to_be_bytes());
        attest.extend_from_slice(&0x8018u16.to_be_bytes());
        tpm2b(&mut attest, &name);
        tpm2b(&mut attest, nonce);
        attest.extend_from_slice(&123_456u64.to_be_bytes()); // clock
        attest.extend_from_slice(&1u32.to_be_bytes()); // resets
        attest.extend_from_slice(&0u32.to_be_bytes()); // restarts
        attest.push(1); // safe
        attest.extend_from_slice(&0x2023_0000u64.to_be_bytes()); // firmware
        attest.extend_from_slice(&1u32.to_be_bytes()); // one selection
        attest.extend_from_slice(&0x000bu16.to_be_bytes());
        let mut bits = [0u8; 3];
        bits[(PCR / 8) as usize] |= 1 << (PCR % 8);
        attest.push(3);
        attest.extend_from_slice(&bits);
        tpm2b(&mut attest, &Sha256::digest(&pcr_value));

        let sig: Signature = self.key.sign(&attest);
        let (r, s) = sig.split_bytes();
        let mut signature = Vec::new();
        signature.extend_from_slice(&0x0018u16.to_be_bytes());
        signature.extend_from_slice(&0x000bu16.to_be_bytes());
        tpm2b(&mut signature, &r);
        tpm2b(&mut signature, &s);

        Quote {
            attest,
            signature,
            pcrs: PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(PCR, pcr_value)],
            },
            event_log: self.log.clone(),
            ak_public_pem: self
                .key
                .verifying_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap(),
            ak_public,
            tpm_kind: TpmKind::Software,
            nonce: nonce.to_vec(),
        }
    }
}

impl QuoteSource for SoftTpm {
    fn quote(&self, nonce: &[u8]) -> Result<Quote, SourceError> {
        Ok(self.make_quote(nonce))
    }
}
