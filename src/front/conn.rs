//! Per-connection guards of the front door, around pingora's HTTP app:
//! a limit on open connections and a deadline on each request head.
//!
//! pingora-proxy 0.9 has neither. It bounds each read of a request head by
//! 60 s, so a client sending one header byte every few seconds (slowloris)
//! holds its connection forever; and its `ConnectionFilter` sees accepts
//! but not closes, so it cannot count open connections. [`Guarded`] wraps
//! the app as a pingora [`ServerApp`]: it sees each connection for its
//! whole life (after the TLS handshake, which pingora bounds by 60 s) and
//! hands the app a [`HeadDeadline`] stream.
//!
//! Both limits are read from the current config at each new connection, so
//! a reload applies to the connections that follow.

use crate::state::State;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{tls::SslDigest, Stream};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// What a connection over `server.max_connections` gets before it is
/// closed: a complete HTTP/1.1 answer, so that a player or a monitor sees
/// why rather than a reset.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 33\r\n\
Retry-After: 1\r\n\
Cache-Control: no-store\r\n\
Connection: close\r\n\
\r\n\
too many connections; try again\r\n";

/// Bound on writing [`OVER_LIMIT`] to a refused connection.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A pingora [`ServerApp`] that counts the front door's open connections,
/// refuses those over `server.max_connections` with a `503`, and gives
/// every connection a [`HeadDeadline`] of `server.request_header_timeout`:
/// an HTTP/1 connection for each request head, an HTTP/2 one (TLS with
/// ALPN `h2`) for its connection preface only. After the preface, HTTP/2
/// frames interleave requests and answers; pingora's `h2_idle_timeout`
/// (set from `server.keepalive_timeout` in main.rs) then closes a
/// connection with no request in flight, which also ends a request whose
/// HEADERS never complete.
pub struct Guarded<A> {
    app: Arc<A>,
    state: Arc<State>,
}

impl<A> Guarded<A> {
    /// Guard `app` with the limits in `state`'s current config.
    pub fn new(app: A, state: Arc<State>) -> Guarded<A> {
        Guarded {
            app: Arc::new(app),
            state,
        }
    }
}

/// Takes one open connection off the gauge when dropped.
struct Open<'a>(&'a IntGauge);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (limit, head_timeout) = {
            let snap = self.state.snapshot.load();
            let server = &snap.config.server;
            (server.max_connections, server.request_header_timeout)
        };
        let metrics = &self.state.metrics;
        metrics.connections_open.inc();
        let _open = Open(&metrics.connections_open);
        let open = usize::try_from(metrics.connections_open.get()).unwrap_or(0);
        if open > limit {
            metrics.connections_refused.inc();
            if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                let refuse = async {
                    stream.write_all(OVER_LIMIT).await?;
                    stream.flush().await
                };
                let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, refuse).await;
            }
            return None;
        }
        let timeouts = metrics.request_header_timeouts.clone();
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            Box::new(HeadDeadline::h2_preface(stream, head_timeout, timeouts))
        } else {
            Box::new(HeadDeadline::new(stream, head_timeout, timeouts))
        };
        // pingora's HTTP app serves every request of the connection
        // (keep-alive included) and hands nothing back.
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// An HTTP/1 connection's stream whose reads fail with
/// [`io::ErrorKind::TimedOut`] once a request head has taken longer than
/// its bound to arrive.
///
/// HTTP/1 without pipelining alternates: the client sends a request, the
/// server answers. So a request starts with the connection (the first
/// request) or with the first byte read after an answer was written (a
/// kept-alive connection's next request; the idle wait before that byte is
/// pingora's keep-alive timeout), and it ends with the first byte written
/// back. While a request is open, reads race a timer set to its start plus
/// the bound. A request body is held to the same bound; the front door
/// takes none.
///
/// On an HTTP/2 connection ([`HeadDeadline::h2_preface`]) the timer runs
/// from the end of the TLS handshake until the client's 24-byte connection
/// preface (RFC 9113 §3.4) has been read, and is not set again: the server
/// writes its SETTINGS before it reads anything, and requests interleave.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    bound: Duration,
    /// The timer of the open request, `None` while answering.
    deadline: Option<Pin<Box<Sleep>>>,
    /// HTTP/2: bytes of the connection preface still to read; `None` on an
    /// HTTP/1 connection.
    h2_preface_left: Option<usize>,
    timeouts: IntCounter,
}

/// Length of the HTTP/2 client connection preface,
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;

impl HeadDeadline {
    /// Wrap `inner`, whose first request is open from now; `timeouts` counts
    /// the connections this closes.
    pub fn new(inner: Stream, bound: Duration, timeouts: IntCounter) -> HeadDeadline {
        HeadDeadline {
            inner,
            bound,
            deadline: Some(Box::pin(tokio::time::sleep(bound))),
            h2_preface_left: None,
            timeouts,
        }
    }

    /// Wrap an HTTP/2 connection's `inner`, whose connection preface must
    /// be read within `bound` from now; `timeouts` counts the connections
    /// this closes.
    pub fn h2_preface(inner: Stream, bound: Duration, timeouts: IntCounter) -> HeadDeadline {
        HeadDeadline {
            h2_preface_left: Some(H2_PREFACE_LEN),
            ..HeadDeadline::new(inner, bound, timeouts)
        }
    }

    /// A write on an HTTP/1 connection: the request is complete. (An
    /// HTTP/2 server writes its SETTINGS before reading the preface.)
    fn answering(&mut self) {
        if self.h2_preface_left.is_none() {
            self.deadline = None;
        }
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                this.timeouts.inc();
                let what = match this.h2_preface_left {
                    Some(_) => "HTTP/2 connection preface",
                    None => "request head",
                };
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} not received within {:?}", this.bound),
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = match read {
            Poll::Ready(Ok(())) => buf.filled().len().saturating_sub(before),
            _ => 0,
        };
        match this.h2_preface_left.as_mut() {
            Some(left) => {
                *left = left.saturating_sub(got);
                if *left == 0 {
                    this.deadline = None;
                }
            }
            None if this.deadline.is_none() && got > 0 => {
                // The first byte of the next request on this connection.
                this.deadline = Some(Box::pin(tokio::time::sleep(this.bound)));
            }
            None => {}
        }
        read
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.answering();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.answering();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
