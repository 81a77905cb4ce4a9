//! The connection loop that HTTP ([`crate::serve`]) and HTTPS ([`crate::serve_tls`])
//! share.
//!
//! Each accepted TCP connection gets its socket options (`TCP_NODELAY`, the send
//! buffer, `ServerConfig::send_buffer`), immediate acknowledgements once it speaks HTTP/2
//! ([`crate::quickack`]), a write timeout ([`crate::stall`]), a TLS handshake when
//! serving HTTPS, problem+json answers for requests hyper refuses itself
//! ([`crate::parse_errors`]), and is then served by hyper-util's auto builder: HTTP/1.1,
//! and HTTP/2 both over TLS (ALPN `h2`) and in clear text with prior knowledge (h2c),
//! on the same port. HTTP/2 connections are pinged every [`H2_PING`]; one whose peer
//! does not answer within as long is closed, so a peer that stopped reading cannot hold
//! a connection open behind flow control.
//!
//! Requests carry two extensions: axum's `ConnectInfo<SocketAddr>` (the peer) and the
//! connection's [`Stalled`] flag.
//!
//! Graceful shutdown: when the shutdown future completes, the loop stops accepting, the
//! live subscriptions are told to end, TLS handshakes in progress are dropped, and every
//! connection finishes the requests it has in flight, then closes; `serve` returns when
//! the last one has.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::ServerConfig;
use crate::parse_errors::{Exchanges, MAX_HEADER_BYTES, ProblemResponses};
use crate::quickack::QuickAck;
use crate::stall::{StallTimeout, Stalled};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an HTTP/2 connection is pinged, and how long the peer has to answer.
pub(crate) const H2_PING: Duration = Duration::from_secs(20);

/// What every connection is served with.
struct Connections {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    tls: Option<TlsAcceptor>,
    write_timeout: Duration,
    send_buffer: Option<usize>,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` completes, then
/// sets `stop` (which ends live subscriptions) and waits for the connections to close.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    config: &ServerConfig,
    stop: Arc<watch::Sender<bool>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING))
        .keep_alive_timeout(H2_PING);
    let connections = Arc::new(Connections {
        builder,
        router,
        tls,
        write_timeout: config.write_timeout,
        send_buffer: config.send_buffer,
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let watcher = graceful.watcher();
                let stopping = stop.subscribe();
                tokio::spawn(connections.clone().serve(tcp, peer, watcher, stopping));
            }
            // A peer that gave up before it was accepted.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::error!(error = %e, "accept failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl Connections {
    /// Serves one accepted connection.
    async fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        mut stopping: watch::Receiver<bool>,
    ) {
        if let Some(bytes) = self.send_buffer
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(bytes)
        {
            tracing::debug!(%peer, error = %e, "could not set the send buffer size");
        }
        // Responses are written whole or as their frames are ready: Nagle's algorithm
        // would hold a write back until the client acknowledged the last one, which
        // its kernel delays by up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let stalled = Stalled::default();
        let tcp = StallTimeout::new(QuickAck::new(tcp), self.write_timeout, stalled.clone());
        let Some(acceptor) = &self.tls else {
            return self.serve_io(tcp, peer, stalled, watcher).await;
        };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
        let mut stream = tokio::select! {
            shaken = handshake => match shaken {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            },
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let (tcp, tls) = stream.get_mut();
        if tls.alpn_protocol() == Some(b"h2") {
            tcp.stream_mut().acknowledge_at_once();
        }
        self.serve_io(stream, peer, stalled, watcher).await;
    }

    /// Serves HTTP on a connection's (plain or TLS) stream.
    async fn serve_io<I>(&self, io: I, peer: SocketAddr, stalled: Stalled, watcher: Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let exchanges = Exchanges::new();
        let io = TokioIo::new(ProblemResponses::new(io, exchanges.clone()));
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let exchange = exchanges.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(stalled.clone());
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {});
                // The exchange is over when hyper drops the body, after its last bytes.
                Ok::<_, Infallible>(response.map(move |body| {
                    body.map_frame(move |frame| {
                        let _open = &exchange;
                        frame
                    })
                }))
            }
        });
        let connection = self.builder.serve_connection(io, service);
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
