//! The configuration file's shape (YAML), with every default named.
//!
//! These types mirror the file one to one and are only checked for shape
//! (unknown keys, types, durations). Cross-field rules (unique names, known
//! edges, URL schemes) live in [`super::validate`].

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Deserialize a humantime duration such as `1s`, `800ms` or `2m 30s`.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer};

    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

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
/// `server`, `sticky`, `cors`, `reload`, `log`, `failover`, `playlist`,
/// `edges`, `streams`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Front-door listeners: `"ip:port"` (plain HTTP) or
    /// `{ addr: "ip:port", tls: { cert, key } }` (HTTPS, HTTP/2 offered by
    /// ALPN). Default: `["0.0.0.0:8080"]`.
    #[serde(default = "default_listen")]
    pub listen: Vec<ListenEntry>,
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
    /// Signed session tokens for HLS stickiness.
    #[serde(default)]
    pub sticky: StickyConfig,
    /// Cross-origin access for web players.
    #[serde(default)]
    pub cors: CorsConfig,
    /// Config reloading.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// How a relayed stream resumes on another edge.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// What `.m3u`, `.pls` and `.xspf` playlists list.
    #[serde(default)]
    pub playlist: PlaylistConfig,
    /// The edges of the farm.
    #[serde(default)]
    pub edges: Vec<EdgeConfig>,
    /// The streams served by the front door.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
}

/// Default front-door listen addresses: `0.0.0.0:8080`.
pub fn default_listen() -> Vec<ListenEntry> {
    vec![ListenEntry::Plain("0.0.0.0:8080".to_string())]
}

/// One entry of `listen:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ListenEntry {
    /// `"ip:port"`: plain HTTP.
    Plain(String),
    /// `{ addr, tls }`: HTTPS.
    Tls(TlsListen),
}

/// An HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListen {
    /// `ip:port`.
    pub addr: String,
    /// Certificate and key files.
    pub tls: TlsFiles,
}

/// PEM files of a TLS listener, re-read on every reload (SIGHUP, file
/// watch, `POST /api/reload`) so a renewed certificate applies without a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: String,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// `admin:` the operator's listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` serving `/`, `/metrics`, `/status.json` and `/api`.
    /// Default `127.0.0.1:9090`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// File holding the bearer token that mutating `/api` calls must carry
    /// (`Authorization: Bearer <token>`; surrounding whitespace ignored).
    /// Default: none, and mutating calls are disabled.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Allow mutating `/api` calls when `listen` is not a loopback address
    /// (the admin listener is plain HTTP: the token crosses the network in
    /// clear). Default false: such calls are refused with 403.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_file: None,
            allow_remote: false,
        }
    }
}

/// `reload:` how castgate notices a changed config file (SIGHUP always
/// reloads).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the file and reload when it changes. Default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// How long the file must stay unchanged before a watched change is
    /// read (editors write in several steps). Default `300ms`.
    #[serde(default = "default_debounce", with = "duration")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: default_debounce(),
        }
    }
}

/// `failover:` how a proxied stream whose edge fails is resumed on another
/// edge without closing the listener's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// An edge that sends no byte of a relayed stream for this long has
    /// failed it. At least 100ms. Default `2s`.
    #[serde(default = "default_stall", with = "duration")]
    pub stall: Duration,
    /// How long castgate looks for another edge carrying the stream before
    /// it ends the listener's response. Default `10s`; `0s` turns resuming
    /// off (the response ends with its edge, as a plain proxy's does).
    #[serde(default = "default_give_up", with = "duration")]
    pub give_up: Duration,
    /// Relayed streams moved off an edge per second by `POST
    /// /api/edges/{name}/evacuate`, at least 1. Default 50.
    #[serde(default = "default_evacuate_rate")]
    pub evacuate_rate: u32,
}

/// Default `failover.evacuate_rate`: 50 streams a second.
pub fn default_evacuate_rate() -> u32 {
    50
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            stall: default_stall(),
            give_up: default_give_up(),
            evacuate_rate: default_evacuate_rate(),
        }
    }
}

/// `playlist:` what Icecast playlists (`.m3u`, `.pls`, `.xspf`) list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlaylistConfig {
    /// Eligible edges listed after the chosen one, least loaded first, for
    /// players that go to the next entry when a stream fails. At most 16.
    /// Default 2; 0 lists the chosen edge alone.
    #[serde(default = "default_backups")]
    pub backups: usize,
    /// `Host` values (name, or `name:port`) by which a proxy-mode playlist
    /// may name castgate itself; a request with another `Host` gets a 400.
    /// Default: none, and then only IP literals and `localhost`.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Default for PlaylistConfig {
    fn default() -> Self {
        Self {
            backups: default_backups(),
            hosts: Vec::new(),
        }
    }
}

/// Default `playlist.backups`: 2.
pub fn default_backups() -> usize {
    2
}

/// Default `failover.stall`: 2 s.
pub fn default_stall() -> Duration {
    Duration::from_secs(2)
}

/// Default `failover.give_up`: 10 s.
pub fn default_give_up() -> Duration {
    Duration::from_secs(10)
}

/// `log:` what castgate logs (the format is a command-line flag).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// One line per front-door request (target `castgate::access`): client,
    /// method, path, stream, format, edge chosen, status, microseconds.
    /// Default true.
    #[serde(default = "default_true")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { access: true }
    }
}

fn default_true() -> bool {
    true
}

/// Default watch debounce: 300 ms.
pub fn default_debounce() -> Duration {
    Duration::from_millis(300)
}

/// Default admin listen address: `127.0.0.1:9090` (loopback only).
pub fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_string()
}

/// `poll:` how often and how patiently edges are polled.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Extra CA certificate (PEM) trusted when polling `https://` edges, on
    /// top of the system's roots. Default: none.
    #[serde(default)]
    pub ca_file: Option<String>,
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
            ca_file: None,
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// `least_loaded` (default), `round_robin` or `random`.
    #[serde(default)]
    pub policy: PolicyName,
}

/// The selection policies; see [`crate::balance`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the front door. Default 1.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Whether idle worker threads take tasks from busy ones (pingora's
    /// `work_stealing`). Default false: each connection stays on the thread
    /// that accepted it, which costs less per request (measured in README
    /// "Performance"); turn it on when a few connections carry most of the
    /// work, e.g. proxy mode with many threads.
    #[serde(default)]
    pub work_stealing: bool,
    /// How long an idle keep-alive connection to the front door is kept
    /// open for its next request (whole seconds, 1 s to 1 h). Default `60s`;
    /// pingora's own default keeps idle connections forever. Live for
    /// HTTP/1; an HTTP/2 connection with no request in flight is closed
    /// after the value castgate started with (pingora reads it once).
    #[serde(default = "default_keepalive_timeout", with = "duration")]
    pub keepalive_timeout: Duration,
    /// Bound on receiving a whole request head (whole seconds, 1 s to 1 h),
    /// counted from the connection's opening for its first request and from
    /// a request's first byte on a kept-alive connection; a client still
    /// sending its head then (slowloris) is disconnected. Default `10s`
    /// (HAProxy's usual `timeout http-request`); pingora alone bounds each
    /// read by 60 s but not the whole head. On an HTTP/2 connection it
    /// bounds the client's connection preface instead. Live.
    #[serde(default = "default_request_header_timeout", with = "duration")]
    pub request_header_timeout: Duration,
    /// Bound on one write to a client (1 s to 1 h): a listener that reads
    /// nothing for this long after its send buffer filled is disconnected.
    /// Default `30s`; pingora's own default waits forever. Live.
    #[serde(default = "default_write_timeout", with = "duration")]
    pub write_timeout: Duration,
    /// Most front-door connections open at once (1 to 1,000,000); one more
    /// gets a `503` and is closed at once. Default 10,000. castgate raises
    /// its open-file limit to the hard limit at start and warns when this
    /// does not fit in it. Live.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `SO_SNDBUF` of every front-door connection, bytes (Linux doubles it
    /// for its own bookkeeping). Unset (the default) leaves the kernel's
    /// autotuning, which lets one stalled listener queue up to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB) before `write_timeout` starts
    /// counting. A fixed buffer bounds that, and also each connection's
    /// speed to about `send_buffer / round-trip time`: 256 KiB suits audio
    /// and video streams; HLS segments over long paths want more. Set on
    /// the listening sockets: not live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_buffer: Option<usize>,
    /// On SIGTERM, how long the listeners stay open before shutdown starts
    /// (pingora's `grace_period_seconds`, whole seconds). Default `1s`;
    /// pingora's own default of 300 s only suits long downloads.
    #[serde(default = "default_grace_period", with = "duration")]
    pub grace_period: Duration,
    /// Bound on the graceful shutdown after the grace period
    /// (pingora's `graceful_shutdown_timeout_seconds`). Default `5s`.
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
    /// Unix socket through which a new process (`castgate run --upgrade`)
    /// takes over the listening sockets when the old one gets SIGQUIT.
    /// Two castgates on one machine need two paths. Default
    /// `/run/castgate/upgrade.sock` when `/run/castgate` exists, else
    /// `/tmp/castgate-upgrade.sock`.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    /// pingora's pid file. Default `/tmp/castgate.pid`.
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
}

/// Default upgrade socket path.
pub fn default_upgrade_sock() -> String {
    if std::path::Path::new("/run/castgate").is_dir() {
        "/run/castgate/upgrade.sock".into()
    } else {
        "/tmp/castgate-upgrade.sock".into()
    }
}

/// Default pid file path.
pub fn default_pid_file() -> String {
    "/tmp/castgate.pid".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            work_stealing: false,
            keepalive_timeout: default_keepalive_timeout(),
            request_header_timeout: default_request_header_timeout(),
            write_timeout: default_write_timeout(),
            max_connections: default_max_connections(),
            send_buffer: None,
            grace_period: default_grace_period(),
            shutdown_timeout: default_shutdown_timeout(),
            upgrade_sock: default_upgrade_sock(),
            pid_file: default_pid_file(),
        }
    }
}

/// Default worker threads: 1.
pub fn default_threads() -> usize {
    1
}
/// Default idle keep-alive timeout of front-door connections: 60 s.
pub fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Default bound on receiving a request head: 10 s.
pub fn default_request_header_timeout() -> Duration {
    Duration::from_secs(10)
}
/// Default bound on one write to a client: 30 s.
pub fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
/// Default limit on open front-door connections: 10,000.
pub fn default_max_connections() -> usize {
    10_000
}
/// Default SIGTERM grace period: 1 s.
pub fn default_grace_period() -> Duration {
    Duration::from_secs(1)
}
/// Default graceful shutdown bound: 5 s.
pub fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `sticky:` signed session tokens (HMAC-SHA256 over edge, expiry and a
/// session id). Instances sharing `secret_file` honour each other's tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// File holding the secret (at least 16 bytes; surrounding whitespace
    /// ignored). Default: none, and a random secret is made at start, so
    /// tokens survive neither a restart nor another instance.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// How long a token is honoured. Default `1h`.
    #[serde(default = "default_ttl", with = "duration")]
    pub ttl: Duration,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            ttl: default_ttl(),
        }
    }
}

/// Default session token lifetime: 1 hour.
pub fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// `cors:` which web origins may read front-door answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to read answers (`https://radio.example`), or `*`.
    /// Default `["*"]`.
    #[serde(default = "default_allow_origins")]
    pub allow_origins: Vec<String>,
    /// Origins also allowed to send credentials (cookies): the answer then
    /// names the origin and sets `Access-Control-Allow-Credentials: true`.
    /// Default: none.
    #[serde(default)]
    pub credentials_origins: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: default_allow_origins(),
            credentials_origins: Vec::new(),
        }
    }
}

/// Default CORS origins: any (`*`).
pub fn default_allow_origins() -> Vec<String> {
    vec!["*".to_string()]
}

/// The kinds of edge castgate can poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Icecast 2.4: `GET {url}/status-json.xsl`.
    Icecast,
    /// nginx with nginx-rtmp: `GET {url}/stat` (`rtmp_stat all` XML); its
    /// HLS output is served from the same base URL.
    NginxRtmp,
    /// A plain web server serving HLS: each stream's media playlist is
    /// fetched and must keep advancing.
    Hls,
}

impl EdgeKind {
    /// The name used in the config file and in /status.json.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Icecast => "icecast",
            EdgeKind::NginxRtmp => "nginx_rtmp",
            EdgeKind::Hls => "hls",
        }
    }

    /// Whether this kind of edge serves HLS streams (else Icecast mounts).
    pub fn serves_hls(self) -> bool {
        matches!(self, EdgeKind::NginxRtmp | EdgeKind::Hls)
    }
}

/// One entry of `edges:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Output bandwidth cap, e.g. `100Mbit`, `1Gbit`, `500kbit` (bits per
    /// second). When set, load is the larger of the listener share and the
    /// estimated output bandwidth share. Default: none.
    #[serde(default)]
    pub max_bandwidth: Option<String>,
    /// `dns`: the host of `url` is a DNS name (a Kubernetes headless
    /// service, an autoscaling group) resolved every poll interval; each
    /// address becomes an edge named `{name}-{address}` (dots and colons as
    /// dashes) with the address in `url` (and in `public_url` when that
    /// names the same host). Edges come and go as the record changes.
    /// Default: none.
    #[serde(default)]
    pub discover: Option<Discover>,
    /// nginx_rtmp edges: nginx `worker_processes`. Each worker answers
    /// `/stat` with its own connections only; with more than one, castgate
    /// asks until every worker answered and merges. Default 1.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Icecast admin credentials: when set, `{url}/admin/stats` is polled
    /// too, for per-mount `max_listeners`.
    #[serde(default)]
    pub admin: Option<EdgeAdmin>,
}

/// How an edge entry finds its edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discover {
    /// Every address the name resolves to is an edge.
    Dns,
}

/// Default nginx worker count: 1.
pub fn default_workers() -> u32 {
    1
}

/// Default edge weight: 1.
pub fn default_weight() -> f64 {
    1.0
}

/// `edges[].admin:` Icecast admin credentials (HTTP basic auth).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAdmin {
    /// Admin user, usually `admin`.
    pub user: String,
    /// Admin password.
    pub password: String,
}

/// What a stream is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// An Icecast mount: one long HTTP body per listener.
    #[default]
    Icecast,
    /// An HLS playlist: a player fetches the playlist again and again, and
    /// segments after it.
    Hls,
}

/// How the front door hands a listener to the chosen edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// HLS: castgate fetches the edge's playlist and answers it with every
    /// URI made absolute (segments on the edge; playlists back through
    /// castgate, pinned to the edge by a session token). HLS default.
    Rewrite,
    /// 302 to the edge. Icecast default (with playlists pointing at the edge).
    Redirect,
    /// castgate carries playlists, segments or the audio stream itself.
    Proxy,
}

/// One entry of `streams:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Icecast: served as `/{name}.m3u`, `.pls`, `.xspf` and `/{name}`.
    /// HLS: served as `/{name}.m3u8` (and `/{name}/...`). `[a-z0-9_-]+`.
    pub name: String,
    /// `icecast` (default) or `hls`.
    #[serde(default)]
    pub kind: StreamKind,
    /// `rewrite` (HLS default), `redirect` (Icecast default) or `proxy`.
    #[serde(default)]
    pub mode: Option<StreamMode>,
    /// Icecast streams: the mount, starting with `/`.
    #[serde(default)]
    pub mount: Option<String>,
    /// HLS streams: the playlist's path on every edge, e.g.
    /// `/hls/stream.m3u8`.
    #[serde(default)]
    pub path: Option<String>,
    /// HLS streams on nginx_rtmp edges: the RTMP stream name whose
    /// publishing makes the stream live. Default: the playlist's file stem
    /// (`/hls/stream.m3u8` → `stream`).
    #[serde(default)]
    pub rtmp_name: Option<String>,
    /// Bitrate used to estimate an edge's output for `max_bandwidth`, e.g.
    /// `128kbit`, `3Mbit`. Default: 128kbit for Icecast, 2Mbit for HLS.
    #[serde(default)]
    pub bitrate: Option<String>,
    /// Mount used where `mount` is live on no eligible edge. Default: none.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Edges that carry the stream. Default: every edge of a matching kind
    /// (icecast for Icecast streams; nginx_rtmp and hls for HLS streams).
    #[serde(default)]
    pub edges: Option<Vec<String>>,
    /// Title written into playlists. Default: the stream's name.
    #[serde(default)]
    pub title: Option<String>,
    /// HLS streams in rewrite mode: HLS Content Steering (RFC 8216bis
    /// §4.4.6.6 and §7). `/{name}.m3u8` answers a multivariant playlist
    /// with one pathway per eligible edge and a steering manifest that
    /// puts the session's edge first. Default: off (a `302` to the
    /// session's playlist).
    #[serde(default)]
    pub steering: Option<SteeringConfig>,
}

/// `streams[].steering:` HLS Content Steering for a rewrite-mode stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// The steering manifest's `TTL`: how long a player waits before it
    /// asks again, whole seconds, at least 1s. Default `10s`.
    #[serde(default = "default_steering_ttl", with = "duration")]
    pub ttl: Duration,
}

/// Default `streams[].steering.ttl`: 10 s.
pub fn default_steering_ttl() -> Duration {
    Duration::from_secs(10)
}
