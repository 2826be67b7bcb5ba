//! The byte stream under a connection: TCP, or TLS with the system's web roots (or a CA file) and, for CertFP,
//! the login's client certificate.

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::Settings;
use crate::{config::ServerConfig, ident::IdentEntry};

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The stream as what it is, to hand a plain TCP connection to another process (see [`super::handover`]).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

pub(super) async fn connect(
    server: &ServerConfig,
    settings: &Settings,
) -> std::io::Result<(Box<dyn Stream>, IdentEntry)> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port)).await?;
    tcp.set_nodelay(true)?;
    let ident = settings.ident.register(tcp.local_addr()?, tcp.peer_addr()?, &settings.username);
    if !server.tls {
        return Ok((Box::new(tcp), ident));
    }
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject as _};
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &settings.ca_file {
        let pem = tokio::fs::read(path).await?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            roots.add(certificate.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots);
    // CertFP: the login's certificate is presented in the handshake, and SASL EXTERNAL names it.
    let config = match settings.login.as_ref().and_then(|login| login.certificate.as_deref()) {
        Some(pem) => {
            let (chain, key) = crate::ircv3::certfp::parse(pem).map_err(std::io::Error::other)?;
            builder.with_client_auth_cert(chain, key).map_err(std::io::Error::other)?
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server.host.clone()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok((Box::new(tls), ident))
}
