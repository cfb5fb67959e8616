//! Known-answer vectors for unit tests.
//!
//! Produced on the development machine (swtpm 0.7.1, tpm2-tools 5.4) with:
//! `tpm2_createek -G ecc`, `tpm2_createak -G ecc -g sha256 -s ecdsa -f pem`,
//! `tpm2_pcrextend 16:sha256=00..01`, `tpm2_quote -l sha256:16 -q abcd -g sha256`,
//! `tpm2_readpublic -f tss`; `tpm2_checkquote` accepted them.

/// `quote.msg` (TPMS_ATTEST).
pub const QUOTE_MSG: &str = "ff54434780180022000b80816a6a45cc412ee0152f32af301f84446131bf4dc72dd041097fee9c9ab0c00002abcd0000000000000c62000000010000000001201910230016363600000001000b03000001002002dfa311a6e1e44e445ce44fee4a3a38df03885bf1cd166ab0701373762dca8b";
/// `quote.sig` (TPMT_SIGNATURE).
pub const QUOTE_SIG: &str = "0018000b00208b159c8ef90e0c3f7cfc043ad8798aea67aff2572a958327c892a5a46b7d3bf000201131223b3b427e93865e326e50b8c5c09125e1603a60a7c9dcafb582b1118aa0";
/// The nonce (`-q abcd`).
pub const NONCE: &str = "abcd";
/// PCR 16 (sha256) after one extend with `00..01`.
pub const PCR16: &str = "90f4b39548df55ad6187a1d20d731ecee78c545b94afd16f42ef7592d99cd365";
/// The AK public key (`tpm2_createak -f pem`).
pub const AK_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjNiich4PAIWP2PVefLJ56ddirQyU
UGMpZrNFIkYjfzUjky2jRfxGrmdLUAs+CUHrYHldkFA4yau0BuDRqTdonw==
-----END PUBLIC KEY-----
";
/// The AK public area (`tpm2_readpublic -f tss`, a TPM2B_PUBLIC).
pub const AK_TSS_PUB: &str = "00580023000b00050072000000100018000b0003001000208cd8a2721e0f00858fd8f55e7cb279e9d762ad0c9450632966b3452246237f35002023932da345fc46ae674b500b3e0941eb60795d905038c9abb406e0d1a937689f";
/// The AK name (`tpm2_createak -n`).
pub const AK_NAME: &str = "000ba1ecab8566afa33da4a0c95b7ca9a103b37c4c6595176b762a8348c8702ce62a";
