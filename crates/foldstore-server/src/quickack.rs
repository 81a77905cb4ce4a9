//! HTTP/2 connections acknowledge what they read at once.
//!
//! A client that leaves Nagle's algorithm on (the official KurrentDB Rust client's
//! connector does not set `TCP_NODELAY`) holds a small write back until the server has
//! acknowledged its last one. The server's kernel delays that acknowledgement (by up
//! to 40 ms on Linux) in the hope of sending it with response bytes, but an HTTP/2
//! server often has none to send yet: it waits for the rest of the request, the very
//! bytes the client holds back. Every connection that has drained then stalls for the
//! delayed-ACK timer. On one connection carrying 64 concurrent appends this took
//! `grpc-append`'s p99 to about 50 ms and its throughput down with it
//! (`docs/benchmarks.md`, Issue 18).
//!
//! [`QuickAck`] wraps an accepted TCP stream and, once the connection has shown itself
//! to be HTTP/2 (its first bytes are the HTTP/2 preface, or TLS negotiated `h2`),
//! re-arms `TCP_QUICKACK` after every read that returned bytes: the kernel's quick-ACK
//! mode is not permanent, which is why it is set again each time. HTTP/1.1
//! connections are left alone: their response carries the acknowledgement soon after
//! the request, and an immediate pure ACK would only cost both sides a packet.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The first bytes of every HTTP/2 connection without TLS (RFC 9113, section 3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// What the connection's first bytes said about acknowledging at once.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing read yet.
    Undecided,
    /// HTTP/2: acknowledge every read at once.
    Quick,
    /// Anything else: leave the kernel's delayed ACKs alone.
    Delayed,
}

/// A TCP stream that acknowledges reads at once when it carries HTTP/2.
pub(crate) struct QuickAck {
    stream: TcpStream,
    mode: Mode,
}

impl QuickAck {
    /// Wraps `stream`; its first read decides whether it carries cleartext HTTP/2.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            mode: Mode::Undecided,
        }
    }

    /// Acknowledges reads at once from now on: for a TLS connection that negotiated
    /// `h2`, whose first bytes were a TLS handshake.
    pub(crate) fn acknowledge_at_once(&mut self) {
        self.mode = Mode::Quick;
    }

    fn after_read(&mut self, read: &[u8]) {
        if read.is_empty() {
            return;
        }
        if self.mode == Mode::Undecided {
            let n = read.len().min(H2_PREFACE_START.len());
            self.mode = if read[..n] == H2_PREFACE_START[..n] {
                Mode::Quick
            } else {
                Mode::Delayed
            };
        }
        if self.mode == Mode::Quick {
            // Best effort: a socket that refuses the option only acknowledges later.
            let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
        }
    }
}

impl AsFd for QuickAck {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.after_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server side of a loopback connection to which `first` was written, after one
    /// read.
    async fn after_first_read(first: &[u8]) -> QuickAck {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(first).await.unwrap();
        let mut server = QuickAck::new(server);
        let mut buf = vec![0; first.len()];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, first);
        server
    }

    #[tokio::test]
    async fn the_http2_preface_switches_quick_acks_on() {
        let server = after_first_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert_eq!(server.mode, Mode::Quick);
    }

    #[tokio::test]
    async fn http1_connections_keep_delayed_acks() {
        let server = after_first_read(b"GET /health HTTP/1.1\r\n\r\n").await;
        assert_eq!(server.mode, Mode::Delayed);
    }

    #[tokio::test]
    async fn a_preface_split_across_reads_still_counts() {
        let server = after_first_read(b"PRI").await;
        assert_eq!(server.mode, Mode::Quick);
    }

    #[tokio::test]
    async fn tls_h2_turns_quick_acks_on_after_the_handshake() {
        let mut server = after_first_read(&[0x16, 0x03, 0x01]).await;
        assert_eq!(server.mode, Mode::Delayed);
        server.acknowledge_at_once();
        assert_eq!(server.mode, Mode::Quick);
    }
}
