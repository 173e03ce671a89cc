//! Every metric castgate exports, registered once in its own [`Registry`].
//!
//! Labels are bounded by the config: `edge` and `stream` are configured
//! names, `mount` is a configured mount or fallback, `format` and `code` and
//! `reason` come from small fixed sets. Nothing from a client becomes a label.
//!
//! Gauges that describe the farm (`castgate_edge_up`, `castgate_edge_listeners`,
//! `castgate_stream_listeners`, ...) are read from the current snapshot at
//! scrape time, so they can never go stale or disagree with /status.json.

use crate::balance::Snapshot;
use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The project's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `castgate_requests_total{stream,format,code}`: front-door answers.
    /// `stream` is a configured name or `-` for unknown paths; `format` is
    /// `m3u`, `pls`, `xspf`, `redirect` or `-`.
    pub requests: IntCounterVec,
    /// `castgate_assignments_total{stream,edge}`: listeners sent to an edge.
    pub assignments: IntCounterVec,
    /// `castgate_poll_duration_seconds{edge}`: time of each poll, seconds.
    pub poll_duration: HistogramVec,
    /// `castgate_poll_errors_total{edge,reason}`: failed polls; reason is
    /// `connect`, `timeout`, `status`, `body`, `too_large` or `parse`.
    pub poll_errors: IntCounterVec,
    /// `castgate_config_reloads_total{outcome}`: `applied`, `unchanged`,
    /// `invalid` or `refused`.
    pub reloads: IntCounterVec,
    /// `castgate_api_changes_total{action,code}`: admin API calls that
    /// change something, by action and HTTP status.
    pub api_changes: IntCounterVec,
    /// `castgate_connections_open`: front-door connections open now
    /// (after the TLS handshake), refused ones excepted.
    pub connections_open: IntGauge,
    /// `castgate_connections_refused_total`: connections answered `503`
    /// and closed because `server.max_connections` were open.
    pub connections_refused: IntCounter,
    /// `castgate_request_header_timeouts_total`: connections closed because
    /// a request head (HTTP/2: the connection preface) did not arrive within
    /// `server.request_header_timeout`.
    pub request_header_timeouts: IntCounter,
    /// `castgate_failovers_total{stream,from,to}`: relayed streams resumed
    /// on edge `to` after edge `from` failed them.
    pub failovers: IntCounterVec,
    /// `castgate_failover_gap_seconds{stream}`: what a listener heard of a
    /// resume: seconds from the last byte of the failed edge to the first
    /// of the new one (the stall that detected the failure included).
    pub failover_gap: HistogramVec,
}

impl Metrics {
    /// Create and register every metric. The farm gauges read `snapshot`.
    ///
    /// # Errors
    /// Only if two metrics share a name, a programming error caught by tests.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "castgate_requests_total",
                "Front-door answers by stream, format and HTTP status.",
            ),
            &["stream", "format", "code"],
        )?;
        let assignments = IntCounterVec::new(
            Opts::new(
                "castgate_assignments_total",
                "Listeners sent to an edge, by stream and edge.",
            ),
            &["stream", "edge"],
        )?;
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "castgate_poll_duration_seconds",
                "Time of one poll of an edge, in seconds.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["edge"],
        )?;
        let poll_errors = IntCounterVec::new(
            Opts::new(
                "castgate_poll_errors_total",
                "Failed polls by edge and reason.",
            ),
            &["edge", "reason"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "castgate_config_reloads_total",
                "Config reloads by outcome.",
            ),
            &["outcome"],
        )?;
        let api_changes = IntCounterVec::new(
            Opts::new(
                "castgate_api_changes_total",
                "Mutating admin API calls by action and HTTP status.",
            ),
            &["action", "code"],
        )?;
        let connections_open = IntGauge::new(
            "castgate_connections_open",
            "Front-door connections open now.",
        )?;
        let connections_refused = IntCounter::new(
            "castgate_connections_refused_total",
            "Front-door connections refused because server.max_connections were open.",
        )?;
        let request_header_timeouts = IntCounter::new(
            "castgate_request_header_timeouts_total",
            "Front-door connections closed because a request head (HTTP/2: the connection preface) was not received within server.request_header_timeout.",
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "castgate_failovers_total",
                "Relayed streams resumed on edge `to` after edge `from` failed them.",
            ),
            &["stream", "from", "to"],
        )?;
        let failover_gap = HistogramVec::new(
            HistogramOpts::new(
                "castgate_failover_gap_seconds",
                "Seconds a listener heard nothing across a resume on another edge.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0]),
            &["stream"],
        )?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(failover_gap.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(request_header_timeouts.clone()))?;
        // Present from the start, so dashboards and alerts see zeros.
        for outcome in ["applied", "unchanged", "invalid", "refused"] {
            reloads.with_label_values(&[outcome]);
        }
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(api_changes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(assignments.clone()))?;
        registry.register(Box::new(poll_duration.clone()))?;
        registry.register(Box::new(poll_errors.clone()))?;
        registry.register(Box::new(FarmCollector::new(snapshot)?))?;
        registry.register(Box::new(LogDrops::new()?))?;
        Ok(Metrics {
            registry,
            requests,
            assignments,
            poll_duration,
            poll_errors,
            reloads,
            api_changes,
            connections_open,
            connections_refused,
            request_header_timeouts,
            failovers,
            failover_gap,
        })
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Builds the farm gauges from the snapshot at each scrape.
/// `castgate_log_lines_dropped_total`: log lines (access log included)
/// dropped because the writer's queue was full ([`crate::logs`]), read at
/// scrape time.
struct LogDrops {
    desc: Vec<Desc>,
}

impl LogDrops {
    fn counter() -> prometheus::Result<IntCounter> {
        IntCounter::new(
            "castgate_log_lines_dropped_total",
            "Log lines (access log included) dropped because stderr could not keep up with the log queue.",
        )
    }

    fn new() -> prometheus::Result<Self> {
        Ok(LogDrops {
            desc: Self::counter()?.desc().into_iter().cloned().collect(),
        })
    }
}

impl Collector for LogDrops {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match Self::counter() {
            Ok(c) => {
                c.inc_by(crate::logs::dropped_lines());
                c.collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

struct FarmCollector {
    snapshot: Arc<ArcSwap<Snapshot>>,
    descs: Vec<Desc>,
}

impl FarmCollector {
    fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> prometheus::Result<Self> {
        let descs = Self::vecs()?
            .iter()
            .flat_map(|v| v.desc().into_iter().cloned())
            .collect();
        Ok(FarmCollector { snapshot, descs })
    }

    /// Fresh, unregistered vectors for one scrape.
    fn vecs() -> prometheus::Result<Vec<Box<dyn Collector>>> {
        let (up, listeners, stream, load, age, max) = Self::typed()?;
        let (sessions, bandwidth) = Self::hls_typed()?;
        Ok(vec![
            Box::new(up),
            Box::new(listeners),
            Box::new(stream),
            Box::new(load),
            Box::new(age),
            Box::new(max),
            Box::new(sessions),
            Box::new(bandwidth),
        ])
    }

    fn hls_typed() -> prometheus::Result<(IntGaugeVec, IntGaugeVec)> {
        Ok((
            IntGaugeVec::new(
                Opts::new(
                    "castgate_hls_sessions",
                    "HLS sessions seen (playlist fetched with a castgate token) within the token lifetime.",
                ),
                &["stream", "edge"],
            )?,
            IntGaugeVec::new(
                Opts::new(
                    "castgate_edge_output_bytes_per_second",
                    "Estimated edge output in bytes per second: measured where the edge reports it (nginx-rtmp), else audience × stream bitrate.",
                ),
                &["edge"],
            )?,
        ))
    }

    #[allow(clippy::type_complexity)]
    fn typed() -> prometheus::Result<(
        IntGaugeVec,
        IntGaugeVec,
        IntGaugeVec,
        GaugeVec,
        GaugeVec,
        IntGaugeVec,
    )> {
        Ok((
            IntGaugeVec::new(
                Opts::new(
                    "castgate_edge_up",
                    "1 when the edge is up (rise/fall hysteresis), else 0.",
                ),
                &["edge"],
            )?,
            IntGaugeVec::new(
                Opts::new(
                    "castgate_edge_listeners",
                    "Listeners on a configured mount of an up edge, at the last poll.",
                ),
                &["edge", "mount"],
            )?,
            IntGaugeVec::new(
                Opts::new(
                    "castgate_stream_listeners",
                    "Listeners of a stream (mount and fallback) over its up edges.",
                ),
                &["stream"],
            )?,
            GaugeVec::new(
                Opts::new(
                    "castgate_edge_load",
                    "Edge load: (listeners + assigned) / capacity / weight.",
                ),
                &["edge"],
            )?,
            GaugeVec::new(
                Opts::new(
                    "castgate_edge_last_poll_age_seconds",
                    "Seconds since the edge's last poll finished.",
                ),
                &["edge"],
            )?,
            IntGaugeVec::new(
                Opts::new(
                    "castgate_edge_max_listeners",
                    "Configured listener cap of an edge (absent when unlimited).",
                ),
                &["edge"],
            )?,
        ))
    }
}

impl Collector for FarmCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok((up, listeners, stream, load, age, max)) = Self::typed() else {
            return Vec::new();
        };
        let Ok((sessions, bandwidth)) = Self::hls_typed() else {
            return Vec::new();
        };
        let snap = self.snapshot.load();
        let config = &snap.config;
        // Only mounts some stream asks for: bounded by the config, whatever
        // an edge lists.
        let mut wanted: Vec<&str> = Vec::new();
        for s in &config.streams {
            wanted.push(&s.mount);
            if let Some(f) = &s.fallback {
                wanted.push(f);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        for (i, e) in snap.edges.iter().enumerate() {
            let name = config.edges[e.index].name.as_str();
            up.with_label_values(&[name]).set(i64::from(e.health.up));
            bandwidth
                .with_label_values(&[name])
                .set(i64::try_from(e.est_bps / 8).unwrap_or(i64::MAX));
            load.with_label_values(&[name]).set(snap.load(i));
            if let Some(t) = e.health.last_poll {
                let secs = t.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
                age.with_label_values(&[name]).set(secs);
            }
            if let Some(m) = config.edges[e.index].max_listeners {
                max.with_label_values(&[name]).set(m as i64);
            }
            if let (true, Some(status)) = (e.health.up, &e.health.status) {
                for m in &status.mounts {
                    if wanted.binary_search(&m.mount.as_str()).is_ok() {
                        listeners
                            .with_label_values(&[name, &m.mount])
                            .set(m.listeners as i64);
                    }
                }
            }
        }
        for s in &snap.streams {
            stream
                .with_label_values(&[&config.streams[s.index].name])
                .set(s.listeners as i64);
        }
        // Every (HLS stream, edge) pair, zeros included, so dashboards and
        // alerts see the series before the first session.
        for (si, s) in config.streams.iter().enumerate() {
            if s.kind != crate::config::StreamKind::Hls {
                continue;
            }
            for &ei in &s.edges {
                let n = snap.sessions.get(&(si, ei)).copied().unwrap_or(0);
                sessions
                    .with_label_values(&[&s.name, &config.edges[ei].name])
                    .set(n as i64);
            }
        }
        let mut out = Vec::new();
        out.extend(sessions.collect());
        out.extend(bandwidth.collect());
        out.extend(up.collect());
        out.extend(listeners.collect());
        out.extend(stream.collect());
        out.extend(load.collect());
        out.extend(age.collect());
        out.extend(max.collect());
        out
    }
}
