//! HTTPS: rustls (ring) behind axum's [`Listener`]. Handshakes run in their own tasks (a slow
//! or silent client never holds up the others) with a deadline; failed ones are logged and
//! dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{HttpError, TlsFiles};

const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The server configuration from the PEM files.
pub(super) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, HttpError> {
    let failed = |path: &std::path::Path, message: String| HttpError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| failed(path, e.to_string()));
    let certificate = read(&files.certificate)?;
    let certificates = rustls_pemfile::certs(&mut certificate.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(&files.certificate, e.to_string()))?;
    if certificates.is_empty() {
        return Err(failed(&files.certificate, "no certificate in it".into()));
    }
    let key = read(&files.key)?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(|e| failed(&files.key, e.to_string()))?
        .ok_or_else(|| failed(&files.key, "no private key in it".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(&files.certificate, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certificates, key)
    .map_err(|e| failed(&files.key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub(super) struct TlsListener {
    address: std::io::Result<std::net::SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    pub(super) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let address = listener.local_addr();
        let (send, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut listener = listener;
            loop {
                let (tcp, peer) = tokio::select! {
                    connection = Listener::accept(&mut listener) => connection,
                    // The server is gone: close the port.
                    _ = send.closed() => return,
                };
                let acceptor = acceptor.clone();
                let send = send.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = send.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { address, ready }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.address {
            Ok(address) => Ok(*address),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
