//! TLS client configurations, both xvip's clients on one rustls setup: the health checks'
//! (from files, [`tls_config`]) and discovery's (from a kubeconfig's PEM data,
//! [`from_pem`]). Always the ring provider, named explicitly (no process-wide default);
//! without a CA (or when told to skip it) certificates are not verified, but handshake
//! signatures still are ([`NoCertVerification`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The one start of both configurations: the ring provider, its safe default protocol
/// versions, and verification against `roots`, or none (signatures still checked).
fn verifying(
    roots: Option<RootCertStore>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    Ok(match roots {
        Some(roots) => builder.with_root_certificates(roots),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertVerification::new(&provider))),
    })
}

/// Why [`tls_config`] could not build a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which file: "CA file", "client certificate" or "client key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file has a broken PEM section.
    #[error("{what} {} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// Which file: "CA file", "client certificate" or "client key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("no PEM certificate found in {what} {}", path.display())]
    NoCertificate {
        /// Which file: "CA file" or "client certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("CA file {} holds an unusable certificate: {reason}", path.display())]
    BadCaCertificate {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key file holds no private key.
    #[error(
        "no PEM private key (PKCS#8, RSA or EC) found in client key {}",
        path.display()
    )]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// A client certificate was given without its key.
    #[error("client certificate {} given without a client key", cert.display())]
    CertWithoutKey {
        /// The certificate file.
        cert: PathBuf,
    },
    /// A client key was given without its certificate.
    #[error("client key {} given without a client certificate", key.display())]
    KeyWithoutCert {
        /// The key file.
        key: PathBuf,
    },
    /// rustls rejected the certificate/key pair (e.g. they do not match).
    #[error(
        "client certificate {} and key {} are unusable: {reason}",
        cert.display(),
        key.display()
    )]
    ClientAuth {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The crypto provider does not support the default protocol versions.
    #[error("the ring crypto provider rejected the default TLS versions: {reason}")]
    Provider {
        /// What rustls said.
        reason: String,
    },
}

/// Builds the TLS client configuration of the HTTPS health checks (and `xvip doctor`) from
/// files.
///
/// * `ca_file` (PEM bundle, usually the cluster CA `/etc/kubernetes/pki/ca.crt`):
///   server certificates are verified against it, including the server name.
/// * Without `ca_file`, the server certificate is **not** verified: the API servers'
///   certificates are signed by the cluster CA, which we cannot know by default. This
///   is what the kubeadm HA guide's haproxy does (`check-ssl verify none`); a health
///   check reveals nothing secret, it only decides where traffic goes.
/// * `insecure_skip_verify` skips verification even when a CA file is given (the
///   file is then not read).
/// * `cert_file` + `key_file` (PEM; the key PKCS#8, PKCS#1 RSA or SEC1 EC) are sent
///   as client certificate, for clusters that disable anonymous auth (`/readyz` is
///   allowed for anonymous users by default). Giving only one of them is an error.
///
/// Unverified or not, the handshake signatures are always checked, and the ring
/// provider is used explicitly so that no process-wide default provider is needed.
pub fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    insecure_skip_verify: bool,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let roots = match ca_file {
        Some(path) if !insecure_skip_verify => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("CA file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsConfigError::BadCaCertificate {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
            }
            Some(roots)
        }
        _ => None,
    };
    let builder = verifying(roots).map_err(|e| TlsConfigError::Provider {
        reason: e.to_string(),
    })?;
    let config = match (cert_file, key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), None) => {
            return Err(TlsConfigError::CertWithoutKey {
                cert: cert.to_owned(),
            });
        }
        (None, Some(key)) => {
            return Err(TlsConfigError::KeyWithoutCert {
                key: key.to_owned(),
            });
        }
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs("client certificate", cert)?, read_key(key)?)
            .map_err(|e| TlsConfigError::ClientAuth {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?,
    };
    Ok(Arc::new(config))
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    const WHAT: &str = "client key";
    let pem = read_file(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsConfigError::BadPem {
            what: WHAT,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Accepts any server certificate (also the lab's test clients use it). The handshake
/// signatures are still checked with the provider's algorithms: skipping them would leave
/// the TLS handshake itself unsound, not just unauthenticated.
#[derive(Debug)]
pub struct NoCertVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NoCertVerification {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        NoCertVerification {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NoCertVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client from PEM bytes (a kubeconfig's data, for discovery); `insecure` (the
/// caller has refused no CA without it) means no certificate verification.
///
/// # Errors
/// A PEM block or certificate that does not parse, or a key that does not fit, in words.
pub fn from_pem(
    ca: Option<&[u8]>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        Some(pem) if !insecure => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(c.map_err(|e| format!("CA: {e}"))?)
                    .map_err(|e| format!("CA: {e}"))?;
            }
            if roots.is_empty() {
                return Err("CA: no certificate".into());
            }
            Some(roots)
        }
        _ => None,
    };
    let builder = verifying(roots).map_err(|e| e.to_string())?;
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}
