//! Connections whose writes make no progress are closed.
//!
//! A client that stops reading fills its receive window, then the server's socket send
//! buffer; from then on every write of the server would wait forever, holding the
//! response's buffers (and, for a live subscription, its queue) in the server and the
//! unsent bytes in the kernel. [`StallTimeout`] wraps an accepted TCP stream: when a
//! write (or flush, or shutdown) has been waiting for `ServerConfig::write_timeout`
//! without the socket taking a single byte, it fails with `TimedOut`, hyper drops the
//! connection, and the socket is closed with a reset (`SO_LINGER` 0) so that the
//! kernel frees the unsent bytes at once instead of probing a zero window. Reads are
//! untouched: an idle connection is not a stalled one.
//!
//! The timeout is a per-connection [`Stalled`] flag too, which the request extensions
//! carry: a live subscription whose body was dropped because its connection stalled
//! logs and counts itself as a subscriber disconnected for being too slow.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::quickack::QuickAck;

/// Set when a connection was closed because its writes stalled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stalled(Arc<AtomicBool>);

impl Stalled {
    /// Whether the connection's writes stalled for the write timeout.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A TCP stream whose writes fail after `limit` without progress.
pub(crate) struct StallTimeout {
    stream: QuickAck,
    limit: Duration,
    /// Armed while a write waits; reset by every write that makes progress.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    stalled: Stalled,
}

impl StallTimeout {
    /// The stream, to switch its acknowledgements once TLS has negotiated HTTP/2.
    pub(crate) fn stream_mut(&mut self) -> &mut QuickAck {
        &mut self.stream
    }

    /// Wraps `stream`; `stalled` is set if the timeout fires.
    pub(crate) fn new(stream: QuickAck, limit: Duration, stalled: Stalled) -> Self {
        Self {
            stream,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled,
        }
    }

    /// After the socket answered `Ready`: the next wait starts a new timeout.
    fn progressed<T>(&mut self, ready: io::Result<T>) -> Poll<io::Result<T>> {
        self.armed = false;
        Poll::Ready(ready)
    }

    /// After the socket answered `Pending`: start or check the timeout.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.stalled.set();
        // Close with a reset: the unsent bytes are discarded, not kept for a peer that
        // does not read.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the peer took no bytes for {:?}: closing the connection",
                self.limit
            ),
        )))
    }
}

impl AsyncRead for StallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_shutdown(cx) {
            Poll::Ready(r) => self.progressed(r),
            Poll::Pending => self.waiting(cx),
        }
    }
}
