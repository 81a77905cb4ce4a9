//! Problem bodies for the requests hyper refuses before the router sees them.
//!
//! hyper answers an HTTP/1.1 request head it cannot parse by itself, with an empty
//! body, and closes the connection: `400` for a malformed request line or header (such
//! as a raw byte outside ASCII in the path, which `http::Uri` does not accept), `431`
//! for a head over [`MAX_HEADER_BYTES`], `414` for a request target over 65,534 bytes.
//! No hook replaces that answer, so [`ProblemResponses`] does it at the connection's
//! I/O: it lets hyper write its answer and sends a problem+json one (codes
//! `malformed_request`, `headers_too_large`, `uri_too_long`) to the socket instead.
//!
//! Telling hyper's answer from the application's is exact, not a guess from the bytes:
//! hyper writes it only between exchanges (nothing of a response is being written), and
//! [`Exchanges`] knows when that is. The connection's service marks an exchange as begun
//! when it is called and as over when the response body is dropped, which hyper does
//! once the last bytes of the response are in its write buffer; the adapter marks the
//! connection idle when hyper flushes with no exchange open, which means everything
//! written so far has reached the socket. A write that starts while the connection is
//! idle is therefore hyper's own answer to a head it could not parse. If hyper wrote
//! its answer behind unflushed bytes of a previous response, the connection is not idle
//! and the empty answer passes unchanged, as without this module. HTTP/2 connections
//! (their first bytes are the HTTP/2 preface) are passed through: hyper answers their
//! errors with HTTP/2 frames.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, PROBLEM_JSON};

/// The largest request head (request line and headers) the server reads, in bytes:
/// hyper's HTTP/1 buffer size, which bounds the head it parses (and what it buffers of
/// a response before it asks the body for more).
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The exchanges (request and response) open on one connection.
#[derive(Debug)]
pub(crate) struct Exchanges {
    open: AtomicUsize,
    /// Everything written was flushed with no exchange open.
    idle: AtomicBool,
}

impl Exchanges {
    /// A connection's state, idle.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle: AtomicBool::new(true),
        })
    }

    /// An exchange begins: hyper parsed a request head. Drop the guard when the response
    /// body is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> ExchangeGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.idle.store(false, Ordering::Release);
        ExchangeGuard(self.clone())
    }
}

/// An open exchange; dropping it ends it.
#[derive(Debug)]
pub(crate) struct ExchangeGuard(Arc<Exchanges>);

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The problem+json answer that replaces hyper's empty one with `status`.
fn problem_response(status: u16) -> Option<Vec<u8>> {
    let problem = match status {
        400 => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the request could not be read as HTTP: its request line or a header breaks the syntax (for instance a byte outside ASCII in the path: percent-encode it as %XX)",
        )
        .with_title("The request is not valid HTTP"),
        431 => ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers are larger than {} KiB: send fewer or smaller headers",
                MAX_HEADER_BYTES / 1024
            ),
        )
        .with_title("The request headers are too large"),
        414 => ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is longer than 65,534 bytes: send long parameters in a body",
        )
        .with_title("The request target is too long"),
        _ => return None,
    };
    let body = problem.body().to_string();
    let reason = problem.status().canonical_reason().unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

/// The status of a response head hyper is writing, if `bytes` start one.
fn status_of_head(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ")?;
    let digits = rest.get(..3)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A connection's I/O that replaces hyper's empty error answers (see the module).
pub(crate) struct ProblemResponses<T> {
    io: T,
    exchanges: Arc<Exchanges>,
    /// Whether bytes were read yet; the first ones tell HTTP/2 from HTTP/1.
    first_read: bool,
    http2: bool,
    /// The replacement answer and how much of it was written; hyper's bytes are
    /// discarded from then on (hyper closes the connection after its answer).
    replacing: Option<(Vec<u8>, usize)>,
}

impl<T> ProblemResponses<T> {
    /// Wraps a connection's I/O.
    pub(crate) fn new(io: T, exchanges: Arc<Exchanges>) -> Self {
        Self {
            io,
            exchanges,
            first_read: false,
            http2: false,
            replacing: None,
        }
    }

    /// Starts replacing if hyper is about to write its own answer in `first`.
    fn intercept(&mut self, first: &[u8]) -> bool {
        if self.replacing.is_none()
            && !self.http2
            && self.exchanges.idle.load(Ordering::Acquire)
            && let Some(answer) = status_of_head(first).and_then(problem_response)
        {
            self.replacing = Some((answer, 0));
        }
        self.replacing.is_some()
    }
}

impl<T: AsyncWrite + Unpin> ProblemResponses<T> {
    /// Writes what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((answer, written)) = &mut self.replacing {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemResponses<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !self.first_read && !new.is_empty() {
            self.first_read = true;
            // The first bytes match the HTTP/2 preface as far as they go (a first read of
            // a few bytes can leave an HTTP/1.1 connection unrewritten, never the reverse).
            let n = new.len().min(H2_PREFACE.len());
            self.http2 = new[..n] == H2_PREFACE[..n];
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemResponses<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.intercept(buf) {
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        if self.intercept(first) {
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        if self.exchanges.open.load(Ordering::Acquire) == 0 {
            self.exchanges.idle.store(true, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_heads_are_recognised_by_status() {
        assert_eq!(status_of_head(b"HTTP/1.1 400 Bad Request\r\n"), Some(400));
        assert_eq!(status_of_head(b"HTTP/1.1 431 Request"), Some(431));
        assert_eq!(status_of_head(b"HTTP/1.1 4"), None);
        assert_eq!(status_of_head(b"\x00\x00\x12\x04"), None);
        assert!(problem_response(200).is_none());
        let answer = String::from_utf8(problem_response(431).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "headers_too_large");
        assert_eq!(problem["status"], 431);
    }
}
