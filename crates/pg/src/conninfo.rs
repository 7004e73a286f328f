//! libpq's connection strings: `postgresql://` URLs and `key = value` lists, and its `sslmode`.
//!
//! tokio-postgres parses both forms but knows only disable/prefer/require; [`Conninfo::parse`] takes
//! libpq's stricter modes and the CA out first (to be implemented with rustls, see [`crate::tls`])
//! and hands the rest to tokio-postgres.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::Error;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    /// Encrypted, server not verified: the minimum the platform accepts for applications.
    #[default]
    Require,
    /// Encrypted, server certificate signed by the CA in `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// What libpq assumes when a connection string names no mode.
    pub const LIBPQ_DEFAULT: SslMode = SslMode::Prefer;

    /// The spelling libpq, PgJDBC and most drivers use.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn parse(value: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|mode| mode.as_str() == value)
    }

    /// Whether the server's certificate is checked, which needs a CA (`sslrootcert`).
    pub fn verifies_server(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The nearest mode tokio-postgres implements on the wire (certificates are checked by the
    /// verifier [`crate::tls::client_config`] builds for the mode itself).
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            SslMode::Disable => Wire::Disable,
            SslMode::Allow | SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        }
    }
}

/// A parsed connection string.
#[derive(Debug, Clone)]
pub struct Conninfo {
    /// Everything but the TLS parameters, as tokio-postgres understands it.
    pub config: tokio_postgres::Config,
    /// `sslmode` as given (None: not given, libpq's default [`SslMode::LIBPQ_DEFAULT`] applies).
    pub ssl_mode: Option<SslMode>,
    /// `sslrootcert` as given.
    pub root_cert: Option<PathBuf>,
}

impl Conninfo {
    /// Accepts a `postgresql://` URL or a `key=value` connection string, like libpq.
    pub fn parse(conninfo: &str) -> Result<Self, Error> {
        let (rest, ssl_mode, root_cert) = split_tls_parameters(conninfo)?;
        let config = rest.parse().map_err(Error::Config)?;
        Ok(Conninfo {
            config,
            ssl_mode,
            root_cert,
        })
    }

    /// The mode connections use: as given, else libpq's default.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode.unwrap_or(SslMode::LIBPQ_DEFAULT)
    }

    /// The first host and port (libpq's defaults `localhost` and 5432 when none is given); a Unix
    /// socket directory as its path.
    pub fn endpoint(&self) -> (String, u16) {
        endpoint(&self.config)
    }
}

pub(crate) fn endpoint(config: &tokio_postgres::Config) -> (String, u16) {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

type TlsParameters = (String, Option<SslMode>, Option<PathBuf>);

/// Takes `sslmode` and `sslrootcert` out of `url`, returning what is left as a connection string
/// of the same form.
fn split_tls_parameters(url: &str) -> Result<TlsParameters, Error> {
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
        for (key, value) in parse_pairs(url)? {
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
    let ssl_mode = ssl_mode
        .map(|mode| SslMode::parse(&mode).ok_or(Error::SslMode(mode)))
        .transpose()?;
    Ok((rest, ssl_mode, root_cert))
}

/// libpq's `key = value` grammar: spaces allowed around `=`, values bare or single-quoted, with
/// backslash escapes in both. Parsed here (not split on whitespace) so `sslmode = require` is honoured.
pub fn parse_pairs(conninfo: &str) -> Result<Vec<(String, String)>, Error> {
    let malformed = |why: &str| Error::Conninfo(why.to_string());
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

/// Undoes URL percent-encoding (`%XX`); anything else, a malformed escape included, stays as is.
pub fn percent_decode(value: &str) -> String {
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

/// Percent-encodes every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) and those in `keep`:
/// libpq and PgJDBC decode every URL component. `+` is encoded too, which PgJDBC would otherwise
/// decode to a space.
pub fn percent_encode(value: impl AsRef<[u8]>, keep: &[u8]) -> String {
    let value = value.as_ref();
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tls_parameters_are_taken_out_of_urls() {
        let (rest, mode, root) =
            split_tls_parameters("postgresql://u:p@127.0.0.1:5433/postgres?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&application_name=x")
                .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p@127.0.0.1:5433/postgres?application_name=x"
        );
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some(Path::new("/tmp/ca.crt")));
    }

    #[test]
    fn key_value_strings_and_defaults() {
        let (rest, mode, root) = split_tls_parameters("host=db user=u sslmode=require").unwrap();
        assert_eq!(rest, "host='db' user='u'");
        assert_eq!(mode, Some(SslMode::Require));
        assert_eq!(root, None);
        let parsed = Conninfo::parse("postgresql://db/x").unwrap();
        assert_eq!(parsed.ssl_mode, None);
        assert_eq!(parsed.ssl_mode(), SslMode::Prefer);
        assert!(matches!(
            split_tls_parameters("postgresql://db/x?sslmode=bogus"),
            Err(Error::SslMode(mode)) if mode == "bogus"
        ));
    }

    #[test]
    fn conninfo_follows_libpq_grammar() {
        let pairs =
            parse_pairs(r"host = db sslmode= require password='a\'b c' dbname=x\ y").unwrap();
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
            Some(SslMode::Require),
            "spaces around = must not turn require into prefer"
        );
        assert_eq!(rest, "host='db'");
        let config: tokio_postgres::Config = "host='db' password='a\\'b'".parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b"[..]));
        assert!(parse_pairs("host").is_err());
        assert!(parse_pairs("password='open").is_err());
    }

    #[test]
    fn endpoints_of_both_forms() {
        let url = Conninfo::parse(
            "postgresql://pgtenant:secret@127.0.0.1:5544/postgres?sslmode=verify-full&sslrootcert=/tmp/my%20state/ca.crt",
        )
        .unwrap();
        assert_eq!(url.endpoint(), ("127.0.0.1".to_string(), 5544));
        assert_eq!(url.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(
            url.root_cert.as_deref(),
            Some(Path::new("/tmp/my state/ca.crt"))
        );
        let pairs = Conninfo::parse(
            "host=db.internal port=6432 user=pgtenant password='x y' sslmode=require",
        )
        .unwrap();
        assert_eq!(pairs.endpoint(), ("db.internal".to_string(), 6432));
        assert_eq!(pairs.config.get_password(), Some(&b"x y"[..]));
        let v6 = Conninfo::parse("postgresql://u@[::1]/db").unwrap();
        assert_eq!(v6.endpoint(), ("::1".to_string(), 5432));
        assert!(Conninfo::parse("host=db port=x").is_err());
    }

    #[test]
    fn sslmode_names_round_trip() {
        for mode in SslMode::ALL {
            assert_eq!(SslMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SslMode::parse("verify_full"), None);
        assert!(SslMode::VerifyCa.verifies_server() && !SslMode::Require.verifies_server());
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_encode("/tmp/my state/ca&1.crt", b"/"),
            "/tmp/my%20state/ca%261.crt"
        );
        assert_eq!(percent_encode("p@ss:w/o", b""), "p%40ss%3Aw%2Fo");
        let raw = "ünï code/&?#%";
        assert_eq!(percent_decode(&percent_encode(raw, b"")), raw);
    }
}
