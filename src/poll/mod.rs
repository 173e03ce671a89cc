//! Polling: one background service asks every edge for its status each
//! `poll.interval`, applies rise/fall hysteresis, and publishes a new
//! [`Snapshot`](crate::balance::Snapshot).
//!
//! Every edge is polled concurrently, each poll bounded by `poll.timeout`
//! (which config validation keeps at or under `poll.interval`), so a slow or
//! dead edge never delays the others or the next round.

pub mod health;
pub mod icecast;

use crate::balance::{EdgeHealth, Snapshot};
use crate::config::{Edge, EdgeKind, PollSettings};
use crate::state::State;
use async_trait::async_trait;
use health::Hysteresis;
use icecast::EdgeStatus;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
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
            ProbeError::Parse(_) => "parse",
        }
    }
}

/// The result of one probe: the edge's status, and a non-fatal note (e.g.
/// the optional admin poll failed).
#[derive(Debug, Clone)]
pub struct Probed {
    /// What the edge reported.
    pub status: EdgeStatus,
    /// A failure of an optional extra request, shown in /status.json.
    pub admin_error: Option<String>,
}

/// Asks one edge for its status. One implementation per edge kind.
#[async_trait]
pub trait EdgeProbe: Send + Sync {
    /// Poll `edge` once. The caller bounds the whole call by `poll.timeout`.
    async fn probe(&self, edge: &Edge) -> Result<Probed, ProbeError>;
}

/// HTTP GET with a body cap, shared by the probes.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_body: usize,
}

impl Fetcher {
    /// A client that follows no redirect and ignores proxy variables (an
    /// edge is polled directly, as listeners reach it).
    ///
    /// # Errors
    /// When the TLS backend cannot initialise.
    pub fn new(poll: &PollSettings) -> Result<Fetcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("castgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(poll.timeout)
            .timeout(poll.timeout)
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Fetcher {
            client,
            max_body: poll.max_body,
        })
    }

    /// GET `url` (with optional basic auth) and return the body, at most
    /// `max_body` bytes.
    ///
    /// # Errors
    /// Connect, status, body and size errors as [`ProbeError`].
    pub async fn get(&self, url: &str, auth: Option<(&str, &str)>) -> Result<Vec<u8>, ProbeError> {
        let mut req = self.client.get(url);
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
    if e.is_timeout() {
        ProbeError::Timeout(Duration::ZERO)
    } else if e.is_connect() {
        // The innermost cause says what happened (refused, unreachable).
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        ProbeError::Connect(cause.to_string())
    } else {
        ProbeError::Body(e.to_string())
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
    async fn probe(&self, edge: &Edge) -> Result<Probed, ProbeError> {
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
            status,
            admin_error,
        })
    }
}

/// Per-edge poll history, owned by the poller.
#[derive(Debug, Default, Clone)]
struct Track {
    hysteresis: Hysteresis,
    health: EdgeHealth,
}

/// The background service that polls the farm and publishes snapshots.
pub struct Poller {
    state: Arc<State>,
    icecast: Arc<dyn EdgeProbe>,
    tracks: Mutex<Vec<Track>>,
}

impl Poller {
    /// A poller for the config in `state`'s current snapshot.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend).
    pub fn new(state: Arc<State>) -> Result<Poller, reqwest::Error> {
        let poll = state.snapshot.load().config.poll;
        let fetch = Fetcher::new(&poll)?;
        Ok(Poller {
            state,
            icecast: Arc::new(IcecastProbe::new(fetch)),
            tracks: Mutex::new(Vec::new()),
        })
    }

    /// Poll every edge once, concurrently, and publish the new snapshot.
    pub async fn round(&self) {
        let current = self.state.snapshot.load_full();
        let config = current.config.clone();
        let poll = config.poll;
        let probes = config.edges.iter().map(|edge| {
            let probe = match edge.kind {
                EdgeKind::Icecast => self.icecast.clone(),
            };
            async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(poll.timeout, probe.probe(edge)).await {
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

        let mut tracks = self.tracks.lock().await;
        tracks.resize(config.edges.len(), Track::default());
        let mut refreshed = vec![false; config.edges.len()];
        let metrics = &self.state.metrics;
        for (i, (result, took)) in results.into_iter().enumerate() {
            let edge = &config.edges[i];
            let track = &mut tracks[i];
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
                    track.health.status = Some(p.status);
                    refreshed[i] = true;
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
        let health: Vec<EdgeHealth> = tracks.iter().map(|t| t.health.clone()).collect();
        drop(tracks);
        let next = Snapshot::build(
            config,
            current.policy.clone(),
            &health,
            current.generation + 1,
            Some((&current, &refreshed)),
        );
        self.state.snapshot.store(Arc::new(next));
    }
}

#[async_trait]
impl BackgroundService for Poller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = self.state.snapshot.load().config.poll.interval;
        let mut ticker = tokio::time::interval(interval);
        // A late round (a stalled runtime) shifts the schedule instead of
        // firing a burst of catch-up rounds.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => self.round().await,
            }
        }
        tracing::debug!("poller stopped");
    }
}
