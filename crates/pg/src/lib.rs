//! pgtenant's one Postgres layer, used by every other crate:
//!
//! - [`conninfo`]: libpq's connection strings (`postgresql://` URLs and `key=value` lists) and
//!   [`SslMode`];
//! - [`tls`]: the rustls configuration each `sslmode` means;
//! - [`connect`]: the [`Connector`], with the session settings every control connection carries;
//! - [`env`]: libpq's environment for client programs (pg_dump, pg_restore, psql);
//! - [`process`]: running those programs (they die with us, errors quote their stderr, timeouts);
//! - [`quote`]: identifiers and literals as SQL text;
//! - [`sqlstate`]: what a server error means for the caller (retry, fail over, fix a privilege).

pub mod connect;
pub mod conninfo;
pub mod env;
pub mod process;
pub mod quote;
pub mod sqlstate;
pub mod tls;

use std::path::PathBuf;

pub use connect::Connector;
pub use conninfo::SslMode;
pub use env::ClientEnv;
pub use process::ProcessError;
pub use quote::{enclose, quote_list, quote_literal, Ident};
pub use sqlstate::ErrorClass;

/// What can go wrong setting up or opening a connection. Every variant keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection string does not follow libpq's grammar.
    #[error("malformed connection string: {0}")]
    Conninfo(String),
    #[error("invalid connection string")]
    Config(#[source] tokio_postgres::Error),
    #[error("sslmode `{0}` is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("sslmode verify-ca/verify-full needs sslrootcert=<CA file>")]
    NoRootCert,
    #[error("cannot read sslrootcert {}", path.display())]
    ReadRootCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable certificate in {}", path.display())]
    BadRootCert {
        path: PathBuf,
        /// None: the file holds no certificate at all.
        #[source]
        source: Option<RootCertError>,
    },
    #[error("TLS setup")]
    Tls(#[source] rustls::Error),
    #[error("TLS setup: the certificate verifier")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("cannot connect to {}", database.as_deref().map_or("the cluster".to_string(), |d| format!("database `{d}`")))]
    Connect {
        database: Option<String>,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Why a certificate of an sslrootcert file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RootCertError {
    #[error("unreadable PEM")]
    Pem(#[source] std::io::Error),
    #[error("certificate rejected")]
    Rejected(#[source] rustls::Error),
}

/// The process's one async runtime (multi-threaded), started on first use: every synchronous
/// entry point of pgtenant's libraries and the CLI runs its futures here, so no command builds a
/// runtime per SQL call.
pub fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}
