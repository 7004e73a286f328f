//! Connections to the managed cluster: libpq-style URL handling, TLS the way libpq's `sslmode` means it,
//! and the session settings every control connection carries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as WireSslMode};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::EngineError;

/// libpq's `sslmode` values that pgtenant honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, EngineError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(EngineError::AdminUrl(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }
}

/// Everything needed to open connections to the cluster as the control role.
pub struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Kept for the client programs (pg_dump, pg_restore) that reach the server through libpq.
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
}

/// Bounded waits on every control connection, so a stuck lock or server never hangs a run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `idle_session_timeout=0`: the apply lock lives in an idle session that must not be cut.
const SESSION_OPTIONS: &str =
    "-c statement_timeout=300000 -c lock_timeout=30000 -c idle_session_timeout=0 \
     -c search_path=pg_catalog,pg_temp -c standard_conforming_strings=on";

/// `role=none` and `session_authorization=<the user who logs in>`: options given at connection start
/// outrank `ALTER DATABASE … SET role` and `ALTER ROLE … IN DATABASE … SET`, which a tenant's admin
/// or login can write to make the control role act as another tenant's role (a superuser control
/// role would even take on a `session_authorization` default).
fn identity_options(user: Option<&str>) -> String {
    match user {
        // Startup options split at whitespace; a backslash makes the next character literal.
        Some(user) => {
            let mut escaped = String::with_capacity(user.len());
            for c in user.chars() {
                if c == '\\' || c.is_whitespace() {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            format!("-c role=none -c session_authorization={escaped}")
        }
        None => "-c role=none".to_string(),
    }
}

impl Connector {
    /// Accepts a `postgresql://` URL or a `key=value` connection string, like libpq.
    pub fn from_url(url: &str) -> Result<Self, EngineError> {
        let (rest, ssl_mode, root_cert) = split_tls_parameters(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| EngineError::AdminUrl(crate::error_chain(&e)))?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => WireSslMode::Disable,
            SslMode::Prefer => WireSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireSslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("pgtenant");
        }
        let options = format!("{SESSION_OPTIONS} {}", identity_options(config.get_user()));
        config.options(&options);
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        let tls = MakeRustlsConnect::new(client_tls_config(ssl_mode, root_cert.as_deref())?);
        Ok(Connector {
            config,
            tls,
            ssl_mode,
            root_cert,
        })
    }

    /// For sessions as an application would open them (tenant roles): the server's defaults for
    /// search_path and timeouts instead of the control connection's.
    pub fn as_application(mut self) -> Self {
        self.config.options("");
        self
    }

    /// The same server reached as another role: to prove a tenant login works.
    pub fn with_login(&self, user: &str, password: &str) -> Self {
        let mut config = self.config.clone();
        config.user(user).password(password).options("");
        Connector {
            config,
            tls: self.tls.clone(),
            ssl_mode: self.ssl_mode,
            root_cert: self.root_cert.clone(),
        }
    }

    /// Host and port of the admin URL: the default endpoint written into credentials.
    pub fn endpoint(&self) -> (String, u16) {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        (host, port)
    }

    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// libpq's environment for a client program (pg_dump, pg_restore) to reach `database` the way
    /// this connector does: the password in the environment, never on a command line.
    pub fn libpq_env(&self, database: &str) -> Vec<(&'static str, String)> {
        let (host, port) = self.endpoint();
        let mut env = vec![
            ("PGHOST", host),
            ("PGPORT", port.to_string()),
            ("PGDATABASE", database.to_string()),
            ("PGAPPNAME", "pgtenant".to_string()),
            ("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string()),
            (
                "PGSSLMODE",
                match self.ssl_mode {
                    SslMode::Disable => "disable",
                    SslMode::Prefer => "prefer",
                    SslMode::Require => "require",
                    SslMode::VerifyCa => "verify-ca",
                    SslMode::VerifyFull => "verify-full",
                }
                .to_string(),
            ),
        ];
        if let Some(user) = self.config.get_user() {
            env.push(("PGUSER", user.to_string()));
        }
        env.push(("PGOPTIONS", identity_options(self.config.get_user())));
        if let Some(password) = self.config.get_password() {
            env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
        }
        if let Some(root_cert) = &self.root_cert {
            env.push(("PGSSLROOTCERT", root_cert.display().to_string()));
        }
        env
    }

    /// `database` None is the admin URL's own database.
    pub async fn connect(&self, database: Option<&str>) -> Result<Client, EngineError> {
        let mut config = self.config.clone();
        if let Some(database) = database {
            config.dbname(database);
        }
        let (client, connection) =
            config
                .connect(self.tls.clone())
                .await
                .map_err(|source| EngineError::Connect {
                    database: database.map(str::to_string),
                    source,
                })?;
        tokio::spawn(async move {
            // The client reports the error to its caller; nothing to add here.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// tokio-postgres knows only disable/prefer/require; pull libpq's stricter modes and the CA out
/// of the URL and implement them with rustls.
fn split_tls_parameters(url: &str) -> Result<(String, SslMode, Option<PathBuf>), EngineError> {
    let mut ssl_mode = None;
    let mut root_cert = None;
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| match pair.split_once('=') {
                        Some(("sslmode", value)) => {
                            ssl_mode = Some(percent_decode(value));
                            false
                        }
                        Some(("sslrootcert", value)) => {
                            root_cert = Some(PathBuf::from(percent_decode(value)));
                            false
                        }
                        _ => true,
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in parse_conninfo(url)? {
            match key.as_str() {
                "sslmode" => ssl_mode = Some(value),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )),
            }
        }
        kept.join(" ")
    };
    let ssl_mode = SslMode::parse(ssl_mode.as_deref().unwrap_or("prefer"))?;
    Ok((rest, ssl_mode, root_cert))
}

/// libpq's `key = value` grammar: spaces allowed around `=`, values bare or single-quoted, with
/// backslash escapes in both. Parsed here (not split on whitespace) so `sslmode = require` is honoured.
fn parse_conninfo(conninfo: &str) -> Result<Vec<(String, String)>, EngineError> {
    let malformed =
        |why: &str| EngineError::AdminUrl(format!("malformed connection string: {why}"));
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(malformed(&format!("`{key}` has no `=`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(
                        chars
                            .next()
                            .ok_or_else(|| malformed("dangling backslash"))?,
                    ),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(malformed(&format!("unterminated quoted value of `{key}`")))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(
                        chars
                            .next()
                            .ok_or_else(|| malformed("dangling backslash"))?,
                    );
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn client_tls_config(
    ssl_mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<rustls::ClientConfig, EngineError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| EngineError::Tls(e.to_string()))?;
    // libpq: with a root certificate given (or present at the default path), prefer and require
    // verify the chain like verify-ca; without one they encrypt only.
    let implied_root = match (ssl_mode, root_cert) {
        (SslMode::Prefer | SslMode::Require, None) => {
            default_root_cert().ok().filter(|p| p.exists())
        }
        _ => None,
    };
    let root_cert = root_cert.or(implied_root.as_deref());
    let verifier: Arc<dyn ServerCertVerifier> = match ssl_mode {
        SslMode::Disable => Arc::new(EncryptOnly(provider)),
        SslMode::Prefer | SslMode::Require if root_cert.is_none() => {
            Arc::new(EncryptOnly(provider))
        }
        SslMode::Prefer | SslMode::Require => Arc::new(ChainOnly(webpki_verifier(
            root_cert.expect("checked"),
            provider,
        )?)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = match root_cert {
                Some(path) => path.to_path_buf(),
                None => default_root_cert()?,
            };
            let webpki = webpki_verifier(&path, provider)?;
            if ssl_mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki_verifier(
    root_cert: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, EngineError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(root_cert)?), provider)
        .build()
        .map_err(|e| EngineError::Tls(e.to_string()))
}

fn default_root_cert() -> Result<PathBuf, EngineError> {
    std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        .ok_or_else(|| {
            EngineError::Tls("sslmode verify-ca/verify-full needs sslrootcert=<CA file>".into())
        })
}

fn load_roots(path: &Path) -> Result<RootCertStore, EngineError> {
    let pem = std::fs::read(path).map_err(|e| {
        EngineError::Tls(format!("cannot read sslrootcert {}: {e}", path.display()))
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert
            .map_err(|e| EngineError::Tls(format!("bad certificate in {}: {e}", path.display())))?;
        roots.add(cert).map_err(|e| {
            EngineError::Tls(format!("unusable certificate in {}: {e}", path.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(EngineError::Tls(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(roots)
}

/// `sslmode=require`: the channel is encrypted and handshake signatures are checked, the certificate is not.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to the CA, the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls() {
        let (rest, mode, root) =
            split_tls_parameters("postgresql://u:p@127.0.0.1:5433/postgres?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&application_name=x")
                .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p@127.0.0.1:5433/postgres?application_name=x"
        );
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(root.as_deref(), Some(Path::new("/tmp/ca.crt")));
    }

    #[test]
    fn key_value_strings_and_defaults() {
        let (rest, mode, root) = split_tls_parameters("host=db user=u sslmode=require").unwrap();
        assert_eq!(rest, "host='db' user='u'");
        assert_eq!(mode, SslMode::Require);
        assert_eq!(root, None);
        let (_, mode, _) = split_tls_parameters("postgresql://db/x").unwrap();
        assert_eq!(mode, SslMode::Prefer);
        assert!(split_tls_parameters("postgresql://db/x?sslmode=bogus").is_err());
    }

    #[test]
    fn control_sessions_pin_their_own_identity() {
        assert_eq!(
            identity_options(Some("ops")),
            "-c role=none -c session_authorization=ops"
        );
        assert_eq!(
            identity_options(Some(r"a b\c")),
            r"-c role=none -c session_authorization=a\ b\\c"
        );
        let connector = Connector::from_url("postgresql://ops@db/postgres").unwrap();
        let options = connector.config.get_options().unwrap();
        assert!(options.ends_with("-c role=none -c session_authorization=ops"));
        assert!(connector.libpq_env("x").contains(&(
            "PGOPTIONS",
            "-c role=none -c session_authorization=ops".into()
        )));
    }

    #[test]
    fn endpoint_comes_from_the_url() {
        let connector =
            Connector::from_url("postgresql://u@db.internal:6432/postgres?sslmode=require")
                .unwrap();
        assert_eq!(connector.endpoint(), ("db.internal".to_string(), 6432));
        assert_eq!(connector.user(), Some("u"));
    }

    #[test]
    fn conninfo_follows_libpq_grammar() {
        let pairs =
            parse_conninfo(r"host = db sslmode= require password='a\'b c' dbname=x\ y").unwrap();
        assert_eq!(
            pairs,
            [
                ("host", "db"),
                ("sslmode", "require"),
                ("password", "a'b c"),
                ("dbname", "x y")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let (rest, mode, _) = split_tls_parameters("host = db sslmode = require").unwrap();
        assert_eq!(
            mode,
            SslMode::Require,
            "spaces around = must not turn require into prefer"
        );
        assert_eq!(rest, "host='db'");
        let config: tokio_postgres::Config = "host='db' password='a\\'b'".parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b"[..]));
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("password='open").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
