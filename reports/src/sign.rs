//! The manifest signature: a standard Sigstore bundle (v0.3 JSON) holding a `messageSignature`
//! over the exact bytes of `manifest.json`, with a public-key hint as verification material.
//!
//! ```json
//! {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
//!  "verificationMaterial": {"publicKey": {"hint": "<hex SHA-256 of the key's DER SPKI>"}},
//!  "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "<base64>"},
//!                       "signature": "<base64 DER ECDSA P-256 / SHA-256>"}}
//! ```
//!
//! The bundle is built with the `sigstore_protobuf_specs` types and signed with the audit
//! crate's [`ApplianceKey`] (the sigstore crate's ECDSA P-256 signer), so any Sigstore
//! verifier that accepts a bundle with a provided public key (e.g. sigstore-js
//! `@sigstore/verify` with no transparency-log threshold, cosign `verify-blob --key
//! --insecure-ignore-tlog`) checks it.

use sakshi_audit::{ApplianceKey, AppliancePublicKey, SignError};
use sha2::{Digest, Sha256};
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{
    Bundle, VerificationMaterial, bundle, verification_material,
};
use sigstore_protobuf_specs::dev::sigstore::common::v1::{
    HashAlgorithm, HashOutput, MessageSignature, PublicKeyIdentifier,
};

/// Media type of the bundles Sakshi writes.
pub const SIGSTORE_BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Largest Sigstore bundle accepted, in bytes.
pub const MAX_SIGSTORE_BUNDLE_BYTES: usize = 1 << 20;

/// Why a manifest signature does not check out.
#[derive(Debug, thiserror::Error)]
pub enum SignatureCheckError {
    /// Larger than [`MAX_SIGSTORE_BUNDLE_BYTES`].
    #[error("the Sigstore bundle is larger than {MAX_SIGSTORE_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// Not a Sigstore bundle document.
    #[error("the signature file is not a Sigstore bundle")]
    Parse(#[source] serde_json::Error),
    /// Another media type.
    #[error("the Sigstore bundle has media type {0:?}, expected {SIGSTORE_BUNDLE_MEDIA_TYPE}")]
    MediaType(String),
    /// Verification material is not a public-key hint.
    #[error("the Sigstore bundle's verification material is not a public key hint")]
    NotPublicKey,
    /// The hint names another key.
    #[error("the Sigstore bundle names key {found}, not the given key {expected}")]
    OtherKey {
        /// The hint found.
        found: String,
        /// The given key's fingerprint.
        expected: String,
    },
    /// The content is not a message signature.
    #[error("the Sigstore bundle does not hold a message signature")]
    NotMessageSignature,
    /// The digest is missing or not SHA2_256.
    #[error("the Sigstore bundle's message digest is not SHA2_256")]
    DigestAlgorithm,
    /// The digest does not match the manifest.
    #[error("the manifest's SHA-256 is {actual}, but the signature covers {signed}")]
    DigestMismatch {
        /// Hex of the manifest's digest.
        actual: String,
        /// Hex of the signed digest.
        signed: String,
    },
    /// The signature is wrong.
    #[error("the manifest signature does not verify under the given key")]
    Signature(#[source] sakshi_audit::SignatureError),
}

/// Sign `message` (the manifest bytes) into a Sigstore bundle JSON document.
pub fn sign_message(key: &ApplianceKey, message: &[u8]) -> Result<String, SignError> {
    let signature = key.sign(message)?;
    let b = Bundle {
        media_type: SIGSTORE_BUNDLE_MEDIA_TYPE.to_owned(),
        verification_material: Some(VerificationMaterial {
            tlog_entries: Vec::new(),
            timestamp_verification_data: None,
            content: Some(verification_material::Content::PublicKey(
                PublicKeyIdentifier {
                    hint: key.public_key().fingerprint(),
                },
            )),
        }),
        content: Some(bundle::Content::MessageSignature(MessageSignature {
            message_digest: Some(HashOutput {
                algorithm: HashAlgorithm::Sha2256 as i32,
                digest: Sha256::digest(message).to_vec(),
            }),
            signature,
        })),
    };
    // Serialising a prost message through prost-reflect cannot fail for these fields.
    let mut json = serde_json::to_string_pretty(&b).unwrap_or_default();
    json.push('\n');
    Ok(json)
}

/// Check a Sigstore bundle over `message` with the trusted `key`.
pub fn verify_message(
    bundle_json: &[u8],
    message: &[u8],
    key: &AppliancePublicKey,
) -> Result<(), SignatureCheckError> {
    if bundle_json.len() > MAX_SIGSTORE_BUNDLE_BYTES {
        return Err(SignatureCheckError::TooLarge);
    }
    let b: Bundle = serde_json::from_slice(bundle_json).map_err(SignatureCheckError::Parse)?;
    if b.media_type != SIGSTORE_BUNDLE_MEDIA_TYPE {
        return Err(SignatureCheckError::MediaType(
            b.media_type.chars().take(80).collect(),
        ));
    }
    let hint = match b.verification_material.and_then(|m| m.content) {
        Some(verification_material::Content::PublicKey(p)) => p.hint,
        _ => return Err(SignatureCheckError::NotPublicKey),
    };
    if !hint.is_empty() && hint != key.fingerprint() {
        return Err(SignatureCheckError::OtherKey {
            found: hint.chars().take(80).collect(),
            expected: key.fingerprint(),
        });
    }
    let Some(bundle::Content::MessageSignature(sig)) = b.content else {
        return Err(SignatureCheckError::NotMessageSignature);
    };
    let digest = sig
        .message_digest
        .ok_or(SignatureCheckError::DigestAlgorithm)?;
    if digest.algorithm != HashAlgorithm::Sha2256 as i32 {
        return Err(SignatureCheckError::DigestAlgorithm);
    }
    let actual = Sha256::digest(message);
    if digest.digest != actual.as_slice() {
        return Err(SignatureCheckError::DigestMismatch {
            actual: hex::encode(actual),
            signed: hex::encode(&digest.digest),
        });
    }
    key.verify(message, &sig.signature)
        .map_err(SignatureCheckError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_reject_changes() {
        let key = ApplianceKey::generate().unwrap();
        let msg = br#"{"format":"sakshi-evidence/v1"}"#;
        let json = sign_message(&key, msg).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["mediaType"], SIGSTORE_BUNDLE_MEDIA_TYPE);
        assert_eq!(
            v["messageSignature"]["messageDigest"]["algorithm"],
            "SHA2_256"
        );
        assert_eq!(
            v["verificationMaterial"]["publicKey"]["hint"],
            key.public_key().fingerprint()
        );
        verify_message(json.as_bytes(), msg, key.public_key()).unwrap();

        // Another message.
        let err = verify_message(json.as_bytes(), b"{}", key.public_key()).unwrap_err();
        assert!(matches!(err, SignatureCheckError::DigestMismatch { .. }));
        // Another key.
        let other = ApplianceKey::generate().unwrap();
        assert!(matches!(
            verify_message(json.as_bytes(), msg, other.public_key()),
            Err(SignatureCheckError::OtherKey { .. })
        ));
        // Hint removed: the signature itself must still fail under another key.
        let mut no_hint = v.clone();
        no_hint["verificationMaterial"]["publicKey"]["hint"] = "".into();
        let no_hint = serde_json::to_vec(&no_hint).unwrap();
        assert!(matches!(
            verify_message(&no_hint, msg, other.public_key()),
            Err(SignatureCheckError::Signature(_))
        ));
        // A flipped signature byte.
        let mut bad = v.clone();
        let sig = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            v["messageSignature"]["signature"].as_str().unwrap(),
        )
        .unwrap();
        let mut sig = sig;
        let last = sig.len() - 3;
        sig[last] ^= 1;
        bad["messageSignature"]["signature"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &sig).into();
        assert!(matches!(
            verify_message(&serde_json::to_vec(&bad).unwrap(), msg, key.public_key()),
            Err(SignatureCheckError::Signature(_))
        ));
        // Wrong media type.
        let mut mt = v.clone();
        mt["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
        assert!(matches!(
            verify_message(&serde_json::to_vec(&mt).unwrap(), msg, key.public_key()),
            Err(SignatureCheckError::MediaType(_))
        ));
        assert!(matches!(
            verify_message(b"[]", msg, key.public_key()),
            Err(SignatureCheckError::Parse(_))
        ));
    }
}
