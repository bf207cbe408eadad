//! rustls client configurations shared by the PostgreSQL and MySQL connections.
//!
//! Owns: the crypto provider (aws-lc-rs, passed explicitly to every `ClientConfig`; no
//! process-wide default is installed or relied on), the root store (a PEM file of CA
//! certificates, or the Mozilla roots of `webpki-roots`), and the three ways a server
//! certificate is checked ([`Verify`]). Does not own any protocol's TLS negotiation: that
//! is `source/postgres/tls.rs` (PostgreSQL's SSLRequest) and `source/mysql/connect.rs` (the
//! MySQL SSLRequest inside the connection handshake).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the server's certificate is checked. The handshake signatures are verified in
/// every mode, so the session is always encrypted with whoever holds the presented
/// certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Any certificate is accepted (libpq `require`, MySQL `REQUIRED`).
    Nothing,
    /// The chain must lead to a trusted root; the name is not checked (MySQL `VERIFY_CA`).
    Chain,
    /// The chain and the host name (SAN DNS name or IP address) are checked (libpq
    /// `verify-full`, MySQL `VERIFY_IDENTITY`).
    ChainAndName,
}

/// A problem with the CA file or the TLS configuration. `setting` is the config key that
/// named the file (`sslrootcert`, `ssl_ca`).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {setting} {path}")]
    ReadCa {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{setting} {path} holds no usable PEM certificate")]
    NoCa {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{setting} {path} holds an invalid certificate")]
    BadCa {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration")]
    Config {
        #[source]
        source: rustls::Error,
    },
}

/// The crypto provider of every TLS connection (aws-lc-rs, as reqwest uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration for `verify`, trusting the certificates in `ca` (PEM)
/// or, without it, the Mozilla roots; `alpn` is offered when given.
pub fn client_config(
    verify: Verify,
    ca: Option<&Path>,
    setting: &'static str,
    alpn: Option<&[u8]>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsConfigError::Config { source })?;
    let mut config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameBlind {
                roots: None,
                provider,
            }))
            .with_no_client_auth(),
        Verify::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameBlind {
                roots: Some(root_store(ca, setting)?),
                provider,
            }))
            .with_no_client_auth(),
        Verify::ChainAndName => builder
            .with_root_certificates(root_store(ca, setting)?)
            .with_no_client_auth(),
    };
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The roots in the PEM file `ca`, or the Mozilla roots without one.
pub fn root_store(
    ca: Option<&Path>,
    setting: &'static str,
) -> Result<RootCertStore, TlsConfigError> {
    let Some(path) = ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let read_err = |source| TlsConfigError::ReadCa {
        setting,
        path: path.to_owned(),
        source,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(read_err)? {
        store
            .add(cert.map_err(read_err)?)
            .map_err(|source| TlsConfigError::BadCa {
                setting,
                path: path.to_owned(),
                source,
            })?;
    }
    if store.is_empty() {
        return Err(TlsConfigError::NoCa {
            setting,
            path: path.to_owned(),
        });
    }
    Ok(store)
}

/// `host` as a TLS server name (DNS name or IP address).
pub fn server_name(
    host: &str,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(host.to_owned())
}

fn verify_tls12(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// A custom certificate check that never looks at the name: with `roots`, the chain must
/// lead to a trusted root (validity dates, key usage, signatures: MySQL's `VERIFY_CA`);
/// without, any certificate is accepted (`require` / `REQUIRED`). Either way the server
/// must prove possession of its key (handshake signatures).
#[derive(Debug)]
struct NameBlind {
    roots: Option<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameBlind {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_for_each_verify_mode() {
        for v in [Verify::Nothing, Verify::Chain, Verify::ChainAndName] {
            let c = client_config(v, None, "ssl_ca", Some(b"x")).expect("config");
            assert_eq!(c.alpn_protocols, vec![b"x".to_vec()]);
        }
        let c = client_config(Verify::Nothing, None, "ssl_ca", None).expect("config");
        assert!(c.alpn_protocols.is_empty());
    }

    #[test]
    fn bad_ca_files_name_the_setting_and_path() {
        let e = client_config(
            Verify::Chain,
            Some(Path::new("/nonexistent/ca.pem")),
            "ssl_ca",
            None,
        )
        .expect_err("missing file");
        assert!(e.to_string().contains("ssl_ca /nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a pem\n").expect("write");
        let e = client_config(Verify::ChainAndName, Some(&p), "sslrootcert", None)
            .expect_err("no certs");
        assert!(matches!(e, TlsConfigError::NoCa { .. }), "{e:?}");
    }

    #[test]
    fn server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("").is_err());
    }
}
