//! Reads and discards what a handler left of a large request body, after the answer.
//!
//! A request refused without reading its body (413 over the size limit, 401, 403, …) leaves
//! the rest of the body in flight. If nothing reads it, hyper closes the connection with that
//! data unread, and the kernel answers the client's next bytes with a reset: a client still
//! uploading sees "broken pipe" or "connection reset" instead of the problem+json answer,
//! which the reset may also wipe from its receive buffer. Measured: one 8 MiB body in three
//! over the 1 MiB limit got a broken pipe instead of its 413. So, like nginx's discarding of
//! refused bodies, a task reads the rest and throws it away while the answer goes out (hyper
//! keeps reading a request body that is still wanted, and keeps the connection for it), within
//! bounds ([`DRAIN_BYTES_MAX`], [`DRAIN_TIME_MAX`]); past them, or when more than that is
//! still announced, the connection is closed as before. The answer never waits for it, and
//! the request's load-shedding slot is released as usual.
//!
//! Only bodies that can outgrow the socket buffers are watched (declared over
//! [`WATCH_FROM_BYTES`], or chunked): small ones arrive with the request head. A client that
//! sent `Expect: 100-continue` sends its body only once the handler reads it, so such a body
//! is discarded only if the handler started reading it. Refusals of the rate limits and of
//! load shedding are answered before this layer and never read anything.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// Bodies declared larger than this (or chunked) are watched.
pub const WATCH_FROM_BYTES: u64 = 64 * 1024;
/// At most this much of an unread body is read and discarded.
pub const DRAIN_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest the discarding may take.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(5);

/// Middleware: see the module docs.
pub async fn layer(request: Request, next: Next) -> Response {
    if !watched(request.headers()) {
        return next.run(request).await;
    }
    let waits_for_continue = request.headers().contains_key(header::EXPECT);
    let (back, mut returned) = oneshot::channel();
    let request = request.map(|body| {
        Body::new(HandBack {
            body: Some(body),
            back: Some(back),
            polled: false,
        })
    });
    let response = next.run(request).await;
    // The handler is done with the request, so its body came back (unless a handler kept it
    // elsewhere: then it is not ours to read).
    if let Ok((rest, polled)) = returned.try_recv()
        && !rest.is_end_stream()
        && (polled || !waits_for_continue)
        && rest.size_hint().lower() <= DRAIN_BYTES_MAX as u64
    {
        tokio::spawn(discard(rest));
    }
    response
}

/// Whether the request announces a body that may not have arrived whole with its head.
fn watched(headers: &axum::http::HeaderMap) -> bool {
    match headers.get(header::CONTENT_LENGTH) {
        Some(len) => len
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > WATCH_FROM_BYTES),
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// Reads `body` to its end, within [`DRAIN_BYTES_MAX`] and [`DRAIN_TIME_MAX`].
async fn discard(mut body: Body) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME_MAX;
    let mut read = 0usize;
    while !body.is_end_stream() && read < DRAIN_BYTES_MAX {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            // The end, a broken connection, or out of time.
            _ => return,
        }
    }
}

/// The request body, handed back to [`layer`] when the handler drops it, with whether the
/// handler read from it.
struct HandBack {
    body: Option<Body>,
    back: Option<oneshot::Sender<(Body, bool)>>,
    polled: bool,
}

impl HttpBody for HandBack {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    // Forwarded: what is left of the declared length, for whoever reads the body.
    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            let _ = back.send((body, self.polled));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn only_large_or_chunked_bodies_are_watched() {
        let with = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            watched(&h)
        };
        assert!(!with(&[]));
        assert!(!with(&[(header::CONTENT_LENGTH, "65536")]));
        assert!(with(&[(header::CONTENT_LENGTH, "65537")]));
        assert!(!with(&[(header::CONTENT_LENGTH, "not a number")]));
        assert!(with(&[(header::TRANSFER_ENCODING, "chunked")]));
    }
}
