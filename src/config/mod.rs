//! Configuration: the YAML file's [schema], its [load]ing with every error
//! reported at once, and the validated [`Config`] the rest of castgate uses.
//!
//! See `conf/castgate.yaml` for every key with its default.

pub mod load;
pub mod schema;
pub mod validate;

pub use load::{load_file, load_str, load_str_with_file};
pub use schema::{CorsConfig, EdgeKind, PolicyName, StreamKind, StreamMode};

use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// One problem found in a config file.
///
/// `place` names where: a key path such as `edges[2].url`, or
/// `line 4 column 7` for a YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is: `edges[2].url`, `poll.timeout`, `line 3 column 5`.
    pub place: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Every problem found in a config file, in file order; never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A validated configuration. Built only by [`load_str`] / [`load_file`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Front-door listeners.
    pub listen: Vec<Listener>,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// Poll settings.
    pub poll: PollSettings,
    /// Extra trust for polling HTTPS edges.
    pub poll_tls: PollTls,
    /// Selection policy.
    pub policy: PolicyName,
    /// Process settings.
    pub server: schema::ServerConfig,
    /// Session tokens.
    pub sticky: StickySettings,
    /// Cross-origin access.
    pub cors: CorsConfig,
    /// The admin API bearer token, read from `admin.token_file`; `None`
    /// disables mutating calls.
    pub admin_token: Option<String>,
    /// Mutating API calls allowed on a non-loopback admin listener.
    pub admin_allow_remote: bool,
    /// Config file watching.
    pub reload: schema::ReloadConfig,
    /// Whether each front-door request is logged.
    pub access_log: bool,
    /// Resuming relayed streams on another edge.
    pub failover: schema::FailoverConfig,
    /// What playlists list.
    pub playlist: schema::PlaylistConfig,
    /// Edges, in file order.
    pub edges: Vec<Edge>,
    /// Streams, in file order.
    pub streams: Vec<Stream>,
}

/// A validated front-door listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Certificate and key, for HTTPS.
    pub tls: Option<schema::TlsFiles>,
}

/// Validated `poll:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// Time between two polls of every edge.
    pub interval: Duration,
    /// Bound on one poll request; `timeout <= interval`.
    pub timeout: Duration,
    /// Good polls before up (>= 1).
    pub rise: u32,
    /// Failed polls before down (>= 1).
    pub fall: u32,
    /// Largest status body read, bytes.
    pub max_body: usize,
}

/// Extra poll settings that are not `Copy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollTls {
    /// PEM of an extra CA trusted for `https://` edges.
    pub ca_pem: Option<Vec<u8>>,
}

/// Validated `sticky:` settings.
#[derive(Clone)]
pub struct StickySettings {
    /// The secrets read from `secret_file`, one a line: the first signs,
    /// all verify. Empty means "make one at start".
    pub secrets: Vec<Vec<u8>>,
    /// How long a token is honoured.
    pub ttl: Duration,
}

impl std::fmt::Debug for StickySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("StickySettings")
            .field("secrets", &self.secrets.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A validated edge.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Unique name, `[a-z0-9_-]+`.
    pub name: String,
    /// What the edge is.
    pub kind: EdgeKind,
    /// Where castgate polls; http or https, no query.
    pub url: Url,
    /// Where listeners are sent; no trailing slash once joined.
    pub public_url: Url,
    /// Listener cap for the whole edge.
    pub max_listeners: Option<u64>,
    /// Capacity share, finite and > 0.
    pub weight: f64,
    /// Output bandwidth cap, bits per second.
    pub max_bandwidth_bps: Option<u64>,
    /// nginx worker processes answering `/stat` (nginx_rtmp), >= 1.
    pub workers: u32,
    /// Operator state set through the admin API (always `Active` from a
    /// file).
    pub admin_state: AdminState,
    /// Icecast admin credentials, for `/admin/stats`.
    pub admin: Option<schema::EdgeAdmin>,
}

/// What an operator allows an edge to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes new listeners.
    #[default]
    Active,
    /// No new listeners; sessions and listeners already there stay.
    Draining,
    /// Out of rotation: no new listeners, and HLS sessions move away.
    Disabled,
}

impl AdminState {
    /// `active`, `draining` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// A validated stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Unique name, `[a-z0-9_-]+`.
    pub name: String,
    /// Icecast mount or HLS playlist path.
    pub kind: StreamKind,
    /// How listeners are handed over.
    pub mode: StreamMode,
    /// What an edge must carry live: the Icecast mount (`/air`) or the HLS
    /// playlist path (`/hls/stream.m3u8`); always starts with `/`.
    pub mount: String,
    /// Fallback mount path, starting with `/` (Icecast streams).
    pub fallback: Option<String>,
    /// RTMP stream name that makes an HLS stream live on nginx_rtmp edges.
    pub rtmp_name: String,
    /// Estimated bitrate per listener, bits per second.
    pub bitrate_bps: u64,
    /// Indexes into [`Config::edges`] of the edges carrying this stream.
    pub edges: Vec<usize>,
    /// Title written into playlists.
    pub title: String,
    /// HLS Content Steering: the steering manifest's `TTL`, whole
    /// seconds; `None` when off.
    pub steering_ttl: Option<std::time::Duration>,
}
