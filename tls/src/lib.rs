//! TLS for AgentCom, with rustls and ring as its crypto provider.
//!
//! It owns three things: the hub's server configuration (a certificate
//! chain and its private key, read from PEM files, so that HTTPS and WSS
//! share the hub's listen address); what a client — the sidecar or the
//! admin CLI — trusts (the system's root certificates, or exactly the
//! certificates of one CA file); and putting a failed handshake into words.
//!
//! It only reads files into rustls configurations and describes errors.
//! It must never open a socket, read a setting, log, or decide what a
//! program does about a failure: its callers do (the hub refuses to
//! start, the sidecar backs off and reconnects, the CLI exits).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, RootCertStore};

pub use rustls::{ClientConfig, ServerConfig};

/// A PEM file and the setting (or flag) that named it, so that every error
/// says which file and where it came from: `tls.cert_file`, `ca_file`,
/// `--ca-file`.
#[derive(Clone, Copy, Debug)]
pub struct PemFile<'a> {
    pub setting: &'a str,
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    pub fn new(setting: &'a str, path: &'a Path) -> PemFile<'a> {
        PemFile { setting, path }
    }
}

impl fmt::Display for PemFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting, self.path.display())
    }
}

/// Why a TLS configuration could not be made. Every message names the
/// file (with the setting that named it) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read it: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a PEM file ({reason}); expected a {expected}")]
    NotPem {
        file: String,
        expected: &'static str,
        reason: String,
    },
    #[error("{file}: holds no {expected}; is it PEM?")]
    Empty {
        file: String,
        expected: &'static str,
    },
    #[error("{key}: this private key does not match the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("{file}: {reason}")]
    Rejected { file: String, reason: String },
    #[error("no system root certificates found{detail}: install the system's CA certificates, or name a CA file")]
    NoSystemRoots { detail: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

const CERTIFICATE: &str = "certificate (PEM: -----BEGIN CERTIFICATE-----)";
const PRIVATE_KEY: &str =
    "private key (PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)";

/// ring, the one crypto provider AgentCom builds with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The hub's TLS: the certificate chain in `cert` (leaf first, as a web
/// server's chain file) and the private key in `key` (PKCS#8, PKCS#1 or
/// SEC1), which must belong to the leaf certificate.
pub fn server_config(cert: PemFile<'_>, key: PemFile<'_>) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(cert)?;
    let bytes = read(key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(key, e))?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                key: key.to_string(),
                cert: cert.to_string(),
            },
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsError::Rejected {
                    file: cert.to_string(),
                    reason: e.to_string(),
                }
            }
            other => TlsError::Rejected {
                file: key.to_string(),
                reason: other.to_string(),
            },
        })
}

/// A client's TLS (HTTP/1.1). Trusts exactly the certificates in
/// `ca_file` when given (the system's roots are then not consulted);
/// otherwise the system's root certificates.
pub fn client_config(ca_file: Option<PemFile<'_>>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(file) => {
            for (n, cert) in read_certificates(file)?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| TlsError::Rejected {
                    file: file.to_string(),
                    reason: format!("certificate {} cannot be trusted as a CA: {e}", n + 1),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let detail = match found.errors.first() {
                    Some(e) => format!(" ({e})"),
                    None => String::new(),
                };
                return Err(TlsError::NoSystemRoots { detail });
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The sidecar's WebSocket and the CLI speak HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file, in order; at least one.
fn read_certificates(file: PemFile<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            file: file.to_string(),
            expected: CERTIFICATE,
        });
    }
    Ok(certs)
}

fn read(file: PemFile<'_>) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file.path).map_err(|source| TlsError::Unreadable {
        file: file.to_string(),
        source,
    })
}

fn pem_error(file: PemFile<'_>, e: pem::Error) -> TlsError {
    let expected = if file.setting.contains("key") {
        PRIVATE_KEY
    } else {
        CERTIFICATE
    };
    match e {
        pem::Error::NoItemsFound => TlsError::Empty {
            file: file.to_string(),
            expected,
        },
        pem::Error::Io(source) => TlsError::Unreadable {
            file: file.to_string(),
            source,
        },
        other => TlsError::NotPem {
            file: file.to_string(),
            expected,
            reason: other.to_string(),
        },
    }
}

/// A client's failed TLS handshake with the hub, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The hub's certificate does not lead to a root the client trusts:
    /// the fix is a CA file (or the right one).
    Untrusted(String),
    /// Trusted, but not for the host name (or address) connected to.
    WrongName(String),
    /// Expired, or not valid yet.
    OutOfDate(String),
    /// Anything else TLS refused (a server that does not speak TLS, say).
    Other(String),
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::Untrusted(e) => {
                write!(f, "the hub's certificate is not trusted: {e}")
            }
            HandshakeFailure::WrongName(e) => write!(
                f,
                "the hub's certificate is not valid for the host in the URL: {e}"
            ),
            HandshakeFailure::OutOfDate(e) => write!(
                f,
                "the hub's certificate has expired or is not valid yet: {e}"
            ),
            HandshakeFailure::Other(e) => write!(f, "TLS with the hub failed: {e}"),
        }
    }
}

/// What went wrong in a handshake, if this I/O error (as the TLS stream
/// reports it) came from rustls.
pub fn handshake_failure(err: &std::io::Error) -> Option<HandshakeFailure> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    let text = tls.to_string();
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                HandshakeFailure::WrongName(text)
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => HandshakeFailure::OutOfDate(text),
            _ => HandshakeFailure::Untrusted(text),
        },
        _ => HandshakeFailure::Other(text),
    })
}

/// A failed connection's I/O error in words, when a TLS handshake was the
/// cause: as [`HandshakeFailure`] says it, and after an untrusted
/// certificate `untrusted_fix` (how this client is told to trust the hub's
/// CA). None when TLS was not the cause.
pub fn connect_failure(err: &std::io::Error, untrusted_fix: &str) -> Option<String> {
    handshake_failure(err).map(|f| match f {
        HandshakeFailure::Untrusted(_) => format!("{f}; {untrusted_fix}"),
        f => f.to_string(),
    })
}

#[cfg(test)]
mod tests;
