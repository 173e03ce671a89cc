//! The front door: a pingora [`ProxyHttp`] that decides every request in
//! `request_filter` from one snapshot and carries that snapshot to the
//! request's last phase (retries load a fresh one and name the edge they
//! chose), so a reload or an admin change in between never redirects,
//! miscounts or panics a request decided before it.
//!
//! Routes (GET or HEAD; OPTIONS answers CORS preflights; other methods get
//! 405):
//! - `/{stream}.m3u`, `.pls`, `.xspf` → 200, a one-entry playlist pointing
//!   at the chosen edge's `public_url` + mount (castgate's own URL in proxy
//!   mode);
//! - `/{stream}` → 302 to that URL, the request's query string kept; in
//!   proxy mode the edge's body, relayed by castgate ([`relay`]) with the
//!   edge's framing and ICY headers;
//! - `/{stream}.m3u8` and the session routes of HLS streams: a 302 to the
//!   edge, a playlist fetched from the edge and rewritten (rewrite mode,
//!   [`hls`]), or the edge's answer through pingora-proxy (proxy mode);
//! - no eligible edge → 503 with `Retry-After` and a one-line reason;
//! - anything else → 404.
//!
//! Playlists, redirects, rewritten playlists and errors touch no edge but
//! the one fetched from (rewrite mode); they carry `Cache-Control:
//! no-store` (a cached playlist would pin listeners to one edge) and a
//! `Content-Length`, and are written with
//! `write_response_header`/`write_response_body` so the client's
//! keep-alive connection stays open (pingora's error helpers close it).

pub mod conn;
pub mod cors;
pub mod frames;
pub mod hls;
pub mod icy;
pub mod playlist;
pub mod relay;

use crate::balance::sessions::Seen;
use crate::balance::sticky::Timeline;
use crate::balance::{NoEdge, Snapshot};
use crate::config::{StreamKind, StreamMode};
use crate::state::State;
use async_trait::async_trait;
use bytes::Bytes;
use cors::CorsHeaders;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use playlist::Format;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bound on fetching one playlist from an edge in rewrite mode. Long enough
/// for an LL-HLS blocking reload (`_HLS_msn`), which an edge may hold for
/// up to three part target durations.
pub const PLAYLIST_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// In debug builds, a request for this path panics in the handler (tests
/// of the panic guard in `request_filter`).
#[cfg(debug_assertions)]
pub const TEST_PANIC_PATH: &str = "/.castgate/test-panic";

/// Largest edge playlist accepted for rewriting, bytes.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;

/// What a request asks for, from its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/{stream}.{m3u|pls|xspf}`: a playlist of an Icecast stream.
    Playlist(&'a str, Format),
    /// `/{stream}.m3u8`: the entry of an HLS stream.
    HlsEntry(&'a str),
    /// `/{stream}`: an Icecast stream (302 or proxied body).
    Stream(&'a str),
    /// `/{stream}/s/{token}{rest}`: a request inside an HLS session.
    Session {
        /// Stream name.
        stream: &'a str,
        /// Session token.
        token: &'a str,
        /// Path on the edge, starting with `/`.
        rest: &'a str,
    },
    /// `/{stream}{rest}`: a proxied HLS request whose session is in a cookie.
    Sub {
        /// Stream name.
        stream: &'a str,
        /// Path on the edge, starting with `/`.
        rest: &'a str,
    },
    /// Nothing castgate serves.
    NotFound,
}

/// Split a request path into a route. Stream names are `[a-z0-9_-]+`; an
/// edge path must be plain (no `.`/`..` segments, no `%`, no empty
/// segments), so nothing outside a stream's directory can be reached.
pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    let valid = crate::config::validate::valid_name;
    if let Some((name, sub)) = rest.split_once('/') {
        if !valid(name) {
            return Route::NotFound;
        }
        let sub_path = &rest[name.len()..];
        if let Some(after) = sub.strip_prefix("s/") {
            let (token, tail) = after.split_once('/').unwrap_or((after, ""));
            let tail_path = &after[token.len()..];
            if token.is_empty() || tail.is_empty() || !plain_path(tail_path) {
                return Route::NotFound;
            }
            return Route::Session {
                stream: name,
                token,
                rest: tail_path,
            };
        }
        if !plain_path(sub_path) {
            return Route::NotFound;
        }
        return Route::Sub {
            stream: name,
            rest: sub_path,
        };
    }
    let (name, ext) = match rest.rsplit_once('.') {
        Some((name, ext)) => (name, Some(ext)),
        None => (rest, None),
    };
    if !valid(name) {
        return Route::NotFound;
    }
    match ext {
        None => Route::Stream(name),
        Some("m3u8") => Route::HlsEntry(name),
        Some(ext) => match Format::from_extension(ext) {
            Some(f) => Route::Playlist(name, f),
            None => Route::NotFound,
        },
    }
}

/// `/a/b.ts`: segments of safe characters, none empty, `.` or `..`.
fn plain_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() < 1024
        && p[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b))
        })
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
    /// `Set-Cookie` (proxy-mode session).
    pub set_cookie: Option<String>,
    /// The body (sent for GET, its length announced for HEAD too).
    pub body: Bytes,
    /// Index of the stream answered, for metrics.
    pub stream: Option<usize>,
    /// `format` metric label.
    pub format: &'static str,
    /// Index of the edge chosen, for metrics (a new listener there).
    pub edge: Option<usize>,
    /// Index of the edge asked for this answer when it is not a new
    /// listener's (a rewritten session playlist), for the access log.
    pub asked: Option<usize>,
}

impl Answer {
    fn text(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            location: None,
            retry_after: None,
            allow: None,
            set_cookie: None,
            body: Bytes::from(body),
            stream: None,
            format: "-",
            edge: None,
            asked: None,
        }
    }

    fn redirect(location: String) -> Answer {
        let mut a = Answer::text(302, String::new());
        a.location = Some(location);
        a
    }

    fn asked(mut self, edge: usize) -> Answer {
        self.asked = Some(edge);
        self
    }

    fn for_stream(mut self, stream: usize, format: &'static str, edge: Option<usize>) -> Answer {
        self.stream = Some(stream);
        self.format = format;
        self.edge = edge;
        self
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer at once.
    Answer(Answer),
    /// Fetch a playlist from an edge, rewrite it, answer it (rewrite mode).
    Rewrite(RewriteJob),
    /// Fetch the stream's playlist from the session's edge and answer a
    /// multivariant playlist steered between the eligible edges (rewrite
    /// mode with `steering`); `rest` is the stream's path.
    Steer(RewriteJob),
    /// Proxy the request to an edge through pingora (proxy mode).
    Proxy(ProxyJob),
}

/// A playlist to fetch and rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteJob {
    /// Stream index.
    pub stream: usize,
    /// Edge index.
    pub edge: usize,
    /// Path on the edge (below its base URL), starting with `/`.
    pub rest: String,
    /// The request's query string (LL-HLS `_HLS_msn`, `_HLS_part`, ...).
    pub query: Option<String>,
    /// The session's token, for the castgate URLs in the answer.
    pub token: String,
    /// The session's id, to move it should the edge not answer.
    pub session: u64,
    /// The token's renumbering of the edge's segments, if it has one.
    pub timeline: Option<Timeline>,
    /// The session is moving here from this edge: answer a `302` to a new
    /// token that continues its media sequence, not the playlist.
    pub moving_from: Option<String>,
}

/// A request to carry to an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyJob {
    /// Stream index.
    pub stream: usize,
    /// Edge index.
    pub edge: usize,
    /// Path and query to ask the edge for.
    pub path_and_query: String,
    /// `Set-Cookie` to add to the edge's answer.
    pub set_cookie: Option<String>,
    /// `format` metric label.
    pub format: &'static str,
    /// Whether this request is a new listener (counted as an assignment).
    pub assigned: bool,
    /// The HLS session's id (None for an Icecast stream): a retry on
    /// another edge moves the session there.
    pub session: Option<u64>,
}

/// What castgate knows of one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// `Host` header.
    pub host: Option<&'a str>,
    /// `Cookie` header.
    pub cookie: Option<&'a str>,
}

/// The name of a stream's session cookie.
pub fn cookie_name(stream: &str) -> String {
    format!("castgate_{stream}")
}

fn cookie_value<'a>(cookie: Option<&'a str>, name: &str) -> Option<&'a str> {
    cookie?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `base` with the request's query string appended. The query is the only
/// client input that reaches a `Location` or a request to an edge (rewrite
/// and proxy modes); every byte outside RFC 3986's query characters (controls,
/// space, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, `#`, non-ASCII)
/// is percent-encoded, so it can neither leave the URL nor start a header
/// or a playlist line. Existing `%XX` escapes pass through unchanged.
fn with_query(base: String, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => {
            let q = percent_encoding::percent_encode(q.as_bytes(), NOT_QUERY);
            format!("{base}?{q}")
        }
        _ => base,
    }
}

/// Bytes that are not RFC 3986 `query` characters (unreserved, sub-delims,
/// `:`, `@`, `/`, `?`, and `%` of an escape).
const NOT_QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The session a request belongs to, and the edge serving it.
struct SessionPick {
    edge: usize,
    token: String,
    session: u64,
    /// The token's own edge could not keep it: a new token was made.
    moved: bool,
    /// A brand-new session (no authentic token came in).
    new: bool,
    /// The authentic token's timeline (see [`Timeline`]).
    timeline: Option<Timeline>,
    /// The authentic token's edge, when the session moved off it.
    from: Option<String>,
}

/// Decide what to do with a request. Pure but for the assignment counters
/// it bumps and the clock it reads.
pub fn decide(snap: &Snapshot, state: &State, req: &Request<'_>) -> Action {
    let route = route(req.path);
    let name = match route {
        Route::Playlist(n, _) | Route::HlsEntry(n) | Route::Stream(n) => n,
        Route::Session { stream, .. } | Route::Sub { stream, .. } => stream,
        Route::NotFound => return Action::Answer(Answer::text(404, "404 not found\n".into())),
    };
    let Some(stream) = snap.stream(name) else {
        return Action::Answer(Answer::text(404, format!("404 no stream named `{name}`\n")));
    };
    let conf = &snap.config.streams[stream];
    let format = match route {
        Route::Playlist(_, f) => f.label(),
        Route::Stream(_) if conf.mode == StreamMode::Proxy => "proxy",
        Route::Stream(_) => "redirect",
        Route::HlsEntry(_) => "m3u8",
        Route::Session { rest, .. } | Route::Sub { rest, .. } if rest.ends_with(".m3u8") => "m3u8",
        _ => "segment",
    };
    if req.method != Method::GET && req.method != Method::HEAD {
        let mut a = Answer::text(405, "405 only GET, HEAD and OPTIONS\n".into());
        a.allow = Some("GET, HEAD, OPTIONS");
        return Action::Answer(a.for_stream(stream, format, None));
    }
    let not_found = || {
        Action::Answer(Answer::text(404, "404 not found\n".into()).for_stream(stream, format, None))
    };
    let unavailable = |why: NoEdge| {
        let mut a = Answer::text(503, format!("503 {name}: {}\n", why.reason()));
        a.retry_after = Some(retry_after(snap, why));
        Action::Answer(a.for_stream(stream, format, None))
    };
    match (conf.kind, route) {
        (StreamKind::Icecast, Route::Playlist(_, f)) => {
            let (url, edge) =
                if conf.mode == StreamMode::Proxy {
                    // The player must come back here: point at our own URL; the
                    // edge is chosen when the stream itself is asked for.
                    if let Err(why) = snap.available(stream) {
                        return unavailable(why);
                    }
                    match req.host {
                        Some(h) if playlist_host(h, &snap.config.playlist.hosts) => {
                            (format!("http://{h}/{name}"), None)
                        }
                        Some(_) => return Action::Answer(
                            Answer::text(
                                400,
                                "400 this Host is not one castgate is known by (playlist.hosts)\n"
                                    .into(),
                            )
                            .for_stream(stream, format, None),
                        ),
                        None => {
                            return Action::Answer(
                                Answer::text(400, "400 a Host header is needed\n".into())
                                    .for_stream(stream, format, None),
                            )
                        }
                    }
                } else {
                    match snap.choose(stream) {
                        Ok(c) => (snap.listen_url(&c), Some(c.edge)),
                        Err(why) => return unavailable(why),
                    }
                };
            // The chosen edge, then backups for players that move to the
            // next entry when a stream fails (castgate itself resumes a
            // proxied stream, whose playlist names castgate only).
            let mut urls = vec![url];
            if let Some(primary) = edge {
                for b in snap.backups(stream, primary, snap.config.playlist.backups) {
                    urls.push(snap.listen_url(&b));
                }
            }
            let mut a = Answer::text(200, String::new());
            a.content_type = f.content_type();
            a.body = Bytes::from(playlist::render(f, &urls, &conf.title));
            Action::Answer(a.for_stream(stream, format, edge))
        }
        (StreamKind::Icecast, Route::Stream(_)) => {
            let choice = match snap.choose(stream) {
                Ok(c) => c,
                Err(why) => return unavailable(why),
            };
            if conf.mode == StreamMode::Proxy {
                Action::Proxy(ProxyJob {
                    stream,
                    edge: choice.edge,
                    path_and_query: with_query(choice.mount.to_string(), req.query),
                    set_cookie: None,
                    format,
                    assigned: true,
                    session: None,
                })
            } else {
                let location = with_query(snap.listen_url(&choice), req.query);
                Action::Answer(Answer::redirect(location).for_stream(
                    stream,
                    format,
                    Some(choice.edge),
                ))
            }
        }
        (StreamKind::Hls, Route::HlsEntry(_)) => {
            let choice = match snap.choose(stream) {
                Ok(c) => c,
                Err(why) => return unavailable(why),
            };
            let edge = choice.edge;
            if conf.mode == StreamMode::Redirect {
                let location = with_query(
                    format!("{}{}", snap.edges[edge].public_base, conf.mount),
                    req.query,
                );
                return Action::Answer(Answer::redirect(location).for_stream(
                    stream,
                    format,
                    Some(edge),
                ));
            }
            let (token, claims) = state
                .sticky
                .issue(&snap.config.edges[edge].name, SystemTime::now());
            if conf.mode == StreamMode::Rewrite && conf.steering_ttl.is_some() {
                return Action::Steer(RewriteJob {
                    stream,
                    edge,
                    rest: conf.mount.clone(),
                    query: req.query.map(str::to_string),
                    token,
                    session: claims.session,
                    timeline: None,
                    moving_from: None,
                });
            }
            let mut a = Answer::redirect(with_query(
                format!("/{name}/s/{token}{}", conf.mount),
                req.query,
            ));
            if conf.mode == StreamMode::Proxy {
                a.set_cookie = Some(session_cookie(name, &token, state.sticky.ttl()));
            }
            Action::Answer(a.for_stream(stream, format, Some(edge)))
        }
        (StreamKind::Hls, Route::Session { token, rest, .. })
            if rest == STEERING_MANIFEST && conf.steering_ttl.is_some() =>
        {
            match steering(snap, state, stream, token, req.query) {
                Ok(a) => Action::Answer(a),
                Err(None) => not_found(),
                Err(Some(why)) => unavailable(why),
            }
        }
        (StreamKind::Hls, Route::Session { token, rest, .. }) => {
            if !under_stream_dir(&conf.mount, rest) {
                return not_found();
            }
            let pick = match pick_session(snap, state, stream, Some(token)) {
                Ok(p) => p,
                Err(why) => return unavailable(why),
            };
            let is_playlist = rest.ends_with(".m3u8");
            if is_playlist {
                record_session(snap, state, stream, &pick);
            }
            let assigned = pick.new || pick.moved;
            let rewrite_job = |moving_from: Option<String>| RewriteJob {
                stream,
                edge: pick.edge,
                rest: rest.to_string(),
                query: req.query.map(str::to_string),
                token: pick.token.clone(),
                session: pick.session,
                timeline: pick.timeline,
                moving_from,
            };
            match conf.mode {
                StreamMode::Redirect => {
                    let location = with_query(
                        format!("{}{rest}", snap.edges[pick.edge].public_base),
                        req.query,
                    );
                    Action::Answer(Answer::redirect(location).for_stream(
                        stream,
                        format,
                        assigned.then_some(pick.edge),
                    ))
                }
                StreamMode::Rewrite if !is_playlist => not_found(),
                // A session moving between edges: its new token continues
                // the player's media sequence, which needs a look at the
                // new edge's playlist.
                StreamMode::Rewrite if pick.moved && pick.from.is_some() => {
                    Action::Rewrite(rewrite_job(pick.from.clone()))
                }
                _ if pick.moved && is_playlist => {
                    // The session moves: its URLs carry the new token.
                    let mut a = Answer::redirect(with_query(
                        format!("/{name}/s/{}{rest}", pick.token),
                        req.query,
                    ));
                    if conf.mode == StreamMode::Proxy {
                        a.set_cookie = Some(session_cookie(name, &pick.token, state.sticky.ttl()));
                    }
                    Action::Answer(a.for_stream(stream, format, Some(pick.edge)))
                }
                StreamMode::Rewrite => Action::Rewrite(rewrite_job(None)),
                StreamMode::Proxy => Action::Proxy(ProxyJob {
                    stream,
                    edge: pick.edge,
                    path_and_query: with_query(rest.to_string(), req.query),
                    set_cookie: None,
                    format,
                    assigned,
                    session: Some(pick.session),
                }),
            }
        }
        (StreamKind::Hls, Route::Sub { rest, .. }) if conf.mode == StreamMode::Proxy => {
            if !under_stream_dir(&conf.mount, rest) {
                return not_found();
            }
            let token = cookie_value(req.cookie, &cookie_name(name));
            let pick = match pick_session(snap, state, stream, token) {
                Ok(p) => p,
                Err(why) => return unavailable(why),
            };
            if rest.ends_with(".m3u8") {
                record_session(snap, state, stream, &pick);
            }
            let changed = pick.moved || pick.new;
            Action::Proxy(ProxyJob {
                stream,
                edge: pick.edge,
                path_and_query: with_query(rest.to_string(), req.query),
                set_cookie: changed.then(|| session_cookie(name, &pick.token, state.sticky.ttl())),
                format,
                assigned: changed,
                session: Some(pick.session),
            })
        }
        _ => not_found(),
    }
}

/// Whether a proxy-mode playlist may name castgate by the request's `Host`
/// `h`: one of `allowed` (`playlist.hosts`, compared without case), or,
/// with none configured, an IP literal or `localhost` (with or without a
/// port). Any other name a client sends would otherwise end up in the
/// playlist it is given (a cache or a shared link could spread it).
fn playlist_host(h: &str, allowed: &[String]) -> bool {
    if !valid_host(h) {
        return false;
    }
    if !allowed.is_empty() {
        return allowed.iter().any(|a| a.eq_ignore_ascii_case(h));
    }
    let name = match h.rsplit_once(':') {
        // `[v6]:port`, `v4:port`, `name:port`; a bare `[v6]` keeps its
        // colons inside the brackets.
        Some((name, port)) if !h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// `Host` values castgate will write into a playlist.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() < 256
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// Whether `rest` lies in the directory of the stream's playlist path.
fn under_stream_dir(path: &str, rest: &str) -> bool {
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    rest.starts_with(dir)
}

fn session_cookie(stream: &str, token: &str, ttl: Duration) -> String {
    format!(
        "{}={token}; Path=/{stream}/; Max-Age={}; HttpOnly; SameSite=Lax",
        cookie_name(stream),
        ttl.as_secs()
    )
}

/// The path, under a session's prefix, of its steering manifest.
pub const STEERING_MANIFEST: &str = "/steering.json";

/// A steered session's manifest (HLS Content Steering 1.2): its edge first
/// while eligible (the pathway the player reports in `_HLS_pathway`, else
/// the token's), then the other eligible edges by load; a `RELOAD-URI`
/// with a fresh token for the same session. Counts as a sighting of the
/// session on the first pathway.
///
/// # Errors
/// `Err(None)` (a 404) for a token that is not authentic; `Err(Some(why))`
/// (a 503) when no edge is eligible.
fn steering(
    snap: &Snapshot,
    state: &State,
    stream: usize,
    token: &str,
    query: Option<&str>,
) -> Result<Answer, Option<NoEdge>> {
    let (Some(claims), Some(conf)) = (
        state.sticky.authentic(token),
        snap.config.streams.get(stream),
    ) else {
        return Err(None);
    };
    let asked = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "_HLS_pathway")
            .and_then(|(_, v)| snap.edge_named(&v))
    });
    let current = asked.or_else(|| snap.edge_named(&claims.edge));
    let order = snap.steering_order(stream, current);
    let Some(&first) = order.first() else {
        return Err(Some(snap.available(stream).err().unwrap_or(NoEdge::Full)));
    };
    let names: Vec<&str> = order
        .iter()
        .filter_map(|&e| snap.edges.get(e).map(|v| &*v.name))
        .collect();
    let first_name = names.first().copied().unwrap_or_default();
    if let (Some(s), Some(e)) = (snap.streams.get(stream), snap.edges.get(first)) {
        state.sessions.seen(Seen {
            session: claims.session,
            stream: s.name.clone(),
            edge: e.name.clone(),
            at: Instant::now(),
        });
    }
    let (reload, _) = state
        .sticky
        .reissue(claims.session, first_name, SystemTime::now());
    let ttl = conf.steering_ttl.map_or(10, |t| t.as_secs().max(1));
    let body = hls::steering_manifest(
        ttl,
        &format!("/{}/s/{reload}{STEERING_MANIFEST}", conf.name),
        &names,
    );
    let mut a = Answer::text(200, body);
    a.content_type = "application/json";
    Ok(a.for_stream(stream, "steering", None))
}

/// Count a playlist fetch of a session (see [`crate::balance::sessions`]).
fn record_session(snap: &Snapshot, state: &State, stream: usize, pick: &SessionPick) {
    state.sessions.seen(Seen {
        session: pick.session,
        stream: snap.streams[stream].name.clone(),
        edge: snap.edges[pick.edge].name.clone(),
        at: Instant::now(),
    });
}

/// The edge of a session: its token's edge while that edge may keep it;
/// else a new token on another edge (same session id when the token was
/// authentic, so the move is stable); else a new session on the
/// least-loaded edge.
fn pick_session(
    snap: &Snapshot,
    state: &State,
    stream: usize,
    token: Option<&str>,
) -> Result<SessionPick, NoEdge> {
    let now = SystemTime::now();
    let authentic = token.and_then(|t| state.sticky.authentic(t));
    if let (Some(t), Some(claims)) = (token, state.sticky.verify(token.unwrap_or(""), now)) {
        if let Some(edge) = snap.edge_named(&claims.edge) {
            if snap.session_may_stay(stream, edge) {
                return Ok(SessionPick {
                    edge,
                    token: t.to_string(),
                    session: claims.session,
                    moved: false,
                    new: false,
                    timeline: claims.timeline,
                    from: None,
                });
            }
        }
    }
    match authentic {
        Some(old) => {
            let choice = snap.choose_for_session(stream, old.session)?;
            let name = &snap.config.edges[choice.edge].name;
            let (token, claims) = state.sticky.reissue(old.session, name, now);
            Ok(SessionPick {
                edge: choice.edge,
                token,
                session: claims.session,
                moved: true,
                new: false,
                timeline: old.timeline,
                from: Some(old.edge),
            })
        }
        None => {
            let choice = snap.choose(stream)?;
            let name = &snap.config.edges[choice.edge].name;
            let (new_token, claims) = state.sticky.issue(name, now);
            Ok(SessionPick {
                edge: choice.edge,
                token: new_token,
                session: claims.session,
                // A forged or unknown token in a session URL: the player
                // gets a proper session URL.
                moved: token.is_some(),
                new: true,
                timeline: None,
                from: None,
            })
        }
    }
}

/// Seconds a client should wait before asking again: one poll interval
/// when edges are up but full or not live (the next poll may change it),
/// `rise` intervals when all are down. At least 1.
fn retry_after(snap: &Snapshot, why: NoEdge) -> u64 {
    let poll = &snap.config.poll;
    let wait = match why {
        NoEdge::AllDown => poll.interval * poll.rise,
        NoEdge::NotLive | NoEdge::Full => poll.interval,
    };
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A proxied request and the snapshot it was decided on: `job`'s stream
/// and edge are positions in `snap`, valid for as long as the request
/// carries both. A retry replaces both at once.
#[derive(Debug)]
struct Carried {
    snap: Arc<Snapshot>,
    job: ProxyJob,
}

impl Carried {
    /// The job's edge in its own snapshot.
    fn edge(&self) -> Option<&crate::config::Edge> {
        self.snap.config.edges.get(self.job.edge)
    }

    /// The job's stream name.
    fn stream_name(&self) -> &str {
        self.snap
            .streams
            .get(self.job.stream)
            .map_or("-", |s| &*s.name)
    }

    /// The job's edge name.
    fn edge_name(&self) -> &str {
        self.snap.edges.get(self.job.edge).map_or("-", |e| &*e.name)
    }
}

/// Per-request state of the front door.
#[derive(Debug, Default)]
pub struct Ctx {
    proxy: Option<Carried>,
    cors: CorsHeaders,
    /// When the request started, for the access log.
    started: Option<Instant>,
    /// What the access log says of the request.
    access: Option<AccessInfo>,
    /// Edges (by name) that failed this request before answering (proxy
    /// mode), not to be tried again for it.
    refused_by: Vec<Arc<str>>,
    /// A relayed stream's resumes on other edges and the silence across
    /// them, for the access log.
    resumes: Option<(u32, Duration)>,
}

/// Access-log fields decided while answering: stream, format, edge.
type AccessInfo = (Option<Arc<str>>, &'static str, Option<Arc<str>>);

/// The pingora front-door service.
pub struct FrontDoor {
    state: Arc<State>,
    client: reqwest::Client,
    /// Edge connections for relayed streams ([`relay`]).
    connector: pingora::connectors::TransportConnector,
}

impl FrontDoor {
    /// A front door answering from `state`.
    ///
    /// # Errors
    /// When the HTTP client for rewrite mode cannot be built.
    pub fn new(state: Arc<State>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("castgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(PLAYLIST_FETCH_TIMEOUT)
            .build()?;
        Ok(FrontDoor {
            state,
            client,
            connector: pingora::connectors::TransportConnector::new(None),
        })
    }

    fn count(
        &self,
        snap: &Snapshot,
        stream: Option<usize>,
        format: &str,
        status: u16,
        edge: Option<usize>,
    ) {
        let m = &self.state.metrics;
        let stream_name = stream
            .and_then(|s| snap.streams.get(s))
            .map_or("-", |s| &*s.name);
        let code = match status {
            200 => "200",
            204 => "204",
            206 => "206",
            302 => "302",
            400 => "400",
            404 => "404",
            405 => "405",
            500 => "500",
            502 => "502",
            503 => "503",
            _ => "other",
        };
        m.requests
            .with_label_values(&[stream_name, format, code])
            .inc();
        if let Some(e) = edge.and_then(|e| snap.edges.get(e)) {
            m.assignments
                .with_label_values(&[stream_name, &e.name])
                .inc();
        }
    }

    /// Decide and write the answer to one request (the front door's
    /// `request_filter`): `Ok(true)` when answered here, `Ok(false)` when
    /// the request is to be proxied to `ctx.proxy`'s edge.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Debug builds only (what the integration tests run): a path whose
        // handler panics, to show that a panic answers 500 and the process
        // keeps serving. Release builds have no such path.
        #[cfg(debug_assertions)]
        if session.req_header().uri.path() == TEST_PANIC_PATH {
            panic!("panic requested by {TEST_PANIC_PATH}");
        }
        let snap = self.state.snapshot.load_full();
        if session.get_keepalive().is_some() {
            // Bound the wait for this connection's next request (pingora
            // would keep it forever); a client that asked to close stays
            // closed.
            let idle = snap.config.server.keepalive_timeout.as_secs().max(1);
            session.set_keepalive(Some(idle));
        }
        // Bound each write to this client (pingora waits forever): a
        // listener that stopped reading a proxied stream is dropped once
        // its send buffer stays full this long.
        session.set_write_timeout(Some(snap.config.server.write_timeout));
        let req = session.req_header();
        let text =
            |name: http::header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
        let origin = text(http::header::ORIGIN);
        ctx.cors = CorsHeaders::for_request(&snap.config.cors, origin);
        // castgate's own answers are never cached (no-store), so only a
        // cross-origin request (one with an Origin) needs CORS headers on
        // them; proxied answers always carry them, for caches in between.
        let no_cors = CorsHeaders::default();
        let own_cors = if origin.is_some() {
            &ctx.cors
        } else {
            &no_cors
        };
        let is_head = req.method == Method::HEAD;
        if req.method == Method::OPTIONS {
            // A CORS preflight (or a plain OPTIONS): say what is allowed.
            let mut a = Answer::text(204, String::new());
            a.allow = Some("GET, HEAD, OPTIONS");
            let allow_headers =
                cors::allow_headers(text(http::header::ACCESS_CONTROL_REQUEST_HEADERS));
            let mut h = header(&a, &ctx.cors)?;
            h.remove_header(&http::header::CONTENT_TYPE);
            h.insert_header(
                http::header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, HEAD, OPTIONS",
            )?;
            h.insert_header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers)?;
            h.insert_header(http::header::ACCESS_CONTROL_MAX_AGE, "600")?;
            session.write_response_header(Box::new(h), true).await?;
            self.count(&snap, None, "-", 204, None);
            return Ok(true);
        }
        let request = Request {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            host: text(http::header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str())),
            cookie: text(http::header::COOKIE),
        };
        let (answer, snap) = match decide(&snap, &self.state, &request) {
            Action::Answer(a) => (a, snap),
            // A session moved off an unreachable edge is answered from the
            // snapshot its new edge was chosen in.
            Action::Rewrite(job) => self.rewrite(snap, &job).await,
            Action::Steer(job) => (self.steer(&snap, &job).await, snap),
            Action::Proxy(job) => {
                let relayed = job.session.is_none();
                let carried = Carried {
                    snap: snap.clone(),
                    job,
                };
                // A long-lived stream is logged when it ends; count the new
                // listener now.
                if carried.job.assigned {
                    let m = &self.state.metrics;
                    m.assignments
                        .with_label_values(&[carried.stream_name(), carried.edge_name()])
                        .inc();
                }
                if snap.config.access_log {
                    ctx.access = Some((
                        Some(Arc::from(carried.stream_name())),
                        carried.job.format,
                        Some(Arc::from(carried.edge_name())),
                    ));
                }
                ctx.proxy = Some(carried);
                if relayed {
                    // An Icecast mount: castgate's own relay carries it.
                    self.relay(session, ctx).await?;
                    return Ok(true);
                }
                return Ok(false);
            }
        };
        self.count(
            &snap,
            answer.stream,
            answer.format,
            answer.status,
            answer.edge,
        );
        if snap.config.access_log {
            ctx.access = Some((
                answer
                    .stream
                    .and_then(|s| snap.streams.get(s))
                    .map(|s| s.name.clone()),
                answer.format,
                answer
                    .edge
                    .or(answer.asked)
                    .and_then(|e| snap.edges.get(e))
                    .map(|e| e.name.clone()),
            ));
        }
        write(session, &answer, own_cors, is_head).await?;
        Ok(true)
    }

    /// A proxied request's edge failed it before answering (refused the
    /// connection, or closed it unanswered): choose another eligible edge
    /// from the current snapshot, each edge once per request, and carry
    /// the request there (with that snapshot); an HLS session moves with a
    /// new cookie. False when no other edge is eligible (or the stream is
    /// gone from the config): the listener gets a 502.
    fn next_edge(&self, ctx: &mut Ctx, query: Option<&str>, why: &dyn std::fmt::Display) -> bool {
        let Some(carried) = ctx.proxy.as_mut() else {
            return false;
        };
        let failed: Arc<str> = Arc::from(carried.edge_name());
        ctx.refused_by.push(failed.clone());
        let Some(to) = self.move_carried(carried, &mut ctx.access, &ctx.refused_by, query) else {
            return false;
        };
        tracing::warn!(
            stream = %carried.stream_name(),
            edge = %failed,
            to = %to,
            error = %why,
            "edge failed a proxied request before answering: trying another"
        );
        true
    }

    /// Move `carried` to another eligible edge of its stream, chosen from
    /// the current snapshot (which it then carries) avoiding the edges
    /// named in `avoid`; an HLS session gets a new cookie, the access log
    /// names the new edge. Returns the new edge's name, or None when no
    /// other edge is eligible or the stream is gone from the config.
    fn move_carried(
        &self,
        carried: &mut Carried,
        access: &mut Option<AccessInfo>,
        avoid: &[Arc<str>],
        query: Option<&str>,
    ) -> Option<Arc<str>> {
        let snap = self.state.snapshot.load_full();
        let stream = snap.stream(carried.stream_name())?;
        let avoid: Vec<usize> = avoid
            .iter()
            .filter_map(|name| snap.edge_named(name))
            .collect();
        let job = &mut carried.job;
        let choice = match job.session {
            Some(id) => snap.choose_for_session_avoiding(stream, id, &avoid),
            None => snap.choose_avoiding(stream, &avoid),
        }
        .ok()?;
        let conf = snap.config.streams.get(stream)?;
        let to = snap.edges.get(choice.edge)?.name.clone();
        match job.session {
            None => job.path_and_query = with_query(choice.mount.to_string(), query),
            Some(id) => {
                let (token, _) = self.state.sticky.reissue(id, &to, SystemTime::now());
                job.set_cookie = Some(session_cookie(&conf.name, &token, self.state.sticky.ttl()));
            }
        }
        if let Some(access) = access.as_mut() {
            access.2 = Some(to.clone());
        }
        job.stream = stream;
        job.edge = choice.edge;
        carried.snap = snap;
        Some(to)
    }

    /// [`FrontDoor::next_edge`] for pingora-proxy's retry hooks: `e` is
    /// marked for a retry when another edge was chosen.
    fn retry_elsewhere(&self, session: &Session, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        let retry = self.next_edge(ctx, session.req_header().uri.query(), &e);
        e.set_retry(retry);
        e
    }

    /// Carry `ctx.proxy`'s stream with castgate's [`relay`]: connect to its
    /// edge (another eligible edge, each once, while edges fail before
    /// answering), then relay the edge's head and body to the listener.
    /// With no edge left, the listener gets a 502.
    async fn relay(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        let method = if req.method == Method::HEAD {
            "HEAD"
        } else {
            "GET"
        };
        let query = req.uri.query().map(str::to_string);
        let headers = req.headers.clone();
        let opened = loop {
            let Some(target) = ctx
                .proxy
                .as_ref()
                .and_then(|c| Some(relay::Target::new(c.edge()?, &c.job.path_and_query)))
            else {
                return Error::e_explain(ErrorType::InternalError, "no edge chosen");
            };
            match relay::open(&self.connector, &target, method, &headers).await {
                Ok(opened) => break Some(opened),
                Err(why) => {
                    if !self.next_edge(ctx, query.as_deref(), &why) {
                        tracing::warn!(edge = %target.edge, error = %why, "edge failed a relayed stream before answering; no other edge");
                        break None;
                    }
                }
            }
        };
        let Some((head, edge)) = opened else {
            let name = ctx.proxy.as_ref().map_or("-", |c| c.stream_name());
            let a = Answer::text(502, format!("502 {name}: no edge answered\n"));
            session.set_keepalive(None);
            write(session, &a, &ctx.cors, method == "HEAD").await?;
            return Ok(());
        };
        let cors_owned: Vec<(&'static str, String)> =
            ctx.cors.pairs().map(|(k, v)| (k, v.to_string())).collect();
        let cors: Vec<(&'static str, &str)> =
            cors_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let failover = ctx
            .proxy
            .as_ref()
            .map_or_else(Default::default, |c| c.snap.config.failover);
        let failover = relay::Failover {
            stall: failover.stall,
            give_up: failover.give_up,
        };
        let on = ctx.proxy.as_ref().map_or("-", |c| c.edge_name());
        let ticket = self.state.carrying.enter(on);
        let mut resumer = Resumer {
            door: self,
            ctx,
            method,
            headers: &headers,
            query: query.as_deref(),
            ticket,
        };
        let ended = relay::carry(
            session,
            &head,
            &cors,
            edge,
            method == "HEAD",
            failover,
            &mut resumer,
        )
        .await?;
        match ended {
            relay::End::Edge | relay::End::Listener(_) => {}
            relay::End::EdgeError(e) => {
                let edge = ctx.proxy.as_ref().map_or("-", |c| c.edge_name());
                tracing::info!(edge = %edge, error = %e, "relayed stream ended by its edge");
            }
        }
        Ok(())
    }

    /// A `302` that moves `job`'s session off its edge, which could not be
    /// reached, to another eligible one (with a new token), chosen from the
    /// current snapshot (the fetch may have taken seconds); returned with
    /// that snapshot, in which the answer's positions lie. None when no
    /// other edge is eligible or the stream is gone.
    async fn move_session(
        &self,
        decided: &Snapshot,
        job: &RewriteJob,
    ) -> Option<(Answer, Arc<Snapshot>)> {
        let stream_name = decided.streams.get(job.stream)?.name.clone();
        let failed = decided.edges.get(job.edge)?.name.clone();
        let snap = self.state.snapshot.load_full();
        let stream = snap.stream(&stream_name)?;
        let avoid: Vec<usize> = snap.edge_named(&failed).into_iter().collect();
        let edge = snap
            .choose_for_session_avoiding(stream, job.session, &avoid)
            .ok()?
            .edge;
        let to = snap.edges.get(edge)?.name.clone();
        tracing::warn!(
            stream = %stream_name,
            edge = %failed,
            to = %to,
            "edge unreachable for a playlist: session moved"
        );
        let answer = self.moved(&snap, stream, edge, job, &failed).await?;
        Some((answer, snap))
    }

    /// The `302` that moves `job`'s session from edge `from` to `edge`
    /// (positions in `snap`): a new token whose [`Timeline`] continues the
    /// media sequence the player saw, when this instance answered it a
    /// playlist and the new edge's playlist can be read; else a token
    /// without one, as a plain move. A move back to the token's own edge
    /// keeps its timeline; the same move again (a player that keeps its old
    /// URL after the redirect) gets the same timeline again.
    async fn moved(
        &self,
        snap: &Snapshot,
        stream: usize,
        edge: usize,
        job: &RewriteJob,
        from: &str,
    ) -> Option<Answer> {
        let stream_name = snap.streams.get(stream)?.name.clone();
        let to = snap.edges.get(edge)?.name.clone();
        let answered = &self.state.answered;
        let timeline = if &*to == from {
            job.timeline
        } else if let Some(t) = answered.moved_to(job.session, from, &to) {
            Some(t)
        } else if let Some((seen, seen_at)) = answered.seen(job.session) {
            let conf = snap.config.edges.get(edge)?;
            match self.fetch_playlist(conf, job).await {
                Ok(body) => {
                    // Segments the player would have had since its last
                    // playlist: it goes on from there on the new edge.
                    let td = hls::target_duration(&body).unwrap_or(1);
                    let behind = seen_at.elapsed().as_secs() / td;
                    hls::timeline_for_move(seen, &hls::numbers(&body), behind).inspect(|t| {
                        answered.record_move(job.session, Arc::from(from), to.clone(), *t);
                    })
                }
                Err(e) => {
                    tracing::info!(stream = %stream_name, edge = %to, error = %e, "moved without a timeline: the new edge's playlist could not be read");
                    None
                }
            }
        } else {
            None
        };
        let (token, _) =
            self.state
                .sticky
                .reissue_with(job.session, &to, timeline, SystemTime::now());
        let location = with_query(
            format!("/{stream_name}/s/{token}{}", job.rest),
            job.query.as_deref(),
        );
        Some(Answer::redirect(location).for_stream(stream, "m3u8", Some(edge)))
    }

    /// Fetch `job`'s playlist from its edge and rewrite it; an unreachable
    /// edge moves the session ([`FrontDoor::move_session`]); a job that is
    /// a move is answered its `302` ([`FrontDoor::moved`]). Returns the
    /// answer and the snapshot its stream and edge positions belong to.
    async fn rewrite(&self, snap: Arc<Snapshot>, job: &RewriteJob) -> (Answer, Arc<Snapshot>) {
        if let Some(from) = &job.moving_from {
            let answer = match self.moved(&snap, job.stream, job.edge, job, from).await {
                Some(a) => a,
                None => edge_failed(&snap, job, 500, "not in its snapshot".into()),
            };
            return (answer, snap);
        }
        match self.fetch_and_rewrite(&snap, job).await {
            Ok(answer) => (answer, snap),
            Err(e) => match self.move_session(&snap, job).await {
                Some(moved) => moved,
                None => {
                    let answer = edge_failed(
                        &snap,
                        job,
                        502,
                        format!("fetching the playlist failed: {e}"),
                    );
                    (answer, snap)
                }
            },
        }
    }

    /// A steered session's multivariant playlist ([`hls::steered`]): one
    /// pathway per eligible edge, the session's first, each with a token
    /// for that edge and the same session id. When the session's edge
    /// cannot give its playlist, the entry's plain `302` to the session's
    /// playlist (the move happens there).
    async fn steer(&self, snap: &Snapshot, job: &RewriteJob) -> Answer {
        let (Some(conf), Some(edge)) = (
            snap.config.streams.get(job.stream),
            snap.config.edges.get(job.edge),
        ) else {
            return edge_failed(snap, job, 500, "not in its snapshot".into());
        };
        let plain = || {
            Answer::redirect(with_query(
                format!("/{}/s/{}{}", conf.name, job.token, conf.mount),
                job.query.as_deref(),
            ))
            .for_stream(job.stream, "m3u8", Some(job.edge))
        };
        let body = match self.fetch_playlist(edge, job).await {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(stream = %conf.name, edge = %edge.name, error = %e, "steered playlist not made: its edge's playlist could not be read");
                return plain();
            }
        };
        let others: Vec<&crate::config::Edge> = snap
            .backups(job.stream, job.edge, snap.edges.len())
            .iter()
            .filter_map(|c| snap.config.edges.get(c.edge))
            .collect();
        // Each other pathway's playlist now: edges that slice on their own
        // number their segments differently, and a player that changes
        // pathway lines segments up by number (hls.js does, without
        // EXT-X-PROGRAM-DATE-TIME). Each pathway's token renumbers its
        // edge's newest segment as the session edge's newest, and puts it
        // on a timeline of its own (Discontinuity Sequence Numbers offset
        // by its place), so a switch is a discontinuity the player aligns
        // by time. A pathway whose playlist cannot be read is left out.
        let theirs =
            futures::future::join_all(others.iter().map(|ec| self.fetch_playlist(ec, job))).await;
        let primary_end = hls::position(&body);
        let mut ends: Vec<(&crate::config::Edge, Option<hls::Position>)> =
            vec![(edge, primary_end)];
        for (ec, fetched) in others.into_iter().zip(theirs) {
            match fetched {
                Ok(their_body) => ends.push((ec, hls::position(&their_body))),
                Err(e) => {
                    tracing::info!(stream = %conf.name, edge = %ec.name, error = %e, "pathway left out of a steered playlist");
                }
            }
        }
        // Every pathway's newest segment gets the highest newest number
        // among them (numbers never go below an edge's own), the session
        // edge keeps its timeline, the n-th other is n timelines on. Only
        // for media playlists at the stream's path: a multivariant
        // playlist's variants are left as their edges number them.
        let target = primary_end.map(|p| hls::Position {
            last: ends
                .iter()
                .filter_map(|(_, end)| end.map(|e| e.last))
                .max()
                .unwrap_or(p.last),
            disc: p.disc,
        });
        let pathways_of: Vec<(&crate::config::Edge, Option<Timeline>)> = ends
            .into_iter()
            .enumerate()
            .map(|(place, (ec, end))| {
                let timeline = target
                    .zip(end)
                    .map(|(target, theirs)| hls::timeline_aligned(target, theirs, place as i64))
                    .filter(|t| *t != hls::UNCHANGED);
                (ec, timeline)
            })
            .collect();
        // Per pathway: its edge's config, its playlist URL, its prefix.
        let mut owned = Vec::with_capacity(pathways_of.len());
        for (ec, timeline) in pathways_of {
            let (token, _) =
                self.state
                    .sticky
                    .reissue_with(job.session, &ec.name, timeline, SystemTime::now());
            let Ok(url) = url::Url::parse(&format!(
                "{}{}",
                ec.public_url.as_str().trim_end_matches('/'),
                conf.mount
            )) else {
                continue;
            };
            owned.push((ec, url, format!("/{}/s/{token}", conf.name)));
        }
        let pathways: Vec<hls::Pathway<'_>> = owned
            .iter()
            .map(|(ec, url, prefix)| hls::Pathway {
                id: &ec.name,
                target: hls::Target {
                    playlist_url: url,
                    edge_base: &ec.public_url,
                    session_prefix: prefix,
                },
            })
            .collect();
        let server_uri = format!("/{}/s/{}{STEERING_MANIFEST}", conf.name, job.token);
        let text = hls::steered(&body, &conf.mount, conf.bitrate_bps, &pathways, &server_uri);
        let mut a = Answer::text(200, text);
        a.content_type = "application/vnd.apple.mpegurl";
        a.for_stream(job.stream, "m3u8", Some(job.edge))
    }

    /// The text of `job`'s playlist (`rest` and query) on `edge`.
    ///
    /// # Errors
    /// [`Fetch::Unreachable`] when the edge gave no answer (refused, reset,
    /// or not in time); [`Fetch::Failed`] with the status to answer
    /// and why for anything else.
    async fn fetch_playlist(
        &self,
        edge: &crate::config::Edge,
        job: &RewriteJob,
    ) -> Result<String, Fetch> {
        let fetch_url = with_query(
            format!("{}{}", edge.url.as_str().trim_end_matches('/'), job.rest),
            job.query.as_deref(),
        );
        let fail = |status: u16, why: String| Err(Fetch::Failed(status, why));
        let resp = match self.client.get(&fetch_url).send().await {
            Ok(r) => r,
            // Refused, timed out, or a kept-alive connection the edge's
            // death reset: any failure to get an answer.
            Err(e) if !e.is_builder() => return Err(Fetch::Unreachable(e)),
            Err(e) => return fail(502, format!("fetching the playlist failed: {e}")),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return fail(
                if status == 404 { 404 } else { 502 },
                format!("answered {status}"),
            );
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_PLAYLIST_BYTES as u64)
        {
            return fail(502, "playlist too large".into());
        }
        let body = match resp.bytes().await {
            Ok(b) if b.len() <= MAX_PLAYLIST_BYTES => b,
            Ok(_) => return fail(502, "playlist too large".into()),
            Err(e) => return fail(502, format!("reading the playlist failed: {e}")),
        };
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            return fail(502, "playlist is not UTF-8".into());
        };
        if !text.starts_with("#EXTM3U") {
            return fail(502, "not an HLS playlist".into());
        }
        Ok(text)
    }

    /// [`FrontDoor::rewrite`] on the job's own edge: the edge's playlist,
    /// renumbered by the session's timeline if it has one, with its URIs
    /// rewritten; where it ends is remembered for a later move. `Err` when
    /// the edge could not be reached (refused, or no answer in time).
    async fn fetch_and_rewrite(
        &self,
        snap: &Snapshot,
        job: &RewriteJob,
    ) -> Result<Answer, reqwest::Error> {
        let (Some(conf), Some(edge)) = (
            snap.config.streams.get(job.stream),
            snap.config.edges.get(job.edge),
        ) else {
            return Ok(edge_failed(snap, job, 500, "not in its snapshot".into()));
        };
        let fail = |status: u16, why: String| Ok(edge_failed(snap, job, status, why));
        let text = match self.fetch_playlist(edge, job).await {
            Ok(t) => t,
            // The edge died since the last poll: the caller moves the
            // session to another edge rather than fail the player.
            Err(Fetch::Unreachable(e)) => return Err(e),
            Err(Fetch::Failed(status, why)) => return fail(status, why),
        };
        let text = match job.timeline.and_then(|t| hls::renumber(&text, &t)) {
            Some(renumbered) => renumbered,
            None => text,
        };
        if let Some(end) = hls::position(&text) {
            self.state.answered.record(job.session, end);
        }
        let public = &edge.public_url;
        let Ok(playlist_url) = url::Url::parse(&format!(
            "{}{}",
            public.as_str().trim_end_matches('/'),
            job.rest
        )) else {
            return fail(502, "bad playlist URL".into());
        };
        let prefix = format!("/{}/s/{}", conf.name, job.token);
        let out = hls::rewrite(
            &text,
            &hls::Target {
                playlist_url: &playlist_url,
                edge_base: public,
                session_prefix: &prefix,
            },
        );
        let mut a = Answer::text(200, out);
        a.content_type = "application/vnd.apple.mpegurl";
        Ok(a.for_stream(job.stream, "m3u8", None).asked(job.edge))
    }
}

/// Why an edge's playlist could not be had.
#[derive(Debug, thiserror::Error)]
enum Fetch {
    /// Refused, reset, or no answer in time: the edge died since the last
    /// poll.
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// Anything else: the status castgate answers, and why.
    #[error("{1}")]
    Failed(u16, String),
}

/// The answer when `job`'s edge failed its playlist: `status`, with the
/// stream, the edge and `why`.
fn edge_failed(snap: &Snapshot, job: &RewriteJob, status: u16, why: String) -> Answer {
    let stream = snap.streams.get(job.stream).map_or("-", |s| &*s.name);
    let edge = snap.edges.get(job.edge).map_or("-", |e| &*e.name);
    Answer::text(status, format!("{status} {stream}: edge {edge}: {why}\n"))
        .for_stream(job.stream, "m3u8", None)
        .asked(job.edge)
}

/// Resumes one relayed stream on another edge when its edge fails
/// ([`relay::Resume`]): chosen from the current snapshot, the failed edge
/// and those that fail to answer avoided, tried until the deadline.
struct Resumer<'a> {
    door: &'a FrontDoor,
    ctx: &'a mut Ctx,
    method: &'static str,
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
    /// The stream's place among those carried from its edge.
    ticket: relay::Ticket,
}

/// Pause between two searches for an edge while none is eligible.
const RESUME_RETRY: Duration = Duration::from_millis(250);

#[async_trait]
impl relay::Resume for Resumer<'_> {
    async fn resume(
        &mut self,
        why: &(dyn std::error::Error + Send + Sync),
        deadline: tokio::time::Instant,
    ) -> Option<(relay::EdgeHead, relay::EdgeHalf)> {
        let Ctx { proxy, access, .. } = &mut *self.ctx;
        let carried = proxy.as_mut()?;
        let failed: Arc<str> = Arc::from(carried.edge_name());
        let stream: Arc<str> = Arc::from(carried.stream_name());
        let mut avoid = vec![failed.clone()];
        loop {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(stream = %stream, edge = %failed, error = %why, "relayed stream failed and no other edge took it over: ended");
                return None;
            }
            let Some(to) = self.door.move_carried(carried, access, &avoid, self.query) else {
                // None eligible now: the poller may bring one back.
                avoid.truncate(1);
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RESUME_RETRY))
                    .await;
                continue;
            };
            let target = carried
                .edge()
                .map(|e| relay::Target::new(e, &carried.job.path_and_query))?;
            let open = relay::open(&self.door.connector, &target, self.method, self.headers);
            match tokio::time::timeout_at(deadline, open).await {
                Ok(Ok((head, half))) if head.resumable() => {
                    self.door
                        .state
                        .metrics
                        .failovers
                        .with_label_values(&[&stream, &failed, &to])
                        .inc();
                    tracing::info!(stream = %stream, edge = %failed, to = %to, error = %why, "relayed stream resumed on another edge");
                    self.ticket = self.door.state.carrying.enter(&to);
                    return Some((head, half));
                }
                Ok(Ok((head, _))) => {
                    tracing::warn!(stream = %stream, edge = %to, status = head.status, "edge cannot take over a relayed stream");
                    avoid.push(to);
                }
                Ok(Err(e)) => {
                    tracing::warn!(stream = %stream, edge = %to, error = %e, "edge cannot take over a relayed stream");
                    avoid.push(to);
                }
                Err(_) => return None,
            }
        }
    }

    fn leave(&self) -> Arc<tokio::sync::Notify> {
        self.ticket.leave.clone()
    }

    fn resumed(&mut self, gap: Duration) {
        let (n, total) = self.ctx.resumes.unwrap_or_default();
        self.ctx.resumes = Some((n + 1, total + gap));
        let stream = self.ctx.proxy.as_ref().map_or("-", |c| c.stream_name());
        self.door
            .state
            .metrics
            .failover_gap
            .with_label_values(&[stream])
            .observe(gap.as_secs_f64());
    }
}

fn header(a: &Answer, cors: &CorsHeaders) -> Result<ResponseHeader> {
    use http::HeaderValue;
    let mut h = ResponseHeader::build(a.status, Some(8))?;
    h.insert_header(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    )?;
    h.insert_header(http::header::CONTENT_LENGTH, a.body.len())?;
    h.insert_header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )?;
    if let Some(l) = &a.location {
        h.insert_header(http::header::LOCATION, l.as_str())?;
    }
    if let Some(r) = a.retry_after {
        h.insert_header(http::header::RETRY_AFTER, r)?;
    }
    if let Some(allow) = a.allow {
        h.insert_header(http::header::ALLOW, allow)?;
    }
    if let Some(c) = &a.set_cookie {
        h.append_header(http::header::SET_COOKIE, c.as_str())?;
    }
    for (k, v) in cors.pairs() {
        h.append_header(k, v)?;
    }
    Ok(h)
}

async fn write(session: &mut Session, a: &Answer, cors: &CorsHeaders, is_head: bool) -> Result<()> {
    session
        .write_response_header(Box::new(header(a, cors)?), is_head)
        .await?;
    if !is_head {
        session
            .write_response_body(Some(a.body.clone()), true)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl ProxyHttp for FrontDoor {
    type CTX = Ctx;

    /// No downstream modules: pingora's default adds a (disabled) response
    /// compression module whose per-request context costs an allocation
    /// and a filter pass on every answer; castgate's answers are tiny and
    /// its proxied streams are already compressed audio and video.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        Ctx {
            started: Some(Instant::now()),
            ..Ctx::default()
        }
    }

    /// Answers from [`FrontDoor::answer`]; should that panic (a bug), the
    /// client gets a 500 and the connection closes, the panic is logged
    /// and counted, and the process keeps serving everyone else.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        use futures::FutureExt;
        let answered = std::panic::AssertUnwindSafe(self.answer(session, ctx))
            .catch_unwind()
            .await;
        match answered {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                tracing::error!(
                    path = %session.req_header().uri.path(),
                    panic = %what,
                    "a request handler panicked: answered 500"
                );
                ctx.proxy = None;
                let snap = self.state.snapshot.load();
                self.count(&snap, None, "-", 500, None);
                if session.response_written().is_none() {
                    session.set_keepalive(None);
                    let a = Answer::text(500, "500 internal error\n".into());
                    write(session, &a, &CorsHeaders::default(), false).await?;
                }
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(job) = &ctx.proxy else {
            return Error::e_explain(ErrorType::InternalError, "no edge chosen for this request");
        };
        let Some(edge) = job.edge() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "the chosen edge is not in its snapshot",
            );
        };
        let target = relay::Target::new(edge, &job.job.path_and_query);
        let mut peer = HttpPeer::new(target.addr.as_str(), target.tls, target.host);
        peer.options.connection_timeout = Some(relay::EDGE_CONNECT_TIMEOUT);
        Ok(Box::new(peer))
    }

    /// The chosen edge refused the connection (it died since the last
    /// poll): try another eligible edge (see [`FrontDoor::retry_elsewhere`]).
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.retry_elsewhere(session, ctx, e)
    }

    /// The edge failed after the connection was made. Before any of its
    /// answer reached the listener (an edge killed while it was being
    /// asked), the request is retried on another eligible edge; after
    /// that, the stream ends where the edge stopped.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("edge {peer}"));
        let nothing_sent = session.response_written().is_none()
            && session.req_header().method.is_idempotent()
            && e.esource() == &pingora::ErrorSource::Upstream;
        if nothing_sent {
            self.retry_elsewhere(session, ctx, e)
        } else {
            e.set_retry(false);
            e
        }
    }
    /// A listener hanging up on a proxied stream is how listening ends,
    /// not an error worth a log line (the access log records the end).
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, error: &Error) -> bool {
        ctx.proxy.is_some()
            && error.esource() == &pingora::ErrorSource::Downstream
            && error.etype() == &ErrorType::ConnectionClosed
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(job) = &ctx.proxy else {
            return Ok(());
        };
        let Some(edge) = job.edge() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "the chosen edge is not in its snapshot",
            );
        };
        let target = relay::Target::new(edge, &job.job.path_and_query);
        let uri: http::Uri = target
            .path
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "edge path", e))?;
        upstream.set_uri(uri);
        upstream.insert_header(http::header::HOST, target.host_header)?;
        // castgate's session cookie is ours, not the edge's.
        upstream.remove_header(&http::header::COOKIE);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(carried) = &ctx.proxy {
            if let Some(c) = &carried.job.set_cookie {
                resp.append_header(http::header::SET_COOKIE, c.as_str())?;
            }
        }
        for (k, v) in ctx.cors.pairs() {
            resp.insert_header(k, v)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map_or(502, |r| r.status.as_u16());
        if let Some(carried) = &ctx.proxy {
            // The assignment was counted when the request was decided; the
            // request is counted in the snapshot that carried it last.
            self.count(
                &carried.snap,
                Some(carried.job.stream),
                carried.job.format,
                status,
                None,
            );
        }
        if self.state.snapshot.load().config.access_log {
            let (stream, format, edge) = ctx.access.clone().unwrap_or((None, "-", None));
            let micros = ctx.started.map_or(0, |t| t.elapsed().as_micros() as u64);
            let client = session.client_addr();
            let req = session.req_header();
            crate::logs::access(&crate::logs::AccessLine {
                client: client.map(|a| a as &dyn std::fmt::Display),
                method: req.method.as_str(),
                path: req.uri.path(),
                stream: stream.as_deref().unwrap_or("-"),
                format,
                edge: edge.as_deref().unwrap_or("-"),
                code: status,
                micros,
                resumes: ctx.resumes,
            });
        }
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
        assert_eq!(route("/apple"), Route::Stream("apple"));
        assert_eq!(route("/live.m3u8"), Route::HlsEntry("live"));
        assert_eq!(
            route("/live/s/a.1.00ff.x_y-z/hls/stream.m3u8"),
            Route::Session {
                stream: "live",
                token: "a.1.00ff.x_y-z",
                rest: "/hls/stream.m3u8"
            }
        );
        assert_eq!(
            route("/live/hls/stream-3.ts"),
            Route::Sub {
                stream: "live",
                rest: "/hls/stream-3.ts"
            }
        );
        for p in [
            "/",
            "",
            "/apple.mp3",
            "/Apple.m3u",
            "/../x",
            "/apple.m3u.m3u",
            "/%61pple",
            "/live/s/tok/../etc/passwd",
            "/live/s/tok",
            "/live/s//hls/x.ts",
            "/live/hls//x.ts",
            "/live/hls/%2e%2e/x",
            "/live/./x",
            "/Live/x",
        ] {
            assert_eq!(route(p), Route::NotFound, "{p}");
        }
    }

    #[test]
    fn queries_cannot_leave_the_url() {
        let q = |s: &str| with_query("http://e:8000/air".into(), Some(s));
        assert_eq!(q("a=1&b=%20x"), "http://e:8000/air?a=1&b=%20x");
        assert_eq!(
            q("x=\"><script>\r\nSet-Cookie: a=b\n#EXTINF"),
            "http://e:8000/air?x=%22%3E%3Cscript%3E%0D%0ASet-Cookie:%20a=b%0A%23EXTINF"
        );
        assert_eq!(
            q("{|}\\^`[]é"),
            "http://e:8000/air?%7B%7C%7D%5C%5E%60%5B%5D%C3%A9"
        );
        assert_eq!(with_query("b".into(), Some("")), "b");
        assert_eq!(with_query("b".into(), None), "b");
    }

    #[test]
    fn stream_dir_and_cookies() {
        assert!(under_stream_dir("/hls/stream.m3u8", "/hls/stream-1.ts"));
        assert!(!under_stream_dir("/hls/stream.m3u8", "/other/x.ts"));
        assert!(under_stream_dir("/stream.m3u8", "/anything.ts"));
        assert_eq!(
            cookie_value(Some("a=1; castgate_live=tok; b=2"), "castgate_live"),
            Some("tok")
        );
        assert_eq!(
            cookie_value(Some("castgate_livex=tok"), "castgate_live"),
            None
        );
        assert!(valid_host("radio.example:8080"));
        assert!(!valid_host("evil\r\nx"));
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "localhost:80",
        ] {
            assert!(playlist_host(ok, &[]), "{ok}");
        }
        for refused in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
            assert!(!playlist_host(refused, &[]), "{refused}");
        }
        let hosts = [
            "radio.example".to_string(),
            "radio.example:8080".to_string(),
        ];
        assert!(playlist_host("Radio.Example:8080", &hosts));
        assert!(!playlist_host("127.0.0.1:8080", &hosts));
        assert!(!playlist_host("evil.example", &hosts));
    }
}
