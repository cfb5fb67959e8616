//! Turns the JSON of `POST /api/v1/attestations` back into a [`sakshi_attest::Quote`].

use sakshi_attest::{EventLog, HashAlg, PcrValues, Quote, TpmKind};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `format` of the quote object (`sakshi_attest` writes it; it does not export the name).
const QUOTE_FORMAT: &str = "sakshi-quote-v1";

/// The fields of the API's quote object that the quote files need.
#[derive(Deserialize)]
struct QuoteBody {
    format: String,
    tpm_kind: TpmKind,
    nonce: String,
    tpms_attest: String,
    tpmt_signature: String,
    pcr_bank: HashAlg,
    pcrs: BTreeMap<u32, String>,
    ak_public_pem: String,
    ak_public: String,
    event_log: serde_json::Value,
}

/// Why the API's answer is not a usable quote.
#[derive(Debug, thiserror::Error)]
pub enum DecodeQuoteError {
    /// The JSON does not have the quote's shape.
    #[error("the answer is not a quote object")]
    Shape(#[source] serde_json::Error),
    /// Another format than this CLI understands.
    #[error("quote format {found:?}, expected {expected:?}")]
    Format {
        /// What the appliance sent.
        found: String,
        /// What this build understands.
        expected: &'static str,
    },
    /// A binary field is not hex.
    #[error("field {0} is not hex")]
    Hex(&'static str),
    /// The event log is not valid CEL-JSON.
    #[error("the event log is malformed")]
    EventLog(#[source] sakshi_attest::CelParseError),
}

fn unhex(field: &'static str, v: &str) -> Result<Vec<u8>, DecodeQuoteError> {
    hex::decode(v).map_err(|_| DecodeQuoteError::Hex(field))
}

/// Decodes the quote object the API returns.
pub fn decode_quote(v: &serde_json::Value) -> Result<Quote, DecodeQuoteError> {
    let b = QuoteBody::deserialize(v).map_err(DecodeQuoteError::Shape)?;
    if b.format != QUOTE_FORMAT {
        return Err(DecodeQuoteError::Format {
            found: b.format,
            expected: QUOTE_FORMAT,
        });
    }
    let values = b
        .pcrs
        .iter()
        .map(|(p, h)| Ok((*p, unhex("pcrs", h)?)))
        .collect::<Result<Vec<_>, DecodeQuoteError>>()?;
    let cel = serde_json::to_vec(&b.event_log).map_err(DecodeQuoteError::Shape)?;
    Ok(Quote {
        attest: unhex("tpms_attest", &b.tpms_attest)?,
        signature: unhex("tpmt_signature", &b.tpmt_signature)?,
        pcrs: PcrValues {
            alg: b.pcr_bank,
            values,
        },
        event_log: EventLog::from_cel_json(&cel).map_err(DecodeQuoteError::EventLog)?,
        ak_public_pem: b.ak_public_pem,
        ak_public: unhex("ak_public", &b.ak_public)?,
        tpm_kind: b.tpm_kind,
        nonce: unhex("nonce", &b.nonce)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sakshi_attest::{BootComponent, MeasuredEvent, Sha256Digest};

    fn sample() -> Quote {
        let mut log = EventLog::new();
        let ev = MeasuredEvent::Boot {
            component: BootComponent::Kernel,
            vm_id: "vm-1".to_owned(),
            boot: 0,
            sha256: Sha256Digest([7u8; 32]),
        };
        log.append(23, &[HashAlg::Sha256], &ev);
        Quote {
            attest: vec![0xff, 0x54, 0x43, 0x47, 1, 2, 3],
            signature: vec![0, 0x18, 9, 9],
            pcrs: PcrValues {
                alg: HashAlg::Sha256,
                values: vec![(23, vec![0xab; 32])],
            },
            event_log: log,
            ak_public_pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
                .to_owned(),
            ak_public: vec![0, 1, 2],
            tpm_kind: TpmKind::Software,
            nonce: vec![0xde, 0xad],
        }
    }

    #[test]
    fn the_api_json_of_a_quote_decodes_to_the_same_quote() {
        let q = sample();
        let v = serde_json::to_value(&q).unwrap();
        assert_eq!(decode_quote(&v).unwrap(), q);
    }

    #[test]
    fn bad_hex_and_other_formats_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["tpmt_signature"] = "zz".into();
        assert!(matches!(
            decode_quote(&v),
            Err(DecodeQuoteError::Hex("tpmt_signature"))
        ));
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format"] = "other-v9".into();
        assert!(matches!(
            decode_quote(&v),
            Err(DecodeQuoteError::Format { .. })
        ));
        assert!(matches!(
            decode_quote(&serde_json::json!({"nonce": "00"})),
            Err(DecodeQuoteError::Shape(_))
        ));
    }
}
