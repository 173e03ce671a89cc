//! `/status.json`: the farm as the poller sees it. Replaces the old
//! script's `stat.txt` (its single number is `total_listeners`).

use crate::balance::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The document served at `/status.json`.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// RFC 3339 time of this answer.
    pub now: String,
    /// Snapshot generation: grows by one per poll round.
    pub generation: u64,
    /// Seconds since the snapshot was published.
    pub snapshot_age_seconds: f64,
    /// Listeners over every up edge.
    pub total_listeners: u64,
    /// Every edge, in config order.
    pub edges: Vec<EdgeStatus<'a>>,
    /// Every stream, in config order.
    pub streams: Vec<StreamStatus<'a>>,
}

/// One edge in `/status.json`.
#[derive(Debug, Serialize)]
pub struct EdgeStatus<'a> {
    /// Configured name.
    pub name: &'a str,
    /// `icecast`.
    pub kind: &'static str,
    /// Where castgate polls.
    pub url: &'a str,
    /// Where listeners are sent.
    pub public_url: &'a str,
    /// Up after `rise` good polls, down after `fall` failed ones.
    pub up: bool,
    /// Operator state: `active`, `draining` or `disabled`.
    pub admin_state: &'static str,
    /// The last poll's error, or null.
    pub last_error: Option<&'a str>,
    /// A failure of the optional admin/stats poll, or null.
    pub admin_error: Option<&'a str>,
    /// Seconds since the last poll finished, or null before the first.
    pub last_poll_age_seconds: Option<f64>,
    /// Duration of the last poll, seconds.
    pub last_poll_duration_seconds: Option<f64>,
    /// Listeners on every mount at the last good poll.
    pub listeners: u64,
    /// Listeners sent here since the last poll.
    pub assigned_since_poll: u64,
    /// Proxied streams castgate relays from this edge now (what an
    /// evacuation still has to move).
    pub relayed: usize,
    /// Configured cap, or null.
    pub max_listeners: Option<u64>,
    /// Configured weight.
    pub weight: f64,
    /// (listeners + assigned) / capacity / weight.
    pub load: f64,
    /// Live mounts (Icecast) or HLS playlist paths at the last good poll:
    /// key → listeners (RTMP viewers for nginx-rtmp) and mount cap.
    pub mounts: BTreeMap<&'a str, MountStatus>,
    /// HLS sessions on this edge, every stream.
    pub sessions: u64,
    /// Estimated output, bits per second.
    pub bandwidth_bps: u64,
    /// Configured output cap, bits per second, or null.
    pub max_bandwidth_bps: Option<u64>,
    /// Per HLS playlist path: why that stream is not live here.
    pub stream_errors: BTreeMap<&'a str, &'a str>,
}

/// One mount of an edge.
#[derive(Debug, Serialize)]
pub struct MountStatus {
    /// Listeners now.
    pub listeners: u64,
    /// The mount's own limit (from admin/stats), or null.
    pub max_listeners: Option<u64>,
}

/// One stream in `/status.json`.
#[derive(Debug, Serialize)]
pub struct StreamStatus<'a> {
    /// Configured name.
    pub name: &'a str,
    /// Mount.
    pub mount: &'a str,
    /// Fallback mount, or null.
    pub fallback: Option<&'a str>,
    /// Listeners of mount and fallback over the stream's up edges.
    pub listeners: u64,
    /// The stream's edges.
    pub edges: Vec<&'a str>,
    /// The stream's edges that are up with `mount` live.
    pub live_edges: Vec<&'a str>,
    /// `icecast` or `hls`.
    pub kind: &'static str,
    /// `redirect`, `rewrite` or `proxy`.
    pub mode: &'static str,
    /// Per edge of the stream: live, viewers/listeners, sessions.
    pub per_edge: Vec<StreamEdge<'a>>,
}

/// One edge of one stream in `/status.json`.
#[derive(Debug, Serialize)]
pub struct StreamEdge<'a> {
    /// Edge name.
    pub edge: &'a str,
    /// Up, with the stream live on it.
    pub live: bool,
    /// Listeners (Icecast mount and fallback) or RTMP viewers.
    pub viewers: u64,
    /// HLS sessions of this stream on this edge.
    pub sessions: u64,
}

/// Build the document from a snapshot and the streams being relayed.
pub fn status<'a>(snap: &'a Snapshot, carrying: &crate::front::relay::Carrying) -> Status<'a> {
    let now = SystemTime::now();
    let age = |t: SystemTime| {
        now.duration_since(t)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let config = &snap.config;
    let edges = snap
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let c = &config.edges[e.index];
            let mounts = e
                .health
                .status
                .iter()
                .flat_map(|s| s.mounts.iter())
                .map(|m| {
                    (
                        m.mount.as_str(),
                        MountStatus {
                            listeners: m.listeners,
                            max_listeners: m.max_listeners,
                        },
                    )
                })
                .collect();
            EdgeStatus {
                name: &c.name,
                kind: c.kind.as_str(),
                url: c.url.as_str(),
                public_url: c.public_url.as_str(),
                up: e.health.up,
                admin_state: c.admin_state.as_str(),
                last_error: e.health.last_error.as_deref(),
                admin_error: e.health.admin_error.as_deref(),
                last_poll_age_seconds: e.health.last_poll.map(age),
                last_poll_duration_seconds: e.health.last_poll_duration.map(|d| d.as_secs_f64()),
                listeners: e.listeners,
                assigned_since_poll: e.assigned(),
                relayed: carrying.count(&c.name),
                max_listeners: c.max_listeners,
                weight: c.weight,
                load: snap.load(i),
                mounts,
                sessions: e.sessions,
                bandwidth_bps: e.est_bps,
                max_bandwidth_bps: c.max_bandwidth_bps,
                stream_errors: e
                    .health
                    .stream_errors
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            }
        })
        .collect();
    let streams = snap
        .streams
        .iter()
        .map(|s| {
            let c = &config.streams[s.index];
            let live_edges = c
                .edges
                .iter()
                .filter(|&&e| {
                    let h = &snap.edges[e].health;
                    h.up && h
                        .status
                        .as_ref()
                        .is_some_and(|st| st.mount(&c.mount).is_some())
                })
                .map(|&e| config.edges[e].name.as_str())
                .collect();
            let per_edge = c
                .edges
                .iter()
                .map(|&e| {
                    let h = &snap.edges[e].health;
                    let on = |m: &str| {
                        h.status
                            .as_ref()
                            .and_then(|st| st.mount(m))
                            .map_or(0, |m| m.listeners)
                    };
                    StreamEdge {
                        edge: config.edges[e].name.as_str(),
                        live: h.up
                            && h.status
                                .as_ref()
                                .is_some_and(|st| st.mount(&c.mount).is_some()),
                        viewers: on(&c.mount) + c.fallback.as_deref().map_or(0, on),
                        sessions: snap.sessions.get(&(s.index, e)).copied().unwrap_or(0),
                    }
                })
                .collect();
            StreamStatus {
                kind: match c.kind {
                    crate::config::StreamKind::Icecast => "icecast",
                    crate::config::StreamKind::Hls => "hls",
                },
                mode: match c.mode {
                    crate::config::StreamMode::Redirect => "redirect",
                    crate::config::StreamMode::Rewrite => "rewrite",
                    crate::config::StreamMode::Proxy => "proxy",
                },
                per_edge,
                name: &c.name,
                mount: &c.mount,
                fallback: c.fallback.as_deref(),
                listeners: s.listeners,
                edges: c
                    .edges
                    .iter()
                    .map(|&e| config.edges[e].name.as_str())
                    .collect(),
                live_edges,
            }
        })
        .collect();
    Status {
        now: humantime::format_rfc3339_millis(now).to_string(),
        generation: snap.generation,
        snapshot_age_seconds: age(snap.published),
        total_listeners: snap.total_listeners(),
        edges,
        streams,
    }
}
