//! The HTTP connection layer: our own accept loop over hyper's HTTP/1 connection builder.
//!
//! `axum::serve` gives hyper no timer, so hyper's header read timeout never runs: a client
//! that sends its request head one byte at a time (slowloris), or opens a connection and
//! sends nothing, holds that connection forever; and it accepts connections without bound.
//! Here every connection needs a permit (`max_connections`; beyond it new connections wait
//! in the kernel's backlog), a request head must arrive completely within
//! `header_read_timeout` (the same clock closes keep-alive connections left idle that long),
//! and a request head larger than `max_request_head_bytes` is refused by hyper with
//! `431 Request Header Fields Too Large` before any handler runs (made a problem on its way
//! out by [`crate::unreadable_head`], like hyper's other answers to heads it cannot read).
//! A client that stops taking a response (its receive window closed) for
//! `write_stall_timeout` loses the connection:
//! hyper has no write timeout, and the request timeout ends when the headers are sent.
//! One client holds at most `max_connections_per_client` of the connections (the rest of
//! its connections are closed as they come): rate limits count requests, and a client that
//! kept a thousand connections alive with a request every few seconds each held every slot.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// What one client may hold of the server before a request reaches the router.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_request_head_bytes: usize,
    /// See [`crate::client_addr`].
    pub trusted_proxies: Arc<[crate::client_addr::Cidr]>,
}

/// Serves `router` on `listener` until `stop` resolves; then closes the listener and asks
/// every open connection to finish its in-flight request and close. Resolves when the last
/// connection has closed (the caller bounds that wait with its grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = PerClient::new(limits.max_connections_per_client.max(1));
    let connections = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_request_head_bytes);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning; the connections that
                    // hold the descriptors time out or finish.
                    tracing::warn!(event = "server.accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(held) = per_client.admit(remote.ip(), &limits.trusted_proxies) else {
            metrics::counter!("http_connections_refused_total", "reason" => "per_client")
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let trusted = limits.trusted_proxies.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let client = crate::client_addr::client_addr(remote, request.headers(), &trusted);
            request.extensions_mut().insert(ConnectInfo(client));
            router.clone().oneshot(request)
        });
        let stream = crate::unreadable_head::UnreadableHead::new(StallGuard::new(
            stream,
            limits.write_stall_timeout,
        ));
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = metrics::gauge!("http_connections_open");
        open.increment(1.0);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, malformed head): nothing to do.
            if let Err(e) = connection.await {
                tracing::debug!(event = "server.connection_closed", error = %e);
            }
            open.decrement(1.0);
            drop(held);
            drop(permit);
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Connections open per client, against its cap.
#[derive(Clone)]
struct PerClient {
    cap: usize,
    open: trueline_http::slots::KeyedSlots<IpAddr>,
}

/// A client's place among its connections, given back when the connection ends (`None`: a
/// trusted proxy's, not counted).
type Held = Option<trueline_http::slots::Slot<IpAddr>>;

impl PerClient {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            open: trueline_http::slots::KeyedSlots::default(),
        }
    }

    /// A place for a connection from `peer`, or `None` when the client has its cap. A
    /// trusted proxy carries many clients: it is not counted.
    fn admit(&self, peer: IpAddr, trusted: &[crate::client_addr::Cidr]) -> Option<Held> {
        if trusted.iter().any(|c| c.contains(peer)) {
            return Some(None);
        }
        let client = trueline_http::limits::client_key(peer);
        self.open.take(client, self.cap).map(Some)
    }
}

/// A connection's stream whose writes fail (`TimedOut`) once one has waited `limit` without
/// any progress: the client stopped reading. Reads pass through (the request head has its own
/// timeout, the request body the request timeout).
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits for the client.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write or flush poll: progress disarms the timer; waiting arms it (once) and
    /// fails the write when it fires.
    fn watch<T>(
        &mut self,
        polled: std::task::Poll<std::io::Result<T>>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing of the response for the write stall timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(polled, cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(polled, cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(polled, cx)
    }
}
