//! Request bodies must keep arriving, and a request stuck reading its body is told so.
//!
//! Every handler reads (buffers) its whole body before it changes anything, and the
//! idempotency layer does so before it claims a key. A client that sends a request head and
//! then stalls in the middle of its body used to hold its request, and its load-shedding
//! slot, until the request timeout (30 s), and then got `503 timeout` saying a change "may
//! still have been committed": untrue, nothing had started. Now a body whose next bytes do
//! not come within `server.body_read_timeout_ms` fails to read ([`BodyStalled`]), which the
//! body extractors answer with `408 request_timeout`, and a request timeout that strikes
//! while the handler is still waiting for its body is `408` too. Both say that nothing was
//! changed, which holds because nothing acts before its body is read. A handler that never
//! reads its body is not affected (its timeout stays a `503`: it may have been working).

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The error a stalled body fails with (in the source chain of the extractors' errors).
#[derive(Debug)]
pub struct BodyStalled {
    pub idle: Duration,
}

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no part of the request body arrived for {} ms",
            self.idle.as_millis()
        )
    }
}

impl std::error::Error for BodyStalled {}

/// Whether `error` or one of its sources is a [`BodyStalled`].
pub fn is_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyStalled>(error)
}

/// Whether `error` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

const UNTOUCHED: u8 = 0;
const READING: u8 = 1;
const FINISHED: u8 = 2;

/// How far the request's body was read: kept by [`watch`], asked when a request times out.
#[derive(Clone, Debug)]
pub struct BodyProgress(Arc<AtomicU8>);

impl BodyProgress {
    /// The handler (or a layer) began reading the body and has not reached its end.
    pub fn waiting_for_body(&self) -> bool {
        self.0.load(Ordering::Acquire) == READING
    }
}

/// Wraps a request body: its next frame must come within `idle` once someone waits for it.
pub fn watch(body: Body, idle: Duration) -> (Body, BodyProgress) {
    let progress = BodyProgress(Arc::new(AtomicU8::new(if body.is_end_stream() {
        FINISHED
    } else {
        UNTOUCHED
    })));
    let watched = Watched {
        inner: body,
        idle,
        timer: None,
        progress: progress.clone(),
        failed: false,
    };
    (Body::new(watched), progress)
}

struct Watched {
    inner: Body,
    idle: Duration,
    /// Runs while a read waits for the next frame.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: BodyProgress,
    failed: bool,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let _ = this.progress.0.compare_exchange(
            UNTOUCHED,
            READING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if this.inner.is_end_stream() {
                    this.progress.0.store(FINISHED, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.progress.0.store(FINISHED, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(axum::Error::new(BodyStalled { idle }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body did not arrive in time.
pub fn timed_out_reading() -> crate::problem::ApiError {
    crate::problem::ApiError::new(
        crate::problem::codes::REQUEST_TIMEOUT,
        "the request body did not arrive in time; nothing was changed",
    )
}

/// The answer to a body that could not be read: too large (`413`), stalled (`408`), or
/// broken off (`400 bad_request`: a malformed chunk, a connection closed early).
pub fn read_failed(error: &(dyn std::error::Error + 'static)) -> crate::problem::ApiError {
    use crate::problem::{ApiError, codes};
    if is_stalled(error) {
        return timed_out_reading();
    }
    if caused_by::<http_body_util::LengthLimitError>(error) {
        return ApiError::new(
            codes::PAYLOAD_TOO_LARGE,
            "the request body exceeds the size limit",
        );
    }
    ApiError::new(
        codes::BAD_REQUEST,
        format!("the request body could not be read ({error}); nothing was changed"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_and_one_that_keeps_coming_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let (body, progress) = watch(Body::from_stream(stream), Duration::from_secs(10));
        assert!(!progress.waiting_for_body(), "nobody read it yet");
        let reading = tokio::spawn(axum::body::to_bytes(body, 1024));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(9)).await;
            tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(progress.waiting_for_body());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let error = reading.await.unwrap().unwrap_err();
        assert!(is_stalled(&error), "{error:?}");
        drop(tx);

        let (body, progress) = watch(Body::from("{}"), Duration::from_secs(10));
        assert_eq!(&axum::body::to_bytes(body, 1024).await.unwrap()[..], b"{}");
        assert!(!progress.waiting_for_body(), "read to its end");
        let (_, progress) = watch(Body::empty(), Duration::from_secs(10));
        assert!(!progress.waiting_for_body(), "an empty body is finished");
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}
