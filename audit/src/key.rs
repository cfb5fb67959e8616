//! The appliance signing key: ECDSA P-256 / SHA-256 through the sigstore crate's key handling.
//!
//! At rest the private key is an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (scrypt + NaCl secretbox,
//! the cosign format). Verifiers need only the PEM public key ([`AppliancePublicKey`]).
//! The same key signs audit checkpoints and, in `sakshi-reports`, evidence-bundle manifests.

use std::fmt;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::{SigStoreKeyPair, SigStoreSigner};
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};
use sigstore::errors::SigstoreError;

/// PEM label of an encrypted key as sigstore writes it.
const ENCRYPTED_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// Errors creating, loading or saving the appliance key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Generating a key pair failed.
    #[error("generating an ECDSA P-256 key failed")]
    Generate(#[source] SigstoreError),
    /// The password is empty; keys are never stored unencrypted.
    #[error("an empty password would store the key unencrypted")]
    EmptyPassword,
    /// The PEM is not an encrypted sigstore/cosign private key.
    #[error("the private key file is not an encrypted sigstore private key PEM")]
    NotEncrypted,
    /// Decrypting or parsing the private key failed (wrong password, corrupt file).
    #[error("decrypting or parsing the private key failed (wrong password or corrupt file)")]
    Decrypt(#[source] SigstoreError),
    /// The key is not ECDSA P-256.
    #[error("the key is {found}, but the appliance key must be ECDSA P-256")]
    WrongAlgorithm {
        /// What was found.
        found: String,
    },
    /// Exporting the key failed.
    #[error("exporting the key failed")]
    Export(#[source] SigstoreError),
    /// Reading or writing the key file failed.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Errors parsing a public key.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    /// Not a PEM `PUBLIC KEY` (SPKI) the sigstore crate understands.
    #[error("not a PEM public key")]
    Parse(#[source] SigstoreError),
    /// Not ECDSA P-256.
    #[error("the public key is not ECDSA P-256")]
    WrongAlgorithm,
}

/// Signing failed.
#[derive(Debug, thiserror::Error)]
#[error("signing with the appliance key failed")]
pub struct SignError(#[source] SigstoreError);

/// A signature that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("signature does not verify under the appliance public key")]
pub struct SignatureError(#[source] SigstoreError);

/// The appliance's private signing key (ECDSA P-256, SHA-256, ASN.1 DER signatures).
pub struct ApplianceKey {
    keys: SigStoreKeyPair,
    signer: SigStoreSigner,
    public: AppliancePublicKey,
}

impl fmt::Debug for ApplianceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplianceKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ApplianceKey {
    /// Generate a fresh key.
    pub fn generate() -> Result<Self, KeyError> {
        let keys = ECDSAKeys::new(EllipticCurve::P256).map_err(KeyError::Generate)?;
        Self::from_ecdsa(keys)
    }

    fn from_ecdsa(keys: ECDSAKeys) -> Result<Self, KeyError> {
        if !matches!(keys, ECDSAKeys::P256(_)) {
            return Err(KeyError::WrongAlgorithm {
                found: keys.to_string(),
            });
        }
        let signer = keys.to_sigstore_signer().map_err(KeyError::Decrypt)?;
        let pem = keys
            .as_inner()
            .public_key_to_pem()
            .map_err(KeyError::Export)?;
        let public = AppliancePublicKey::from_pem(&pem).map_err(|e| KeyError::WrongAlgorithm {
            found: format!("an unusable public key ({e})"),
        })?;
        Ok(ApplianceKey {
            keys: SigStoreKeyPair::ECDSA(keys),
            signer,
            public,
        })
    }

    /// Load a key from an encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`).
    pub fn from_encrypted_pem(pem: &[u8], password: &[u8]) -> Result<Self, KeyError> {
        if password.is_empty() {
            return Err(KeyError::EmptyPassword);
        }
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotEncrypted)?;
        if !ENCRYPTED_LABELS
            .iter()
            .any(|l| text.contains(&format!("-----BEGIN {l}-----")))
        {
            return Err(KeyError::NotEncrypted);
        }
        let keys = ECDSAKeys::from_encrypted_pem(pem, password).map_err(KeyError::Decrypt)?;
        Self::from_ecdsa(keys)
    }

    /// The key as an encrypted PEM (scrypt + NaCl secretbox), for storage at rest.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        if password.is_empty() {
            return Err(KeyError::EmptyPassword);
        }
        let pem = self
            .keys
            .private_key_to_encrypted_pem(password)
            .map_err(KeyError::Export)?;
        Ok(pem.as_str().to_owned())
    }

    /// Load the key at `path`, or generate one and store it there (mode 0600, written to a
    /// temporary file, synced and renamed into place). Returns the key and whether it was
    /// created.
    pub fn load_or_generate(path: &Path, password: &[u8]) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(pem) => Ok((Self::from_encrypted_pem(&pem, password)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let pem = key.to_encrypted_pem(password)?;
                write_private_file(path, pem.as_bytes()).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> &AppliancePublicKey {
        &self.public
    }

    /// Sign `msg` (ECDSA P-256 over SHA-256 of `msg`); returns the ASN.1 DER signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer.sign(msg).map_err(SignError)
    }
}

fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let res = f.write_all(data).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = res.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The appliance's public key; everything a verifier needs.
#[derive(Clone)]
pub struct AppliancePublicKey {
    spki_der: Vec<u8>,
    pem: String,
    key: CosignVerificationKey,
}

impl fmt::Debug for AppliancePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppliancePublicKey(sha256:{})", self.fingerprint())
    }
}

impl PartialEq for AppliancePublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}
impl Eq for AppliancePublicKey {}

impl AppliancePublicKey {
    /// Parse a PEM `PUBLIC KEY` (SubjectPublicKeyInfo); it must be ECDSA P-256.
    pub fn from_pem(pem: &str) -> Result<Self, PublicKeyError> {
        let key =
            CosignVerificationKey::try_from_pem(pem.as_bytes()).map_err(PublicKeyError::Parse)?;
        let CosignVerificationKey::ECDSA_P256_SHA256_ASN1(spki_der) = &key else {
            return Err(PublicKeyError::WrongAlgorithm);
        };
        let spki_der = spki_der.clone();
        // Normalise the PEM text (line endings, headers) to what we export.
        let pem = pem_encode("PUBLIC KEY", &spki_der);
        Ok(AppliancePublicKey { spki_der, pem, key })
    }

    /// The PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }

    /// The sigstore verification key, for callers that build Sigstore bundles.
    pub fn cosign_key(&self) -> &CosignVerificationKey {
        &self.key
    }

    /// The sigstore signing scheme of this key.
    pub fn signing_scheme(&self) -> SigningScheme {
        SigningScheme::ECDSA_P256_SHA256_ASN1
    }

    /// Verify an ASN.1 DER ECDSA signature over `msg`.
    pub fn verify(&self, msg: &[u8], signature_der: &[u8]) -> Result<(), SignatureError> {
        self.key
            .verify_signature(Signature::Raw(signature_der), msg)
            .map_err(SignatureError)
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_encrypted_round_trip() {
        let key = ApplianceKey::generate().unwrap();
        let sig = key.sign(b"hello").unwrap();
        key.public_key().verify(b"hello", &sig).unwrap();
        assert!(key.public_key().verify(b"hellO", &sig).is_err());

        let pem = key.to_encrypted_pem(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let back = ApplianceKey::from_encrypted_pem(pem.as_bytes(), b"pw").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert!(matches!(
            ApplianceKey::from_encrypted_pem(pem.as_bytes(), b"wrong"),
            Err(KeyError::Decrypt(_))
        ));
        assert!(matches!(
            ApplianceKey::from_encrypted_pem(pem.as_bytes(), b""),
            Err(KeyError::EmptyPassword)
        ));

        // A verifier needs only the exported PEM public key.
        let public = AppliancePublicKey::from_pem(key.public_key().to_pem()).unwrap();
        public.verify(b"hello", &sig).unwrap();
    }

    #[test]
    fn unencrypted_private_keys_are_refused() {
        let keys = ECDSAKeys::new(EllipticCurve::P256).unwrap();
        let plain = keys.as_inner().private_key_to_pem().unwrap();
        assert!(matches!(
            ApplianceKey::from_encrypted_pem(plain.as_bytes(), b"pw"),
            Err(KeyError::NotEncrypted)
        ));
    }

    #[test]
    fn non_p256_public_keys_are_refused() {
        let keys = ECDSAKeys::new(EllipticCurve::P384).unwrap();
        let pem = keys.as_inner().public_key_to_pem().unwrap();
        assert!(matches!(
            AppliancePublicKey::from_pem(&pem),
            Err(PublicKeyError::WrongAlgorithm)
        ));
        assert!(matches!(
            AppliancePublicKey::from_pem("garbage"),
            Err(PublicKeyError::Parse(_))
        ));
    }

    #[test]
    fn load_or_generate_persists_encrypted_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appliance.key");
        let (k1, created) = ApplianceKey::load_or_generate(&path, b"pw").unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = ApplianceKey::load_or_generate(&path, b"pw").unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());
    }
}
