//! The cluster's private CA and the server certificate it signs.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};

/// ECDSA P-256 keys, signatures with SHA-256: the server's handshake signature is far cheaper than
/// with RSA (every tenant-database connection pays one), the certificates are small, and every
/// client that speaks TLS 1.2+ verifies them. A cluster whose files hold RSA keys keeps working:
/// the files are only ever written when the cluster is created, and clients verify either kind.
const KEY_ALGORITHM: &SignatureAlgorithm = &PKCS_ECDSA_P256_SHA256;

/// PEM texts of a freshly generated CA and server certificate.
pub(crate) struct TlsMaterial {
    pub(crate) ca_cert: String,
    pub(crate) ca_key: String,
    pub(crate) server_cert: String,
    pub(crate) server_key: String,
}

/// Names a client may use to reach the cluster, which listens on loopback only.
fn server_names() -> Vec<SanType> {
    vec![
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::DnsName("localhost".try_into().expect("valid DNS name")),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ]
}

/// Generates a CA and a server certificate for 127.0.0.1, localhost and ::1, both [`KEY_ALGORITHM`].
///
/// Validity keeps rcgen's far-off bounds: the CA exists for one local cluster and lives
/// exactly as long as it, so an expiry date would only break a long-lived cluster one day.
pub(crate) fn generate() -> Result<TlsMaterial, rcgen::Error> {
    tracing::debug!("generating the cluster's CA and server certificate");
    let ca_key = KeyPair::generate_for(KEY_ALGORITHM)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgtenant local CA");
    // The CA signs only server certificates directly, never intermediates.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate_for(KEY_ALGORITHM)?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = rcgen::DistinguishedName::new();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.subject_alt_names = server_names();
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    Ok(TlsMaterial {
        ca_cert: ca_cert.pem(),
        ca_key: ca.key().serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn pem_blocks_are_produced() {
        let tls = generate().unwrap();
        assert!(tls.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.ca_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(tls.server_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(tls.ca_key, tls.server_key);
    }

    /// New clusters get ECDSA P-256, the cheap handshake, not RSA.
    #[test]
    fn keys_are_ecdsa_p256() {
        let tls = generate().unwrap();
        for pem in [&tls.ca_key, &tls.server_key] {
            let key = KeyPair::from_pem(pem).unwrap();
            assert!(key.algorithm() == &PKCS_ECDSA_P256_SHA256);
        }
    }

    /// Cross-checks the chain and the names with an independent implementation, when the
    /// machine has the openssl tool.
    #[test]
    fn openssl_accepts_the_chain_for_every_loopback_name() {
        let Ok(probe) = Command::new("openssl").arg("version").output() else {
            eprintln!("openssl not installed; skipping");
            return;
        };
        assert!(probe.status.success());
        let tls = generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let server = dir.path().join("server.crt");
        std::fs::write(&ca, &tls.ca_cert).unwrap();
        std::fs::write(&server, &tls.server_cert).unwrap();
        for check in [
            ["-verify_ip", "127.0.0.1"],
            ["-verify_ip", "::1"],
            ["-verify_hostname", "localhost"],
        ] {
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&ca)
                .args(["-purpose", "sslserver"])
                .args(check)
                .arg(&server)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{check:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for cert in [&ca, &server] {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(cert)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("Public Key Algorithm: id-ecPublicKey")
                    && text.contains("prime256v1")
                    && text.contains("Signature Algorithm: ecdsa-with-SHA256"),
                "{text}"
            );
        }
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .args(["-verify_hostname", "example.com"])
            .arg(&server)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a foreign name must not verify");
    }
}
