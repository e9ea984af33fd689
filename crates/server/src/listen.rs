//! The accept loop, with the connection limits `axum::serve` does not expose:
//! how long a client may take to send a request's headers, how long it may
//! pause while sending a body, and how many connections are open at once.
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time to send a request's headers. hyper starts this clock whenever it
    /// waits for a request (a new connection included), so it also closes
    /// kept-alive connections idle this long and connections that send nothing.
    pub header_timeout: Duration,
    /// Longest pause while sending a request body.
    pub body_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(30), body_timeout: Duration::from_secs(30), max_connections: 512 }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open
/// connections finish their requests.
pub async fn serve(listener: TcpListener, app: Router, limits: HttpLimits, shutdown: impl Future<Output = ()>) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
