//! Polling: one background service asks every edge for its status each
//! `poll.interval`, applies rise/fall hysteresis, and publishes a new
//! [`Snapshot`](crate::balance::Snapshot).
//!
//! Probes only fetch and parse ([`Observation`]); what an observation means
//! across polls (an RTMP stream missing from one answer, an HLS playlist
//! that stopped moving) is decided here, in [`Track::interpret`].
//!
//! Every edge is polled concurrently, each poll bounded by `poll.timeout`
//! (which config validation keeps at or under `poll.interval`), so a slow or
//! dead edge never delays the others or the next round.

pub mod health;
pub mod hls;
pub mod icecast;
pub mod rtmp;
pub mod status;

use crate::balance::sessions::SessionTable;
use crate::balance::{EdgeHealth, EdgeKey, EdgeReport, EdgeReports, Snapshot};
use crate::config::{Config, Edge, EdgeKind, PollSettings, StreamKind};
use crate::state::State;
use async_trait::async_trait;
use health::Hysteresis;
use hls::{Freshness, PlaylistObs};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rtmp::RtmpStat;
use status::{EdgeStatus, MountStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// Why one poll failed. Each variant maps to a bounded metric `reason`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    /// TCP/TLS connection failed.
    #[error("connect: {0}")]
    Connect(String),
    /// No full answer within `poll.timeout`.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// The edge answered with a status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body could not be read.
    #[error("body: {0}")]
    Body(String),
    /// The body exceeded `poll.max_body` bytes.
    #[error("status body over {0} bytes")]
    TooLarge(usize),
    /// The body was read but is not a status document.
    #[error("{0}")]
    Parse(#[from] icecast::ParseError),
    /// An HLS playlist could not be read.
    #[error("{0}")]
    Playlist(#[from] hls::HlsError),
}

impl ProbeError {
    /// The `reason` label of `castgate_poll_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::Connect(_) => "connect",
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Status(_) => "status",
            ProbeError::Body(_) => "body",
            ProbeError::TooLarge(_) => "too_large",
            ProbeError::Parse(_) | ProbeError::Playlist(_) => "parse",
        }
    }
}

/// What one probe saw, before any memory of earlier polls is applied.
#[derive(Debug, Clone)]
pub enum Observation {
    /// Icecast: the status, complete in itself.
    Icecast(EdgeStatus),
    /// nginx-rtmp: the answering worker's `/stat`.
    Rtmp(RtmpStat),
    /// HLS web server: each asked playlist path with its media playlist
    /// (a master's first variant) or why it could not be read.
    Hls(Vec<(String, Result<hls::MediaObs, String>)>),
}

/// The result of one probe: what was seen, and a non-fatal note (e.g. the
/// optional admin poll failed).
#[derive(Debug, Clone)]
pub struct Probed {
    /// What the edge reported.
    pub observation: Observation,
    /// A failure of an optional extra request, shown in /status.json.
    pub admin_error: Option<String>,
}

/// Asks one edge for its status. One implementation per edge kind.
#[async_trait]
pub trait EdgeProbe: Send + Sync {
    /// Poll `edge` once; `paths` are the HLS playlist paths of the streams
    /// it carries (empty for Icecast). The caller bounds the whole call by
    /// `poll.timeout`.
    async fn probe(&self, edge: &Edge, paths: &[String]) -> Result<Probed, ProbeError>;
}

/// HTTP GET with a body cap, shared by the probes.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_body: usize,
}

impl Fetcher {
    /// A client that follows no redirect and ignores proxy variables (an
    /// edge is polled directly, as listeners reach it). `https://` edges
    /// are verified against the system's roots (and Mozilla's bundled ones)
    /// plus `poll.ca_file`.
    ///
    /// # Errors
    /// When the TLS backend cannot initialise.
    pub fn new(
        poll: &PollSettings,
        tls: &crate::config::PollTls,
    ) -> Result<Fetcher, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &tls.ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        let client = builder
            .user_agent(concat!("castgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            // The poller bounds each poll by `poll.timeout` itself (it may
            // change on reload); these only stop a runaway request.
            .connect_timeout(poll.timeout.max(Duration::from_secs(30)))
            .timeout(poll.timeout.max(Duration::from_secs(30)))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Fetcher {
            client,
            max_body: poll.max_body,
        })
    }

    /// GET `url` on a connection of its own (`Connection: close`), so that
    /// a server with several worker processes may answer from another one.
    ///
    /// # Errors
    /// As [`Fetcher::get`].
    pub async fn get_fresh(&self, url: &str) -> Result<Vec<u8>, ProbeError> {
        self.get_with(url, None, true).await
    }

    /// GET `url` (with optional basic auth) and return the body, at most
    /// `max_body` bytes.
    ///
    /// # Errors
    /// Connect, status, body and size errors as [`ProbeError`].
    pub async fn get(&self, url: &str, auth: Option<(&str, &str)>) -> Result<Vec<u8>, ProbeError> {
        self.get_with(url, auth, false).await
    }

    async fn get_with(
        &self,
        url: &str,
        auth: Option<(&str, &str)>,
        fresh: bool,
    ) -> Result<Vec<u8>, ProbeError> {
        let mut req = self.client.get(url);
        if fresh {
            req = req.header(reqwest::header::CONNECTION, "close");
        }
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        let mut resp = req.send().await.map_err(classify)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ProbeError::Status(resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(ProbeError::TooLarge(self.max_body));
        }
        let mut body = Vec::with_capacity(
            resp.content_length()
                .unwrap_or(4096)
                .min(self.max_body as u64) as usize,
        );
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(ProbeError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn classify(e: reqwest::Error) -> ProbeError {
    // The innermost cause says what happened (refused, unreachable, closed
    // early).
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        ProbeError::Timeout(Duration::ZERO)
    } else if e.is_connect() {
        ProbeError::Connect(cause.to_string())
    } else {
        // reqwest's own words alone ("error decoding response body") read
        // like an encoding fault when the edge closed before sending the
        // Content-Length it announced: add the cause.
        match std::error::Error::source(&e) {
            Some(_) => ProbeError::Body(format!("{e}: {cause}")),
            None => ProbeError::Body(e.to_string()),
        }
    }
}

/// Polls Icecast 2.4: `{url}/status-json.xsl`, and `{url}/admin/stats` when
/// admin credentials are configured (for per-mount `max_listeners`).
pub struct IcecastProbe {
    fetch: Fetcher,
}

impl IcecastProbe {
    /// A probe using `fetch` for its requests.
    pub fn new(fetch: Fetcher) -> Self {
        IcecastProbe { fetch }
    }
}

#[async_trait]
impl EdgeProbe for IcecastProbe {
    async fn probe(&self, edge: &Edge, _paths: &[String]) -> Result<Probed, ProbeError> {
        let base = edge.url.as_str().trim_end_matches('/');
        let body = self
            .fetch
            .get(&format!("{base}/status-json.xsl"), None)
            .await?;
        let mut status = icecast::parse_status_json(&body)?;
        let mut admin_error = None;
        if let Some(admin) = &edge.admin {
            let got = self
                .fetch
                .get(
                    &format!("{base}/admin/stats"),
                    Some((&admin.user, &admin.password)),
                )
                .await
                .and_then(|b| icecast::parse_admin_stats(&b).map_err(ProbeError::from));
            match got {
                Ok(mounts) => {
                    for m in &mut status.mounts {
                        m.max_listeners = mounts
                            .iter()
                            .find(|a| a.mount == m.mount)
                            .and_then(|a| a.max_listeners);
                    }
                }
                Err(e) => admin_error = Some(format!("admin/stats: {e}")),
            }
        }
        Ok(Probed {
            observation: Observation::Icecast(status),
            admin_error,
        })
    }
}

/// Polls nginx-rtmp: `{url}/stat`.
pub struct RtmpProbe {
    fetch: Fetcher,
}

#[async_trait]
impl EdgeProbe for RtmpProbe {
    /// With one worker, one `/stat`. With `workers: N`, each nginx worker
    /// answers `/stat` with its own connections only, so castgate asks on
    /// 2 × N fresh connections at once, up to three times, until every
    /// worker (by pid) has answered, and merges the answers.
    async fn probe(&self, edge: &Edge, _paths: &[String]) -> Result<Probed, ProbeError> {
        let url = format!("{}/stat", edge.url.as_str().trim_end_matches('/'));
        let workers = edge.workers.max(1) as usize;
        if workers == 1 {
            let body = self.fetch.get(&url, None).await?;
            return Ok(Probed {
                observation: Observation::Rtmp(rtmp::parse_stat(&body)?),
                admin_error: None,
            });
        }
        let mut answers = Vec::new();
        let mut last_error = None;
        for _ in 0..3 {
            let bodies =
                futures::future::join_all((0..workers * 2).map(|_| self.fetch.get_fresh(&url)))
                    .await;
            for body in bodies {
                match body.and_then(|b| rtmp::parse_stat(&b).map_err(ProbeError::from)) {
                    Ok(stat) => answers.push(stat),
                    Err(e) => last_error = Some(e),
                }
            }
            if RtmpStat::distinct_pids(&answers) >= workers {
                break;
            }
        }
        if answers.is_empty() {
            return Err(last_error.unwrap_or(ProbeError::Body("no /stat answer".into())));
        }
        Ok(Probed {
            observation: Observation::Rtmp(RtmpStat::merge(answers)),
            admin_error: None,
        })
    }
}

/// Polls a plain HLS web server: each stream's playlist (and, for a master,
/// its first variant).
pub struct HlsProbe {
    fetch: Fetcher,
}

impl HlsProbe {
    async fn media(&self, url: &str) -> Result<hls::MediaObs, ProbeError> {
        let body = self.fetch.get(url, None).await?;
        match hls::observe(&body)? {
            PlaylistObs::Media(m) => Ok(m),
            PlaylistObs::Master { first_variant } => {
                let variant = url::Url::parse(url)
                    .and_then(|u| u.join(&first_variant))
                    .map_err(|e| ProbeError::Body(format!("variant URI `{first_variant}`: {e}")))?;
                let body = self.fetch.get(variant.as_str(), None).await?;
                match hls::observe(&body)? {
                    PlaylistObs::Media(m) => Ok(m),
                    PlaylistObs::Master { .. } => Err(ProbeError::Body(
                        "a master playlist's variant is another master".into(),
                    )),
                }
            }
        }
    }
}

#[async_trait]
impl EdgeProbe for HlsProbe {
    async fn probe(&self, edge: &Edge, paths: &[String]) -> Result<Probed, ProbeError> {
        let base = edge.url.as_str().trim_end_matches('/');
        let results =
            futures::future::join_all(paths.iter().map(|p| self.media_owned(format!("{base}{p}"))))
                .await;
        // The edge itself is down only when nothing could be fetched for a
        // reason other than an HTTP answer (a 404 means it serves, but not
        // that stream).
        let all_failed = !results.is_empty() && results.iter().all(|r| r.is_err());
        if all_failed {
            if let Some(Err(e)) = results.iter().find(|r| {
                !matches!(
                    r,
                    Err(ProbeError::Status(_)) | Err(ProbeError::Playlist(_)) | Ok(_)
                )
            }) {
                return Err(e.clone());
            }
        }
        if paths.is_empty() {
            // Nothing to check: the server answering at all is the health.
            match self.fetch.get(&format!("{base}/"), None).await {
                Ok(_) | Err(ProbeError::Status(_)) | Err(ProbeError::TooLarge(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Probed {
            observation: Observation::Hls(
                paths
                    .iter()
                    .cloned()
                    .zip(results.into_iter().map(|r| r.map_err(|e| e.to_string())))
                    .collect(),
            ),
            admin_error: None,
        })
    }
}

impl HlsProbe {
    async fn media_owned(&self, url: String) -> Result<hls::MediaObs, ProbeError> {
        self.media(&url).await
    }
}

/// Per-edge poll history, owned by the poller.
#[derive(Debug, Default, Clone)]
struct Track {
    hysteresis: Hysteresis,
    health: EdgeHealth,
    /// nginx-rtmp: per RTMP stream name, when it was last seen publishing,
    /// with its viewers and output then.
    rtmp_seen: HashMap<String, (Instant, u64, u64)>,
    /// HLS: per playlist path, its freshness memory.
    hls_fresh: HashMap<String, Freshness>,
    /// Per playlist path, why it is not live (shown in /status.json).
    stream_errors: HashMap<String, String>,
}

impl Track {
    /// Turn an observation into the edge's status, using and updating the
    /// memory of earlier polls.
    ///
    /// nginx-rtmp with several workers answers `/stat` from whichever
    /// worker takes the connection, and a stream may be missing from one
    /// answer while it plays on: a stream stays live for `interval × fall`
    /// after it was last seen publishing, with the figures seen then.
    fn interpret(
        &mut self,
        obs: Observation,
        streams: &[(String, String)],
        poll: &PollSettings,
        now: Instant,
    ) -> EdgeStatus {
        self.stream_errors.clear();
        match obs {
            Observation::Icecast(status) => status,
            Observation::Rtmp(stat) => {
                for s in stat.streams.iter().filter(|s| s.publishing) {
                    self.rtmp_seen
                        .insert(s.name.clone(), (now, s.viewers, s.bw_out_bps));
                }
                let keep = poll.interval * poll.fall;
                self.rtmp_seen
                    .retain(|_, (seen, _, _)| now.duration_since(*seen) <= keep);
                let mut mounts = Vec::new();
                for (path, rtmp_name) in streams {
                    match self.rtmp_seen.get(rtmp_name) {
                        Some(&(_, viewers, _)) => mounts.push(MountStatus {
                            mount: path.clone(),
                            listeners: viewers,
                            max_listeners: None,
                        }),
                        None => {
                            self.stream_errors.insert(
                                path.clone(),
                                format!("RTMP stream `{rtmp_name}` is not publishing"),
                            );
                        }
                    }
                }
                let listed: u64 = self.rtmp_seen.values().map(|(_, _, bw)| bw).sum();
                EdgeStatus {
                    mounts,
                    lenient: false,
                    bw_out_bps: Some(stat.bw_out_bps.max(listed)),
                }
            }
            Observation::Hls(results) => {
                let mut mounts = Vec::new();
                for (path, result) in results {
                    match result {
                        Ok(media) => {
                            let fresh = self
                                .hls_fresh
                                .entry(path.clone())
                                .or_insert_with(|| Freshness::new(now));
                            if fresh.update(&media, now) {
                                mounts.push(MountStatus {
                                    mount: path,
                                    listeners: 0,
                                    max_listeners: None,
                                });
                            } else {
                                let why = if media.ended {
                                    "playlist has EXT-X-ENDLIST".to_string()
                                } else {
                                    format!(
                                        "playlist stale: unchanged for {:.1}s (target duration {}s)",
                                        fresh.age(now).as_secs_f64(),
                                        media.target_duration.as_secs()
                                    )
                                };
                                self.stream_errors.insert(path, why);
                            }
                        }
                        Err(e) => {
                            self.hls_fresh.remove(&path);
                            self.stream_errors.insert(path, e);
                        }
                    }
                }
                EdgeStatus {
                    mounts,
                    lenient: false,
                    bw_out_bps: None,
                }
            }
        }
    }
}

/// Poller-owned state: per-edge tracks, by edge identity (name and poll
/// URL) so that a reload keeps an unchanged edge's history whatever its
/// position, and the session table.
struct PollState {
    tracks: HashMap<EdgeKey, Track>,
    sessions: SessionTable,
}

/// The background service that polls the farm and publishes snapshots.
pub struct Poller {
    state: Arc<State>,
    icecast: Arc<dyn EdgeProbe>,
    rtmp: Arc<dyn EdgeProbe>,
    hls: Arc<dyn EdgeProbe>,
    inner: Mutex<PollState>,
}

/// For each edge (by name) that carries HLS streams: (playlist path, RTMP
/// name) of each.
fn hls_streams_of(config: &Config) -> HashMap<&str, Vec<(String, String)>> {
    let mut per_edge: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for s in config.streams.iter().filter(|s| s.kind == StreamKind::Hls) {
        for edge in s.edges.iter().filter_map(|&e| config.edges.get(e)) {
            per_edge
                .entry(edge.name.as_str())
                .or_default()
                .push((s.mount.clone(), s.rtmp_name.clone()));
        }
    }
    per_edge
}

impl Poller {
    /// A poller for the config in `state`'s current snapshot; it reads HLS
    /// sessions from `sessions`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend).
    pub fn new(state: Arc<State>, sessions: SessionTable) -> Result<Poller, reqwest::Error> {
        let config = state.snapshot.load().config.clone();
        let fetch = Fetcher::new(&config.poll, &config.poll_tls)?;
        Ok(Poller {
            state,
            icecast: Arc::new(IcecastProbe::new(fetch.clone())),
            rtmp: Arc::new(RtmpProbe {
                fetch: fetch.clone(),
            }),
            hls: Arc::new(HlsProbe { fetch }),
            inner: Mutex::new(PollState {
                tracks: HashMap::new(),
                sessions,
            }),
        })
    }

    /// Poll every edge once, concurrently, and publish the new snapshot.
    pub async fn round(&self) {
        let current = self.state.snapshot.load_full();
        let config = current.config.clone();
        let poll = config.poll;
        let hls_streams = hls_streams_of(&config);
        let no_streams = Vec::new();
        let streams_of = |edge: &Edge| hls_streams.get(edge.name.as_str()).unwrap_or(&no_streams);
        let probes = config.edges.iter().map(|edge| {
            let probe = match edge.kind {
                EdgeKind::Icecast => self.icecast.clone(),
                EdgeKind::NginxRtmp => self.rtmp.clone(),
                EdgeKind::Hls => self.hls.clone(),
            };
            let paths: Vec<String> = streams_of(edge).iter().map(|(p, _)| p.clone()).collect();
            async move {
                let started = Instant::now();
                let result =
                    match tokio::time::timeout(poll.timeout, probe.probe(edge, &paths)).await {
                        Ok(Ok(p)) => Ok(p),
                        Ok(Err(ProbeError::Timeout(_))) | Err(_) => {
                            Err(ProbeError::Timeout(poll.timeout))
                        }
                        Ok(Err(e)) => Err(e),
                    };
                (result, started.elapsed())
            }
        });
        let results = futures::future::join_all(probes).await;

        let mut inner = self.inner.lock().await;
        let PollState { tracks, sessions } = &mut *inner;
        let now = Instant::now();
        let mut refreshed_keys = Vec::new();
        let metrics = &self.state.metrics;
        for (edge, (result, took)) in config.edges.iter().zip(results) {
            let track = tracks.entry(EdgeKey::of(edge)).or_default();
            metrics
                .poll_duration
                .with_label_values(&[&edge.name])
                .observe(took.as_secs_f64());
            track.health.last_poll = Some(SystemTime::now());
            track.health.last_poll_duration = Some(took);
            let ok = result.is_ok();
            match result {
                Ok(p) => {
                    track.health.last_error = None;
                    track.health.admin_error = p.admin_error;
                    let status = track.interpret(p.observation, streams_of(edge), &poll, now);
                    track.health.stream_errors = track.stream_errors.clone();
                    track.health.status = Some(status);
                    refreshed_keys.push(EdgeKey::of(edge));
                }
                Err(e) => {
                    metrics
                        .poll_errors
                        .with_label_values(&[&edge.name, e.reason()])
                        .inc();
                    if track.health.last_error.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(edge = %edge.name, url = %edge.url, error = %e, "poll failed");
                    }
                    track.health.last_error = Some(e.to_string());
                }
            }
            if track.hysteresis.record(ok, poll.rise, poll.fall) {
                let up = track.hysteresis.is_up();
                tracing::info!(edge = %edge.name, up, "edge {}", if up { "up" } else { "down" });
            }
            track.health.up = track.hysteresis.is_up();
        }
        let session_counts = sessions.count(config.sticky.ttl, now);

        // Publish against the latest config: a reload or an API change may
        // have landed while the edges were being polled.
        let _writer = self.state.writer.lock().await;
        let latest = self.state.snapshot.load_full();
        let keys: Vec<EdgeKey> = latest.config.edges.iter().map(EdgeKey::of).collect();
        tracks.retain(|k, _| keys.contains(k));
        let reports: EdgeReports = tracks
            .iter()
            .map(|(k, t)| {
                let report = EdgeReport {
                    health: t.health.clone(),
                    refreshed: refreshed_keys.contains(k),
                };
                (k.clone(), report)
            })
            .collect();
        drop(inner);
        let next = Snapshot::build(
            latest.config.clone(),
            latest.policy.clone(),
            &reports,
            latest.generation + 1,
            Some(&latest),
        )
        .with_sessions(session_counts);
        self.state.snapshot.store(Arc::new(next));
    }
}

impl Poller {
    /// Poll every `poll.interval` (read each round, so a reload applies at
    /// the next one) from `next` on, until shutdown. A late round shifts
    /// the schedule instead of firing catch-up rounds.
    async fn run(&self, mut shutdown: ShutdownWatch, mut next: tokio::time::Instant) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(next) => {
                    let started = tokio::time::Instant::now();
                    self.round().await;
                    let interval = self.state.snapshot.load().config.poll.interval;
                    next = started.max(next) + interval;
                }
            }
        }
        tracing::debug!("poller stopped");
    }
}

#[async_trait]
impl BackgroundService for Poller {
    /// The first round runs before readiness is signalled: the front door
    /// depends on the poller, so a (re)started castgate never answers 503
    /// merely because it has not polled yet.
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: pingora::services::ServiceReadyNotifier,
    ) {
        let first = tokio::time::Instant::now();
        self.round().await;
        ready.notify_ready();
        let interval = self.state.snapshot.load().config.poll.interval;
        self.run(shutdown, first + interval).await;
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown, tokio::time::Instant::now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn poll() -> PollSettings {
        PollSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            rise: 1,
            fall: 2,
            max_body: 1 << 20,
        }
    }

    fn stat(publishing: bool) -> Observation {
        Observation::Rtmp(RtmpStat {
            streams: if publishing {
                vec![rtmp::RtmpStream {
                    app: "live".into(),
                    name: "stream".into(),
                    publishing: true,
                    viewers: 4,
                    bw_out_bps: 1000,
                }]
            } else {
                vec![]
            },
            bw_out_bps: 0,
            pid: None,
        })
    }

    #[test]
    fn an_rtmp_stream_missing_from_one_worker_answer_stays_live_for_fall_intervals() {
        let mut t = Track::default();
        let streams = [("/hls/stream.m3u8".to_string(), "stream".to_string())];
        let t0 = Instant::now();
        let live = |s: &EdgeStatus| s.mount("/hls/stream.m3u8").map(|m| m.listeners);
        assert_eq!(
            live(&t.interpret(stat(true), &streams, &poll(), t0)),
            Some(4)
        );
        // Another worker answers without the stream: still live, same viewers.
        let s = t.interpret(stat(false), &streams, &poll(), t0 + Duration::from_secs(1));
        assert_eq!(live(&s), Some(4));
        let s = t.interpret(stat(false), &streams, &poll(), t0 + Duration::from_secs(2));
        assert_eq!(live(&s), Some(4));
        // Gone for longer than interval × fall: not live, with a reason.
        let s = t.interpret(
            stat(false),
            &streams,
            &poll(),
            t0 + Duration::from_millis(2100),
        );
        assert_eq!(live(&s), None);
        assert!(t.stream_errors["/hls/stream.m3u8"].contains("not publishing"));
    }
}
