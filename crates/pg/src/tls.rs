//! TLS the way libpq's `sslmode` means it, implemented with rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{Error, RootCertError, SslMode};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for `ssl_mode`, verifying against `root_cert` where the mode says so.
pub fn client_config(
    ssl_mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier(ssl_mode, root_cert, provider)?)
        .with_no_client_auth())
}

/// What checks the server's certificate under `ssl_mode`.
fn verifier(
    ssl_mode: SslMode,
    root_cert: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    // libpq: with a root certificate given (or present at the default path), allow, prefer and
    // require verify the chain like verify-ca; without one they encrypt only.
    let implied_root = match (ssl_mode, root_cert) {
        (SslMode::Allow | SslMode::Prefer | SslMode::Require, None) => {
            default_root_cert().ok().filter(|p| p.exists())
        }
        _ => None,
    };
    let root_cert = root_cert.or(implied_root.as_deref());
    let chain = match (ssl_mode, root_cert) {
        (SslMode::Disable, _) | (SslMode::Allow | SslMode::Prefer | SslMode::Require, None) => None,
        (SslMode::Allow | SslMode::Prefer | SslMode::Require, Some(root)) => {
            Some(webpki_verifier(root, provider.clone())?)
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, root) => {
            let path = match root {
                Some(path) => path.to_path_buf(),
                None => default_root_cert()?,
            };
            Some(webpki_verifier(&path, provider.clone())?)
        }
    };
    Ok(Arc::new(ModeVerifier {
        chain,
        check_name: ssl_mode == SslMode::VerifyFull,
        provider,
    }))
}

fn webpki_verifier(
    root_cert: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(root_cert)?), provider)
        .build()
        .map_err(Error::Verifier)
}

/// libpq's default CA file, `~/.postgresql/root.crt`.
fn default_root_cert() -> Result<PathBuf, Error> {
    std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        .ok_or(Error::NoRootCert)
}

fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::ReadRootCert {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |source| Error::BadRootCert {
        path: path.to_path_buf(),
        source: Some(source),
    };
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(RootCertError::Pem(e)))?;
        roots
            .add(cert)
            .map_err(|e| bad(RootCertError::Rejected(e)))?;
    }
    if roots.is_empty() {
        return Err(Error::BadRootCert {
            path: path.to_path_buf(),
            source: None,
        });
    }
    Ok(roots)
}

/// The server's certificate checked as far as the mode says; handshake signatures always are.
#[derive(Debug)]
struct ModeVerifier {
    /// The chain must lead to the CA (None: `require` without a CA, encryption only).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `verify-full`: the certificate must also name the host connected to.
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA (as a PEM file in `dir`) and a server certificate it signed for `db.internal`.
    fn ca_and_server(dir: &Path, file: &str) -> (PathBuf, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["db.internal".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let path = dir.join(file);
        std::fs::write(&path, ca_cert.pem()).unwrap();
        (path, server.der().clone())
    }

    fn check(mode: SslMode, root: Option<&Path>, cert: &CertificateDer<'_>, name: &str) -> bool {
        let verifier = verifier(mode, root, provider()).unwrap();
        verifier
            .verify_server_cert(
                cert,
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn each_mode_checks_what_libpq_checks() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert) = ca_and_server(dir.path(), "ca.crt");
        let (other_ca, _) = ca_and_server(dir.path(), "other.crt");
        // verify-full: chain and host name.
        assert!(check(SslMode::VerifyFull, Some(&ca), &cert, "db.internal"));
        assert!(!check(SslMode::VerifyFull, Some(&ca), &cert, "elsewhere"));
        assert!(!check(
            SslMode::VerifyFull,
            Some(&other_ca),
            &cert,
            "db.internal"
        ));
        // verify-ca: the chain only.
        assert!(check(SslMode::VerifyCa, Some(&ca), &cert, "elsewhere"));
        assert!(!check(
            SslMode::VerifyCa,
            Some(&other_ca),
            &cert,
            "db.internal"
        ));
        // require with a CA given verifies the chain, as libpq does; without one it encrypts only.
        assert!(!check(
            SslMode::Require,
            Some(&other_ca),
            &cert,
            "db.internal"
        ));
        assert!(check(SslMode::Require, Some(&ca), &cert, "elsewhere"));
        assert!(check(SslMode::Disable, Some(&other_ca), &cert, "elsewhere"));
    }

    #[test]
    fn unusable_root_certificates_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        match client_config(SslMode::VerifyFull, Some(&missing)) {
            Err(Error::ReadRootCert { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected ReadRootCert, got {other:?}"),
        }
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(SslMode::VerifyCa, Some(&empty)),
            Err(Error::BadRootCert { source: None, .. })
        ));
        client_config(SslMode::Disable, None).unwrap();
    }
}
