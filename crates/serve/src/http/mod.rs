//! The HTTP side: health and readiness, the API, `/metrics`, the status page, the git webhook.
//! Handlers read [`Shared`] and enqueue [`crate::state::Command`]s; they never reconcile.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

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
}

/// Every route of the service.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared)
}

/// Binds `settings.listen` and serves until `shutdown` completes. Returns the bound address
/// through `bound` first (the port may be 0 in tests).
pub async fn run(
    shared: Arc<Shared>,
    settings: HttpSettings,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| HttpError::Bind {
            address: settings.listen,
            source,
        })?;
    bound(listener.local_addr().map_err(HttpError::Serve)?);
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
}
