//! Encryption at rest for network credentials (passwords, SASL secrets, client keys).
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value, under a 256-bit key kept in a file outside the
//! database, so a leaked database dump reveals no password. Sealed values are text: `v1:<base64(nonce ‖ ciphertext)>`.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, OsRng},
};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

/// Errors from the cipher and its key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key file could not be read or created.
    #[error("encryption key file {path}: {source} (set encryption.key_file to a writable path)")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The key file does not hold a base64-encoded 32-byte key.
    #[error("encryption key file {path} does not hold a base64-encoded 32-byte key")]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// A sealed value was tampered with, truncated, or sealed under another key.
    #[error("a stored secret cannot be decrypted: it was sealed under another key or is corrupt")]
    Unseal,
}

/// Seals and opens secrets with the bridge's key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Cipher(***)")
    }
}

impl Cipher {
    /// A cipher over a raw 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { aead: XChaCha20Poly1305::new(key.into()) }
    }

    /// A cipher with a fresh random key, for tests and throw-away stores.
    pub fn random() -> Self {
        Self { aead: XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng)) }
    }

    /// Reads the key from `path`, or creates the file (mode 0600) with a new random key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let key_file_error = |source| CryptoError::KeyFile { path: path.to_owned(), source };
        match fs::read_to_string(path) {
            Ok(text) => {
                let bytes = STANDARD.decode(text.trim()).map_err(|_| CryptoError::BadKey { path: path.to_owned() })?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey { path: path.to_owned() })?;
                Ok(Self::new(&key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(key_file_error)?;
                }
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(key_file_error)?;
                writeln!(file, "{}", STANDARD.encode(key)).map_err(key_file_error)?;
                file.sync_all().map_err(key_file_error)?;
                tracing::info!(path = %path.display(), "created a new encryption key for stored credentials");
                Ok(Self { aead: XChaCha20Poly1305::new(&key) })
            }
            Err(error) => Err(key_file_error(error)),
        }
    }

    /// Encrypts `plaintext` into a self-describing text value.
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", STANDARD.encode(sealed))
    }

    /// Decrypts a value made by [`Cipher::seal`] under the same key.
    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        let encoded = sealed.strip_prefix(PREFIX).ok_or(CryptoError::Unseal)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| CryptoError::Unseal)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self.aead.decrypt(XNonce::from_slice(nonce), ciphertext).map_err(|_| CryptoError::Unseal)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seal_then_open_returns_the_plaintext_and_hides_it() {
        let cipher = Cipher::random();
        let sealed = cipher.seal("hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, cipher.seal("hunter2"), "every seal uses a fresh nonce");
        assert_eq!(cipher.open(&sealed).unwrap(), "hunter2");
    }

    #[test]
    fn another_key_or_tampering_is_refused() {
        let sealed = Cipher::random().seal("secret");
        assert!(matches!(Cipher::random().open(&sealed), Err(CryptoError::Unseal)));
        let cipher = Cipher::random();
        let mut tampered = cipher.seal("secret").into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(cipher.open(std::str::from_utf8(&tampered).unwrap()).is_err());
        assert!(cipher.open("not sealed").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/lattice.key");
        let first = Cipher::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Cipher::load_or_create(&path).unwrap();
        assert_eq!(second.open(&first.seal("x")).unwrap(), "x");
    }

    #[test]
    fn malformed_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        fs::write(&path, "too short").unwrap();
        let error = Cipher::load_or_create(&path).unwrap_err();
        assert!(error.to_string().contains("bad.key"), "{error}");
    }
}
