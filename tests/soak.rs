//! Soak: steady traffic on every endpoint, for a bounded time, while edges
//! are killed and restarted and the config is reloaded.
//!
//! The farm: three Icecast edges (`ice0`..`ice2`), each fed by its own
//! ffmpeg on `/air`, and two nginx-rtmp edges (`rtmp0`, `rtmp1`), each
//! cutting HLS from its own ffmpeg publisher. castgate serves `apple`
//! (redirect mode: `.m3u`, `.pls`, `.xspf` and the 302), `applep` (proxy
//! mode: its playlist and the stream itself) and `live` (HLS, rewrite mode).
//!
//! For the whole run, client threads ask for every front-door endpoint and
//! for `/status.json`, `/metrics` and `/api/config`, about 20 requests a
//! second in all, loopback only. A chaos thread kills one edge (SIGKILL,
//! with its source) every [`KILL_EVERY`], Icecast and nginx-rtmp in turn,
//! and restarts it [`DOWN_FOR`] later; never two at once, so every stream
//! always has a live edge. Each victim is made the preferred edge
//! beforehand by a reload giving it weight [`HEAVY`], so that until
//! castgate notices the death nearly every answer names it: a castgate
//! that kept a dead edge in rotation could not hide behind the other
//! edges. Every other outage gets one more reload (the stream's title)
//! while the edge is down. Reloads go by SIGHUP and `POST /api/reload` in
//! turn. At the end the test asserts:
//!
//! 1. no 5xx answer and no failed exchange on any endpoint, and every
//!    answer well-formed (playlists and redirects name exactly one edge of
//!    their stream, an HLS session keeps its edge until it is moved);
//! 2. no playlist, redirect, HLS session URL or HLS playlist asked for
//!    later than `interval × fall + timeout` + [`MARGIN`] after an edge's
//!    kill names that edge (until its restart begins);
//! 3. castgate's RSS at the end is within 10% of its RSS at minute one (at
//!    half the run for runs shorter than two minutes);
//! 4. every reload was applied, and castgate still runs.
//!
//! Duration: `CASTGATE_SOAK_SECS` seconds (default 120, at least 30), e.g.
//! `CASTGATE_SOAK_SECS=1800 cargo test --test soak -- --nocapture`. The
//! farm's start-up (about 5 s) comes on top. A summary line (requests per
//! endpoint, the worst dead-edge lag, RSS) is printed at the end.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::nginx::{RtmpEdge, RtmpOpts, RtmpSource};
use support::{
    down_bound, free_port, header, http_get, poll_until, try_http_request,
    try_http_request_with_body, wait_until, Castgate, Icecast, IcecastOpts, Listener, Source,
};

/// Poll settings of the soak farm.
const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(400);
const FALL: u32 = 2;
/// Slack for scheduling on a shared 2-core machine busy with five servers,
/// five encoders and the clients.
const MARGIN: Duration = Duration::from_millis(500);
/// A killed edge is in no answer asked for this long after the kill:
/// `fall` failed polls, the last one taking up to `timeout`.
const DEAD_BOUND: Duration = down_bound(INTERVAL, TIMEOUT, FALL, MARGIN);

/// Default run length, seconds (`CASTGATE_SOAK_SECS`).
const DEFAULT_SECS: u64 = 120;
/// Shortest run accepted: room for a few kills, restarts and reloads.
const MIN_SECS: u64 = 30;
/// When RSS is compared with the end: minute one (or half a shorter run).
const RSS_MARK: Duration = Duration::from_secs(60);
/// Largest RSS growth from the mark to the end.
const RSS_GROWTH: f64 = 0.10;
const RSS_EVERY: Duration = Duration::from_secs(2);

/// First kill, after the clients have warmed up.
const FIRST_KILL: Duration = Duration::from_secs(6);
const KILL_EVERY: Duration = Duration::from_secs(10);
const DOWN_FOR: Duration = Duration::from_secs(5);
/// Weight of the next victim of each kind (the others have 1).
const HEAVY: u32 = 50;
/// The reload during an outage comes this long after the kill.
const RELOAD_AFTER_KILL: Duration = Duration::from_secs(2);
/// Bound on an edge coming back (icecast or nginx ready, source live), on
/// castgate seeing every edge live again, and on a reload being applied.
const BACK_WITHIN: Duration = Duration::from_secs(20);

/// Time between two requests of each client thread.
const PLAYLIST_EVERY: Duration = Duration::from_millis(100);
const PROXY_EVERY: Duration = Duration::from_millis(500);
const HLS_EVERY: Duration = Duration::from_millis(400);
const ADMIN_EVERY: Duration = Duration::from_millis(250);
/// A proxied listener reads this much, then hangs up.
const PROXY_READ: u64 = 16 * 1024;
/// The HLS client starts a new session every this many requests (so that
/// its session soon lands on the preferred edge).
const HLS_NEW_SESSION_EVERY: usize = 10;

const TOKEN: &str = "soak-token-0123456789abcdef";
const RTMP_STREAM: &str = "stream";
const HLS_PATH: &str = "/hls/stream.m3u8";
const TITLES: [&str; 2] = ["Apple Radio", "Apple Radio (soak)"];
/// Live edges of each stream when the whole farm is up.
const FULL_FARM: [(&str, usize); 3] = [("apple", 3), ("applep", 3), ("live", 2)];
const ICE_EDGES: usize = 3;
const RTMP_EDGES: usize = 2;

// ---------------------------------------------------------------------------
// What the run records, and the checks on it (pure, unit-tested below)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Icecast,
    Rtmp,
}

/// One edge as the clients see it.
#[derive(Clone, Debug)]
struct EdgeInfo {
    name: &'static str,
    /// `http://127.0.0.1:PORT`: castgate's `url` and `public_url`.
    url: String,
    group: Group,
}

/// One exchange with castgate.
#[derive(Clone, Debug)]
struct Reply {
    endpoint: &'static str,
    /// When the request was sent, from the start of the run. Whatever
    /// castgate decided, it decided after this.
    at: Duration,
    /// When the exchange was over (for a stream: the head and what was
    /// read of the body).
    answered: Duration,
    /// None: the exchange failed (refused, reset, timed out).
    status: Option<u16>,
    /// Edges (indices into the farm's edges) the answer names.
    names: Vec<usize>,
    /// What was wrong with it other than a 5xx, if anything.
    problem: Option<String>,
    /// A proxied stream that ended before [`PROXY_READ`] bytes.
    cut: bool,
}

impl Reply {
    fn new(endpoint: &'static str, at: Duration, status: u16) -> Reply {
        Reply {
            endpoint,
            at,
            answered: at,
            status: Some(status),
            names: Vec::new(),
            problem: None,
            cut: false,
        }
    }

    fn failed(endpoint: &'static str, at: Duration, error: impl std::fmt::Display) -> Reply {
        Reply {
            endpoint,
            at,
            answered: at,
            status: None,
            names: Vec::new(),
            problem: Some(format!("exchange failed: {error}")),
            cut: false,
        }
    }

    fn is_5xx(&self) -> bool {
        self.status.is_some_and(|s| s >= 500)
    }
}

/// An edge's time down: from the start of its kill until its restart
/// began.
#[derive(Clone, Copy, Debug)]
struct Outage {
    edge: usize,
    killed: Duration,
    back: Duration,
    /// How long after its restart returned castgate had it live again.
    rejoined: Option<Duration>,
}

/// Every answer asked for while an edge it names was down: (reply, edge,
/// how long after the kill it was asked for).
fn dead_edge_answers<'a>(
    replies: &'a [Reply],
    outages: &[Outage],
) -> Vec<(&'a Reply, usize, Duration)> {
    let mut found = Vec::new();
    for r in replies {
        for &edge in &r.names {
            for o in outages.iter().filter(|o| o.edge == edge) {
                if r.at >= o.killed && r.at < o.back {
                    found.push((r, edge, r.at - o.killed));
                }
            }
        }
    }
    found
}

/// Whether `r`'s exchange was under way when an edge of `group` was
/// killed.
fn under_way_at_a_kill(r: &Reply, outages: &[Outage], edges: &[EdgeInfo], group: Group) -> bool {
    outages
        .iter()
        .any(|o| edges[o.edge].group == group && r.at <= o.killed && r.answered >= o.killed)
}

/// Whether `r` is a proxied stream cut short because its edge was killed
/// while it was being read: what a listener of a crashed edge gets, with or
/// without castgate.
fn cut_by_a_kill(r: &Reply, outages: &[Outage], edges: &[EdgeInfo]) -> bool {
    r.cut && under_way_at_a_kill(r, outages, edges, Group::Icecast)
}

/// RSS (KiB) at the start, at `mark` and at the end of `samples`
/// ((time, KiB), in time order), each the median of the three samples
/// around that point, so one sample taken during a burst of requests does
/// not decide.
fn rss_points(samples: &[(Duration, u64)], mark: Duration) -> (u64, u64, u64) {
    assert!(samples.len() >= 3, "too few RSS samples: {samples:?}");
    let median_at = |i: usize| {
        let i = i.clamp(1, samples.len() - 2);
        let mut three = [samples[i - 1].1, samples[i].1, samples[i + 1].1];
        three.sort_unstable();
        three[1]
    };
    let mark_i = samples
        .iter()
        .position(|(t, _)| *t >= mark)
        .unwrap_or(samples.len() - 1);
    (
        median_at(0),
        median_at(mark_i),
        median_at(samples.len() - 1),
    )
}

/// Whether RSS grew by more than [`RSS_GROWTH`] from `mark` to `end`.
fn rss_grew(mark: u64, end: u64) -> bool {
    end as f64 > mark as f64 * (1.0 + RSS_GROWTH)
}

// ---------------------------------------------------------------------------
// The farm and castgate's config
// ---------------------------------------------------------------------------

struct Farm {
    ice: Vec<(Icecast, Source)>,
    rtmp: Vec<(RtmpEdge, RtmpSource)>,
    token: tempfile::NamedTempFile,
}

impl Farm {
    fn start() -> Farm {
        let ice: Vec<(Icecast, Source)> = (0..ICE_EDGES)
            .map(|_| {
                let ice = Icecast::origin(IcecastOpts::default());
                let src = Source::start(&ice, "/air");
                (ice, src)
            })
            .collect();
        let rtmp: Vec<(RtmpEdge, RtmpSource)> = (0..RTMP_EDGES)
            .map(|_| {
                let edge = RtmpEdge::start(RtmpOpts::default());
                let src = RtmpSource::start(&edge, RTMP_STREAM);
                (edge, src)
            })
            .collect();
        for (edge, _) in &rtmp {
            edge.wait_playlist(RTMP_STREAM, Duration::from_secs(30));
        }
        let token = tempfile::NamedTempFile::new().expect("token file");
        std::fs::write(token.path(), format!("{TOKEN}\n")).expect("write token");
        Farm { ice, rtmp, token }
    }

    /// ice0..ice2, then rtmp0, rtmp1: the indices every record uses.
    fn edges(&self) -> Vec<EdgeInfo> {
        const ICE: [&str; ICE_EDGES] = ["ice0", "ice1", "ice2"];
        const RTMP: [&str; RTMP_EDGES] = ["rtmp0", "rtmp1"];
        let ice = self.ice.iter().zip(ICE).map(|((i, _), name)| EdgeInfo {
            name,
            url: i.url(),
            group: Group::Icecast,
        });
        let rtmp = self.rtmp.iter().zip(RTMP).map(|((e, _), name)| EdgeInfo {
            name,
            url: e.http_url(),
            group: Group::Rtmp,
        });
        ice.chain(rtmp).collect()
    }

    /// Kills edge `i` and its source, as a crashed box dies.
    fn kill(&mut self, i: usize) {
        if let Some((ice, src)) = self.ice.get_mut(i) {
            ice.kill();
            src.kill();
        } else {
            let (edge, src) = &mut self.rtmp[i - ICE_EDGES];
            edge.kill();
            src.kill();
        }
    }

    /// Starts edge `i` and its source again; returns once the stream is
    /// live on it (panics after [`BACK_WITHIN`]).
    fn restart(&mut self, i: usize) {
        if let Some((ice, src)) = self.ice.get_mut(i) {
            ice.restart();
            src.restart();
            ice.wait_mount_live("/air", BACK_WITHIN);
        } else {
            let (edge, src) = &mut self.rtmp[i - ICE_EDGES];
            edge.restart();
            src.restart();
            edge.wait_publishing(RTMP_STREAM, BACK_WITHIN);
        }
    }
}

/// What the reloads change: the preferred edge of each kind and the title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Knobs {
    heavy_ice: usize,
    heavy_rtmp: usize,
    title: usize,
}

impl Knobs {
    fn weight(&self, edge: usize) -> u32 {
        if edge == self.heavy_ice || edge == self.heavy_rtmp {
            HEAVY
        } else {
            1
        }
    }
}

/// castgate's config for the farm.
fn config(edges: &[EdgeInfo], token: &std::path::Path, ports: (u16, u16), knobs: Knobs) -> String {
    let (front, admin) = ports;
    let mut y = format!(
        r#"listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}", token_file: "{}" }}
poll: {{ interval: {}ms, timeout: {}ms, rise: 1, fall: {FALL} }}
reload: {{ watch: false }}
edges:
"#,
        token.display(),
        INTERVAL.as_millis(),
        TIMEOUT.as_millis(),
    );
    for (i, e) in edges.iter().enumerate() {
        let kind = match e.group {
            Group::Icecast => "icecast",
            Group::Rtmp => "nginx_rtmp",
        };
        y.push_str(&format!(
            "  - {{ name: {}, kind: {kind}, url: \"{}\", weight: {} }}\n",
            e.name,
            e.url,
            knobs.weight(i)
        ));
    }
    y.push_str(&format!(
        "streams:
  - {{ name: apple, mount: /air, title: \"{}\", edges: [ice0, ice1, ice2] }}
  - {{ name: applep, mount: /air, mode: proxy, edges: [ice0, ice1, ice2] }}
  - {{ name: live, kind: hls, path: {HLS_PATH}, mode: rewrite, edges: [rtmp0, rtmp1] }}
",
        TITLES[knobs.title]
    ));
    y
}

fn admin_json(cg: &Castgate, path: &str) -> Option<serde_json::Value> {
    let url = format!("{}{path}", cg.admin_url());
    let (code, _, body) = try_http_request("GET", &url, &[]).ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// Live edges per stream in a `/status.json` body.
fn live_edges(status: &serde_json::Value) -> BTreeMap<String, usize> {
    status["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .map(|s| {
                    let live = s["live_edges"].as_array().map_or(0, Vec::len);
                    (s["name"].as_str().unwrap_or("?").to_string(), live)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn whole_farm_live(cg: &Castgate) -> bool {
    admin_json(cg, "/status.json").is_some_and(|s| {
        let live = live_edges(&s);
        FULL_FARM.iter().all(|(name, n)| live.get(*name) == Some(n))
    })
}

fn applied_reloads(cg: &Castgate) -> Option<u64> {
    let url = format!("{}/metrics", cg.admin_url());
    let (_, _, body) = try_http_request("GET", &url, &[]).ok()?;
    let applied = String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("castgate_config_reloads_total{outcome=\"applied\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64);
    Some(applied)
}

/// Whether `/api/config` shows `knobs` in force.
fn knobs_in_force(cg: &Castgate, edges: &[EdgeInfo], knobs: Knobs) -> bool {
    admin_json(cg, "/api/config").is_some_and(|c| {
        let config = &c["config"];
        config["streams"][0]["title"] == TITLES[knobs.title]
            && (0..edges.len())
                .all(|i| config["edges"][i]["weight"].as_f64() == Some(f64::from(knobs.weight(i))))
    })
}

// ---------------------------------------------------------------------------
// The threads
// ---------------------------------------------------------------------------

/// What every thread of the run shares.
struct Run<'a> {
    cg: &'a Castgate,
    edges: &'a [EdgeInfo],
    start: Instant,
    deadline: Instant,
    /// Set when a thread panics, so the others stop early.
    stop: AtomicBool,
}

impl Run<'_> {
    fn going(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Edges whose URL, followed by a path, appears in `text`.
    fn urls_in(&self, text: &str) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|&i| text.contains(&format!("{}/", self.edges[i].url)))
            .collect()
    }

    /// The edge an HLS session URL (`/live/s/{edge}.{expiry}...`) is on.
    fn token_edge(&self, location: &str) -> Vec<usize> {
        let edge = location
            .strip_prefix("/live/s/")
            .and_then(|rest| rest.split('.').next());
        (0..self.edges.len())
            .filter(|&i| Some(self.edges[i].name) == edge)
            .collect()
    }
}

/// Stops the run when the thread holding it panics.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Sleeps until the next tick of a `period` clock (no catching up).
fn pace(next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next > now {
        thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

/// `apple` in every format, its 302, and `applep`'s playlist.
fn playlist_client(run: &Run) -> Vec<Reply> {
    let _guard = StopOnPanic(&run.stop);
    const ENDPOINTS: [(&str, &str); 5] = [
        ("apple.m3u", "/apple.m3u"),
        ("apple.pls", "/apple.pls"),
        ("apple.xspf", "/apple.xspf"),
        ("apple 302", "/apple"),
        ("applep.m3u", "/applep.m3u"),
    ];
    let front = run.cg.front_url();
    let mut replies = Vec::new();
    let mut next = Instant::now();
    for (endpoint, path) in ENDPOINTS.iter().cycle() {
        if !run.going() {
            break;
        }
        let at = run.now();
        let mut reply = match try_http_request("GET", &format!("{front}{path}"), &[]) {
            Err(e) => Reply::failed(endpoint, at, e),
            Ok((code, headers, body)) => {
                let mut r = Reply::new(endpoint, at, code);
                let redirect = *path == "/apple";
                let text = if redirect {
                    header(&headers, "location").unwrap_or_default().to_string()
                } else {
                    String::from_utf8_lossy(&body).into_owned()
                };
                r.names = run.urls_in(&text);
                let expected = if redirect { 302 } else { 200 };
                r.problem = if code >= 500 {
                    None
                } else if code != expected {
                    Some(format!("status {code}, expected {expected}: {text:?}"))
                } else if *path == "/applep.m3u" {
                    (!r.names.is_empty() || !text.contains(&format!("{front}/applep")))
                        .then(|| format!("proxy-mode playlist does not name castgate: {text:?}"))
                } else {
                    let icecast = r
                        .names
                        .iter()
                        .all(|&i| run.edges[i].group == Group::Icecast);
                    // A 302 names one edge; a playlist the chosen edge and
                    // up to `playlist.backups` (2) others, each once.
                    let most = if redirect { 1 } else { 3 };
                    let entries: usize = r
                        .names
                        .iter()
                        .map(|&i| text.matches(&format!("{}/", run.edges[i].url)).count())
                        .sum();
                    let ok =
                        (1..=most).contains(&r.names.len()) && entries == r.names.len() && icecast;
                    (!ok).then(|| {
                        format!(
                            "names {} edges, not 1 to {most} distinct Icecast edges: {text:?}",
                            r.names.len()
                        )
                    })
                };
                r
            }
        };
        reply.answered = run.now();
        replies.push(reply);
        pace(&mut next, PLAYLIST_EVERY);
    }
    replies
}

/// `applep` itself: a listener through castgate reads [`PROXY_READ`]
/// bytes and hangs up.
fn proxy_client(run: &Run) -> Vec<Reply> {
    let _guard = StopOnPanic(&run.stop);
    let url = format!("{}/applep", run.cg.front_url());
    let mut replies = Vec::new();
    let mut next = Instant::now();
    while run.going() {
        let at = run.now();
        let mut reply = match Listener::connect(&url) {
            Err(e) => Reply::failed("applep stream", at, e),
            Ok(l) => {
                let mut r = Reply::new("applep stream", at, l.status());
                if l.status() == 200 {
                    poll_until(Duration::from_secs(5), || {
                        l.bytes_received() >= PROXY_READ || !l.is_open()
                    });
                    if l.bytes_received() < PROXY_READ {
                        r.cut = !l.is_open();
                        r.problem = Some(format!(
                            "stream {} after {} bytes",
                            if l.is_open() { "stalled" } else { "ended" },
                            l.bytes_received()
                        ));
                    }
                } else if l.status() < 500 {
                    r.problem = Some(format!("status {}", l.status()));
                }
                r
            }
        };
        reply.answered = run.now();
        replies.push(reply);
        pace(&mut next, PROXY_EVERY);
    }
    replies
}

/// A player of `live`: enters, then asks for its session's playlist again
/// and again, following moves; a new session now and then.
fn hls_client(run: &Run) -> Vec<Reply> {
    let _guard = StopOnPanic(&run.stop);
    let front = run.cg.front_url();
    let session_url = |loc: &str| loc.starts_with("/live/s/") && loc.ends_with(HLS_PATH);
    let mut replies = Vec::new();
    let mut next = Instant::now();
    let mut session: Option<String> = None;
    // The edge the current session URL was answered from.
    let mut session_edge: Option<usize> = None;
    let mut asked = 0usize;
    while run.going() {
        let at = run.now();
        let mut reply = match session.clone() {
            Some(loc) if asked % HLS_NEW_SESSION_EVERY != 0 => {
                match try_http_request("GET", &format!("{front}{loc}"), &[]) {
                    Err(e) => Reply::failed("live session", at, e),
                    Ok((code, headers, body)) => {
                        let mut r = Reply::new("live session", at, code);
                        let location = header(&headers, "location").unwrap_or_default();
                        let text = String::from_utf8_lossy(&body);
                        match code {
                            302 if session_url(location) => {
                                r.names = run.token_edge(location);
                                session = Some(location.to_string());
                                session_edge = None;
                            }
                            200 => {
                                r.names = run.urls_in(&text);
                                let rtmp =
                                    r.names.iter().all(|&i| run.edges[i].group == Group::Rtmp);
                                if r.names.len() != 1 || !rtmp {
                                    r.problem = Some(format!(
                                        "names {} edges, not one nginx-rtmp edge: {text:?}",
                                        r.names.len()
                                    ));
                                } else if let Some(e) = session_edge.filter(|e| *e != r.names[0]) {
                                    r.problem = Some(format!(
                                        "session {loc} went from {} to {} without a new token",
                                        run.edges[e].name, run.edges[r.names[0]].name
                                    ));
                                }
                                session_edge = r.names.first().copied();
                            }
                            c if c >= 500 => {}
                            c => {
                                r.problem = Some(format!("status {c} (Location {location:?})"));
                            }
                        }
                        r
                    }
                }
            }
            _ => match try_http_request("GET", &format!("{front}/live.m3u8"), &[]) {
                Err(e) => Reply::failed("live.m3u8", at, e),
                Ok((code, headers, _)) => {
                    let mut r = Reply::new("live.m3u8", at, code);
                    let location = header(&headers, "location").unwrap_or_default();
                    if code == 302 && session_url(location) {
                        r.names = run.token_edge(location);
                        if r.names.len() != 1 {
                            r.problem = Some(format!("session URL names no edge: {location}"));
                        }
                        session = Some(location.to_string());
                        session_edge = None;
                    } else if code < 500 {
                        r.problem = Some(format!("status {code}, Location {location:?}"));
                    }
                    r
                }
            },
        };
        asked += 1;
        reply.answered = run.now();
        replies.push(reply);
        pace(&mut next, HLS_EVERY);
    }
    replies
}

/// `/status.json`, `/metrics`, `/api/config` in turn; also the fewest
/// live edges each stream had in `/status.json`.
fn admin_client(run: &Run) -> (Vec<Reply>, BTreeMap<String, usize>) {
    let _guard = StopOnPanic(&run.stop);
    let admin = run.cg.admin_url();
    let mut fewest_live: BTreeMap<String, usize> = BTreeMap::new();
    let mut replies = Vec::new();
    let mut next = Instant::now();
    for (endpoint, path) in [
        ("/status.json", "/status.json"),
        ("/metrics", "/metrics"),
        ("/api/config", "/api/config"),
    ]
    .iter()
    .cycle()
    {
        if !run.going() {
            break;
        }
        let at = run.now();
        let mut reply = match try_http_request("GET", &format!("{admin}{path}"), &[]) {
            Err(e) => Reply::failed(endpoint, at, e),
            Ok((code, _, body)) => {
                let mut r = Reply::new(endpoint, at, code);
                if code != 200 {
                    if code < 500 {
                        r.problem = Some(format!("status {code}"));
                    }
                } else if *path == "/metrics" {
                    if !String::from_utf8_lossy(&body).contains("castgate_requests_total") {
                        r.problem = Some("no castgate_requests_total in /metrics".into());
                    }
                } else {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Err(e) => r.problem = Some(format!("not JSON: {e}")),
                        Ok(v) if *path == "/status.json" => {
                            for (stream, live) in live_edges(&v) {
                                let fewest = fewest_live.entry(stream).or_insert(live);
                                *fewest = (*fewest).min(live);
                            }
                        }
                        Ok(v) => {
                            let edges = v["config"]["edges"].as_array().map(Vec::len);
                            if edges != Some(run.edges.len()) {
                                r.problem = Some(format!("/api/config without the edges: {v}"));
                            }
                        }
                    }
                }
                r
            }
        };
        reply.answered = run.now();
        replies.push(reply);
        pace(&mut next, ADMIN_EVERY);
    }
    (replies, fewest_live)
}

/// castgate's VmRSS (KiB) every [`RSS_EVERY`].
fn rss_sampler(run: &Run) -> Vec<(Duration, u64)> {
    let _guard = StopOnPanic(&run.stop);
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while run.going() {
        if let Some(kib) = run.cg.proc_status_kib("VmRSS") {
            samples.push((run.now(), kib));
        }
        pace(&mut next, RSS_EVERY);
    }
    if let Some(kib) = run.cg.proc_status_kib("VmRSS") {
        samples.push((run.now(), kib));
    }
    samples
}

/// What the chaos thread did.
#[derive(Default)]
struct Chaos {
    outages: Vec<Outage>,
    /// (when, how, what changed) of each reload.
    reloads: Vec<(Duration, &'static str, String)>,
    /// Reloads that were not applied, and why.
    reload_problems: Vec<String>,
}

/// The edge the `k`th kill takes down: Icecast and nginx-rtmp in turn,
/// each kind round-robin.
fn victim(k: usize) -> usize {
    if k % 2 == 0 {
        (k / 2) % ICE_EDGES
    } else {
        ICE_EDGES + (k / 2) % RTMP_EDGES
    }
}

/// The edge down now: (index, when the kill began, reload due).
struct Down {
    edge: usize,
    killed: Instant,
    reload_at: Option<Instant>,
}

/// Kills an edge every [`KILL_EVERY`] and restarts it after
/// [`DOWN_FOR`]; after each restart, a reload makes the next victim of
/// that kind the preferred edge; every other outage, a reload changes the
/// title while the edge is down.
fn chaos(run: &Run, farm: &mut Farm, ports: (u16, u16), mut knobs: Knobs) -> Chaos {
    let _guard = StopOnPanic(&run.stop);
    let mut log = Chaos::default();
    let mut kills = 0usize;
    let mut next_kill = run.start + FIRST_KILL;
    let mut down: Option<Down> = None;
    while run.going() {
        let now = Instant::now();
        if let Some(d) = &mut down {
            if d.reload_at.is_some_and(|t| now >= t) {
                d.reload_at = None;
                knobs.title = 1 - knobs.title;
                reload(run, farm, ports, knobs, "title", &mut log);
            } else if now >= d.killed + DOWN_FOR {
                let edge = d.edge;
                down = None;
                let back = run.now();
                farm.restart(edge);
                let restarted = Instant::now();
                let live = poll_until(BACK_WITHIN, || whole_farm_live(run.cg));
                let outage = log.outages.last_mut().expect("the outage being ended");
                outage.back = back;
                outage.rejoined = live.then(|| restarted.elapsed());
                assert!(
                    live,
                    "castgate did not see every edge live within {BACK_WITHIN:?} of {}'s restart: {:?}",
                    run.edges[edge].name,
                    admin_json(run.cg, "/status.json").map(|s| live_edges(&s))
                );
                // The next victim of this kind becomes the preferred edge.
                let next = victim(kills + 1);
                match run.edges[next].group {
                    Group::Icecast => knobs.heavy_ice = next,
                    Group::Rtmp => knobs.heavy_rtmp = next,
                }
                reload(run, farm, ports, knobs, "weights", &mut log);
            }
        } else if now >= next_kill && now + DOWN_FOR + Duration::from_secs(3) < run.deadline {
            let edge = victim(kills);
            let killed = Instant::now();
            farm.kill(edge);
            log.outages.push(Outage {
                edge,
                killed: killed - run.start,
                back: Duration::MAX,
                rejoined: None,
            });
            // A reload while an edge is down: every other outage, both
            // kinds (kills 1, 2, 5, 6...).
            let reload_at = matches!(kills % 4, 1 | 2).then_some(killed + RELOAD_AFTER_KILL);
            down = Some(Down {
                edge,
                killed,
                reload_at,
            });
            kills += 1;
            next_kill = (next_kill + KILL_EVERY).max(Instant::now());
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Leave no edge down (its outage stays open: "back" never).
    if let Some(d) = down {
        farm.restart(d.edge);
    }
    log
}

/// Writes the config for `knobs` and reloads it, by SIGHUP and by
/// `POST /api/reload` in turn; checks that it was applied.
fn reload(run: &Run, farm: &Farm, ports: (u16, u16), knobs: Knobs, what: &str, log: &mut Chaos) {
    let i = log.reloads.len();
    let yaml = config(run.edges, farm.token.path(), ports, knobs);
    let before = applied_reloads(run.cg);
    // Write and rename, as editors and config managers do.
    let path = run.cg.config_path();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &yaml).expect("write the new config");
    std::fs::rename(&tmp, &path).expect("rename the new config");
    let how = if i % 2 == 0 {
        "SIGHUP"
    } else {
        "POST /api/reload"
    };
    let change = format!(
        "{what}: heavy {} and {}, title {:?}",
        run.edges[knobs.heavy_ice].name, run.edges[knobs.heavy_rtmp].name, TITLES[knobs.title]
    );
    log.reloads.push((run.now(), how, change.clone()));
    let outcome = if i % 2 == 0 {
        run.cg.signal(libc::SIGHUP);
        let applied =
            before.is_some() && poll_until(BACK_WITHIN, || applied_reloads(run.cg) > before);
        if applied {
            Ok(())
        } else {
            Err(format!(
                "not counted as applied within {BACK_WITHIN:?} ({before:?} before)"
            ))
        }
    } else {
        let auth = format!("Bearer {TOKEN}");
        let url = format!("{}/api/reload", run.cg.admin_url());
        let headers = [("Authorization", auth.as_str()), ("Content-Length", "0")];
        match try_http_request_with_body("POST", &url, &headers, &[]) {
            Err(e) => Err(e.to_string()),
            Ok((200, _, body)) if String::from_utf8_lossy(&body).contains("\"applied\"") => Ok(()),
            Ok((code, _, body)) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
        }
    };
    let outcome = outcome.and_then(|()| {
        if knobs_in_force(run.cg, run.edges, knobs) {
            Ok(())
        } else {
            Err("/api/config does not show the change".to_string())
        }
    });
    if let Err(why) = outcome {
        log.reload_problems
            .push(format!("reload {i} by {how} ({change}): {why}"));
    }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn soak_duration() -> Duration {
    let secs = match std::env::var("CASTGATE_SOAK_SECS") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("CASTGATE_SOAK_SECS={v:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECS,
    };
    assert!(
        secs >= MIN_SECS,
        "CASTGATE_SOAK_SECS={secs}: a soak needs at least {MIN_SECS} s"
    );
    Duration::from_secs(secs)
}

/// A thread's result, or its panic carried on.
fn joined<T>(result: thread::Result<T>) -> T {
    result.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn show(replies: &[&Reply]) -> String {
    replies
        .iter()
        .take(12)
        .map(|r| {
            format!(
                "  {} at {} -> {:?} {}",
                r.endpoint,
                secs(r.at),
                r.status,
                r.problem.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn soak_every_endpoint_through_kills_restarts_and_reloads() {
    let length = soak_duration();
    let mut farm = Farm::start();
    let edges = farm.edges();
    let ports = (free_port(), free_port());
    let knobs = Knobs {
        heavy_ice: victim(0),
        heavy_rtmp: victim(1),
        title: 0,
    };
    let mut cg = Castgate::start(
        &config(&edges, farm.token.path(), ports, knobs),
        ports.0,
        ports.1,
    );
    wait_until(
        "castgate to see every edge live",
        Duration::from_secs(30),
        || whole_farm_live(&cg),
    );
    assert_eq!(http_get(&format!("{}/apple.m3u", cg.front_url())).0, 200);

    let start = Instant::now();
    let run = Run {
        cg: &cg,
        edges: &edges,
        start,
        deadline: start + length,
        stop: AtomicBool::new(false),
    };
    let (chaos, clients, admin, rss) = thread::scope(|s| {
        let chaos = s.spawn(|| chaos(&run, &mut farm, ports, knobs));
        let clients = [
            s.spawn(|| playlist_client(&run)),
            s.spawn(|| proxy_client(&run)),
            s.spawn(|| hls_client(&run)),
        ];
        let admin = s.spawn(|| admin_client(&run));
        let rss = s.spawn(|| rss_sampler(&run));
        let clients: Vec<_> = clients.into_iter().map(|c| c.join()).collect();
        (chaos.join(), clients, admin.join(), rss.join())
    });
    let took = start.elapsed();
    let chaos: Chaos = joined(chaos);
    let (mut replies, fewest_live): (Vec<Reply>, BTreeMap<String, usize>) = joined(admin);
    for c in clients {
        replies.extend(joined(c));
    }
    let rss: Vec<(Duration, u64)> = joined(rss);
    assert!(cg.is_running(), "castgate exited during the soak");

    // Malformed answers, but for streams cut by the death of their edge.
    let (cut, bad): (Vec<&Reply>, Vec<&Reply>) = replies
        .iter()
        .filter(|r| r.status.is_some() && r.problem.is_some())
        .partition(|r| cut_by_a_kill(r, &chaos.outages, &edges));
    // Per endpoint: requests, 5xx, failed exchanges, malformed, cut.
    let mut per_endpoint: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
    for r in &replies {
        let e = per_endpoint.entry(r.endpoint).or_default();
        e[0] += 1;
        e[1] += usize::from(r.is_5xx());
        e[2] += usize::from(r.status.is_none());
        let cut = cut_by_a_kill(r, &chaos.outages, &edges);
        e[3] += usize::from(r.status.is_some() && r.problem.is_some() && !cut);
        e[4] += usize::from(cut);
    }

    // Each kill: how often and how late answers still named the edge.
    let dead = dead_edge_answers(&replies, &chaos.outages);
    let mut worst_lag = Duration::ZERO;
    for o in &chaos.outages {
        let lags: Vec<Duration> = dead
            .iter()
            .filter(|(r, e, _)| *e == o.edge && r.at >= o.killed && r.at < o.back)
            .map(|(_, _, lag)| *lag)
            .collect();
        let last = lags.iter().max().copied();
        worst_lag = worst_lag.max(last.unwrap_or_default());
        eprintln!(
            "soak: killed {} at {}, restart began at {}, live again in castgate {} after: \
             {} answers named it after the kill, the last asked {} after",
            edges[o.edge].name,
            secs(o.killed),
            if o.back == Duration::MAX {
                "the end".into()
            } else {
                secs(o.back)
            },
            o.rejoined.map_or("-".into(), secs),
            lags.len(),
            last.map_or("-".into(), secs),
        );
    }
    for (t, how, change) in &chaos.reloads {
        eprintln!("soak: reload at {} by {how} ({change})", secs(*t));
    }
    let castgate_5xx: Vec<String> = cg
        .log()
        .lines()
        .filter(|l| l.contains("castgate::access") && l.contains(" code=5"))
        .map(str::to_string)
        .collect();
    if !castgate_5xx.is_empty() {
        eprintln!(
            "soak: castgate's access log shows {} 5xx answers, e.g.:\n{}",
            castgate_5xx.len(),
            castgate_5xx[..castgate_5xx.len().min(6)].join("\n")
        );
    }
    let (rss_first, rss_mark, rss_end) = rss_points(&rss, RSS_MARK.min(length / 2));
    let total: usize = per_endpoint.values().map(|e| e[0]).sum();
    let counts: Vec<String> = per_endpoint
        .iter()
        .map(|(name, [n, fivexx, failed, bad, cut])| {
            let mut s = format!("{name} {n}");
            if fivexx + failed + bad + cut > 0 {
                s.push_str(&format!(
                    " (5xx {fivexx}, failed {failed}, bad {bad}, cut by a kill {cut})"
                ));
            }
            s
        })
        .collect();
    let fivexx: Vec<&Reply> = replies.iter().filter(|r| r.is_5xx()).collect();
    eprintln!(
        "soak summary: {} run ({} asked), {total} requests: {}; {} kills, {} reloads; \
         5xx: {}; \
         {} proxied streams cut by their edge's death; \
         max dead-edge lag {} (bound {}); fewest live edges {fewest_live:?}; \
         castgate RSS KiB first {rss_first} / {} {rss_mark} / end {rss_end} ({:+.1}%)",
        secs(took),
        secs(length),
        counts.join(", "),
        chaos.outages.len(),
        chaos.reloads.len(),
        fivexx.len(),
        cut.len(),
        secs(worst_lag),
        secs(DEAD_BOUND),
        if length >= RSS_MARK * 2 {
            "minute one"
        } else {
            "half-way"
        },
        (rss_end as f64 / rss_mark as f64 - 1.0) * 100.0,
    );

    // The run did what a soak must: kills, reloads, answers naming every
    // edge (so the dead-edge check could see them), a live edge always.
    assert!(
        chaos.outages.len() >= 2,
        "only {} kills in {length:?}",
        chaos.outages.len()
    );
    assert!(!chaos.reloads.is_empty(), "no reload in {length:?}");
    for (i, e) in edges.iter().enumerate() {
        assert!(
            replies.iter().any(|r| r.names.contains(&i)),
            "no answer named {} ({}): the checks could not see it",
            e.name,
            e.url
        );
    }
    for (stream, n) in &fewest_live {
        assert!(
            *n >= 1,
            "{stream} had no live edge at some point: the chaos must keep one"
        );
    }

    // 1. No 5xx, no failed exchange, no malformed
    //    answer.
    assert!(
        fivexx.is_empty(),
        "{} 5xx answers while every stream had a live edge:\n{}",
        fivexx.len(),
        show(&fivexx)
    );
    let failed: Vec<&Reply> = replies.iter().filter(|r| r.status.is_none()).collect();
    assert!(
        failed.is_empty(),
        "{} failed exchanges:\n{}",
        failed.len(),
        show(&failed)
    );
    assert!(
        bad.is_empty(),
        "{} malformed answers:\n{}",
        bad.len(),
        show(&bad)
    );

    // 2. No answer named a dead edge past the bound.
    let late: Vec<String> = dead
        .iter()
        .filter(|(_, _, lag)| *lag > DEAD_BOUND)
        .map(|(r, e, lag)| {
            format!(
                "  {} at {} named {} {} after its kill",
                r.endpoint,
                secs(r.at),
                edges[*e].name,
                secs(*lag)
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} answers named a dead edge later than {} after its kill:\n{}",
        late.len(),
        secs(DEAD_BOUND),
        late[..late.len().min(12)].join("\n")
    );

    // 3. Memory flat from minute one to the end.
    assert!(
        !rss_grew(rss_mark, rss_end),
        "castgate's RSS grew from {rss_mark} KiB to {rss_end} KiB (more than {:.0}%); samples: {rss:?}",
        RSS_GROWTH * 100.0
    );

    // 4. Every reload applied.
    assert!(
        chaos.reload_problems.is_empty(),
        "reloads not applied:\n{}",
        chaos.reload_problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The checks themselves, on made-up records: they catch what they must.
// ---------------------------------------------------------------------------

#[test]
fn dead_edge_check_sees_answers_naming_a_dead_edge_until_its_restart() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let named = |at: Duration, edge: usize| Reply {
        names: vec![edge],
        ..Reply::new("apple.m3u", at, 200)
    };
    let outages = [Outage {
        edge: 1,
        killed: s(10),
        back: s(15),
        rejoined: None,
    }];
    let replies = [
        named(s(9), 1),            // before the kill: fine
        named(s(10) + ms(900), 1), // within the bound
        named(s(12), 0),           // another edge
        named(s(13), 1),           // 3 s after: a castgate that kept listing it
        named(s(16), 1),           // after the restart: fine
    ];
    let dead = dead_edge_answers(&replies, &outages);
    let lags: Vec<Duration> = dead.iter().map(|(_, _, lag)| *lag).collect();
    assert_eq!(lags, [ms(900), s(3)]);
    assert!(lags[0] <= DEAD_BOUND && lags[1] > DEAD_BOUND);
}

#[test]
fn only_streams_cut_while_their_edge_died_are_forgiven() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let edge = |name, group| EdgeInfo {
        name,
        url: String::new(),
        group,
    };
    let edges = [edge("ice0", Group::Icecast), edge("rtmp0", Group::Rtmp)];
    let outages = [Outage {
        edge: 0,
        killed: s(10),
        back: s(15),
        rejoined: None,
    }];
    let ended = |at, answered| Reply {
        answered,
        cut: true,
        problem: Some("stream ended after 5 bytes".into()),
        ..Reply::new("applep stream", at, 200)
    };
    assert!(cut_by_a_kill(
        &ended(s(9) + ms(900), s(10) + ms(100)),
        &outages,
        &edges
    ));
    assert!(!cut_by_a_kill(
        &ended(s(9), s(9) + ms(300)),
        &outages,
        &edges
    ));
}

#[test]
fn rss_check_sees_growth_and_ignores_one_odd_sample() {
    let s = Duration::from_secs;
    let flat: Vec<(Duration, u64)> = (0..60).map(|i| (s(2 * i), 30_000)).collect();
    let mut spike = flat.clone();
    spike[59].1 = 60_000; // one sample during a burst, at the very end
    let leak: Vec<(Duration, u64)> = (0..60).map(|i| (s(2 * i), 30_000 + 200 * i)).collect();
    let (_, mark, end) = rss_points(&flat, s(60));
    assert!(!rss_grew(mark, end));
    let (_, mark, end) = rss_points(&spike, s(60));
    assert!(!rss_grew(mark, end), "{mark} -> {end}");
    let (first, mark, end) = rss_points(&leak, s(60));
    assert_eq!((first, mark), (30_200, 36_000));
    assert!(rss_grew(mark, end), "{mark} -> {end}");
}
