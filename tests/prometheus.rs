//! `/metrics` as a real Prometheus server sees it: Debian's `prometheus`
//! scrapes castgate in front of a real icecast edge, the target is healthy
//! (no scrape errors: the exposition format is accepted), the listener gauge
//! arrives with the right labels and value, and every query of the shipped
//! Grafana dashboard is valid PromQL against that data.

mod support;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::{
    connect_listeners, free_port, http_get, poll_until, require_bin, try_http_request, wait_until,
    Castgate, Icecast, IcecastOpts, Source,
};
use tempfile::TempDir;

/// How long Prometheus gets to answer `/-/ready` after being spawned.
const PROMETHEUS_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the scraped data gets to show up in queries.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// A `prometheus` server on 127.0.0.1 on a free port, with its config, TSDB
/// and log in its own temp dir. Killed and reaped on drop; if the test is
/// panicking, its log tail is printed first.
struct Prometheus {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `http://{target}/metrics` every second as
    /// job `castgate`, and waits until it is ready.
    fn start(target: &str) -> Prometheus {
        let bin = require_bin("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("castgate-prometheus-")
            .tempdir()
            .expect("create a temp dir for prometheus");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: castgate\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus config");

        let mut prom = Prometheus {
            port: 0,
            child: None,
            dir,
        };
        // free_port() can race with another process taking the port:
        // prometheus then exits at once, and we retry on a fresh port.
        for _attempt in 0..3 {
            prom.port = free_port();
            prom.spawn(&bin, &config);
            let ready_url = format!("{}/-/ready", prom.url());
            let mut ready = false;
            poll_until(PROMETHEUS_READY_TIMEOUT, || {
                if !prom.is_running() {
                    return true;
                }
                ready = try_http_request("GET", &ready_url, &[])
                    .is_ok_and(|(status, _, _)| status == 200);
                ready
            });
            if ready && prom.is_running() {
                return prom;
            }
            if prom.is_running() {
                panic!(
                    "prometheus on port {} not ready within {PROMETHEUS_READY_TIMEOUT:?}",
                    prom.port
                );
            }
            let log = prom.log_tail(20);
            prom.child = None;
            eprintln!("prometheus exited at startup, retrying on a fresh port; log:\n{log}");
        }
        panic!(
            "prometheus exited at startup 3 times; log:\n{}",
            prom.log_tail(30)
        );
    }

    fn spawn(&mut self, bin: &Path, config: &Path) {
        let log = File::create(self.log_path()).expect("create prometheus log");
        let log_too = log.try_clone().expect("clone prometheus log handle");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `GET /api/v1/{path}` → (HTTP status, parsed JSON body).
    fn api(&self, path_and_query: &str) -> (u16, Value) {
        let url = format!("{}/api/v1/{path_and_query}", self.url());
        let (code, _, body) = http_get(&url);
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "GET {url}: {code}, body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (code, json)
    }

    /// An instant query, as the raw API answer.
    fn query(&self, promql: &str) -> (u16, Value) {
        self.api(&format!("query?query={}", urlencode(promql)))
    }

    /// The samples of a successful instant query returning a vector.
    fn vector(&self, promql: &str) -> Vec<Value> {
        let (code, json) = self.query(promql);
        assert!(
            code == 200 && json["status"] == "success",
            "query {promql:?} failed: {code} {json}"
        );
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- prometheus ({}) log tail ---\n{}\n---",
                self.url(),
                self.log_tail(40)
            );
        }
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986
/// unreserved characters).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `targets[].expr` of every panel, rows' nested panels included.
/// Metrics that only have series once something happens that this test's
/// farm never does, or for a kind of stream it has not (HLS).
const EVENT_METRICS: &[&str] = &[
    "castgate_hls_sessions",
    "castgate_failover",
    "castgate_connections_refused_total",
    "castgate_request_header_timeouts_total",
    "castgate_poll_errors_total",
    "castgate_log_lines_dropped_total",
    "castgate_api_changes_total",
];

fn dashboard_exprs(panels: &Value, out: &mut Vec<String>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
        dashboard_exprs(&panel["panels"], out);
    }
}

#[test]
fn prometheus_scrapes_castgate_and_runs_every_dashboard_query() {
    require_bin("prometheus", "prometheus");

    // 1. A live edge with 2 listeners, castgate in front of it.
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let _listeners = connect_listeners(&format!("{}/air", ice.url()), 2);
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: [\"127.0.0.1:{front}\"]\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         poll: {{ interval: 500ms, timeout: 400ms }}\n\
         edges:\n  - {{ name: a, kind: icecast, url: \"{}\" }}\n\
         streams:\n  - {{ name: apple, mount: /air }}\n",
        ice.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until(
        "castgate's /status.json to show 2 listeners on edge a",
        Duration::from_secs(15),
        || {
            let (code, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
            code == 200
                && serde_json::from_slice::<Value>(&body).is_ok_and(|s| {
                    s["edges"].as_array().is_some_and(|edges| {
                        edges
                            .iter()
                            .any(|e| e["name"] == "a" && e["listeners"].as_u64() == Some(2))
                    })
                })
        },
    );
    // Some front-door traffic, so the request and assignment counters have
    // series for the dashboard's rate() queries to work on.
    for path in ["apple.m3u", "apple.pls", "nope.m3u"] {
        http_get(&format!("{}/{path}", cg.front_url()));
    }

    // 2. Prometheus scraping castgate's admin listener every second.
    let prom = Prometheus::start(&format!("127.0.0.1:{admin}"));

    // 3. The listener gauge arrives with castgate's labels and value.
    let mut last = Vec::new();
    let arrived = poll_until(SCRAPE_TIMEOUT, || {
        last = prom.vector("castgate_edge_listeners");
        last.iter().any(|s| {
            s["metric"]["edge"] == "a" && s["metric"]["mount"] == "/air" && s["value"][1] == "2"
        })
    });
    assert!(
        arrived,
        "no castgate_edge_listeners{{edge=\"a\",mount=\"/air\"}} 2 within {SCRAPE_TIMEOUT:?}; last result: {last:?}"
    );

    let up = prom.vector("up{job=\"castgate\"}");
    assert_eq!(up.len(), 1, "one castgate target: {up:?}");
    assert_eq!(up[0]["value"][1], "1", "castgate target up: {up:?}");

    let (code, targets) = prom.api("targets");
    assert_eq!(code, 200, "targets API: {targets}");
    let active: Vec<&Value> = targets["data"]["activeTargets"]
        .as_array()
        .expect("activeTargets")
        .iter()
        .filter(|t| t["labels"]["job"] == "castgate")
        .collect();
    assert_eq!(active.len(), 1, "one castgate target: {targets}");
    let target = active[0];
    assert_eq!(target["health"], "up", "target health: {target}");
    assert_eq!(target["lastError"], "", "scrape error: {target}");
    assert_eq!(
        target["scrapeUrl"],
        format!("http://127.0.0.1:{admin}/metrics"),
        "{target}"
    );

    // Let a few more scrapes land, so the dashboard's rate() queries have
    // two or more samples per series to work on, not only an empty result.
    wait_until(
        "3 scrapes of castgate in prometheus",
        SCRAPE_TIMEOUT,
        || {
            prom.vector("count_over_time(up{job=\"castgate\"}[1m])")
                .first()
                .and_then(|s| s["value"][1].as_str()?.parse::<u32>().ok())
                .is_some_and(|n| n >= 3)
        },
    );

    // 4. Every dashboard query is valid PromQL against this data.
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/castgate.json"
        ))
        .expect("read dashboards/castgate.json"),
    )
    .expect("dashboards/castgate.json is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no panel queries");
    for expr in &exprs {
        // Grafana's built-in interval variables, as Grafana would fill them.
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("${__rate_interval}", "1m")
            .replace("$__interval", "15s")
            .replace("${__interval}", "15s")
            .replace("$__range", "1h")
            .replace("${__range}", "1h");
        let (code, json) = prom.query(&promql);
        assert!(
            code == 200 && json["status"] == "success",
            "dashboard query {expr:?} rejected by prometheus: {code} {json}"
        );
        let n = json["data"]["result"].as_array().map_or(0, Vec::len);
        eprintln!("dashboard query ok ({n} series): {expr}");
        // Data for every panel, but those counting events this farm never
        // has (failovers, refusals, errors, drops) or HLS sessions (it has
        // no HLS stream): empty there is right.
        let only_on_events = EVENT_METRICS.iter().any(|m| expr.contains(m));
        assert!(
            n > 0 || only_on_events,
            "dashboard query {expr:?} returned no series against a live farm"
        );
    }
    // The poll-latency panel works on castgate's histogram (buckets with
    // `le`, growing every poll), so it has a series for edge a.
    let p95 = prom.vector(
        "histogram_quantile(0.95, sum by (edge, le) (rate(castgate_poll_duration_seconds_bucket[5m])))",
    );
    assert!(
        p95.iter().any(|s| s["metric"]["edge"] == "a"),
        "poll latency p95 for edge a: {p95:?}"
    );
    // The listener panel shows castgate's count through Prometheus.
    let per_edge = prom.vector("sum by (edge) (castgate_edge_listeners)");
    assert!(
        per_edge
            .iter()
            .any(|s| s["metric"]["edge"] == "a" && s["value"][1] == "2"),
        "listeners per edge panel: {per_edge:?}"
    );
}
