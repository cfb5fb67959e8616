//! Big-endian TPM 2.0 wire structures the verifier needs (TPM 2.0 Library, Part 2), parsed
//! without libtss2: `TPMS_ATTEST` of a quote, `TPMT_SIGNATURE` (ECDSA), `TPM2B_PUBLIC` (ECC),
//! and the tpm2-tools "serialized" PCR file written by `tpm2_quote -o`.

use crate::digest::HashAlg;
use crate::quote::PcrValues;

/// `TPM_GENERATED_VALUE`: the magic a TPM puts at the start of everything it signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// Why TPM wire bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends inside a field.
    #[error("{what} truncated at byte {offset}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where the missing bytes start.
        offset: usize,
    },
    /// Bytes follow the structure.
    #[error("{what}: {extra} trailing bytes")]
    TrailingBytes {
        /// The structure.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// `magic` is not `TPM_GENERATED_VALUE`.
    #[error("attestation magic {0:#010x} is not TPM_GENERATED")]
    NotTpmGenerated(u32),
    /// The attestation is not a quote.
    #[error("attestation type {0:#06x} is not TPM_ST_ATTEST_QUOTE")]
    NotAQuote(u16),
    /// The signature algorithm is not ECDSA.
    #[error("signature algorithm {0:#06x} is not ECDSA")]
    UnsupportedSignature(u16),
    /// A hash algorithm Sakshi does not support.
    #[error("unsupported hash algorithm {0:#06x}")]
    UnsupportedHash(u16),
    /// The public area is not an ECC NIST P-256 key.
    #[error("public area is not an ECC NIST P-256 key")]
    UnsupportedKey,
    /// A field value is out of range (e.g. a PCR select size above 4, a scalar above 32 bytes).
    #[error("{what}: field out of range")]
    BadValue {
        /// The field.
        what: &'static str,
    },
}

pub(crate) struct Reader<'a> {
    what: &'static str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, b: &'a [u8]) -> Self {
        Self { what, b, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        match self.pos.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(WireError::Truncated {
                what: self.what,
                offset: self.pos,
            }),
        }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    /// A TPM2B: u16 size, then that many bytes.
    pub(crate) fn tpm2b(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        match self.b.len() - self.pos {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (since its clock was last set).
    pub clock: u64,
    /// TPM resets (e.g. host reboots) so far.
    pub reset_count: u32,
    /// TPM restarts (resume from suspend) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is guaranteed not to have gone backwards.
    pub safe: bool,
}

/// A PCR selection of one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub alg: HashAlg,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

/// A parsed quote (`TPMS_ATTEST` with `TPMS_QUOTE_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// `qualifiedSigner` (a TPM2B_NAME).
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's nonce.
    pub extra_data: Vec<u8>,
    /// Clock and reset counters.
    pub clock: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// The PCRs quoted.
    pub selection: Vec<PcrSelection>,
    /// Digest of the concatenated selected PCR values.
    pub pcr_digest: Vec<u8>,
}

fn read_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, WireError> {
    let count = r.u32()?;
    if count > 16 {
        return Err(WireError::BadValue {
            what: "TPML_PCR_SELECTION.count",
        });
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let alg_id = r.u16()?;
        let alg = HashAlg::from_tpm_alg_id(alg_id).ok_or(WireError::UnsupportedHash(alg_id))?;
        let size = r.u8()? as usize;
        if size > 4 {
            return Err(WireError::BadValue {
                what: "TPMS_PCR_SELECTION.sizeofSelect",
            });
        }
        let bits = r.take(size)?;
        let pcrs = (0..size * 8)
            .filter(|i| bits[i / 8] & (1 << (i % 8)) != 0)
            .map(|i| i as u32)
            .collect();
        out.push(PcrSelection { alg, pcrs });
    }
    Ok(out)
}

/// Parse a marshalled `TPMS_ATTEST` that must be a quote.
pub fn parse_quote_attest(bytes: &[u8]) -> Result<QuoteInfo, WireError> {
    let mut r = Reader::new("TPMS_ATTEST", bytes);
    let magic = r.u32()?;
    if magic != TPM_GENERATED_VALUE {
        return Err(WireError::NotTpmGenerated(magic));
    }
    let ty = r.u16()?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(WireError::NotAQuote(ty));
    }
    let qualified_signer = r.tpm2b()?.to_vec();
    let extra_data = r.tpm2b()?.to_vec();
    let clock = ClockInfo {
        clock: r.u64()?,
        reset_count: r.u32()?,
        restart_count: r.u32()?,
        safe: r.u8()? != 0,
    };
    let firmware_version = r.u64()?;
    let selection = read_selection(&mut r)?;
    let pcr_digest = r.tpm2b()?.to_vec();
    r.finish()?;
    Ok(QuoteInfo {
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        selection,
        pcr_digest,
    })
}

/// A parsed ECDSA `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// The hash the TPM signed with.
    pub hash: HashAlg,
    /// `r`, left-padded to 32 bytes.
    pub r: [u8; 32],
    /// `s`, left-padded to 32 bytes.
    pub s: [u8; 32],
}

fn scalar(b: &[u8]) -> Result<[u8; 32], WireError> {
    // Leading zero bytes may be present or stripped.
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let b = &b[first..];
    if b.len() > 32 {
        return Err(WireError::BadValue {
            what: "ECDSA scalar",
        });
    }
    let mut out = [0u8; 32];
    out[32 - b.len()..].copy_from_slice(b);
    Ok(out)
}

/// Parse a marshalled `TPMT_SIGNATURE` (only ECDSA is supported).
pub fn parse_signature(bytes: &[u8]) -> Result<EcdsaSignature, WireError> {
    let mut rd = Reader::new("TPMT_SIGNATURE", bytes);
    let sig_alg = rd.u16()?;
    if sig_alg != TPM_ALG_ECDSA {
        return Err(WireError::UnsupportedSignature(sig_alg));
    }
    let hash_id = rd.u16()?;
    let hash = HashAlg::from_tpm_alg_id(hash_id).ok_or(WireError::UnsupportedHash(hash_id))?;
    let r = scalar(rd.tpm2b()?)?;
    let s = scalar(rd.tpm2b()?)?;
    rd.finish()?;
    Ok(EcdsaSignature { hash, r, s })
}

/// Marshal an ECDSA `TPMT_SIGNATURE` (tests build forged signatures with it).
#[cfg(test)]
pub(crate) fn marshal_signature(sig: &EcdsaSignature) -> Vec<u8> {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&TPM_ALG_ECDSA.to_be_bytes());
    out.extend_from_slice(&sig.hash.tpm_alg_id().to_be_bytes());
    for part in [&sig.r, &sig.s] {
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// `TPMA_OBJECT` bits the verifier checks on the attestation key.
pub mod object_attributes {
    /// The key cannot leave this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The key's parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the private key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// The key signs only TPM-generated structures (or digests the TPM computed itself).
    pub const RESTRICTED: u32 = 1 << 16;
    /// The key can sign.
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// A parsed ECC `TPMT_PUBLIC` (from a `TPM2B_PUBLIC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublicArea {
    /// `nameAlg`.
    pub name_alg: HashAlg,
    /// `objectAttributes` (TPMA_OBJECT).
    pub attributes: u32,
    /// The signing scheme and its hash (`None` when the scheme is TPM_ALG_NULL).
    pub scheme: Option<(u16, u16)>,
    /// Uncompressed point `x`.
    pub x: [u8; 32],
    /// Uncompressed point `y`.
    pub y: [u8; 32],
    /// The marshalled `TPMT_PUBLIC` (what the object's name hashes).
    pub tpmt_public: Vec<u8>,
}

impl EccPublicArea {
    /// The TPM object name: `nameAlg || H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        n.extend_from_slice(&self.name_alg.digest(&self.tpmt_public));
        n
    }
}

/// Parse a `TPM2B_PUBLIC` holding an ECC NIST P-256 key (the tpm2-tools "tss" public format).
pub fn parse_tpm2b_public_ecc(bytes: &[u8]) -> Result<EccPublicArea, WireError> {
    let mut outer = Reader::new("TPM2B_PUBLIC", bytes);
    let tpmt = outer.tpm2b()?;
    outer.finish()?;
    let mut r = Reader::new("TPMT_PUBLIC", tpmt);
    if r.u16()? != TPM_ALG_ECC {
        return Err(WireError::UnsupportedKey);
    }
    let name_alg_id = r.u16()?;
    let name_alg =
        HashAlg::from_tpm_alg_id(name_alg_id).ok_or(WireError::UnsupportedHash(name_alg_id))?;
    let attributes = r.u32()?;
    let _auth_policy = r.tpm2b()?;
    // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
        r.u16()?;
    }
    // TPMT_ECC_SCHEME: scheme, then its hash unless NULL.
    let scheme_alg = r.u16()?;
    let scheme = if scheme_alg != TPM_ALG_NULL {
        Some((scheme_alg, r.u16()?))
    } else {
        None
    };
    if r.u16()? != TPM_ECC_NIST_P256 {
        return Err(WireError::UnsupportedKey);
    }
    // TPMT_KDF_SCHEME.
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
    }
    let x = scalar(r.tpm2b()?)?;
    let y = scalar(r.tpm2b()?)?;
    r.finish()?;
    Ok(EccPublicArea {
        name_alg,
        attributes,
        scheme,
        x,
        y,
        tpmt_public: tpmt.to_vec(),
    })
}

// --- tpm2-tools serialized PCR file (tpm2_quote -o, tpm2_checkquote -f) ---
//
// The tools write host C structs (x86-64 layout, little-endian): a TPML_PCR_SELECTION
// (u32 count, then 16 TPMS_PCR_SELECTION of {u16 hash, u8 sizeofSelect, u8 pcrSelect[4],
// 1 byte padding}), a u32 count of TPML_DIGEST structs, then that many TPML_DIGEST
// ({u32 count, 8 x TPM2B_DIGEST {u16 size, u8 buffer[64]}}). Each TPML_DIGEST holds up to
// eight PCR values, in selection order.

const SEL_ENTRY: usize = 8;
const SEL_LEN: usize = 4 + 16 * SEL_ENTRY;
const TPM2B_DIGEST_LEN: usize = 2 + 64;
const TPML_DIGEST_LEN: usize = 4 + 8 * TPM2B_DIGEST_LEN;

/// Encode one bank's PCR values in the tpm2-tools serialized PCR file format.
pub fn encode_tpm2_tools_pcrs(alg: HashAlg, values: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; SEL_LEN];
    out[..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..6].copy_from_slice(&alg.tpm_alg_id().to_le_bytes());
    out[6] = 3;
    for (pcr, _) in values {
        out[7 + (*pcr as usize / 8)] |= 1 << (pcr % 8);
    }
    let chunks: Vec<&[(u32, Vec<u8>)]> = values.chunks(8).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        let mut list = vec![0u8; TPML_DIGEST_LEN];
        list[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        for (i, (_, v)) in chunk.iter().enumerate() {
            let at = 4 + i * TPM2B_DIGEST_LEN;
            list[at..at + 2].copy_from_slice(&(v.len() as u16).to_le_bytes());
            list[at + 2..at + 2 + v.len()].copy_from_slice(v);
        }
        out.extend_from_slice(&list);
    }
    out
}

/// Decode a tpm2-tools serialized PCR file with a single-bank selection.
pub fn decode_tpm2_tools_pcrs(bytes: &[u8]) -> Result<PcrValues, WireError> {
    const WHAT: &str = "tpm2-tools PCR file";
    let trunc = |offset| WireError::Truncated { what: WHAT, offset };
    if bytes.len() < SEL_LEN + 4 {
        return Err(trunc(bytes.len()));
    }
    let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if le32(0) != 1 {
        return Err(WireError::BadValue {
            what: "PCR file: selection count (only one bank is supported)",
        });
    }
    let alg_id = le16(4);
    let alg = HashAlg::from_tpm_alg_id(alg_id).ok_or(WireError::UnsupportedHash(alg_id))?;
    let size = bytes[6] as usize;
    if size > 4 {
        return Err(WireError::BadValue {
            what: "PCR file: sizeofSelect",
        });
    }
    let pcrs: Vec<u32> = (0..size * 8)
        .filter(|i| bytes[7 + i / 8] & (1 << (i % 8)) != 0)
        .map(|i| i as u32)
        .collect();
    let lists = le32(SEL_LEN) as usize;
    if lists != pcrs.len().div_ceil(8) {
        return Err(WireError::BadValue {
            what: "PCR file: digest list count",
        });
    }
    let expected = SEL_LEN + 4 + lists * TPML_DIGEST_LEN;
    if bytes.len() < expected {
        return Err(trunc(bytes.len()));
    }
    if bytes.len() > expected {
        return Err(WireError::TrailingBytes {
            what: WHAT,
            extra: bytes.len() - expected,
        });
    }
    let mut values = Vec::with_capacity(pcrs.len());
    for (li, chunk) in pcrs.chunks(8).enumerate() {
        let base = SEL_LEN + 4 + li * TPML_DIGEST_LEN;
        if le32(base) as usize != chunk.len() {
            return Err(WireError::BadValue {
                what: "PCR file: digest count",
            });
        }
        for (i, pcr) in chunk.iter().enumerate() {
            let at = base + 4 + i * TPM2B_DIGEST_LEN;
            if le16(at) as usize != alg.digest_len() {
                return Err(WireError::BadValue {
                    what: "PCR file: digest size",
                });
            }
            values.push((*pcr, bytes[at + 2..at + 2 + alg.digest_len()].to_vec()));
        }
    }
    Ok(PcrValues { alg, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTE_MSG: &str = crate::testdata::QUOTE_MSG;

    fn quote_msg() -> Vec<u8> {
        hex::decode(QUOTE_MSG).unwrap()
    }

    #[test]
    fn parses_a_real_tpm2_quote_message() {
        let q = parse_quote_attest(&quote_msg()).unwrap();
        assert_eq!(q.extra_data, vec![0xab, 0xcd]);
        assert_eq!(q.clock.reset_count, 1);
        assert_eq!(
            q.selection,
            vec![PcrSelection {
                alg: HashAlg::Sha256,
                pcrs: vec![16]
            }]
        );
        assert_eq!(q.pcr_digest.len(), 32);
        assert_eq!(q.qualified_signer.len(), 34);
    }

    #[test]
    fn attest_errors_are_typed() {
        let msg = quote_msg();
        for cut in [0, 3, 5, 20, msg.len() - 1] {
            assert!(
                matches!(
                    parse_quote_attest(&msg[..cut]),
                    Err(WireError::Truncated { .. })
                ),
                "cut {cut}"
            );
        }
        let mut bad = msg.clone();
        bad[0] = 0;
        assert_eq!(
            parse_quote_attest(&bad),
            Err(WireError::NotTpmGenerated(0x0054_4347))
        );
        let mut cert = msg.clone();
        cert[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        assert_eq!(parse_quote_attest(&cert), Err(WireError::NotAQuote(0x8017)));
        let mut long = msg.clone();
        long.push(0);
        assert!(matches!(
            parse_quote_attest(&long),
            Err(WireError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn signature_round_trips_and_rejects_rsa() {
        let sig = EcdsaSignature {
            hash: HashAlg::Sha256,
            r: [1; 32],
            s: [2; 32],
        };
        let bytes = marshal_signature(&sig);
        assert_eq!(bytes.len(), 72);
        assert_eq!(parse_signature(&bytes).unwrap(), sig);
        let mut rsa = bytes.clone();
        rsa[1] = 0x14;
        assert_eq!(
            parse_signature(&rsa),
            Err(WireError::UnsupportedSignature(0x0014))
        );
        assert!(matches!(
            parse_signature(&bytes[..40]),
            Err(WireError::Truncated { .. })
        ));
        // A stripped leading zero is accepted and padded.
        let mut short = vec![0x00, 0x18, 0x00, 0x0b, 0x00, 0x01, 0x07, 0x00, 0x01, 0x09];
        assert_eq!(parse_signature(&short).unwrap().r[31], 7);
        short.extend_from_slice(&[0; 2]);
        assert!(parse_signature(&short).is_err());
    }

    #[test]
    fn pcr_file_matches_tpm2_tools_layout() {
        let v = vec![0x90u8; 32];
        let bytes = encode_tpm2_tools_pcrs(HashAlg::Sha256, &[(16, v.clone())]);
        // 668 bytes, as `tpm2_quote -o` writes for one sha256 PCR on x86-64.
        assert_eq!(bytes.len(), 668);
        assert_eq!(&bytes[..11], &[1, 0, 0, 0, 0x0b, 0, 3, 0, 0, 1, 0]);
        assert_eq!(&bytes[132..142], &[1, 0, 0, 0, 1, 0, 0, 0, 0x20, 0]);
        assert_eq!(
            decode_tpm2_tools_pcrs(&bytes).unwrap(),
            PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(16, v)]
            }
        );
        assert!(decode_tpm2_tools_pcrs(&bytes[..600]).is_err());
        let many: Vec<(u32, Vec<u8>)> = (0..10).map(|i| (i, vec![i as u8; 32])).collect();
        let bytes = encode_tpm2_tools_pcrs(HashAlg::Sha256, &many);
        assert_eq!(decode_tpm2_tools_pcrs(&bytes).unwrap().values, many);
    }
}
