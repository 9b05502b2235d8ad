//! A request head that hyper cannot read (a malformed request line or header, a head over
//! `server.max_request_head_bytes` or with more than 100 headers) is answered by hyper
//! itself, before any of our code runs, with a bare `400`/`414`/`431`: no body, no
//! `X-Request-Id`, no log line. hyper has no hook for that answer, so this connection wrapper
//! recognizes it on its way to the socket and writes a problem in its place: the same status,
//! `application/problem+json` with a stable `code`, a request id in header and body, and the
//! request's `http.request.completed` line. (Reading the head a second time ourselves, to
//! answer before hyper does, would parse every request twice and track every body's end.)
//!
//! hyper 1's automatic answer is exactly a status line and two or three headers
//! (`connection: close` unless the connection's last request was HTTP/1.0, `content-length:
//! 0`, `date`), written as one buffer, after which the connection closes. None of our
//! responses looks like it: every one carries `x-request-id`, and no body of ours can end
//! like it (JSON escapes CR and LF, CSV ends with a field, XLSX is a zip, the docs page is
//! fixed). If a
//! future hyper wrote it differently it would pass through unchanged, as before; the API
//! tests would fail (`hostile::unreadable_request_heads_are_answered_with_problems`).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream whose writes replace hyper's automatic answer to an unreadable
/// request head by a problem.
pub struct UnreadableHead<S> {
    inner: S,
    /// The problem written in place of hyper's answer, and how much of it is out. hyper was
    /// told its answer was written; this goes out before any flush or shutdown completes.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> UnreadableHead<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            replacement: None,
        }
    }
}

/// The longest automatic answer: the status line of `431` (46 bytes) and its three headers
/// (about 70), with room to spare.
const AUTOMATIC_ANSWER_MAX: usize = 256;

/// hyper's automatic answer at the end of a write.
#[derive(Debug, PartialEq)]
struct Automatic<'a> {
    /// Where it starts in the write.
    start: usize,
    /// `HTTP/1.1`, or `HTTP/1.0` after an HTTP/1.0 request on the connection.
    version: &'a str,
    status: u16,
    /// Its `date` header's value, kept in the problem.
    date: &'a str,
}

/// hyper's automatic answer, if `written` ends with one.
fn automatic_answer(written: &[u8]) -> Option<Automatic<'_>> {
    // Cheap first: a response with a body (nearly all of ours) ends with that body.
    let head = written.strip_suffix(b"\r\n\r\n")?;
    let window = head.len().saturating_sub(AUTOMATIC_ANSWER_MAX);
    let start = window + head[window..].windows(7).rposition(|w| w == b"HTTP/1.")?;
    let text = std::str::from_utf8(&head[start..]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let version = status_line
        .get(..8)
        .filter(|v| matches!(*v, "HTTP/1.1" | "HTTP/1.0"))?;
    if status_line.get(8..9) != Some(" ") {
        return None;
    }
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let (mut empty, mut date) = (false, None);
    for line in lines {
        match line {
            "connection: close" => {}
            "content-length: 0" => empty = true,
            _ if line.starts_with("date: ") => date = Some(&line["date: ".len()..]),
            _ => return None,
        }
    }
    let date = date.filter(|_| empty)?;
    Some(Automatic {
        start,
        version,
        status,
        date,
    })
}

/// The problem answering an unreadable head in place of hyper's `automatic` answer, as bytes
/// on the wire; logs the request's line.
fn problem_answer(automatic: &Automatic<'_>) -> Option<Vec<u8>> {
    let status = automatic.status;
    let status_code = axum::http::StatusCode::from_u16(status).ok()?;
    let error = trueline_http::problem::for_unreadable_head(status_code)?;
    let id = uuid::Uuid::now_v7().to_string();
    let problem = trueline_http::request_id::sync_scope(id.clone(), || error.to_problem());
    let body = serde_json::to_vec(&problem).ok()?;
    trueline_http::observe::unreadable_head_answered(&id, status, &problem.code);
    let reason = status_code.canonical_reason().unwrap_or("Error");
    let (version, date) = (automatic.version, automatic.date);
    let mut answer = format!(
        "{version} {status} {reason}\r\nconnection: close\r\ncontent-type: {}\r\n\
         x-request-id: {id}\r\ncontent-length: {}\r\ndate: {date}\r\n\r\n",
        trueline_http::problem::PROBLEM_JSON,
        body.len(),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<S: AsyncWrite + Unpin> UnreadableHead<S> {
    /// Writes what is left of the replacement; ready once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))? {
                0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                n => *written += n,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in place of writing it when it ends with hyper's automatic answer: what
    /// comes before that answer, then the problem, are written instead.
    fn replace(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<std::io::Result<usize>>> {
        let automatic = automatic_answer(buf)?;
        let answer = problem_answer(&automatic)?;
        let mut bytes = buf[..automatic.start].to_vec();
        bytes.extend_from_slice(&answer);
        self.replacement = Some((bytes, 0));
        // Started now; whatever the socket does not take yet goes out in the flush (or
        // shutdown) hyper always follows its answer with.
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for UnreadableHead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UnreadableHead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(replaced) = self.replace(cx, buf) {
            return replaced;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        let last = bufs.iter().rev().find(|b| !b.is_empty());
        if last.is_some_and(|b| automatic_answer(b).is_some()) {
            // Rare (once per unreadable head): the slices joined, then as one buffer.
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(replaced) = self.replace(cx, &joined) {
                return replaced;
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
        content-length: 0\r\ndate: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";

    #[test]
    fn hypers_automatic_answers_are_recognized_and_nothing_else() {
        let date = "Fri, 04 Dec 2026 09:07:32 GMT";
        let at = |start, status| {
            Some(Automatic {
                start,
                version: "HTTP/1.1",
                status,
                date,
            })
        };
        assert_eq!(automatic_answer(HYPER_431), at(0, 431));
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
            date: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";
        assert_eq!(automatic_answer(bad), at(0, 400));
        // After the end of an earlier response on the same connection.
        let after = [b"{\"ok\":true}".as_slice(), HYPER_431].concat();
        assert_eq!(automatic_answer(&after), at(11, 431));
        // After an HTTP/1.0 request on the connection: its version, no `connection: close`.
        let old = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\
            date: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";
        let expected = Automatic {
            start: 0,
            version: "HTTP/1.0",
            status: 400,
            date,
        };
        assert_eq!(automatic_answer(old), Some(expected));
        // Our own responses carry more headers (x-request-id at least).
        let ours = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
            x-request-id: r\r\ndate: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";
        assert_eq!(automatic_answer(ours), None);
        let no_content = b"HTTP/1.1 204 No Content\r\nx-request-id: r\r\n\
            date: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";
        assert_eq!(automatic_answer(no_content), None);
        let other_status = b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\
            content-length: 0\r\ndate: Fri, 04 Dec 2026 09:07:32 GMT\r\n\r\n";
        assert_eq!(automatic_answer(other_status), None);
        assert_eq!(automatic_answer(b"{\"a\":1}"), None);
        assert_eq!(automatic_answer(b"\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn the_answer_is_replaced_by_a_problem_and_the_rest_passes_through() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (client, server) = tokio::io::duplex(64);
        let mut server = UnreadableHead::new(server);
        let writer = tokio::spawn(async move {
            server.write_all(b"{\"ok\":true}").await.unwrap();
            server.write_all(HYPER_431).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut written = String::new();
        let mut client = client;
        client.read_to_string(&mut written).await.unwrap();
        writer.await.unwrap();
        let (before, answer) = written.split_at(11);
        assert_eq!(before, "{\"ok\":true}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/problem+json\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "request_head_too_large");
        assert_eq!(problem["status"], 431);
        let id = problem["request_id"].as_str().unwrap();
        assert!(
            head.contains(&format!("\r\nx-request-id: {id}\r\n")),
            "{head}"
        );
        assert!(
            head.ends_with("\r\ndate: Fri, 04 Dec 2026 09:07:32 GMT"),
            "{head}"
        );
    }
}
