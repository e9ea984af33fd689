//! The accept loop, with the connection limits `axum::serve` does not expose:
//! how long a client may take to send a request's headers, how long it may
//! pause while sending a body, and how many connections are open at once.
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time to send a request's headers. hyper starts this clock whenever it
    /// waits for a request, so it also closes kept-alive connections idle this long.
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
pub async fn serve(listener: TcpListener, app: Router, limits: &HttpLimits, shutdown: impl Future<Output = ()>) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // HTTP/2 pings find dead peers; an idle h2 connection is kept (it costs one task).
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(limits.header_timeout).keep_alive_timeout(limits.header_timeout);
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
        let (builder, app, watcher, header_timeout) = (builder.clone(), app.clone(), graceful.watcher(), limits.header_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            if !protocol_known(&stream, header_timeout).await {
                return; // silent, or gone, for the whole header timeout
            }
            let service = TowerToHyperService::new(app);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The HTTP/2 connection preface; anything else is taken for HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, at most `limit`, until the first bytes tell HTTP/1 from HTTP/2.
/// hyper's header timeout starts only after that choice, so without this a
/// client that connects and sends nothing would hold its slot forever.
async fn protocol_known(stream: &TcpStream, limit: Duration) -> bool {
    let wait = async {
        let mut head = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut head).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == head.len() || head[..n] != H2_PREFACE[..n] => return true,
                // A prefix of the preface so far: peek again once more may have come.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}
