//! CertFP: a TLS client certificate per Matrix user and network, the credential of SASL EXTERNAL (IRCv3 `sasl`,
//! <https://ircv3.net/specs/extensions/sasl-3.1>; RFC 4422 appendix A). The bridge makes the certificate (a
//! self-signed ECDSA P-256 one), keeps it sealed in the credential store, and tells its user the SHA-256
//! fingerprint to add to their services account (`/msg NickServ CERT ADD <fingerprint>` on atheme and Anope), as
//! networks show it (InspIRCd `sslinfo`, `276 RPL_WHOISCERTFP`).

use sha2::{Digest as _, Sha256};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// Generating the key pair or certificate failed.
    #[error("cannot make a client certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored PEM holds no certificate or no private key.
    #[error("the stored client certificate is unreadable: {0}")]
    Pem(String),
}

/// A new certificate for `name` (the user's nick or account, shown to server operators), as one PEM text holding
/// the certificate and its private key.
pub(crate) fn generate(name: &str) -> Result<String, CertError> {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
    Ok(format!("{}{}", certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// The certificate chain and private key of a PEM text made by [`generate`].
pub(crate) fn parse(pem: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| CertError::Pem(error.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Pem("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|error| CertError::Pem(error.to_string()))?;
    Ok((chain, key))
}

/// The SHA-256 fingerprint of the certificate, lower-case hex, as IRC servers and services show it.
pub(crate) fn fingerprint(pem: &str) -> Result<String, CertError> {
    let (chain, _) = parse(pem)?;
    Ok(Sha256::digest(chain[0].as_ref()).iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_reads_back_with_its_fingerprint() {
        let pem = generate("alice").unwrap();
        let (chain, _key) = parse(&pem).unwrap();
        assert_eq!(chain.len(), 1);
        let fingerprint = fingerprint(&pem).unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(fingerprint, super::fingerprint(&generate("alice").unwrap()).unwrap(), "a new key each time");
        assert!(matches!(parse("not a certificate"), Err(CertError::Pem(_))));
    }
}
