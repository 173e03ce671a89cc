//! The core path end to end on real servers: icecast2 edges fed by ffmpeg,
//! real listener connections, castgate in front, real players.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{
    connect_listeners, free_port, http_get, require_bin, wait_until, Castgate, Icecast,
    IcecastOpts, Source,
};

/// Poll settings every farm test uses: interval 1 s, timeout 800 ms, fall 2.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(800);
const FALL: u32 = 2;

/// A castgate config for `edges` (name, icecast, extra YAML for the edge)
/// and one stream `apple` on /air with fallback /nonstop.
fn config(front: u16, admin: u16, edges: &[(&str, &Icecast, &str)], poll: &str) -> String {
    let mut y = format!(
        "listen: [\"127.0.0.1:{front}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\npoll: {poll}\nedges:\n"
    );
    for (name, ice, extra) in edges {
        y.push_str(&format!(
            "  - {{ name: {name}, kind: icecast, url: \"{}\"{extra} }}\n",
            ice.url()
        ));
    }
    y.push_str(
        "streams:\n  - { name: apple, mount: /air, fallback: /nonstop, title: Apple Radio }\n",
    );
    y
}

fn default_poll() -> String {
    format!(
        "{{ interval: {}ms, timeout: {}ms, rise: 1, fall: {FALL} }}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

fn start(edges: &[(&str, &Icecast, &str)], poll: &str) -> Castgate {
    let (front, admin) = (free_port(), free_port());
    Castgate::start(&config(front, admin, edges, poll), front, admin)
}

/// An edge with /air live on it.
fn live_edge() -> (Icecast, Source) {
    let ice = Icecast::origin(IcecastOpts::default());
    let src = Source::start(&ice, "/air");
    ice.wait_mount_live("/air", Duration::from_secs(20));
    (ice, src)
}

/// The edge URL a playlist answer points at first (its first non-comment
/// line; backups follow).
fn m3u_target(cg: &Castgate) -> (u16, String) {
    let (code, _, body) = http_get(&format!("{}/apple.m3u", cg.front_url()));
    let body = String::from_utf8_lossy(&body).into_owned();
    let url = body
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or("")
        .to_string();
    (code, url)
}

fn status(cg: &Castgate) -> serde_json::Value {
    let (code, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    assert_eq!(code, 200);
    serde_json::from_slice(&body).expect("status.json is JSON")
}

fn edge_status(cg: &Castgate, name: &str) -> serde_json::Value {
    status(cg)["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

fn wait_edges_up(cg: &Castgate, names: &[&str]) {
    wait_until("edges up in /status.json", Duration::from_secs(15), || {
        names.iter().all(|n| edge_status(cg, n)["up"] == true)
    });
}

fn wait_listeners(cg: &Castgate, edge: &str, n: u64) {
    wait_until(
        &format!("castgate sees {n} listeners on {edge}"),
        Duration::from_secs(15),
        || edge_status(cg, edge)["listeners"].as_u64() == Some(n),
    );
}

#[test]
fn playlist_follows_the_least_loaded_edge_within_two_polls() {
    let (a, _sa) = live_edge();
    let (b, _sb) = live_edge();
    let cg = start(&[("a", &a, ""), ("b", &b, "")], &default_poll());
    wait_edges_up(&cg, &["a", "b"]);

    let _on_a = connect_listeners(&format!("{}/air", a.url()), 3);
    wait_listeners(&cg, "a", 3);
    let (code, url) = m3u_target(&cg);
    assert_eq!(code, 200);
    assert_eq!(url, format!("{}/air", b.url()), "b is idle, a has 3");

    // Load b past a, as icecast itself reports it; then the playlist must
    // move to a within two poll intervals.
    let _on_b = connect_listeners(&format!("{}/air", b.url()), 8);
    wait_until("icecast b counts 8", Duration::from_secs(10), || {
        b.listeners("/air") == Some(8)
    });
    let loaded = Instant::now();
    let deadline = loaded + INTERVAL * 2 + TIMEOUT;
    loop {
        let (_, url) = m3u_target(&cg);
        if url == format!("{}/air", a.url()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "playlist still on b {:?} after load moved",
            loaded.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "playlist moved {:?} after the load change",
        loaded.elapsed()
    );
}

/// Count where `n` requests go within one poll generation; retried when a
/// poll lands in the middle of the burst.
fn burst(cg: &Castgate, n: usize, edges: &[(&str, &Icecast)]) -> HashMap<String, usize> {
    for _ in 0..5 {
        let before = status(cg)["generation"].as_u64();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..n {
            let (code, url) = m3u_target(cg);
            assert_eq!(code, 200, "burst answer");
            let name = edges
                .iter()
                .find(|(_, ice)| url.starts_with(&ice.url()))
                .map_or(url.clone(), |(name, _)| name.to_string());
            *seen.entry(name).or_default() += 1;
        }
        if status(cg)["generation"].as_u64() == before {
            return seen;
        }
    }
    panic!("every burst was split by a poll");
}

#[test]
fn weight_max_listeners_and_bursts_between_polls() {
    let (a, _sa) = live_edge();
    let (b, _sb) = live_edge();
    let (c, _sc) = live_edge();
    // A long interval so a burst fits between two polls.
    let poll = "{ interval: 5s, timeout: 1s, rise: 1, fall: 2 }";
    let cg = start(
        &[
            ("a", &a, ", weight: 1"),
            ("b", &b, ", weight: 3"),
            ("c", &c, ", max_listeners: 4, weight: 100"),
        ],
        poll,
    );
    wait_edges_up(&cg, &["a", "b", "c"]);
    let _on_c = connect_listeners(&format!("{}/air", c.url()), 1);
    wait_listeners(&cg, "c", 1);

    // c has by far the most weight but room for 3 more: it takes exactly
    // 3; then a and b share 1:3. Without counting assignments between
    // polls, all 43 would land on c.
    let seen = burst(&cg, 43, &[("a", &a), ("b", &b), ("c", &c)]);
    assert_eq!(seen.get("c"), Some(&3), "{seen:?}");
    let (na, nb) = (
        seen.get("a").copied().unwrap_or(0),
        seen.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 40, "{seen:?}");
    assert!((9..=11).contains(&na), "weight 1 vs 3: {seen:?}");

    // The assignments are in the metrics too.
    let (_, _, metrics) = http_get(&format!("{}/metrics", cg.admin_url()));
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("castgate_assignments_total{edge=\"c\",stream=\"apple\"} 3"),
        "{metrics}"
    );
}

#[test]
fn a_killed_edge_leaves_every_answer_in_time_and_comes_back() {
    let (mut a, sa) = live_edge();
    let (b, _sb) = live_edge();
    let cg = start(&[("a", &a, ""), ("b", &b, "")], &default_poll());
    wait_edges_up(&cg, &["a", "b"]);
    // Make a the preferred edge, so answers keep pointing at it until it is
    // known dead.
    let _on_b = connect_listeners(&format!("{}/air", b.url()), 2);
    wait_listeners(&cg, "b", 2);

    drop(sa);
    a.kill();
    let killed = Instant::now();
    let bound = INTERVAL * FALL + TIMEOUT;
    let mut last_on_a = None;
    while killed.elapsed() < bound + Duration::from_secs(2) {
        let (code, url) = m3u_target(&cg);
        if code == 200 && url.starts_with(&a.url()) {
            last_on_a = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("last answer naming the dead edge: {last_on_a:?} after the kill (bound {bound:?})");
    // Scheduling slack for a shared CI machine: 300 ms.
    assert!(
        last_on_a.is_none_or(|t| t <= bound + Duration::from_millis(300)),
        "dead edge still answered {last_on_a:?} after the kill; bound {bound:?}"
    );
    let (code, url) = m3u_target(&cg);
    assert_eq!((code, url.starts_with(&b.url())), (200, true));
    let err = edge_status(&cg, "a")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("connect"), "last_error: {err}");

    // Back: the edge is used again.
    a.restart();
    let _sa = Source::start(&a, "/air");
    a.wait_mount_live("/air", Duration::from_secs(20));
    wait_until("the edge is used again", Duration::from_secs(10), || {
        m3u_target(&cg).1.starts_with(&a.url())
    });
}

#[test]
fn fallback_mount_then_503_when_nothing_is_left() {
    let (mut a, sa) = live_edge();
    let _nonstop = Source::start(&a, "/nonstop");
    a.wait_mount_live("/nonstop", Duration::from_secs(20));
    let cg = start(&[("a", &a, "")], &default_poll());
    wait_edges_up(&cg, &["a"]);
    assert_eq!(m3u_target(&cg).1, format!("{}/air", a.url()));

    // The live mount ends: the fallback is served.
    drop(sa);
    wait_until("playlist on /nonstop", Duration::from_secs(10), || {
        m3u_target(&cg).1 == format!("{}/nonstop", a.url())
    });

    // No edge at all: 503 with Retry-After, quickly.
    a.kill();
    wait_until("503", Duration::from_secs(10), || m3u_target(&cg).0 == 503);
    let started = Instant::now();
    let (code, headers, body) = http_get(&format!("{}/apple", cg.front_url()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "503 must not hang"
    );
    assert_eq!(code, 503);
    let retry = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.clone());
    assert!(
        retry.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{headers:?}"
    );
    assert!(!headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("location")));
    assert!(String::from_utf8_lossy(&body).contains("apple"));
}

#[test]
fn mpv_and_ffprobe_play_through_the_front_door() {
    let mpv = require_bin("mpv", "mpv");
    let ffprobe = require_bin("ffprobe", "ffmpeg");
    let origin = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&origin, "/air");
    origin.wait_mount_live("/air", Duration::from_secs(20));
    let relay = Icecast::relay(&origin, &["/air"], IcecastOpts::default());
    relay.wait_mount_live("/air", Duration::from_secs(20));
    let cg = start(
        &[("origin", &origin, ""), ("relay", &relay, "")],
        &default_poll(),
    );
    wait_edges_up(&cg, &["origin", "relay"]);

    for path in ["apple.m3u", "apple.pls"] {
        let out = std::process::Command::new(&mpv)
            .args([
                "--no-config",
                "--no-video",
                "--ao=null",
                "--length=2",
                "--really-quiet",
            ])
            .arg(format!("{}/{path}", cg.front_url()))
            .output()
            .expect("run mpv");
        assert!(
            out.status.success(),
            "mpv {path}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ffprobe follows the 302 to the edge and reads an MP3 stream.
    let out = std::process::Command::new(&ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            "-rw_timeout",
            "10000000",
        ])
        .arg(format!("{}/apple", cg.front_url()))
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mp3");
}

#[test]
fn metrics_pass_promtool_and_status_reports_the_farm() {
    let promtool = require_bin("promtool", "prometheus");
    let (a, _sa) = live_edge();
    let dead = free_port();
    let yaml = {
        let (front, admin) = (free_port(), free_port());
        let mut y = config(front, admin, &[("a", &a, "")], &default_poll());
        y = y.replace(
            "streams:",
            &format!(
                "  - {{ name: gone, kind: icecast, url: \"http://127.0.0.1:{dead}\" }}\n  - {{ name: web, kind: hls, url: \"http://127.0.0.1:{dead}\" }}\nstreams:"
            ),
        );
        y.push_str("  - { name: live, kind: hls, path: /hls/stream.m3u8 }\n");
        (y, front, admin)
    };
    let cg = Castgate::start(&yaml.0, yaml.1, yaml.2);
    wait_edges_up(&cg, &["a"]);
    let _l = connect_listeners(&format!("{}/air", a.url()), 2);
    wait_listeners(&cg, "a", 2);
    for path in ["apple.m3u", "apple.pls", "apple.xspf", "apple", "nope.m3u"] {
        http_get(&format!("{}/{path}", cg.front_url()));
    }

    let (code, headers, body) = http_get(&format!("{}/metrics", cg.admin_url()));
    assert_eq!(code, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/plain")));
    let text = String::from_utf8_lossy(&body).into_owned();
    for want in [
        "castgate_edge_up{edge=\"a\"} 1",
        "castgate_edge_up{edge=\"gone\"} 0",
        "castgate_edge_listeners{edge=\"a\",mount=\"/air\"} 2",
        "castgate_stream_listeners{stream=\"apple\"} 2",
        "castgate_requests_total{code=\"200\",format=\"m3u\",stream=\"apple\"} 1",
        "castgate_requests_total{code=\"302\",format=\"redirect\",stream=\"apple\"} 1",
        "castgate_requests_total{code=\"404\",format=\"-\",stream=\"-\"} 1",
        "castgate_assignments_total{edge=\"a\",stream=\"apple\"} 4",
        "castgate_poll_duration_seconds_bucket{edge=\"a\"",
        "castgate_poll_errors_total{edge=\"gone\",reason=\"connect\"}",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the Grafana dashboard queries exists.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/castgate.json"
        ))
        .expect("read dashboards/castgate.json"),
    )
    .expect("dashboard is JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("castgate_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    for name in &queried {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "dashboard queries {name}, absent from /metrics"
        );
    }

    let s = status(&cg);
    assert_eq!(s["total_listeners"], 2);
    let gone = &s["edges"][1];
    assert_eq!(gone["name"], "gone");
    assert_eq!(gone["up"], false);
    assert!(
        gone["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{gone}"
    );
    assert_eq!(s["edges"][0]["mounts"]["/air"]["listeners"], 2);
    assert_eq!(s["streams"][0]["live_edges"], serde_json::json!(["a"]));
}
