//! The accept loop, with the connection limits `axum::serve` does not expose:
//! how long a client may take to send a request's headers, how long a kept-alive
//! connection may sit idle between requests, how long a client may pause while
//! sending a body, and how many connections are open at once.
use axum::Router;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time to send a request's headers, from a new connection's start or a
    /// later request's first byte: a connection that sends nothing is closed after it.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait, after an answer, for the next request's first byte.
    pub idle_timeout: Duration,
    /// Longest pause while sending a request body.
    pub body_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(30), idle_timeout: Duration::from_secs(60), body_timeout: Duration::from_secs(30), max_connections: 512 }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open
/// connections finish their requests.
pub async fn serve(listener: TcpListener, app: Router, limits: HttpLimits, shutdown: impl Future<Output = ()>) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    // hyper's header timer runs from whenever it waits for a request; the
    // connection's own timer (`HeadWait`) tells idle waits from slow headers.
    builder.header_read_timeout(limits.header_timeout);
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
        let (mut builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let activity = Arc::new(Activity::default());
        builder.timer(ConnTimer { activity: activity.clone(), header: limits.header_timeout, idle: limits.idle_timeout });
        tokio::spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let io = TokioIo::new(Watched { inner: stream, activity });
            if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What a connection's timer needs to know of its reads.
#[derive(Default)]
struct Activity {
    /// Requests hyper has waited for on this connection.
    waits: Mutex<(u64, Option<Instant>)>,
}

impl Activity {
    /// A new wait for a request: (its number, from 1) and no byte of it yet.
    fn start_wait(&self) -> u64 {
        let mut w = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        *w = (w.0 + 1, None);
        w.0
    }

    fn read_some(&self) {
        let mut w = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        w.1.get_or_insert_with(Instant::now);
    }

    fn first_byte(&self) -> Option<Instant> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// The connection's socket, noting when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper asks it for a sleep only when it
/// starts waiting for a request's headers, and ends the connection when the
/// sleep is over; the sleep decides which limit applies.
#[derive(Clone)]
struct ConnTimer {
    activity: Arc<Activity>,
    header: Duration,
    idle: Duration,
}

impl Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let wait = self.activity.start_wait();
        let started = Instant::now();
        Box::pin(HeadWait {
            activity: self.activity.clone(),
            started,
            first_request: wait == 1,
            header: self.header,
            idle: self.idle,
            sleep: Box::pin(tokio::time::sleep_until(started.into())),
        })
    }
}

/// Waiting for a request: a new connection's first request must arrive whole
/// within the header timeout; on a kept-alive one the next request's first
/// byte may take the idle timeout, its headers then the header timeout.
struct HeadWait {
    activity: Arc<Activity>,
    started: Instant,
    first_request: bool,
    header: Duration,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadWait {
    type Output = ();

    /// hyper polls this whenever the connection wakes (bytes included), so the
    /// deadline follows the first byte as soon as it arrives.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.activity.first_byte() {
            Some(first) => first + self.header,
            None if self.first_request => self.started + self.header,
            None => self.started + self.idle,
        };
        let deadline = tokio::time::Instant::from(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeadWait {}
