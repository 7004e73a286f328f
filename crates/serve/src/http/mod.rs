//! The HTTP side: health and readiness, the API, `/metrics`, the status page, the git webhook.
//! Handlers read [`Shared`] and enqueue [`crate::state::Command`]s; they never reconcile.
//!
//! | route | what |
//! |-------|------|
//! | `GET /` | the status page ([`page`]) |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (active, source readable, clusters reconciled) |
//! | `GET /metrics` | OpenMetrics text ([`crate::metrics::encode`]) |
//! | `GET /api/v1/tenants`, `GET /api/v1/tenants/{ns}/{db}`, `GET /api/v1/plan` | the state |
//! | `POST /api/v1/reconcile[?tenant=NS/DB]` | enqueue a reconcile (bearer token) |
//! | `GET /api/v1/events` | server-sent events, `Last-Event-ID` replays the recent ones |
//! | `POST /api/v1/hooks/git` | signed webhook (GitHub or GitLab style): fetch now |
//! | `GET /api/v1/openapi.json` | the OpenAPI document of all of these ([`api::ApiDoc`]) |
//!
//! Every error is JSON `{ "error": "…" }`. Every text that leaves the service goes through
//! [`scrub`], so a connection string in an error never shows its password.

pub mod api;
mod auth;
mod events;
pub mod page;
pub mod scrub;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::sync::watch;

use crate::state::Shared;

/// What the HTTP side is given by `serve`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// File holding the bearer token of the mutating endpoints; None: they answer 403.
    pub token_file: Option<PathBuf>,
    /// File holding the git webhook secret; None: the webhook answers 404.
    pub webhook_secret_file: Option<PathBuf>,
    /// Certificate and key (PEM) to serve HTTPS; None: plain HTTP.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("listening on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error("TLS certificate or key {path}: {message}")]
    Tls { path: PathBuf, message: String },
}

/// What every handler is given.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) shared: Arc<Shared>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) webhook_secret_file: Option<PathBuf>,
    /// Turns true when the server shuts down: endless responses (SSE) end then.
    pub(crate) stopping: watch::Receiver<bool>,
}

/// Every route of the service, with no token and no webhook secret (mutating endpoints answer
/// 403, the webhook 404) and streams that end only with their client.
pub fn router(shared: Arc<Shared>) -> Router {
    // The sender is dropped: the streams never see a shutdown.
    let (_, stopping) = watch::channel(false);
    api::routes(App {
        shared,
        token_file: None,
        webhook_secret_file: None,
        stopping,
    })
}

/// Binds `settings.listen` and serves until `shutdown` completes. Returns the bound address
/// through `bound` first (the port may be 0 in tests). With `settings.tls`, serves HTTPS only.
/// On shutdown, open event streams end so the server stops at once.
pub async fn run(
    shared: Arc<Shared>,
    settings: HttpSettings,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let tls = match &settings.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| HttpError::Bind {
            address: settings.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(HttpError::Serve)?;
    let (stop, stopping) = watch::channel(false);
    let app = api::routes(App {
        shared,
        token_file: settings.token_file.clone(),
        webhook_secret_file: settings.webhook_secret_file.clone(),
        stopping,
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    bound(address);
    match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve),
        Some(acceptor) => axum::serve(tls::TlsListener::new(listener, acceptor), app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve),
    }
}
