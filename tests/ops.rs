//! Operating castgate live: reloads, the admin API, draining, runtime
//! edges. Real Icecast edges, real castgate, real signals.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    connect_listeners, free_port, header, http_get, http_request, wait_until, Castgate, Icecast,
    IcecastOpts, Source,
};

const TOKEN: &str = "test-token-0123456789abcdef";

struct Farm {
    a: Icecast,
    b: Icecast,
    _sa: Source,
    _sb: Source,
    token: tempfile::NamedTempFile,
}

fn farm() -> Farm {
    let a = Icecast::origin(IcecastOpts::default());
    let b = Icecast::origin(IcecastOpts::default());
    let sa = Source::start(&a, "/air");
    let sb = Source::start(&b, "/air");
    let mut token = tempfile::NamedTempFile::new().unwrap();
    writeln!(token, "{TOKEN}").unwrap();
    Farm {
        a,
        b,
        _sa: sa,
        _sb: sb,
        token,
    }
}

fn yaml(f: &Farm, front: u16, admin: u16, extra_edges: &str, mode: &str, watch: bool) -> String {
    format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}", token_file: "{}" }}
poll: {{ interval: 500ms, timeout: 400ms, rise: 1, fall: 2 }}
reload: {{ watch: {watch}, debounce: 50ms }}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
  - {{ name: b, kind: icecast, url: "{}" }}
{extra_edges}streams:
  - {{ name: apple, mount: /air, mode: {mode} }}
"#,
        f.token.path().display(),
        f.a.url(),
        f.b.url()
    )
}

fn metric(cg: &Castgate, line_start: &str) -> u64 {
    let (_, _, body) = http_get(&format!("{}/metrics", cg.admin_url()));
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn status(cg: &Castgate) -> serde_json::Value {
    serde_json::from_slice(&http_get(&format!("{}/status.json", cg.admin_url())).2).unwrap()
}

fn wait_up(cg: &Castgate, names: &[&str]) {
    wait_until("edges up", Duration::from_secs(15), || {
        let s = status(cg);
        names.iter().all(|n| {
            s["edges"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["name"] == *n && e["up"] == true))
        })
    });
}

fn api(
    cg: &Castgate,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let len = body.len().to_string();
    let mut headers = vec![
        ("Content-Length", len.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let url = format!("{}{path}", cg.admin_url());
    let (code, _, resp) = if body.is_empty() {
        http_request(method, &url, &headers)
    } else {
        support::http_request_with_body(method, &url, &headers, body.as_bytes())
    };
    (
        code,
        serde_json::from_slice(&resp).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn reload_under_load_keeps_answering_and_refuses_bad_files() {
    let f = farm();
    let (front, admin) = (free_port(), free_port());
    let good = yaml(&f, front, admin, "", "redirect", true);
    let cg = Castgate::start(&good, front, admin);
    wait_up(&cg, &["a", "b"]);
    let path = cg.config_path();

    // Load: a client asking for the playlist as fast as it can, for as long
    // as the file keeps changing (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = format!("{}/apple.m3u", cg.front_url());
    let load = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                match support::try_http_request("GET", &url, &[]) {
                    Ok((200, _, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // Twenty versions in a row, each written as soon as the last was read:
    // weights change, edge c comes and goes, and every fourth version is
    // broken. Waiting for each reload to be counted makes the tally exact
    // (the watcher checks every 500 ms, so a fixed pace would let it skip
    // versions at random).
    let reloads = |cg: &Castgate| {
        ["applied", "invalid", "unchanged", "refused"]
            .iter()
            .map(|o| {
                metric(
                    cg,
                    &format!("castgate_config_reloads_total{{outcome=\"{o}\"}}"),
                )
            })
            .sum::<u64>()
    };
    let c_port = free_port();
    for i in 0..20 {
        let before = reloads(&cg);
        let text = match i % 4 {
            0 => good.replace(
                "name: b, kind: icecast",
                "name: b, weight: 2, kind: icecast",
            ),
            1 => yaml(
                &f,
                front,
                admin,
                &format!("  - {{ name: c, kind: icecast, url: \"http://127.0.0.1:{c_port}\" }}\n"),
                "redirect",
                true,
            ),
            2 => good.replace(
                "edges:\n",
                "edges:\n  - { name: broken, kind: nonsense, url: x }\n",
            ),
            _ => good.clone(),
        };
        // Write then rename, as editors and config managers do.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait_until(
            &format!("version {i} read"),
            Duration::from_secs(10),
            || reloads(&cg) > before,
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("during 20 rewrites: {ok} playlists answered 200, {bad} not");
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(bad, 0, "every request during reloads must succeed");
    let applied = metric(&cg, "castgate_config_reloads_total{outcome=\"applied\"}");
    let invalid = metric(&cg, "castgate_config_reloads_total{outcome=\"invalid\"}");
    eprintln!("reloads: {applied} applied, {invalid} invalid");
    assert_eq!(
        (applied, invalid),
        (15, 5),
        "every valid version applied, every broken one refused"
    );
    // The last version (good) is in force; the broken one left no trace.
    std::fs::write(&path, &good).unwrap();
    wait_until("good config back", Duration::from_secs(5), || {
        let s = status(&cg);
        s["edges"].as_array().is_some_and(|e| e.len() == 2)
    });
    assert!(
        cg.log().contains("edges[0].kind"),
        "the invalid file's errors are logged with their place"
    );
    // Asked again with nothing changed: `unchanged`, counted as such.
    let before = metric(&cg, "castgate_config_reloads_total{outcome=\"unchanged\"}");
    let (code, reply) = api(&cg, "POST", "/api/reload", Some(TOKEN), "");
    assert_eq!(
        (code, reply["outcome"].as_str()),
        (200, Some("unchanged")),
        "{reply}"
    );
    assert_eq!(
        metric(&cg, "castgate_config_reloads_total{outcome=\"unchanged\"}"),
        before + 1
    );
}

#[test]
fn sighup_reloads_keeps_health_and_refuses_listen_changes() {
    let f = farm();
    let (front, admin) = (free_port(), free_port());
    let good = yaml(&f, front, admin, "", "redirect", false);
    let cg = Castgate::start(&good, front, admin);
    wait_up(&cg, &["a", "b"]);
    let path = cg.config_path();

    // A listener on a, counted before the reload.
    let listener = support::Listener::connect(&format!("{}/air", f.a.url())).unwrap();
    assert_eq!(listener.status(), 200);
    wait_until("a's listener counted", Duration::from_secs(10), || {
        status(&cg)["edges"][0]["listeners"] == 1
    });

    // Weight change by SIGHUP: applied at once. Watched every 20 ms from
    // before the signal to a second after it applied (two poll intervals):
    // both edges up and a's listener counted in every look, so a reset of
    // health or counts, even one the next poll would hide, is seen.
    std::fs::write(
        &path,
        good.replace(
            "name: b, kind: icecast",
            "name: b, weight: 5, kind: icecast",
        ),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, admin) = (stop.clone(), cg.admin_url());
        std::thread::spawn(move || {
            let mut looks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (_, _, body) = http_get(&format!("{admin}/status.json"));
                let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                looks.push((
                    s["edges"][0]["up"] == true && s["edges"][1]["up"] == true,
                    s["edges"][0]["listeners"].as_u64(),
                ));
                std::thread::sleep(Duration::from_millis(20));
            }
            looks
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    cg.signal(libc::SIGHUP);
    wait_until("weight applied", Duration::from_secs(5), || {
        status(&cg)["edges"][1]["weight"] == 5.0
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let looks = watcher.join().unwrap();
    assert!(looks.len() > 20, "looks taken: {}", looks.len());
    let bad: Vec<_> = looks
        .iter()
        .filter(|(up, listeners)| !*up || *listeners != Some(1))
        .collect();
    assert!(
        bad.is_empty(),
        "health and counts survive a reload: {} of {} looks saw a reset: {bad:?}",
        bad.len(),
        looks.len()
    );
    assert_eq!(
        metric(&cg, "castgate_config_reloads_total{outcome=\"applied\"}"),
        1
    );

    // A new listen address cannot apply live: refused, nothing changes.
    let other = free_port();
    std::fs::write(
        &path,
        good.replace(&format!("127.0.0.1:{front}"), &format!("127.0.0.1:{other}")),
    )
    .unwrap();
    cg.signal(libc::SIGHUP);
    wait_until("refused", Duration::from_secs(5), || {
        metric(&cg, "castgate_config_reloads_total{outcome=\"refused\"}") == 1
    });
    assert_eq!(http_get(&format!("{}/apple.m3u", cg.front_url())).0, 200);
    assert_eq!(status(&cg)["edges"][1]["weight"], 5.0, "not half-applied");
    assert!(cg.log().contains("listen: cannot change while running"));
}

#[test]
fn every_admin_call_needs_the_token() {
    let f = farm();
    let (front, admin) = (free_port(), free_port());
    let cg = Castgate::start(&yaml(&f, front, admin, "", "redirect", false), front, admin);
    wait_up(&cg, &["a", "b"]);
    let edge = r#"{"name": "c", "kind": "icecast", "url": "http://127.0.0.1:9"}"#;
    let calls: [(&str, &str, &str); 7] = [
        ("POST", "/api/edges", edge),
        ("DELETE", "/api/edges/c", ""),
        ("POST", "/api/edges/a/drain", ""),
        ("POST", "/api/edges/a/disable", ""),
        ("POST", "/api/edges/a/enable", ""),
        ("PUT", "/api/edges/a/weight", r#"{"weight": 2}"#),
        ("POST", "/api/reload", ""),
    ];
    for (method, path, body) in calls {
        assert_eq!(
            api(&cg, method, path, None, body).0,
            401,
            "{method} {path} without a token"
        );
        assert_eq!(
            api(&cg, method, path, Some("wrong-token-0123456789"), body).0,
            401,
            "{method} {path} with a wrong token"
        );
        let (code, reply) = api(&cg, method, path, Some(TOKEN), body);
        assert!(
            (200..300).contains(&code),
            "{method} {path} with the token: {code} {reply}"
        );
    }
    // Reading needs no token.
    for path in ["/api/edges", "/api/edges/a", "/api/config"] {
        assert_eq!(api(&cg, "GET", path, None, "").0, 200, "{path}");
    }
    assert_eq!(api(&cg, "GET", "/api/edges/nope", None, "").0, 404);
    assert_eq!(
        api(
            &cg,
            "PUT",
            "/api/edges/a/weight",
            Some(TOKEN),
            r#"{"weight": -1}"#
        )
        .0,
        422
    );
    assert_eq!(
        api(&cg, "POST", "/api/edges", Some(TOKEN), "{not json").0,
        400
    );
    assert_eq!(
        api(
            &cg,
            "POST",
            "/api/edges",
            Some(TOKEN),
            r#"{"name": "a", "kind": "icecast", "url": "http://x:1"}"#
        )
        .0,
        409
    );

    // Without a token file, mutating calls are disabled.
    let (front2, admin2) = (free_port(), free_port());
    let no_token = yaml(&f, front2, admin2, "", "redirect", false).replace(
        &format!(", token_file: \"{}\"", f.token.path().display()),
        "",
    );
    let cg2 = Castgate::start(&no_token, front2, admin2);
    assert_eq!(
        api(&cg2, "POST", "/api/edges/a/drain", Some(TOKEN), "").0,
        403
    );
    assert_eq!(api(&cg2, "GET", "/api/edges", None, "").0, 200);
}

#[test]
fn drain_keeps_existing_listeners_and_sends_new_ones_elsewhere() {
    let f = farm();
    let (front, admin) = (free_port(), free_port());
    let cg = Castgate::start(&yaml(&f, front, admin, "", "proxy", false), front, admin);
    wait_up(&cg, &["a", "b"]);
    // Listeners through castgate (proxy mode), spread over both edges.
    let listeners = connect_listeners(&format!("{}/apple", cg.front_url()), 6);
    wait_until("edges count them", Duration::from_secs(10), || {
        f.a.listeners("/air").unwrap_or(0) + f.b.listeners("/air").unwrap_or(0) == 6
    });
    let on_a = f.a.listeners("/air").unwrap_or(0);
    assert!(on_a > 0, "some listeners on a");
    let (code, _) = api(&cg, "POST", "/api/edges/a/drain", Some(TOKEN), "");
    assert_eq!(code, 200);
    assert_eq!(status(&cg)["edges"][0]["admin_state"], "draining");
    // New listeners all go to b.
    let before_b = f.b.listeners("/air").unwrap_or(0);
    let more = connect_listeners(&format!("{}/apple", cg.front_url()), 4);
    wait_until("b counts the new ones", Duration::from_secs(10), || {
        f.b.listeners("/air") == Some(before_b + 4)
    });
    // Those on a stay, and keep receiving audio.
    let bytes: Vec<u64> = listeners.iter().map(|l| l.bytes_received()).collect();
    std::thread::sleep(Duration::from_secs(2));
    for (l, before) in listeners.iter().zip(bytes) {
        assert!(
            l.is_open() && l.bytes_received() > before + 8_000,
            "an existing listener kept playing"
        );
    }
    assert_eq!(f.a.listeners("/air"), Some(on_a));
    // Enable: a takes new listeners again.
    assert_eq!(
        api(&cg, "POST", "/api/edges/a/enable", Some(TOKEN), "").0,
        200
    );
    drop(more);
    wait_until("a used again", Duration::from_secs(10), || {
        let _l = connect_listeners(&format!("{}/apple", cg.front_url()), 1);
        f.a.listeners("/air").unwrap_or(0) > on_a
    });
}

#[test]
fn edges_added_and_removed_at_runtime_survive_reloads() {
    let f = farm();
    let c = Icecast::origin(IcecastOpts::default());
    let _sc = Source::start(&c, "/air");
    let (front, admin) = (free_port(), free_port());
    let text = yaml(&f, front, admin, "", "redirect", false);
    let cg = Castgate::start(&text, front, admin);
    wait_up(&cg, &["a", "b"]);
    // Load a and b so the newcomer is the least loaded.
    let _la = connect_listeners(&format!("{}/air", f.a.url()), 3);
    let _lb = connect_listeners(&format!("{}/air", f.b.url()), 3);
    let body = format!(
        r#"{{"name": "c", "kind": "icecast", "url": "{}", "max_listeners": 50}}"#,
        c.url()
    );
    let (code, reply) = api(&cg, "POST", "/api/edges", Some(TOKEN), &body);
    assert_eq!(code, 201, "{reply}");
    wait_until("c takes listeners", Duration::from_secs(10), || {
        let (_, _, b) = http_get(&format!("{}/apple.m3u", cg.front_url()));
        String::from_utf8_lossy(&b).contains(&c.url())
    });
    // A reload of the unchanged-but-touched file keeps c, and the drain of a.
    assert_eq!(
        api(&cg, "POST", "/api/edges/a/drain", Some(TOKEN), "").0,
        200
    );
    std::fs::write(
        cg.config_path(),
        text.replace("timeout: 400ms", "timeout: 450ms"),
    )
    .unwrap();
    let (code, reply) = api(&cg, "POST", "/api/reload", Some(TOKEN), "");
    assert_eq!(
        (code, reply["outcome"].as_str()),
        (200, Some("applied")),
        "{reply}"
    );
    let s = status(&cg);
    assert_eq!(
        s["edges"].as_array().unwrap().len(),
        3,
        "c survived the reload"
    );
    assert_eq!(s["edges"][0]["admin_state"], "draining");
    assert_eq!(s["edges"][2]["up"], true, "c kept its health");
    let (_, cfg) = api(&cg, "GET", "/api/config", None, "");
    assert_eq!(cfg["runtime"]["added"], serde_json::json!(["c"]));
    assert_eq!(cfg["config"]["poll"]["timeout"], "450ms");

    // Remove b (from the file) and c (from the API): gone from answers.
    assert_eq!(api(&cg, "DELETE", "/api/edges/b", Some(TOKEN), "").0, 200);
    assert_eq!(api(&cg, "DELETE", "/api/edges/c", Some(TOKEN), "").0, 200);
    // Both removals survive a reload of a changed file (b is still in it).
    std::fs::write(
        cg.config_path(),
        text.replace("timeout: 400ms", "timeout: 350ms"),
    )
    .unwrap();
    let (code, reply) = api(&cg, "POST", "/api/reload", Some(TOKEN), "");
    assert_eq!(
        (code, reply["outcome"].as_str()),
        (200, Some("applied")),
        "{reply}"
    );
    let names: Vec<String> = status(&cg)["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["a"], "b and c stay removed after a reload");
    // Only a is left and it is draining: nothing to send listeners to.
    let (code, headers, _) = http_get(&format!("{}/apple.m3u", cg.front_url()));
    assert_eq!(code, 503);
    assert!(header(&headers, "retry-after").is_some());
    assert_eq!(
        api(&cg, "POST", "/api/edges/a/enable", Some(TOKEN), "").0,
        200
    );
    for _ in 0..5 {
        let (_, _, b) = http_get(&format!("{}/apple.m3u", cg.front_url()));
        assert!(String::from_utf8_lossy(&b).contains(&f.a.url()));
    }
    // Removing the stream's last edge would leave it without edges: refused.
    let (code, reply) = api(&cg, "DELETE", "/api/edges/a", Some(TOKEN), "");
    assert_eq!(code, 422, "{reply}");
    assert_eq!(http_get(&format!("{}/apple.m3u", cg.front_url())).0, 200);
}

/// No secret reaches what castgate shows or logs: the Icecast admin
/// password, the admin token and the sticky secret are absent from
/// /status.json, /api/config, /metrics and the log, after the calls that
/// use them (polls with admin credentials, API calls with right and wrong
/// tokens, a reload, HLS-free playlist requests).
#[test]
fn no_secret_in_status_config_metrics_or_logs() {
    const STICKY: &str = "sticky-secret-never-shown-0123456789";
    let f = farm();
    let mut sticky = tempfile::NamedTempFile::new().unwrap();
    writeln!(sticky, "{STICKY}").unwrap();
    let (front, admin) = (free_port(), free_port());
    let mut text = yaml(&f, front, admin, "", "redirect", false);
    text = text.replace(
        &format!("url: \"{}\" }}", f.a.url()),
        &format!(
            "url: \"{}\", admin: {{ user: {}, password: {} }} }}",
            f.a.url(),
            support::ADMIN_USER,
            support::ADMIN_PASSWORD
        ),
    );
    text.push_str(&format!(
        "sticky: {{ secret_file: \"{}\" }}\n",
        sticky.path().display()
    ));
    let cg = Castgate::start(&text, front, admin);
    wait_up(&cg, &["a", "b"]);
    // a's admin/stats poll uses the password: it must have worked.
    wait_until("admin stats polled", Duration::from_secs(10), || {
        let s = status(&cg);
        s["edges"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["name"] == "a"))
            .is_some_and(|e| e["up"] == true && e["admin_error"].is_null())
    });
    assert_eq!(http_get(&format!("{}/apple.m3u", cg.front_url())).0, 200);
    assert_eq!(api(&cg, "POST", "/api/reload", Some(TOKEN), "").0, 200);
    assert_eq!(
        api(
            &cg,
            "POST",
            "/api/reload",
            Some("wrong-token-0123456789"),
            ""
        )
        .0,
        401
    );
    let shown = [
        String::from_utf8_lossy(&http_get(&format!("{}/status.json", cg.admin_url())).2)
            .into_owned(),
        api(&cg, "GET", "/api/config", Some(TOKEN), "")
            .1
            .to_string(),
        String::from_utf8_lossy(&http_get(&format!("{}/metrics", cg.admin_url())).2).into_owned(),
        cg.log(),
    ];
    assert!(
        shown[1].contains("<redacted>"),
        "the effective config shows that a password is set: {}",
        shown[1]
    );
    for (what, text) in ["/status.json", "/api/config", "/metrics", "log"]
        .iter()
        .zip(&shown)
    {
        for secret in [support::ADMIN_PASSWORD, TOKEN, STICKY] {
            assert!(!text.contains(secret), "{what} shows a secret ({secret})");
        }
    }
}
