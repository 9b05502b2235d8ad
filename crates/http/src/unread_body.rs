//! Reads and discards what a handler left of a large request body before the answer goes out.
//!
//! A request refused without reading its body (413 over the size limit, 401, 403, …) leaves
//! the rest of the body in flight. hyper then closes the connection with that data unread,
//! and the kernel answers the client's next bytes with a reset: a client still uploading sees
//! "broken pipe" or "connection reset" instead of the problem+json answer, which the reset may
//! also wipe from its receive buffer. Measured: one 8 MiB body in three over the 1 MiB limit
//! got a broken pipe instead of its 413. So, like nginx's discarding of refused bodies, the
//! rest is read and thrown away first, within bounds ([`DRAIN_BYTES_MAX`],
//! [`DRAIN_TIME_MAX`]); past them the connection is closed as before.
//!
//! Only bodies that can outgrow the socket buffers are watched (declared over
//! [`WATCH_FROM_BYTES`], or chunked): small ones arrive with the request head. A client that
//! sent `Expect: 100-continue` has not sent its body, and reading it would ask for it.
//! Refusals of the rate limits and of load shedding are answered before this layer: an
//! overloaded server does not spend its time reading junk.

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
    let (back, mut returned) = oneshot::channel();
    let request = request.map(|body| {
        Body::new(HandBack {
            body: Some(body),
            back: Some(back),
        })
    });
    let response = next.run(request).await;
    // The handler is done with the request, so its body came back (unless a handler kept it
    // elsewhere: then the answer does not wait for it).
    if let Ok(rest) = returned.try_recv() {
        discard(rest).await;
    }
    response
}

fn watched(headers: &axum::http::HeaderMap) -> bool {
    if headers.contains_key(header::EXPECT) {
        return false;
    }
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
    while !body.is_end_stream() && read <= DRAIN_BYTES_MAX {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            // The end, a broken connection, or out of time.
            _ => return,
        }
    }
}

/// The request body, handed back to [`layer`] when the handler drops it.
struct HandBack {
    body: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
}

impl HttpBody for HandBack {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.get_mut().body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    // Forwarded: the body limit refuses a declared length over it without reading a byte.
    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            let _ = back.send(body);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn only_large_or_chunked_bodies_without_expect_are_watched() {
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
        assert!(!with(&[
            (header::CONTENT_LENGTH, "9999999"),
            (header::EXPECT, "100-continue")
        ]));
    }
}
