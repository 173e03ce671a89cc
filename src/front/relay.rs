//! castgate's own relay for long-lived proxied bodies: an Icecast mount in
//! `mode: proxy` is carried from the edge to the listener here, not through
//! pingora-proxy's generic path.
//!
//! Why: pingora-proxy 0.9.1 reads a proxied body through a 64 KiB reader per
//! listener (`v1/body.rs`'s `BODY_BUFFER_SIZE`), copies each chunk
//! (`Bytes::copy_from_slice`) and passes it over two channels between the
//! upstream and downstream tasks (`proxy_h1.rs`); and it re-frames a
//! close-delimited edge body as `Transfer-Encoding: chunked` for an HTTP/1.1
//! listener, which streamripper and many embedded radios cannot decode.
//!
//! The relay has two halves that are separate, replaceable values:
//! - [`EdgeHalf`]: one connection to an edge from pingora's
//!   [`TransportConnector`], asked with `HTTP/1.0` so the edge cannot
//!   answer chunked (RFC 9112 §6.1: chunked is never sent to an HTTP/1.0
//!   client); the edge frames its body by `Content-Length` or by closing,
//!   and the relay keeps that framing;
//! - the listener half: the pingora [`Session`], written with
//!   `write_response_header`/`write_response_body`, so an HTTP/1.0 or 1.1
//!   listener gets the body close-delimited (`Connection: close`) as the
//!   edge sent it and an HTTP/2 listener gets DATA frames.
//!
//! Between them one buffer of [`RELAY_BUFFER`] bytes per listener, reused
//! for every read: whole frames go to the listener as a [`Bytes`] view of
//! that buffer (no copy; a listener that gets ICY blocks gets them copied
//! around the blocks), and the buffer's memory is taken back once the
//! write is done. The listener's write timeout (`server.write_timeout`) and
//! send buffer (`server.send_buffer`) apply as on every other answer.
//!
//! When the edge closes, fails, stalls (`failover.stall`) or is evacuated
//! ([`Carrying::evacuate`]), [`carry`] takes a new edge half from
//! [`Resume`] and goes on in the same response: frame boundaries from
//! [`super::frames`], ICY blocks from [`super::icy`].

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, Session};
use pingora::protocols::Stream;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::frames::{self, Framer};
use super::icy::{IcyReader, IcyWriter};
use crate::config::Edge;

/// Bytes held from an edge at once, and so the relay's memory per
/// listener (the buffer is reused). A 128 kbit/s mount delivers 16 KB/s in
/// writes of a few KiB; only the burst Icecast sends on connect (64 KB by
/// default) fills the buffer. Measured with scripts/bench's proxy section
/// (README "Performance"): 16 KiB gave 68 MiB for 1,000 listeners, 8 KiB
/// the figure there, with no listener under its rate.
pub const RELAY_BUFFER: usize = 8 * 1024;

/// Fewest bytes asked of an edge in one read.
const MIN_READ: usize = 4096;

/// Largest response head accepted from an edge, bytes.
pub const MAX_EDGE_HEAD: usize = 16 * 1024;

/// Most header lines accepted in an edge's response head.
const MAX_EDGE_HEADERS: usize = 64;

/// Bound on connecting to an edge. Long enough to ride out one lost SYN
/// (Linux retransmits after 1 s, then 3 s): Icecast listens with a backlog
/// of 5, so a burst of new listeners overflows it and some connects only
/// succeed on a retransmission.
pub const EDGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on the edge's response head once the request is sent.
pub const EDGE_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one relayed request goes: resolved from one snapshot's edge, and
/// owned, so that a later snapshot cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The edge's name (logs and errors).
    pub edge: String,
    /// `host:port` to connect to (`[v6]:port` for an IPv6 literal).
    pub addr: String,
    /// Whether to speak TLS to the edge (an `https` edge URL).
    pub tls: bool,
    /// TLS server name, and the `Host` header's host.
    pub host: String,
    /// The `Host` header: host, and the port when the URL names one.
    pub host_header: String,
    /// Request target on the edge: the edge URL's path without its
    /// trailing `/`, then the mount and query.
    pub path: String,
}

impl Target {
    /// The target for `path_and_query` (starting with `/`) on `edge`.
    pub fn new(edge: &Edge, path_and_query: &str) -> Target {
        let host = edge.url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = edge.url.port_or_known_default().unwrap_or(80);
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let host_header = match edge.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Target {
            edge: edge.name.clone(),
            addr,
            tls: edge.url.scheme() == "https",
            host,
            host_header,
            path: format!("{}{path_and_query}", edge.url.path().trim_end_matches('/')),
        }
    }
}

/// Why an edge did not give a response head. Every variant means nothing
/// reached the listener yet, so the request may go to another edge.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The TCP or TLS connection failed.
    #[error("connecting failed: {0}")]
    Connect(String),
    /// Writing the request failed.
    #[error("sending the request failed: {0}")]
    Send(std::io::Error),
    /// The edge closed the connection before a complete head.
    #[error("closed the connection before answering")]
    Closed,
    /// No complete head within [`EDGE_HEAD_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading the answer failed: {0}")]
    Read(std::io::Error),
    /// The head is not HTTP/1.x (or SHOUTcast's `ICY`), or too large.
    #[error("bad response head: {0}")]
    BadHead(String),
}

/// The edge's response head, as the listener will get it.
#[derive(Debug, Clone)]
pub struct EdgeHead {
    /// Status code.
    pub status: u16,
    /// End-to-end header lines in the edge's order and spelling (hop-by-hop
    /// lines removed: RFC 9110 §7.6.1).
    pub headers: Vec<(String, HeaderValue)>,
    /// `Content-Length`, when the edge framed the body by length; `None`
    /// for a body that ends when the edge closes (an Icecast mount).
    pub length: Option<u64>,
}

/// Request headers not passed to the edge: hop-by-hop ones (RFC 9110
/// §7.6.1), those castgate sets itself, and castgate's session cookie.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "cookie",
];

/// Response headers not passed to the listener: hop-by-hop ones; the
/// listener's connection framing is pingora's to write.
const NOT_RELAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The edge side of one relayed stream: its connection, and what is left
/// of a body framed by length.
pub struct EdgeHalf {
    stream: Stream,
    /// Body bytes read with the head.
    early: Option<Bytes>,
    /// Bytes still to come of a body framed by `Content-Length`.
    remaining: Option<u64>,
}

impl fmt::Debug for EdgeHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeHalf")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// Ask `target` for `method` (GET or HEAD) with the listener's end-to-end
/// `headers` (`Icy-MetaData`, `User-Agent`, `Range`, …) and read the
/// response head. Returns the head and the edge half positioned at the
/// first body byte.
///
/// # Errors
/// [`OpenError`]: nothing has reached the listener.
pub async fn open(
    connector: &TransportConnector,
    target: &Target,
    method: &str,
    headers: &http::HeaderMap,
) -> Result<(EdgeHead, EdgeHalf), OpenError> {
    let mut peer = HttpPeer::new(target.addr.as_str(), target.tls, target.host.clone());
    peer.options.connection_timeout = Some(EDGE_CONNECT_TIMEOUT);
    let mut stream = connector
        .new_stream(&peer)
        .await
        .map_err(|e| OpenError::Connect(e.to_string()))?;
    let request = request_head(target, method, headers);
    let sent = async {
        stream.write_all(&request).await?;
        stream.flush().await
    };
    match tokio::time::timeout(EDGE_HEAD_TIMEOUT, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(OpenError::Send(e)),
        Err(_) => return Err(OpenError::Timeout(EDGE_HEAD_TIMEOUT)),
    }
    let mut buf = BytesMut::with_capacity(4096);
    let read_head = async {
        loop {
            if buf.len() >= MAX_EDGE_HEAD {
                return Err(OpenError::BadHead(format!(
                    "larger than {MAX_EDGE_HEAD} bytes"
                )));
            }
            buf.reserve(4096);
            let n = stream.read_buf(&mut buf).await.map_err(OpenError::Read)?;
            if n == 0 {
                return Err(OpenError::Closed);
            }
            if let Some(parsed) = parse_head(&buf)? {
                return Ok(parsed);
            }
        }
    };
    let (head, used) = match tokio::time::timeout(EDGE_HEAD_TIMEOUT, read_head).await {
        Ok(r) => r?,
        Err(_) => return Err(OpenError::Timeout(EDGE_HEAD_TIMEOUT)),
    };
    let rest = buf.split_off(used).freeze();
    let early = (!rest.is_empty()).then_some(rest);
    let remaining = if method == "HEAD" || matches!(head.status, 204 | 304) {
        Some(0)
    } else {
        head.length
    };
    let mut half = EdgeHalf {
        stream,
        early,
        remaining,
    };
    if let (Some(left), Some(early)) = (half.remaining, half.early.as_mut()) {
        // Never relay more than the edge announced.
        let take = early.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        early.truncate(take);
    }
    Ok((head, half))
}

/// `METHOD path HTTP/1.0` with `Host`, the forwarded headers and
/// `Connection: close`.
fn request_head(target: &Target, method: &str, headers: &http::HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.0\r\nHost: ");
    out.extend_from_slice(target.host_header.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named_by_connection: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in headers {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || named_by_connection.iter().any(|c| c == n) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// Parse a response head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes. SHOUTcast 1's
/// status line `ICY 200 OK` is read as `HTTP/1.0 200 OK`.
///
/// # Errors
/// [`OpenError::BadHead`] for anything httparse refuses, or a bad
/// `Content-Length`.
pub fn parse_head(buf: &[u8]) -> Result<Option<(EdgeHead, usize)>, OpenError> {
    let icy = buf.starts_with(b"ICY ");
    let translated;
    let (text, shift) = if icy {
        // "ICY " (4 bytes) becomes "HTTP/1.0 " (9 bytes).
        translated = [b"HTTP/1.0 ".as_slice(), &buf[4..]].concat();
        (translated.as_slice(), 5)
    } else {
        (buf, 0)
    };
    let mut lines = [httparse::EMPTY_HEADER; MAX_EDGE_HEADERS];
    let mut resp = httparse::Response::new(&mut lines);
    let used = match resp.parse(text) {
        Ok(httparse::Status::Complete(n)) => n - shift,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(OpenError::BadHead(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| OpenError::BadHead("no status".into()))?;
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut length = None;
    for h in resp.headers.iter() {
        let lower = h.name.to_ascii_lowercase();
        if lower == "content-length" {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| OpenError::BadHead("bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(OpenError::BadHead("conflicting Content-Length".into()));
            }
            length = Some(n);
        }
        if lower == "transfer-encoding" {
            // An HTTP/1.0 request must not get one (RFC 9112 §6.1).
            return Err(OpenError::BadHead(
                "Transfer-Encoding in an answer to HTTP/1.0".into(),
            ));
        }
        if NOT_RELAYED.contains(&lower.as_str()) {
            continue;
        }
        HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| OpenError::BadHead(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| OpenError::BadHead(format!("bad value of {}", h.name)))?;
        headers.push((h.name.to_string(), value));
    }
    Ok(Some((
        EdgeHead {
            status,
            headers,
            length,
        },
        used,
    )))
}

impl EdgeHead {
    /// The value of header `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// `icy-metaint`, when the edge sends ICY metadata blocks.
    pub fn metaint(&self) -> Option<usize> {
        self.header("icy-metaint")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    }

    /// Whether this answer is a stream that can resume on another edge: a
    /// 200 whose body ends only when the edge closes.
    pub fn resumable(&self) -> bool {
        self.status == 200 && self.length.is_none()
    }
}

impl EdgeHalf {
    /// Append the next body bytes to `buf` and return how many: 0 at the
    /// body's end (the edge closed a close-delimited body, or a
    /// length-framed body is complete).
    ///
    /// # Errors
    /// A read error, an edge silent for `stall`, or a length-framed body
    /// cut short.
    pub async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        stall: Duration,
    ) -> std::io::Result<usize> {
        if let Some(early) = self.early.take() {
            buf.extend_from_slice(&early);
            self.consumed(early.len());
            return Ok(early.len());
        }
        if self.remaining == Some(0) {
            return Ok(0);
        }
        // Read up to RELAY_BUFFER held in all (the bytes held back count),
        // so that the buffer's own memory is taken back (the chunks written
        // from it are dropped once written) instead of a larger one being
        // allocated; at least MIN_READ, for a frame larger than the buffer.
        let want = RELAY_BUFFER.saturating_sub(buf.len()).max(MIN_READ);
        buf.reserve(want);
        let room = match self.remaining {
            Some(left) => usize::try_from(left).unwrap_or(usize::MAX).min(want),
            None => want,
        };
        let mut limited = (&mut self.stream).take(room as u64);
        let n = match tokio::time::timeout(stall, limited.read_buf(buf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the edge sent nothing for {stall:?}"),
                ))
            }
        };
        if n == 0 {
            if let Some(left) = self.remaining {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the edge closed with {left} bytes of its body missing"),
                ));
            }
        }
        self.consumed(n);
        Ok(n)
    }

    fn consumed(&mut self, n: usize) {
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(n as u64);
        }
    }
}

/// How a relayed body ended.
#[derive(Debug)]
pub enum End {
    /// The edge ended it (closed, or its length was reached) and no other
    /// edge took over.
    Edge,
    /// The edge failed mid-body and no other edge took over.
    EdgeError(std::io::Error),
    /// The listener left or stopped reading (its write failed or timed out).
    Listener(String),
}

/// The relayed streams being carried now, by edge name: what an
/// evacuation moves ([`Carrying::evacuate`]) and what /status.json counts.
///
/// A relay registers when it starts and again after each resume (a
/// mutex-guarded map, taken once per stream and per move, never per chunk).
#[derive(Debug, Default)]
pub struct Carrying {
    by_edge: std::sync::Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>,
    next_id: AtomicU64,
}

/// One relayed stream's place in [`Carrying`]; leaves it when dropped.
#[derive(Debug)]
pub struct Ticket {
    carrying: Arc<Carrying>,
    edge: String,
    id: u64,
    /// Notified when the stream is to leave its edge (an evacuation).
    pub leave: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut map) = self.carrying.by_edge.lock() {
            if let Some(on) = map.get_mut(&self.edge) {
                on.remove(&self.id);
                if on.is_empty() {
                    map.remove(&self.edge);
                }
            }
        }
    }
}

impl Carrying {
    /// Register a stream carried from `edge`.
    pub fn enter(self: &Arc<Self>, edge: &str) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let leave = Arc::new(Notify::new());
        if let Ok(mut map) = self.by_edge.lock() {
            map.entry(edge.to_string())
                .or_default()
                .insert(id, leave.clone());
        }
        Ticket {
            carrying: self.clone(),
            edge: edge.to_string(),
            id,
            leave,
        }
    }

    /// Relayed streams carried from `edge` now.
    pub fn count(&self, edge: &str) -> usize {
        self.by_edge
            .lock()
            .map_or(0, |m| m.get(edge).map_or(0, HashMap::len))
    }

    /// Ask every stream carried from `edge` now to resume on another edge,
    /// `per_second` of them a second (at least 1), from a background task.
    /// Returns how many were asked.
    pub fn evacuate(&self, edge: &str, per_second: u32) -> usize {
        let leaving: Vec<Arc<Notify>> = self
            .by_edge
            .lock()
            .map(|m| {
                m.get(edge)
                    .map(|on| on.values().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let n = leaving.len();
        let pause = Duration::from_secs(1) / per_second.max(1);
        tokio::spawn(async move {
            for leave in leaving {
                leave.notify_one();
                tokio::time::sleep(pause).await;
            }
        });
        n
    }
}

/// A new edge for a relayed stream whose edge failed.
#[async_trait::async_trait]
pub trait Resume: Send {
    /// Connect to another eligible edge carrying the stream, trying until
    /// `deadline`: its head and body, or `None`. `why` is the failure.
    async fn resume(
        &mut self,
        why: &(dyn std::error::Error + Send + Sync),
        deadline: tokio::time::Instant,
    ) -> Option<(EdgeHead, EdgeHalf)>;

    /// The listener heard nothing for `gap` across a resume.
    fn resumed(&mut self, gap: Duration);

    /// Notified when the stream is to leave its current edge (evacuated):
    /// it then resumes on another edge as if its edge had failed.
    fn leave(&self) -> Arc<Notify>;
}

/// How long edges may stall and how long to look for another one.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// No byte from the edge for this long: it failed the stream.
    pub stall: Duration,
    /// Look for another edge this long; zero: never resume.
    pub give_up: Duration,
}

/// What the listener is being sent: framing that holds across edges.
struct Out {
    /// Frames of the content type the listener was announced.
    kind: frames::Kind,
    /// ICY blocks at the interval the listener was announced.
    icy: Option<IcyWriter>,
    /// Scratch for ICY output.
    scratch: BytesMut,
}

/// One edge's body as it is read: unsent bytes, framing, ICY blocks.
struct In {
    half: EdgeHalf,
    framer: Framer,
    icy: Option<IcyReader>,
    /// Bytes read and not yet sent (ICY blocks removed): whole frames
    /// waiting for a write, and an incomplete frame held back.
    buf: BytesMut,
}

impl In {
    fn new(head: &EdgeHead, half: EdgeHalf, kind: frames::Kind) -> In {
        In {
            half,
            framer: Framer::new(kind),
            // An edge that interleaves ICY blocks has them taken out (and
            // put back at the listener's interval, if it gets them).
            icy: head.metaint().map(IcyReader::new),
            buf: BytesMut::with_capacity(RELAY_BUFFER),
        }
    }
}

/// Write `head` to the listener with `extra` header lines (CORS), then the
/// body from `edge` until the listener leaves or no edge carries it.
/// `is_head`: a HEAD request, answered with the head alone; `icy`: the
/// listener sent `Icy-MetaData: 1`. An HTTP/1 listener's connection closes
/// after the body (`Connection: close`), as the edge's did.
///
/// A streamed 200 ([`EdgeHead::resumable`]) whose edge closes, fails or
/// stalls is resumed through `resume` within `failover.give_up`, in the
/// same response: the bytes of an incomplete frame are dropped, the new
/// edge's bytes start at its first whole frame ([`frames`]), and ICY blocks
/// keep the listener's interval and title ([`super::icy`]).
///
/// # Errors
/// Only when the head cannot be built or written (the listener left
/// before it); body failures are reported as [`End`].
pub async fn carry(
    session: &mut Session,
    head: &EdgeHead,
    extra: &[(&'static str, &str)],
    edge: EdgeHalf,
    is_head: bool,
    failover: Failover,
    resume: &mut dyn Resume,
) -> pingora::Result<End> {
    let mut resp = ResponseHeader::build(head.status, Some(head.headers.len() + extra.len() + 2))?;
    for (name, value) in &head.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    for &(name, value) in extra {
        resp.insert_header(name, value)?;
    }
    if !session.is_http2() {
        // The listener's connection ends with the body, as the edge's does.
        session.set_keepalive(None);
    }
    let empty = is_head || edge.remaining == Some(0);
    session.write_response_header(Box::new(resp), empty).await?;
    if empty {
        return Ok(End::Edge);
    }
    let resumable = head.resumable() && !failover.give_up.is_zero();
    let mut out = Out {
        kind: if resumable {
            frames::Kind::of_content_type(head.header("content-type").unwrap_or(""))
        } else {
            frames::Kind::Raw
        },
        icy: head.metaint().map(IcyWriter::new),
        scratch: BytesMut::new(),
    };
    let mut input = In::new(head, edge, out.kind);
    let mut last_write = tokio::time::Instant::now();
    // Whether the edge in use took over from a failed one and has not
    // written yet.
    let mut resumed = false;
    let mut leave = resume.leave();
    loop {
        let from = input.buf.len();
        let read = tokio::select! {
            r = input.half.read_into(&mut input.buf, failover.stall) => r,
            () = leave.notified(), if resumable => Err(std::io::Error::other("the edge is evacuated")),
        };
        let failure = match read {
            Ok(0) => std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the edge closed"),
            Ok(_) => {
                if let Some(icy) = input.icy.as_mut() {
                    icy.strip(&mut input.buf, from);
                    if let (Some(text), Some(w)) = (icy.take(), out.icy.as_mut()) {
                        w.set(text);
                    }
                }
                match send_frames(session, &mut input, &mut out).await {
                    Ok(false) => {}
                    Ok(true) => {
                        let now = tokio::time::Instant::now();
                        if std::mem::take(&mut resumed) {
                            resume.resumed(now - last_write);
                        }
                        last_write = now;
                    }
                    Err(e) => return Ok(End::Listener(e.to_string())),
                }
                continue;
            }
            Err(e) => e,
        };
        if !resumable {
            if failure.kind() == std::io::ErrorKind::UnexpectedEof {
                let _ = session.write_response_body(None, true).await;
                return Ok(End::Edge);
            }
            return Ok(End::EdgeError(failure));
        }
        let deadline = tokio::time::Instant::now() + failover.give_up;
        let Some((new_head, half)) = resume.resume(&failure, deadline).await else {
            // The frames sent are whole; the held-back partial one is not.
            let _ = session.write_response_body(None, true).await;
            return Ok(End::EdgeError(failure));
        };
        input = In::new(&new_head, half, out.kind);
        leave = resume.leave();
        resumed = true;
    }
}

/// Send the whole frames at the start of `input.buf`: true when bytes were
/// written.
async fn send_frames(
    session: &mut Session,
    input: &mut In,
    out: &mut Out,
) -> pingora::Result<bool> {
    let mut wrote = false;
    loop {
        let (skip, end) = input.framer.feed(&input.buf);
        if end == 0 {
            return Ok(wrote);
        }
        let mut frames = input.buf.split_to(end);
        let _ = frames.split_to(skip);
        if frames.is_empty() {
            continue;
        }
        let chunk = match out.icy.as_mut() {
            None => frames.freeze(),
            Some(w) => {
                w.write(&frames, &mut out.scratch);
                out.scratch.split().freeze()
            }
        };
        session.write_response_body(Some(chunk), false).await?;
        wrote = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icecast_and_shoutcast_heads() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint: 16000\r\nicy-name: Apple\r\nConnection: Close\r\n\r\nID3";
        let (head, used) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(&raw[used..], b"ID3");
        assert_eq!(head.length, None);
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "icy-metaint", "icy-name"]);

        let icy = b"ICY 200 OK\r\nicy-metaint: 8192\r\n\r\nxy";
        let (head, used) = parse_head(icy).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(&icy[used..], b"xy");

        assert!(parse_head(b"HTTP/1.0 200 OK\r\nContent-Ty")
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .is_err()
        );
        let (head, _) = parse_head(b"HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.length), (404, Some(9)));
    }

    #[test]
    fn request_heads_keep_end_to_end_headers_only() {
        let config = crate::config::load::load_str(
            "edges: [{ name: a, kind: icecast, url: \"http://127.0.0.1:8000/base/\" }]\n\
             streams: [{ name: apple, mount: /air }]\n",
        )
        .unwrap();
        let target = Target::new(&config.edges[0], "/air?x=1");
        let mut h = http::HeaderMap::new();
        h.insert("icy-metadata", HeaderValue::from_static("1"));
        h.insert("host", HeaderValue::from_static("radio.example"));
        h.insert("cookie", HeaderValue::from_static("castgate_live=x"));
        h.insert("connection", HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("user-agent", HeaderValue::from_static("streamripper/1.64"));
        let text = String::from_utf8(request_head(&target, "GET", &h)).unwrap();
        assert!(text.starts_with("GET /base/air?x=1 HTTP/1.0\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(text.contains("icy-metadata: 1\r\n"));
        assert!(text.contains("user-agent: streamripper/1.64\r\n"));
        assert!(!text.contains("radio.example"));
        assert!(!text.contains("cookie"));
        assert!(!text.contains("x-hop"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
