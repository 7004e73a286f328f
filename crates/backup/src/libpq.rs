//! How pg_dump and pg_restore reach the managed cluster as a tenant role: the admin URL's host,
//! port and TLS settings, with the tenant's user and password. Everything goes through libpq's
//! environment variables, so no password ever appears in a command line.

use std::process::Command;

use crate::BackupError;

/// The parts of the admin URL that say where the server is and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

impl ServerAddress {
    /// From a `postgresql://` URL or a `key=value` connection string. Only host, port, sslmode
    /// and sslrootcert are kept: the user and password are the control role's, not ours.
    pub fn from_admin_url(url: &str) -> Result<Self, BackupError> {
        let pairs = if let Some(rest) = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
        {
            url_pairs(rest)
        } else {
            keyword_pairs(url)
        };
        let mut address = ServerAddress {
            host: "localhost".into(),
            port: 5432,
            sslmode: None,
            sslrootcert: None,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "host" | "hostaddr" if !value.is_empty() => address.host = value,
                "port" => {
                    address.port = value.parse().map_err(|_| {
                        BackupError::Config(format!(
                            "the admin URL's port `{value}` is not a number"
                        ))
                    })?
                }
                "sslmode" => address.sslmode = Some(value),
                "sslrootcert" => address.sslrootcert = Some(value),
                _ => {}
            }
        }
        Ok(address)
    }

    /// Sets libpq's variables on `cmd` for a session of `user` in `database`.
    pub fn apply(&self, cmd: &mut Command, user: &str, password: &str, database: &str) {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", user)
            .env("PGPASSWORD", password)
            .env("PGDATABASE", database)
            .env("PGSSLMODE", self.sslmode.as_deref().unwrap_or("require"))
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pgtenant-backup");
        match &self.sslrootcert {
            Some(cert) => cmd.env("PGSSLROOTCERT", cert),
            None => cmd.env_remove("PGSSLROOTCERT"),
        };
    }
}

/// Removes every inherited libpq variable from `cmd`, so none overrides what we set.
pub(crate) fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

fn url_pairs(rest: &str) -> Vec<(String, String)> {
    let (authority_path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority_path.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut pairs = Vec::new();
    // The first host of a list is the one we use.
    let hostport = hostport.split(',').next().unwrap_or("");
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, rest)) => (host.to_string(), rest.strip_prefix(':').map(str::to_string)),
            None => (bracketed.to_string(), None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port.to_string())),
            None => (hostport.to_string(), None),
        }
    };
    pairs.push(("host".to_string(), percent_decode(&host)));
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        pairs.push(("port".to_string(), port));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((percent_decode(key), percent_decode(value)));
    }
    pairs
}

fn keyword_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    pairs
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keyword_strings() {
        let a = ServerAddress::from_admin_url(
            "postgresql://pgtenant:secret@127.0.0.1:5544/postgres?sslmode=verify-full&sslrootcert=/tmp/my%20state/ca.crt",
        )
        .unwrap();
        assert_eq!(
            a,
            ServerAddress {
                host: "127.0.0.1".into(),
                port: 5544,
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/tmp/my state/ca.crt".into()),
            }
        );
        let b = ServerAddress::from_admin_url(
            "host=db.internal port=6432 user=pgtenant password='x y' sslmode=require",
        )
        .unwrap();
        assert_eq!((b.host.as_str(), b.port), ("db.internal", 6432));
        assert_eq!(b.sslmode.as_deref(), Some("require"));
        let c = ServerAddress::from_admin_url("postgresql://u@[::1]/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5432));
    }
}
