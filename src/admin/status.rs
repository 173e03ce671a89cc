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
    /// Configured cap, or null.
    pub max_listeners: Option<u64>,
    /// Configured weight.
    pub weight: f64,
    /// (listeners + assigned) / capacity / weight.
    pub load: f64,
    /// Live mounts at the last good poll: mount → listeners and mount cap.
    pub mounts: BTreeMap<&'a str, MountStatus>,
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
}

/// Build the document from a snapshot.
pub fn status(snap: &Snapshot) -> Status<'_> {
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
                last_error: e.health.last_error.as_deref(),
                admin_error: e.health.admin_error.as_deref(),
                last_poll_age_seconds: e.health.last_poll.map(age),
                last_poll_duration_seconds: e.health.last_poll_duration.map(|d| d.as_secs_f64()),
                listeners: e.listeners,
                assigned_since_poll: e.assigned(),
                max_listeners: c.max_listeners,
                weight: c.weight,
                load: snap.load(i),
                mounts,
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
            StreamStatus {
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
