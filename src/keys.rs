//! Key files: PKCS#8 PEM for secret keys (written owner-only), SPKI PEM for public keys, so that
//! `openssl pkey` and any Ed25519 library read them; and an agency's X.509 signing key (a PKCS#8 RSA
//! or P-256 key with its certificate chain) for signing Kho statements under algorithms 2 and 3.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};

use crate::statement::{PublicKey, RsaPadding, SecretKey, StatementSigner, X509Signer};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a PEM {expected}: {reason}")]
    Malformed { path: PathBuf, expected: &'static str, reason: String },
}

fn read(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: path.to_owned(), source })
}

/// Writes `contents` to a new file (never overwriting one) with the given Unix permissions, synced.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let error = |source| KeyFileError::Write { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

pub fn write_secret_key(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let pem = key.ed25519().to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyFileError::Malformed {
        path: path.to_owned(),
        expected: "PKCS#8 private key",
        reason: e.to_string(),
    })?;
    write_new(path, pem.as_bytes(), 0o600)
}

pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), KeyFileError> {
    let key = key.ed25519().ok_or_else(|| KeyFileError::Malformed {
        path: path.to_owned(),
        expected: "Ed25519 public key",
        reason: "an X.509 signer is named by its certificate, not a public key file".into(),
    })?;
    let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| KeyFileError::Malformed {
        path: path.to_owned(),
        expected: "public key",
        reason: e.to_string(),
    })?;
    write_new(path, pem.as_bytes(), 0o644)
}

pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    let pem = read(path)?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map(SecretKey::from_ed25519).map_err(|e| KeyFileError::Malformed {
        path: path.to_owned(),
        expected: "PKCS#8 private key",
        reason: e.to_string(),
    })
}

/// Loads a secret key, or creates it atomically if the file does not exist: a crash at any point leaves
/// no file or a complete one, never a torn one.
pub fn load_or_create_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    if path.exists() {
        return read_secret_key(path);
    }
    let key = SecretKey::generate();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let write_error = |source| KeyFileError::Write { path: temporary.clone(), source };
    if temporary.exists() {
        std::fs::remove_file(&temporary).map_err(write_error)?;
    }
    write_secret_key(&temporary, &key)?;
    std::fs::rename(&temporary, path).map_err(write_error)?;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(directory).and_then(|d| d.sync_all()).map_err(write_error)?;
    Ok(key)
}

pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let pem = read(path)?;
    ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
        .map(PublicKey::Ed25519)
        .map_err(|e| KeyFileError::Malformed { path: path.to_owned(), expected: "public key", reason: e.to_string() })
}

/// An agency's X.509 signing key: a PKCS#8 RSA or ECDSA P-256 private key and its certificate chain
/// (its own certificate first, then intermediates). Statements it signs carry the chain.
pub struct X509SigningKey {
    key: X509PrivateKey,
    signer: X509Signer,
}

enum X509PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
}

impl X509SigningKey {
    /// Reads `key` (PKCS#8 PEM) and `chain` (PEM certificates, the key's own first) and checks that the
    /// first certificate is for this key.
    pub fn read(key: &Path, chain: &Path, padding: RsaPadding) -> Result<X509SigningKey, KeyFileError> {
        let malformed =
            |path: &Path, expected, reason: String| KeyFileError::Malformed { path: path.to_owned(), expected, reason };
        let pem = read(key)?;
        let private = if let Ok(rsa_key) = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem) {
            X509PrivateKey::Rsa(Box::new(rsa_key))
        } else {
            <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
                .map(X509PrivateKey::P256)
                .map_err(|e| malformed(key, "PKCS#8 RSA or P-256 private key", e.to_string()))?
        };
        let bytes = std::fs::read(chain).map_err(|source| KeyFileError::Read { path: chain.to_owned(), source })?;
        let certificates = crate::x509::Certificate::all_from_pem_or_der(&bytes)
            .map_err(|e| malformed(chain, "certificate chain", e.to_string()))?;
        let signer =
            X509Signer::new(certificates, padding).map_err(|e| malformed(chain, "certificate chain", e.to_string()))?;
        let certified =
            signer.certificate().inner().tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        let matches = match &private {
            X509PrivateKey::Rsa(rsa_key) => {
                use rsa::pkcs1::EncodeRsaPublicKey as _;
                rsa_key.to_public_key().to_pkcs1_der().is_ok_and(|der| der.as_bytes() == certified)
            }
            X509PrivateKey::P256(ec_key) => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(certified).is_ok_and(|k| k == *ec_key.verifying_key())
            }
        };
        if !matches {
            return Err(malformed(
                chain,
                "certificate chain",
                format!("its first certificate is not for the key in {}", key.display()),
            ));
        }
        Ok(X509SigningKey { key: private, signer })
    }
}

impl StatementSigner for X509SigningKey {
    fn public_key(&self) -> PublicKey {
        PublicKey::X509(self.signer.clone())
    }

    fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
        match &self.key {
            X509PrivateKey::Rsa(key) => match self.signer.padding() {
                Some(RsaPadding::Pss) => rsa::pss::BlindedSigningKey::<sha2::Sha256>::new((**key).clone())
                    .sign_with_rng(&mut rand_core::OsRng, message)
                    .to_vec(),
                _ => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**key).clone()).sign(message).to_vec(),
            },
            X509PrivateKey::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::generate();
        let secret = dir.path().join("k.pem");
        let public = dir.path().join("k.pub.pem");
        write_secret_key(&secret, &key).expect("write secret");
        write_public_key(&public, &key.public_key()).expect("write public");
        assert_eq!(read_secret_key(&secret).expect("read").public_key(), key.public_key());
        assert_eq!(read_public_key(&public).expect("read"), key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&secret).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(write_secret_key(&secret, &key), Err(KeyFileError::Write { .. })), "never overwrites");
        assert!(matches!(read_public_key(&secret), Err(KeyFileError::Malformed { .. })));
    }
}
