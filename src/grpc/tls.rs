//! TLS of the gRPC listeners (rustls with ring, through tonic): the server's certificate and key,
//! and optionally the CA that client certificates must chain to — the other side of CoreDNS's
//! `tls CERT KEY CA`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `--grpc-tls-cert`, `--grpc-tls-key`, `--grpc-tls-client-ca`: PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: every client must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read the gRPC TLS {what} {}", path.display()))
}

/// The files read; they are parsed (and refused if wrong) when the server takes the config.
pub fn config(files: &TlsFiles) -> Result<ServerTlsConfig> {
    let identity = Identity::from_pem(read(&files.cert, "certificate")?, read(&files.key, "key")?);
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Ok(tls)
}
