//! The front door: a pingora [`ProxyHttp`] that answers every request in
//! `request_filter` from the current snapshot, without touching the network.
//!
//! Routes (GET or HEAD; other methods get 405):
//! - `/{stream}.m3u`, `.pls`, `.xspf` → 200, a one-entry playlist pointing
//!   at the chosen edge's `public_url` + mount;
//! - `/{stream}` → 302 to that URL, the request's query string kept;
//! - no eligible edge → 503 with `Retry-After` and a one-line reason;
//! - anything else → 404.
//!
//! Every answer carries `Cache-Control: no-store` (a cached playlist would
//! pin listeners to one edge) and a `Content-Length`, and is written with
//! `write_response_header`/`write_response_body` so the client's keep-alive
//! connection stays open (pingora's error helpers close it).

pub mod playlist;

use crate::balance::{NoEdge, Snapshot};
use crate::state::State;
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use playlist::Format;
use std::sync::Arc;

/// What a request asks for, from its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A playlist of a stream: `/{stream}.{m3u|pls|xspf}`.
    Playlist(&'a str, Format),
    /// A redirect to a stream: `/{stream}`.
    Redirect(&'a str),
    /// Nothing castgate serves.
    NotFound,
}

/// Split a request path into a route. Stream names are `[a-z0-9_-]+`, so
/// anything else (more segments, dots, encodings) is not found.
pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    let (name, ext) = match rest.rsplit_once('.') {
        Some((name, ext)) => (name, Some(ext)),
        None => (rest, None),
    };
    if !crate::config::validate::valid_name(name) {
        return Route::NotFound;
    }
    match ext {
        None => Route::Redirect(name),
        Some(ext) => match Format::from_extension(ext) {
            Some(f) => Route::Playlist(name, f),
            None => Route::NotFound,
        },
    }
}

/// A complete answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content-Type of `body`.
    pub content_type: &'static str,
    /// `Location` for a redirect.
    pub location: Option<String>,
    /// `Retry-After` seconds for a 503.
    pub retry_after: Option<u64>,
    /// `Allow` for a 405.
    pub allow: Option<&'static str>,
    /// The body (sent for GET, its length announced for HEAD too).
    pub body: Bytes,
    /// Index of the stream answered, for metrics.
    pub stream: Option<usize>,
    /// `format` metric label.
    pub format: &'static str,
    /// Index of the edge chosen, for metrics.
    pub edge: Option<usize>,
}

impl Answer {
    fn text(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            location: None,
            retry_after: None,
            allow: None,
            body: Bytes::from(body),
            stream: None,
            format: "-",
            edge: None,
        }
    }
}

/// Answer one request from a snapshot. Pure except for the assignment
/// counter it bumps on the chosen edge.
pub fn answer(snap: &Snapshot, method: &Method, path: &str, query: Option<&str>) -> Answer {
    let route = route(path);
    let (name, format) = match route {
        Route::Playlist(name, f) => (name, Some(f)),
        Route::Redirect(name) => (name, None),
        Route::NotFound => return Answer::text(404, "404 not found\n".into()),
    };
    let Some(stream) = snap.stream(name) else {
        return Answer::text(404, format!("404 no stream named `{name}`\n"));
    };
    let format_label = format.map_or("redirect", Format::label);
    if method != Method::GET && method != Method::HEAD {
        let mut a = Answer::text(405, "405 only GET and HEAD\n".into());
        a.allow = Some("GET, HEAD");
        a.stream = Some(stream);
        a.format = format_label;
        return a;
    }
    let choice = match snap.choose(stream) {
        Ok(c) => c,
        Err(why) => {
            let mut a = Answer::text(503, format!("503 {name}: {}\n", why.reason()));
            a.retry_after = Some(retry_after(snap, why));
            a.stream = Some(stream);
            a.format = format_label;
            return a;
        }
    };
    let url = snap.listen_url(&choice);
    let conf = &snap.config.streams[stream];
    let mut a = match format {
        Some(f) => Answer {
            status: 200,
            content_type: f.content_type(),
            location: None,
            retry_after: None,
            allow: None,
            body: Bytes::from(playlist::render(f, &url, &conf.title)),
            stream: None,
            format: "",
            edge: None,
        },
        None => {
            let location = match query {
                Some(q) if !q.is_empty() => format!("{url}?{q}"),
                _ => url,
            };
            let mut a = Answer::text(302, String::new());
            a.location = Some(location);
            a
        }
    };
    a.stream = Some(stream);
    a.format = format_label;
    a.edge = Some(choice.edge);
    a
}

/// Seconds a client should wait before asking again: one poll interval
/// when edges are up but full or not live (the next poll may change it),
/// `fall` intervals when all are down. At least 1.
fn retry_after(snap: &Snapshot, why: NoEdge) -> u64 {
    let poll = &snap.config.poll;
    let wait = match why {
        NoEdge::AllDown => poll.interval * poll.rise,
        NoEdge::NotLive | NoEdge::Full => poll.interval,
    };
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The pingora front-door service.
pub struct FrontDoor {
    state: Arc<State>,
}

impl FrontDoor {
    /// A front door answering from `state`.
    pub fn new(state: Arc<State>) -> Self {
        FrontDoor { state }
    }

    fn count(&self, snap: &Snapshot, a: &Answer) {
        let m = &self.state.metrics;
        let stream = a
            .stream
            .map_or("-", |s| snap.config.streams[s].name.as_str());
        let code = match a.status {
            200 => "200",
            302 => "302",
            404 => "404",
            405 => "405",
            503 => "503",
            _ => "other",
        };
        m.requests
            .with_label_values(&[stream, a.format, code])
            .inc();
        if let Some(e) = a.edge {
            m.assignments
                .with_label_values(&[stream, &snap.config.edges[e].name])
                .inc();
        }
    }
}

fn header(a: &Answer) -> Result<ResponseHeader> {
    let mut h = ResponseHeader::build(a.status, Some(6))?;
    h.insert_header(http::header::CONTENT_TYPE, a.content_type)?;
    h.insert_header(http::header::CONTENT_LENGTH, a.body.len())?;
    h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(l) = &a.location {
        h.insert_header(http::header::LOCATION, l.as_str())?;
    }
    if let Some(r) = a.retry_after {
        h.insert_header(http::header::RETRY_AFTER, r)?;
    }
    if let Some(allow) = a.allow {
        h.insert_header(http::header::ALLOW, allow)?;
    }
    Ok(h)
}

#[async_trait]
impl ProxyHttp for FrontDoor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        let snap = self.state.snapshot.load();
        let req = session.req_header();
        let a = answer(&snap, &req.method, req.uri.path(), req.uri.query());
        let is_head = req.method == Method::HEAD;
        self.count(&snap, &a);
        session
            .write_response_header(Box::new(header(&a)?), is_head)
            .await?;
        if !is_head {
            session.write_response_body(Some(a.body), true).await?;
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        // request_filter answers every request; reaching here is a bug.
        Error::e_explain(
            ErrorType::InternalError,
            "castgate answers every request itself",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/apple.m3u"), Route::Playlist("apple", Format::M3u));
        assert_eq!(route("/apple.pls"), Route::Playlist("apple", Format::Pls));
        assert_eq!(route("/apple.xspf"), Route::Playlist("apple", Format::Xspf));
        assert_eq!(route("/apple"), Route::Redirect("apple"));
        for p in [
            "/",
            "",
            "/apple.mp3",
            "/a/b.m3u",
            "/Apple.m3u",
            "/../x",
            "/apple.m3u.m3u",
            "/%61pple",
        ] {
            assert_eq!(route(p), Route::NotFound, "{p}");
        }
    }
}
