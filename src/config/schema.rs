//! The configuration file's shape (YAML), with every default named.
//!
//! These types mirror the file one to one and are only checked for shape
//! (unknown keys, types, durations). Cross-field rules (unique names, known
//! edges, URL schemes) live in [`super::validate`].

use serde::Deserialize;
use std::time::Duration;

/// Deserialize a humantime duration such as `1s`, `800ms` or `2m 30s`.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{text}`: {e} (examples: 1s, 800ms, 2m)"
            ))
        })
    }
}

/// The whole file. Top-level keys: `listen`, `admin`, `poll`, `balance`,
/// `server`, `edges`, `streams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Front-door listen addresses (`ip:port`), plain HTTP. Default: `["0.0.0.0:8080"]`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// The admin listener (metrics, status).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How edges are polled.
    #[serde(default)]
    pub poll: PollConfig,
    /// How an edge is chosen among the eligible ones.
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Process settings handed to pingora's server.
    #[serde(default)]
    pub server: ServerConfig,
    /// The edges of the farm.
    #[serde(default)]
    pub edges: Vec<EdgeConfig>,
    /// The streams served by the front door.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
}

/// Default front-door listen addresses: `0.0.0.0:8080`.
pub fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".to_string()]
}

/// `admin:` the operator's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` serving `/metrics` and `/status.json`. Default `127.0.0.1:9090`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// Default admin listen address: `127.0.0.1:9090` (loopback only).
pub fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_string()
}

/// `poll:` how often and how patiently edges are polled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Time between two polls of every edge. Default `1s`.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// Bound on one poll request, connect to last byte. Must not exceed
    /// `interval`. Default `800ms`.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive good polls before a down edge is up. Default 1.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed polls before an up edge is down. Default 2.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Largest status body read, in bytes; a longer one is a poll error.
    /// Default 1048576 (1 MiB; 50 Icecast mounts take about 60 KB).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            timeout: default_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            max_body: default_max_body(),
        }
    }
}

/// Default poll interval: 1 s.
pub fn default_interval() -> Duration {
    Duration::from_secs(1)
}
/// Default poll timeout: 800 ms.
pub fn default_timeout() -> Duration {
    Duration::from_millis(800)
}
/// Default rise: 1 good poll.
pub fn default_rise() -> u32 {
    1
}
/// Default fall: 2 failed polls.
pub fn default_fall() -> u32 {
    2
}
/// Default status body cap: 1 MiB.
pub fn default_max_body() -> usize {
    1 << 20
}

/// `balance:` the selection policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// `least_loaded` (default), `round_robin` or `random`.
    #[serde(default)]
    pub policy: PolicyName,
}

/// The selection policies; see [`crate::balance`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Lowest (listeners + assigned since the last poll) / capacity / weight.
    #[default]
    LeastLoaded,
    /// Each eligible edge in turn (weight ignored).
    RoundRobin,
    /// A random eligible edge, with probability proportional to weight.
    Random,
}

/// `server:` process settings passed to pingora.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the front door. Default 1.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// On SIGTERM, how long the listeners stay open before shutdown starts
    /// (pingora's `grace_period_seconds`, whole seconds). Default `1s`;
    /// pingora's own default of 300 s only suits long downloads.
    #[serde(default = "default_grace_period", with = "duration")]
    pub grace_period: Duration,
    /// Bound on the graceful shutdown after the grace period
    /// (pingora's `graceful_shutdown_timeout_seconds`). Default `5s`.
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            grace_period: default_grace_period(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// Default worker threads: 1.
pub fn default_threads() -> usize {
    1
}
/// Default SIGTERM grace period: 1 s.
pub fn default_grace_period() -> Duration {
    Duration::from_secs(1)
}
/// Default graceful shutdown bound: 5 s.
pub fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The kinds of edge castgate can poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Icecast 2.4: `GET {url}/status-json.xsl`.
    Icecast,
}

impl EdgeKind {
    /// The name used in the config file and in /status.json.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Icecast => "icecast",
        }
    }
}

/// One entry of `edges:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Unique name, `[a-z0-9_-]+`; used in metrics labels and /status.json.
    pub name: String,
    /// What the edge is; decides the probe.
    pub kind: EdgeKind,
    /// Base URL castgate polls, `http://host:port` (a path prefix is kept).
    pub url: String,
    /// Base URL listeners are sent to. Default: `url`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Listener cap for the whole edge (all mounts). Default: none; load is
    /// then counted against 1000.
    #[serde(default)]
    pub max_listeners: Option<u64>,
    /// Capacity share, > 0. Default 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Icecast admin credentials: when set, `{url}/admin/stats` is polled
    /// too, for per-mount `max_listeners`.
    #[serde(default)]
    pub admin: Option<EdgeAdmin>,
}

/// Default edge weight: 1.
pub fn default_weight() -> f64 {
    1.0
}

/// `edges[].admin:` Icecast admin credentials (HTTP basic auth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAdmin {
    /// Admin user, usually `admin`.
    pub user: String,
    /// Admin password.
    pub password: String,
}

/// One entry of `streams:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Served as `/{name}.m3u`, `.pls`, `.xspf` and `/{name}` (302). `[a-z0-9_-]+`.
    pub name: String,
    /// The Icecast mount, starting with `/`.
    pub mount: String,
    /// Mount used where `mount` is live on no eligible edge. Default: none.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Edges that carry the stream. Default: every icecast edge.
    #[serde(default)]
    pub edges: Option<Vec<String>>,
    /// Title written into playlists. Default: the stream's name.
    #[serde(default)]
    pub title: Option<String>,
}
