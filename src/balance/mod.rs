//! The load table and selection.
//!
//! A [`Snapshot`] is immutable except for one atomic counter per edge
//! (listeners assigned since the last poll). The poller builds a new one
//! after every round and publishes it through one `ArcSwap`; a request loads
//! it once and never blocks.

pub mod policy;
pub mod sessions;
pub mod sticky;

use crate::config::{AdminState, Config};
use crate::poll::status::EdgeStatus;
pub use policy::{Candidate, Policy};
use sessions::SessionCounts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Capacity assumed for an edge without `max_listeners`, in listeners.
pub const DEFAULT_CAPACITY: u64 = 1000;

/// An edge's identity across snapshots and reloads: its name and poll URL.
/// Health, poll history and assignment counts follow an edge by this key,
/// never by its position in a list (a reload or an admin change reorders
/// and removes edges).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    /// The edge's name.
    pub name: String,
    /// Its poll URL, as configured.
    pub url: String,
}

impl EdgeKey {
    /// The key of `edge`.
    pub fn of(edge: &crate::config::Edge) -> EdgeKey {
        EdgeKey {
            name: edge.name.clone(),
            url: edge.url.to_string(),
        }
    }
}

/// What the poller reports of one edge for a new snapshot.
#[derive(Debug, Clone, Default)]
pub struct EdgeReport {
    /// Its health after the latest round.
    pub health: EdgeHealth,
    /// Whether that round's poll succeeded, so its listener count includes
    /// the listeners assigned since the previous one (the assignment
    /// counter restarts from 0); else the count carries over.
    pub refreshed: bool,
}

/// Reports by edge identity; an edge without one is down (not polled yet)
/// and keeps its assignment count.
pub type EdgeReports = HashMap<EdgeKey, EdgeReport>;

/// What the poller knows about one edge.
#[derive(Debug, Clone, Default)]
pub struct EdgeHealth {
    /// Up after `rise` good polls, down after `fall` failed ones; an edge is
    /// down until its first `rise` good polls.
    pub up: bool,
    /// The last poll's error, kept until a poll succeeds.
    pub last_error: Option<String>,
    /// When the last poll (good or bad) finished.
    pub last_poll: Option<SystemTime>,
    /// How long the last poll took.
    pub last_poll_duration: Option<Duration>,
    /// The last good poll's result.
    pub status: Option<EdgeStatus>,
    /// A failure of the optional `/admin/stats` poll (does not take the edge
    /// down: its status-json answer still tells that it serves).
    pub admin_error: Option<String>,
    /// Per HLS playlist path: why that stream is not live on this edge
    /// (not publishing, stale playlist, 404).
    pub stream_errors: std::collections::HashMap<String, String>,
}

/// One edge in a snapshot.
#[derive(Debug)]
pub struct EdgeView {
    /// Index into [`Config::edges`].
    pub index: usize,
    /// The edge's name (shared, cheap to clone on the request path).
    pub name: Arc<str>,
    /// `public_url` without a trailing slash; a mount is appended to it.
    pub public_base: String,
    /// Health and last status.
    pub health: EdgeHealth,
    /// Listeners on every mount at the last good poll (0 when unknown);
    /// for nginx-rtmp edges, RTMP viewers.
    pub listeners: u64,
    /// HLS sessions seen on this edge within the token lifetime.
    pub sessions: u64,
    /// Estimated output, bits per second: the measured figure where the
    /// edge reports one, else listeners and sessions × stream bitrate.
    pub est_bps: u64,
    /// Bitrate charged per assignment against `max_bandwidth` (the largest
    /// bitrate of the streams this edge carries), bits per second.
    assign_bps: u64,
    /// Listeners sent here since the last poll.
    assigned: AtomicU64,
}

impl EdgeView {
    /// Listeners sent here since this snapshot's poll.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }
}

/// One stream in a snapshot.
#[derive(Debug)]
pub struct StreamView {
    /// Index into [`Config::streams`].
    pub index: usize,
    /// The stream's name (shared, cheap to clone on the request path).
    pub name: Arc<str>,
    /// Listeners on the stream's mount (and fallback) over its up edges.
    pub listeners: u64,
}

/// Why no edge could be chosen; rendered into the 503 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEdge {
    /// Every edge of the stream is down (or not polled yet).
    AllDown,
    /// Edges are up but neither the mount nor its fallback is live on any.
    NotLive,
    /// The mount is live, but every edge carrying it is at its cap.
    Full,
}

impl NoEdge {
    /// A short reason for a listener or an operator.
    pub fn reason(self) -> &'static str {
        match self {
            NoEdge::AllDown => "no edge of this stream is up",
            NoEdge::NotLive => "the stream is not live on any edge",
            NoEdge::Full => "every edge carrying the stream is full",
        }
    }
}

/// The chosen edge for one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice<'a> {
    /// Index into [`Snapshot::edges`].
    pub edge: usize,
    /// The mount served: the stream's mount, or its fallback.
    pub mount: &'a str,
    /// Whether `mount` is the fallback.
    pub fallback: bool,
}

/// The immutable view of the farm that requests read.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with each publication.
    pub generation: u64,
    /// When this snapshot was built.
    pub published: SystemTime,
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The selection policy (kept across snapshots for its state).
    pub policy: Arc<dyn Policy>,
    /// Edges, in config order.
    pub edges: Vec<EdgeView>,
    /// Streams, in config order.
    pub streams: Vec<StreamView>,
    /// HLS sessions per (stream index, edge index).
    pub sessions: HashMap<(usize, usize), u64>,
    /// The same counts by name, as the session table gave them (carried
    /// across reloads).
    session_counts: SessionCounts,
    stream_index: HashMap<String, usize>,
}

impl Snapshot {
    /// Build a snapshot from the config and the poller's reports, by edge
    /// identity (an edge without a report is "not polled yet"). `prev` is
    /// the previous snapshot: an edge whose report is not `refreshed` keeps
    /// its assignment count there (found by name), since those listeners
    /// are not counted yet.
    pub fn build(
        config: Arc<Config>,
        policy: Arc<dyn Policy>,
        reports: &EdgeReports,
        generation: u64,
        prev: Option<&Snapshot>,
    ) -> Snapshot {
        let edges: Vec<EdgeView> = config
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let report = reports.get(&EdgeKey::of(e));
                let health = report.map(|r| r.health.clone()).unwrap_or_default();
                let listeners = health.status.as_ref().map_or(0, EdgeStatus::listeners);
                let refreshed = report.is_some_and(|r| r.refreshed);
                let assigned = match prev {
                    Some(prev) if !refreshed => prev
                        .edges
                        .iter()
                        .find(|p| *p.name == *e.name)
                        .map_or(0, EdgeView::assigned),
                    _ => 0,
                };
                EdgeView {
                    index: i,
                    name: Arc::from(e.name.as_str()),
                    public_base: e.public_url.as_str().trim_end_matches('/').to_string(),
                    health,
                    listeners,
                    sessions: 0,
                    est_bps: 0,
                    assign_bps: 0,
                    assigned: AtomicU64::new(assigned),
                }
            })
            .collect();
        let streams = config
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let listeners = s
                    .edges
                    .iter()
                    .filter_map(|&e| {
                        edges[e]
                            .health
                            .status
                            .as_ref()
                            .filter(|_| edges[e].health.up)
                    })
                    .map(|st| {
                        let on = |m: &str| st.mount(m).map_or(0, |m| m.listeners);
                        on(&s.mount) + s.fallback.as_deref().map_or(0, on)
                    })
                    .sum();
                StreamView {
                    index: i,
                    name: Arc::from(s.name.as_str()),
                    listeners,
                }
            })
            .collect();
        let stream_index = config
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let mut snap = Snapshot {
            generation,
            published: SystemTime::now(),
            config,
            policy,
            edges,
            streams,
            sessions: HashMap::new(),
            session_counts: SessionCounts::new(),
            stream_index,
        };
        snap.account();
        snap
    }

    /// The same farm under a new config (a reload or an admin API change):
    /// edges whose name and poll URL are unchanged keep their health,
    /// listener counts, assignments and sessions; new edges start down
    /// until polled.
    pub fn reconfigure(config: Arc<Config>, policy: Arc<dyn Policy>, prev: &Snapshot) -> Snapshot {
        let reports: EdgeReports = prev
            .config
            .edges
            .iter()
            .zip(&prev.edges)
            .map(|(conf, view)| {
                let report = EdgeReport {
                    health: view.health.clone(),
                    refreshed: false,
                };
                (EdgeKey::of(conf), report)
            })
            .collect();
        Snapshot::build(config, policy, &reports, prev.generation + 1, Some(prev))
            .with_sessions(prev.session_counts.clone())
    }

    /// Add HLS session counts per (stream name, edge name), as the
    /// poller's session table reports them; they count in the edges' load.
    pub fn with_sessions(mut self, counts: SessionCounts) -> Snapshot {
        self.sessions = counts
            .iter()
            .filter_map(|((stream, edge), n)| {
                let s = self.stream(stream)?;
                let e = self.edge_named(edge)?;
                Some(((s, e), *n))
            })
            .collect();
        self.session_counts = counts;
        self.account();
        self
    }

    /// Per-edge sessions and estimated output from the streams it carries.
    fn account(&mut self) {
        for e in &mut self.edges {
            e.sessions = 0;
            e.est_bps = 0;
            e.assign_bps = 0;
        }
        for (si, s) in self.config.streams.iter().enumerate() {
            for &ei in &s.edges {
                let e = &mut self.edges[ei];
                let sessions = self.sessions.get(&(si, ei)).copied().unwrap_or(0);
                e.sessions += sessions;
                let on = |m: &str| {
                    e.health
                        .status
                        .as_ref()
                        .and_then(|st| st.mount(m))
                        .map_or(0, |m| m.listeners)
                };
                let people = on(&s.mount) + s.fallback.as_deref().map_or(0, on) + sessions;
                e.est_bps = e
                    .est_bps
                    .saturating_add(people.saturating_mul(s.bitrate_bps));
                e.assign_bps = e.assign_bps.max(s.bitrate_bps);
            }
        }
        for e in &mut self.edges {
            if let Some(measured) = e.health.status.as_ref().and_then(|s| s.bw_out_bps) {
                e.est_bps = e.est_bps.max(measured);
            }
        }
    }

    /// Index of the stream named `name`.
    pub fn stream(&self, name: &str) -> Option<usize> {
        self.stream_index.get(name).copied()
    }

    /// Current load of an edge: (listeners + sessions + assigned) /
    /// capacity / weight, where capacity is `max_listeners` or
    /// [`DEFAULT_CAPACITY`]. With `max_bandwidth`, the larger of that share
    /// and (estimated output + assigned × bitrate) / `max_bandwidth`.
    pub fn load(&self, edge: usize) -> f64 {
        let view = &self.edges[edge];
        let conf = &self.config.edges[view.index];
        let capacity = conf.max_listeners.unwrap_or(DEFAULT_CAPACITY).max(1) as f64;
        let assigned = view.assigned();
        let mut share = (view.listeners + view.sessions + assigned) as f64 / capacity;
        if let Some(max_bps) = conf.max_bandwidth_bps {
            let bps = view.est_bps as f64 + assigned as f64 * view.assign_bps as f64;
            share = share.max(bps / max_bps.max(1) as f64);
        }
        share / conf.weight
    }

    /// Total listeners over every up edge.
    pub fn total_listeners(&self) -> u64 {
        self.edges
            .iter()
            .filter(|e| e.health.up)
            .map(|e| e.listeners)
            .sum()
    }

    /// Choose an edge for one new listener of stream `stream` (an index from
    /// [`Snapshot::stream`]) with the policy, and count the assignment.
    ///
    /// Eligible: up, listed for the stream, the mount live on it, and under
    /// the edge's `max_listeners` and `max_bandwidth` and the mount's own
    /// limit. The fallback mount is tried only when the mount is live on no
    /// eligible edge.
    ///
    /// # Errors
    /// [`NoEdge`] with the reason when no edge is eligible.
    pub fn choose(&self, stream: usize) -> Result<Choice<'_>, NoEdge> {
        self.choose_avoiding(stream, &[])
    }

    /// [`Snapshot::choose`] among the eligible edges not in `avoid` (edge
    /// indices): for a request whose edge just refused it, before a poll
    /// has marked that edge down.
    ///
    /// # Errors
    /// [`NoEdge`] when no other edge is eligible (`AllDown` when only
    /// avoided edges are).
    pub fn choose_avoiding(&self, stream: usize, avoid: &[usize]) -> Result<Choice<'_>, NoEdge> {
        let (candidates, mount, fallback) = self.candidates(stream, avoid)?;
        let picked = candidates[self.policy.pick(&candidates).min(candidates.len() - 1)];
        Ok(self.assign(picked.edge, mount, fallback))
    }

    /// Choose an edge for a session whose edge failed: the same session
    /// always lands on the same edge while the eligible set is unchanged
    /// (rendezvous hashing on the session id), so a player that keeps
    /// asking with its old token is not bounced between edges. Counts the
    /// assignment.
    ///
    /// # Errors
    /// [`NoEdge`] when no edge is eligible.
    pub fn choose_for_session(&self, stream: usize, session: u64) -> Result<Choice<'_>, NoEdge> {
        self.choose_for_session_avoiding(stream, session, &[])
    }

    /// [`Snapshot::choose_for_session`] among the eligible edges not in
    /// `avoid` (edge indices).
    ///
    /// # Errors
    /// [`NoEdge`] when no other edge is eligible.
    pub fn choose_for_session_avoiding(
        &self,
        stream: usize,
        session: u64,
        avoid: &[usize],
    ) -> Result<Choice<'_>, NoEdge> {
        let (candidates, mount, fallback) = self.candidates(stream, avoid)?;
        let score = |c: &Candidate| {
            let name = &self.config.edges[c.edge].name;
            // FNV-1a over the session id and the edge name: stable across
            // processes and versions, unlike std's randomised hasher.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in session.to_le_bytes().iter().chain(name.as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        let picked = candidates
            .iter()
            .max_by_key(|c| score(c))
            .copied()
            .ok_or(NoEdge::Full)?;
        Ok(self.assign(picked.edge, mount, fallback))
    }

    /// Whether some edge could take a new listener of `stream` now (no
    /// assignment is counted).
    ///
    /// # Errors
    /// [`NoEdge`] with the reason when none could.
    pub fn available(&self, stream: usize) -> Result<(), NoEdge> {
        self.candidates(stream, &[]).map(|_| ())
    }

    /// Whether a session already on `edge` may stay there: the edge is up,
    /// listed for the stream and carries its mount live. A full edge keeps
    /// its sessions (they are already counted in its load).
    pub fn session_may_stay(&self, stream: usize, edge: usize) -> bool {
        let conf = &self.config.streams[stream];
        let view = &self.edges[edge];
        conf.edges.contains(&edge)
            && self.config.edges[edge].admin_state != AdminState::Disabled
            && view.health.up
            && view
                .health
                .status
                .as_ref()
                .is_some_and(|s| s.mount(&conf.mount).is_some())
    }

    /// Index of the edge named `name`.
    pub fn edge_named(&self, name: &str) -> Option<usize> {
        self.config.edges.iter().position(|e| e.name == name)
    }

    fn assign<'a>(&'a self, edge: usize, mount: &'a str, fallback: bool) -> Choice<'a> {
        self.edges[edge].assigned.fetch_add(1, Ordering::Relaxed);
        Choice {
            edge,
            mount,
            fallback,
        }
    }

    /// The eligible edges of a stream for its mount, else for its fallback.
    fn candidates(
        &self,
        stream: usize,
        avoid: &[usize],
    ) -> Result<(Vec<Candidate>, &str, bool), NoEdge> {
        let conf = &self.config.streams[stream];
        let mut candidates: Vec<Candidate> = Vec::with_capacity(conf.edges.len());
        let mut any_up = false;
        let mut any_live = false;
        let mounts = std::iter::once((conf.mount.as_str(), false))
            .chain(conf.fallback.as_deref().map(|f| (f, true)));
        for (mount, fallback) in mounts {
            candidates.clear();
            for &e in &conf.edges {
                let view = &self.edges[e];
                if !view.health.up || avoid.contains(&e) {
                    continue;
                }
                any_up = true;
                if self.config.edges[e].admin_state != AdminState::Active {
                    // Draining or disabled: no new listeners.
                    continue;
                }
                let Some(live) = view.health.status.as_ref().and_then(|s| s.mount(mount)) else {
                    continue;
                };
                any_live = true;
                let edge_conf = &self.config.edges[e];
                let pending = view.assigned();
                let edge_full = edge_conf
                    .max_listeners
                    .is_some_and(|max| view.listeners + view.sessions + pending >= max)
                    || edge_conf.max_bandwidth_bps.is_some_and(|max| {
                        view.est_bps
                            .saturating_add(pending.saturating_mul(view.assign_bps))
                            >= max
                    });
                let mount_full = live
                    .max_listeners
                    .is_some_and(|max| live.listeners + pending >= max);
                if edge_full || mount_full {
                    continue;
                }
                candidates.push(Candidate {
                    edge: e,
                    load: self.load(e),
                    weight: edge_conf.weight,
                });
            }
            if !candidates.is_empty() {
                return Ok((candidates, mount, fallback));
            }
        }
        Err(if !any_up {
            NoEdge::AllDown
        } else if !any_live {
            NoEdge::NotLive
        } else {
            NoEdge::Full
        })
    }

    /// Up to `n` eligible edges other than `primary` for the stream, least
    /// loaded first: a playlist's backup entries, for players that go to
    /// the next entry when a stream fails. Nothing is counted as assigned
    /// (a backup is a listener only if the player falls back to it).
    pub fn backups(&self, stream: usize, primary: usize, n: usize) -> Vec<Choice<'_>> {
        if n == 0 {
            return Vec::new();
        }
        let Ok((mut candidates, mount, fallback)) = self.candidates(stream, &[primary]) else {
            return Vec::new();
        };
        candidates.sort_by(|a, b| a.load.total_cmp(&b.load));
        candidates
            .into_iter()
            .take(n)
            .map(|c| Choice {
                edge: c.edge,
                mount,
                fallback,
            })
            .collect()
    }

    /// The pathways of a steered HLS stream, best first: every edge that
    /// may take a new listener of the stream (up, active, live, not full),
    /// least loaded first, with `current` (the session's edge) moved to the
    /// front while it is among them. Empty when none is.
    pub fn steering_order(&self, stream: usize, current: Option<usize>) -> Vec<usize> {
        let Ok((mut candidates, _, _)) = self.candidates(stream, &[]) else {
            return Vec::new();
        };
        candidates.sort_by(|a, b| a.load.total_cmp(&b.load));
        let mut order: Vec<usize> = candidates.iter().map(|c| c.edge).collect();
        if let Some(at) = current.and_then(|c| order.iter().position(|&e| e == c)) {
            let e = order.remove(at);
            order.insert(0, e);
        }
        order
    }

    /// The URL a listener is sent to: the edge's `public_url` + mount.
    pub fn listen_url(&self, choice: &Choice<'_>) -> String {
        let base = &self.edges[choice.edge].public_base;
        let mut url = String::with_capacity(base.len() + choice.mount.len());
        url.push_str(base);
        url.push_str(choice.mount);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::poll::status::MountStatus;

    fn config(extra_edge: &str) -> Arc<Config> {
        let text = format!(
            r#"
listen: ["127.0.0.1:1"]
edges:
  - {{ name: a, kind: icecast, url: "http://a.example:8000/" }}
  - {{ name: b, kind: icecast, url: "http://b.example:8000", public_url: "https://b.example" }}
  {extra_edge}
streams:
  - {{ name: apple, mount: /air, fallback: /nonstop }}
"#
        );
        Arc::new(load_str(&text).unwrap())
    }

    fn up(mounts: &[(&str, u64)]) -> EdgeHealth {
        EdgeHealth {
            up: true,
            status: Some(EdgeStatus {
                mounts: mounts
                    .iter()
                    .map(|(m, n)| MountStatus {
                        mount: m.to_string(),
                        listeners: *n,
                        max_listeners: None,
                    })
                    .collect(),
                lenient: false,
                bw_out_bps: None,
            }),
            ..Default::default()
        }
    }

    /// Reports for `config`'s edges in order (`health[i]` for edge `i`).
    fn reports(config: &Config, health: &[EdgeHealth], refreshed: &[bool]) -> EdgeReports {
        config
            .edges
            .iter()
            .zip(health)
            .zip(refreshed.iter().chain(std::iter::repeat(&true)))
            .map(|((e, h), &refreshed)| {
                let report = EdgeReport {
                    health: h.clone(),
                    refreshed,
                };
                (EdgeKey::of(e), report)
            })
            .collect()
    }

    fn snap(config: Arc<Config>, health: &[EdgeHealth]) -> Snapshot {
        let policy: Arc<dyn Policy> = Arc::from(policy::from_name(config.policy));
        let reports = reports(&config, health, &[]);
        Snapshot::build(config, policy, &reports, 1, None)
    }

    #[test]
    fn picks_least_loaded_and_builds_public_url() {
        let s = snap(config(""), &[up(&[("/air", 10)]), up(&[("/air", 3)])]);
        let c = s.choose(0).unwrap();
        assert_eq!(c.edge, 1);
        assert_eq!(s.listen_url(&c), "https://b.example/air");
    }

    #[test]
    fn assignments_between_polls_spread_a_burst() {
        let s = snap(config(""), &[up(&[("/air", 0)]), up(&[("/air", 0)])]);
        let mut per_edge = [0; 2];
        for _ in 0..100 {
            per_edge[s.choose(0).unwrap().edge] += 1;
        }
        assert!((49..=51).contains(&per_edge[0]), "{per_edge:?}");
    }

    #[test]
    fn weight_and_max_listeners_shape_the_spread() {
        let cfg = config(
            r#"- { name: c, kind: icecast, url: "http://c.example", weight: 3, max_listeners: 1000 }"#,
        );
        let s = snap(
            cfg,
            &[up(&[("/air", 0)]), up(&[("/air", 0)]), up(&[("/air", 0)])],
        );
        let mut per_edge = [0; 3];
        for _ in 0..500 {
            per_edge[s.choose(0).unwrap().edge] += 1;
        }
        // weight 3 takes three shares out of five.
        assert!((298..=302).contains(&per_edge[2]), "{per_edge:?}");

        let cfg =
            config(r#"- { name: c, kind: icecast, url: "http://c.example", max_listeners: 5 }"#);
        let s = snap(
            cfg,
            &[
                up(&[("/air", 100)]),
                up(&[("/air", 100)]),
                up(&[("/air", 3)]),
            ],
        );
        let picks: Vec<usize> = (0..4).map(|_| s.choose(0).unwrap().edge).collect();
        // c holds 3 of 5 (load 0.6) while a and b hold 100 of 1000 (0.1).
        assert!(picks.iter().all(|&e| e != 2), "{picks:?}");
    }

    #[test]
    fn a_full_edge_is_skipped() {
        let cfg =
            config(r#"- { name: c, kind: icecast, url: "http://c.example", max_listeners: 4 }"#);
        let s = snap(
            cfg,
            &[
                EdgeHealth::default(),
                EdgeHealth::default(),
                up(&[("/air", 3)]),
            ],
        );
        assert_eq!(s.choose(0).unwrap().edge, 2);
        assert_eq!(s.choose(0), Err(NoEdge::Full));
    }

    #[test]
    fn fallback_only_when_mount_is_live_nowhere() {
        let s = snap(
            config(""),
            &[up(&[("/nonstop", 0)]), up(&[("/air", 50), ("/nonstop", 0)])],
        );
        let c = s.choose(0).unwrap();
        assert_eq!((c.edge, c.mount, c.fallback), (1, "/air", false));
        let s = snap(config(""), &[up(&[("/nonstop", 0)]), up(&[])]);
        let c = s.choose(0).unwrap();
        assert_eq!((c.edge, c.mount, c.fallback), (0, "/nonstop", true));
    }

    #[test]
    fn no_edge_reasons() {
        let s = snap(config(""), &[EdgeHealth::default(), EdgeHealth::default()]);
        assert_eq!(s.choose(0), Err(NoEdge::AllDown));
        let s = snap(config(""), &[up(&[("/other", 0)]), up(&[])]);
        assert_eq!(s.choose(0), Err(NoEdge::NotLive));
    }

    #[test]
    fn a_failed_session_lands_on_the_same_edge_every_time() {
        let cfg = config(r#"- { name: c, kind: icecast, url: "http://c.example" }"#);
        let s = snap(
            cfg,
            &[up(&[("/air", 0)]), up(&[("/air", 0)]), up(&[("/air", 0)])],
        );
        for session in [1u64, 99, 12345, u64::MAX] {
            let first = s.choose_for_session(0, session).unwrap().edge;
            for _ in 0..10 {
                assert_eq!(s.choose_for_session(0, session).unwrap().edge, first);
            }
        }
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|k| s.choose_for_session(0, k).unwrap().edge)
            .collect();
        assert_eq!(spread.len(), 3, "sessions spread over every edge");
        assert!(s.session_may_stay(0, 1));
    }

    #[test]
    fn max_bandwidth_counts_estimated_output() {
        // a: 10 listeners × 128 kbit/s = 1.28 Mbit/s of 2 Mbit/s: load 0.64.
        let mut cfg = config("").as_ref().clone();
        cfg.edges[0].max_bandwidth_bps = Some(2_000_000);
        cfg.edges[1].max_listeners = Some(100);
        let s = snap(Arc::new(cfg), &[up(&[("/air", 10)]), up(&[("/air", 100)])]);
        assert_eq!(s.edges[0].est_bps, 1_280_000);
        assert!((s.load(0) - 0.64).abs() < 1e-9, "{}", s.load(0));
        // b is full; a takes listeners while 1.28 M + n × 128 k stays under
        // 2 M: six more (the sixth brings it to 2.048 M), then none.
        let picks: Vec<usize> = (0..6).map(|_| s.choose(0).unwrap().edge).collect();
        assert_eq!(picks, vec![0; 6]);
        assert_eq!(s.choose(0), Err(NoEdge::Full));
    }

    #[test]
    fn sessions_count_in_the_load() {
        let s = snap(config(""), &[up(&[("/air", 0)]), up(&[("/air", 0)])]).with_sessions(
            [((Arc::from("apple"), Arc::from("a")), 30)]
                .into_iter()
                .collect(),
        );
        assert_eq!(s.edges[0].sessions, 30);
        assert!((s.load(0) - 0.03).abs() < 1e-9);
        assert_eq!(s.choose(0).unwrap().edge, 1);
    }

    #[test]
    fn unrefreshed_edges_keep_their_assignments() {
        let cfg = config("");
        let health = [up(&[("/air", 0)]), up(&[("/air", 0)])];
        let first = snap(cfg.clone(), &health);
        for _ in 0..10 {
            first.choose(0).unwrap();
        }
        let policy = first.policy.clone();
        let reports = reports(&cfg, &health, &[false, true]);
        let second = Snapshot::build(cfg, policy, &reports, 2, Some(&first));
        assert_eq!(second.edges[0].assigned(), first.edges[0].assigned());
        assert_eq!(second.edges[1].assigned(), 0);
    }
}
