//! The operator's status page (`src/admin/page.html`, served at `GET /` on
//! the admin listener), read in headless Chromium by `tests/web/page.mjs`.
//!
//! * [`status_page_shows_what_status_json_says`]: a real farm (an Icecast
//!   origin with a source and listeners, a relay of it with listeners, and a
//!   dead port) behind a real castgate; the numbers, states and errors the
//!   page shows must be those of `/status.json` fetched right after.
//! * [`status_page_renders_states_escapes_and_survives_failures`]: the page
//!   served by a tiny server here, with a canned `/status.json` that has
//!   every edge state (`admin_state` draining / disabled), markup in an error
//!   string, and then fails: the page keeps the last data and shows its
//!   error banner.
//!
//! Needs: Node.js >= 20 with npm, `apt-get install -y chromium icecast2
//! ffmpeg` and `npm ci --prefix tests/web`.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    connect_listeners, free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source,
};

// ---------------------------------------------------------------------------
// read_status_page: page.mjs from Rust
// ---------------------------------------------------------------------------

/// How often the child process is re-checked while waiting.
const WEB_POLL: Duration = Duration::from_millis(50);
/// How long page.mjs gets on top of `--wait-ms` before it is killed (it
/// stops itself after wait + 90 s; this is the backstop).
const WEB_SLACK: Duration = Duration::from_secs(95);
/// How long page.mjs gets to close its browser after SIGTERM.
const WEB_STOP_GRACE: Duration = Duration::from_secs(10);
/// Node.js >= 20 with npm, Debian's Chromium, and the pinned node modules.
const WEB_INSTALL_HINT: &str = "install with `apt-get install -y chromium` (plus Node.js >= 20 \
     with npm, e.g. `apt-get install -y nodejs npm` where that gives >= 20) and \
     `npm ci --prefix tests/web`";

/// `tests/web` of this crate.
fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("web")
}

/// The browser page.mjs will launch: `$CHROMIUM_PATH` or `/usr/bin/chromium`.
fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `bin` found on `PATH`, if any.
fn find_on_path(bin: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(bin))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Panics with the install commands unless node, chromium and
/// playwright-core in `tests/web/node_modules` are there; returns `node`.
fn require_web_tools() -> PathBuf {
    let node = find_on_path("node")
        .unwrap_or_else(|| panic!("`node` not found on PATH: {WEB_INSTALL_HINT}"));
    let chromium = chromium_path();
    if !chromium.is_file() {
        panic!("{} not found: {WEB_INSTALL_HINT}", chromium.display());
    }
    let needed = web_dir().join("node_modules/playwright-core/package.json");
    if !needed.is_file() {
        panic!("{} missing: {WEB_INSTALL_HINT}", needed.display());
    }
    node
}

/// Reads a child's pipe to the end on a thread.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The running `node page.mjs`. On drop: SIGTERM (page.mjs then closes its
/// browser), SIGKILL after [`WEB_STOP_GRACE`], reaped either way. Its stdin
/// is a pipe we hold (`--exit-with-stdin`), so if this test process is
/// killed outright, page.mjs notices and closes the browser.
struct NodeGuard {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl NodeGuard {
    /// Waits up to `timeout` for the process to exit; its exit code, or
    /// None if still running (killed by a signal: Some(-1)).
    fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status.code().unwrap_or(-1)),
                Ok(None) if Instant::now() < deadline => thread::sleep(WEB_POLL),
                Ok(None) => return None,
                Err(_) => return Some(-1),
            }
        }
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if self.wait_timeout(WEB_STOP_GRACE).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Opens `url` (the status page) in headless Chromium with page.mjs, waits
/// up to `wait_ms` after load for it to render and refresh once more, and
/// returns page.mjs's JSON report (`ok`, `total_listeners`, `streams`,
/// `edges`, `errors`, `error_banner`, `refreshes`, ...; see page.mjs) plus
/// `exit_code` and `stderr`. `extra` goes on page.mjs's command line (e.g.
/// `--screenshot FILE`, `--viewport 390x844`, `--color-scheme dark`).
///
/// Does not panic when the page fails (assert on `ok`); panics when the
/// tools are missing, or when page.mjs hangs or prints no JSON.
fn read_status_page(url: &str, wait_ms: u64, extra: &[&str]) -> Value {
    let node = require_web_tools();
    // Chromium's profile goes here, so it is removed even if page.mjs is
    // killed before it cleans up.
    let tmp = tempfile::Builder::new()
        .prefix("castgate-statuspage-")
        .tempdir()
        .expect("create a temp dir for page.mjs");
    let mut child = Command::new(node)
        .arg(web_dir().join("page.mjs"))
        .args([
            "--url",
            url,
            "--wait-ms",
            &wait_ms.to_string(),
            "--exit-with-stdin",
        ])
        .args(extra)
        .env("TMPDIR", tmp.path())
        .env("CHROMIUM_PATH", chromium_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node tests/web/page.mjs");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let stdin = child.stdin.take();
    let mut guard = NodeGuard {
        child,
        _stdin: stdin,
    };
    let limit = Duration::from_millis(wait_ms) + WEB_SLACK;
    let exit_code = guard.wait_timeout(limit);
    drop(guard); // if still running: SIGTERM, then SIGKILL; closes the pipes
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if exit_code.is_none() {
        panic!("page.mjs did not finish within {limit:?}; its stderr:\n{err}");
    }
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut report: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("page.mjs printed no JSON report ({e}); stdout:\n{out}\nstderr:\n{err}")
    });
    if let Some(obj) = report.as_object_mut() {
        obj.insert("exit_code".into(), Value::from(exit_code.unwrap_or(-1)));
        obj.insert("stderr".into(), Value::from(err.clone()));
    }
    eprint!("{err}"); // shown by the test harness when the test fails
    report
}

/// Where screenshots go: cargo's per-target scratch dir, kept after the run
/// so a human can look at them.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Asserts `path` is a non-trivial PNG.
fn assert_png(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a real PNG ({} bytes)",
        path.display(),
        bytes.len()
    );
}

// ---------------------------------------------------------------------------
// A tiny static server for the page and a canned /status.json
// ---------------------------------------------------------------------------

/// Serves `src/admin/page.html` at `/` and `status` at `/status.json` on a
/// free 127.0.0.1 port, the first `ok_answers` times; after that
/// `/status.json` answers 500, as a broken admin would. Stops on drop.
struct PageServer {
    port: u16,
    stop: Arc<AtomicBool>,
    status_requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    fn start(status: String, ok_answers: usize) -> PageServer {
        let page = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/page.html"))
            .expect("read src/admin/page.html");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let status_requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&status_requests));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = serve_one(conn, &page, status.as_bytes(), &count, ok_answers);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        PageServer {
            port,
            stop,
            status_requests,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request on `conn`, answered with `Connection: close`.
fn serve_one(
    conn: TcpStream,
    page: &[u8],
    status: &[u8],
    count: &AtomicUsize,
    ok_answers: usize,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&conn);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let (code, kind, body): (&str, &str, &[u8]) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", page),
        "/status.json" if count.fetch_add(1, Ordering::Relaxed) < ok_answers => {
            ("200 OK", "application/json", status)
        }
        "/status.json" => (
            "500 Internal Server Error",
            "text/plain; charset=utf-8",
            b"500 broken on purpose\n",
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"404 not found\n",
        ),
    };
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = &conn;
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

// ---------------------------------------------------------------------------
// Helpers on /status.json
// ---------------------------------------------------------------------------

fn status(cg: &Castgate) -> Value {
    let (code, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    assert_eq!(code, 200, "/status.json");
    serde_json::from_slice(&body).expect("/status.json is JSON")
}

fn edge<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("edge {name} not in /status.json: {status}"))
}

/// What the page must call an edge's state (page.html's edgeState).
fn expected_state(edge: &Value) -> &'static str {
    match (
        edge["admin_state"].as_str().unwrap_or("active"),
        edge["up"].as_bool(),
    ) {
        ("disabled", _) => "disabled",
        (_, Some(false)) | (_, None) => "down",
        ("draining", _) => "draining",
        _ => "up",
    }
}

/// "0.4 s ago", "12.0 s ago", "2 min 5 s ago" or "never".
fn is_poll_age(text: &str) -> bool {
    if text == "never" {
        return true;
    }
    let Some(rest) = text.strip_suffix(" s ago") else {
        return false;
    };
    rest.parse::<f64>().is_ok() || rest.contains(" min ")
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn status_page_shows_what_status_json_says() {
    require_web_tools();
    let origin = Icecast::origin(IcecastOpts::default());
    let _source = Source::start(&origin, "/air");
    let relay = Icecast::relay(&origin, &["/air"], IcecastOpts::default());
    relay.wait_mount_live("/air", Duration::from_secs(20));
    let _on_origin = connect_listeners(&format!("{}/air", origin.url()), 3);
    let _on_relay = connect_listeners(&format!("{}/air", relay.url()), 2);
    // The relay's pull is one more listener of /air on the origin.
    origin.wait_listeners("/air", 4, Duration::from_secs(10));
    relay.wait_listeners("/air", 2, Duration::from_secs(10));

    let (front, admin, dead) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "listen: [\"127.0.0.1:{front}\"]\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         poll: {{ interval: 500ms, timeout: 400ms, rise: 1, fall: 2 }}\n\
         edges:\n\
         \x20 - {{ name: origin, kind: icecast, url: \"{}\", max_listeners: 20 }}\n\
         \x20 - {{ name: relay, kind: icecast, url: \"{}\", max_listeners: 20 }}\n\
         \x20 - {{ name: gone, kind: icecast, url: \"http://127.0.0.1:{dead}\" }}\n\
         streams:\n\
         \x20 - {{ name: apple, mount: /air, title: Apple Radio }}\n\
         \x20 - {{ name: nonstop, mount: /nonstop }}\n",
        origin.url(),
        relay.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until(
        "castgate to see 6 listeners and the dead edge down with an error",
        Duration::from_secs(10),
        || {
            let s = status(&cg);
            let gone = edge(&s, "gone");
            s["total_listeners"] == 6
                && edge(&s, "origin")["listeners"] == 4
                && edge(&s, "relay")["listeners"] == 2
                && gone["up"] == false
                && gone["last_error"].is_string()
        },
    );

    let shot = screenshot_path("status_page.png");
    let shot_arg = shot.to_string_lossy().into_owned();
    let page = read_status_page(
        &format!("{}/", cg.admin_url()),
        6000,
        &["--screenshot", &shot_arg],
    );
    let s = status(&cg);
    eprintln!("page: {page}\nstatus.json: {s}");
    assert_eq!(page["ok"], true, "page.mjs failed: {page}");
    assert_eq!(page["errors"], Value::Array(vec![]), "page errors: {page}");
    assert_eq!(
        page["error_banner"],
        Value::Null,
        "error banner shown: {page}"
    );
    assert!(page["refreshes_ok"].as_u64() >= Some(2), "{page}");

    assert_eq!(
        page["total_listeners"], s["total_listeners"],
        "total listeners"
    );
    assert_eq!(page["total_listeners"], 6);
    for stream in s["streams"].as_array().expect("streams") {
        let name = stream["name"].as_str().expect("stream name");
        assert_eq!(
            page["streams"][name], stream["listeners"],
            "listeners of stream {name}: page {page}"
        );
    }
    assert_eq!(page["streams"].as_object().map(|o| o.len()), Some(2));

    let edges = s["edges"].as_array().expect("edges");
    assert_eq!(
        page["edges"].as_object().map(|o| o.len()),
        Some(edges.len())
    );
    for e in edges {
        let name = e["name"].as_str().expect("edge name");
        let shown = &page["edges"][name];
        assert_eq!(
            shown["state"],
            expected_state(e),
            "state of {name}: {shown}"
        );
        assert_eq!(
            shown["listeners"], e["listeners"],
            "listeners of {name}: {shown}"
        );
        let poll_age = shown["poll_age"].as_str().unwrap_or_default();
        assert!(is_poll_age(poll_age), "poll age of {name}: {poll_age:?}");
        let load: f64 = shown["load"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("load of {name} not a number: {shown}"));
        let want = e["load"].as_f64().expect("load");
        assert!(
            (load - want).abs() < 0.01,
            "load of {name}: shown {load}, status.json {want}"
        );
    }
    assert_eq!(page["edges"]["origin"]["state"], "up");
    assert_eq!(page["edges"]["relay"]["state"], "up");
    assert_eq!(page["edges"]["gone"]["state"], "down");
    let error = edge(&s, "gone")["last_error"]
        .as_str()
        .expect("gone's last_error");
    let shown_error = page["edges"]["gone"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !error.is_empty() && shown_error.contains(error),
        "gone's last error: page {shown_error:?}, status.json {error:?}"
    );
    assert_eq!(page["edges"]["origin"]["last_error"], "");

    assert_png(&shot);
    eprintln!("screenshot: {}", shot.display());
}

/// A `/status.json` with every edge state, HLS sessions, stream errors and
/// markup in an error string.
const CANNED_STATUS: &str = r#"{
  "now": "2025-01-01T12:00:00.123Z", "generation": 1234, "snapshot_age_seconds": 0.41,
  "total_listeners": 1287,
  "edges": [
    {"name": "air1", "kind": "icecast", "url": "http://10.0.0.1:8000", "public_url": "http://air1.example.com:8000",
     "up": true, "last_error": null, "admin_error": null, "last_poll_age_seconds": 0.412,
     "last_poll_duration_seconds": 0.004, "listeners": 812, "assigned_since_poll": 3, "max_listeners": 1000,
     "weight": 1.0, "load": 0.815, "mounts": {"/air": {"listeners": 800, "max_listeners": null}},
     "sessions": 0, "bandwidth_bps": 103936000, "max_bandwidth_bps": 200000000, "stream_errors": {}},
    {"name": "air2", "kind": "icecast", "url": "http://10.0.0.2:8000", "public_url": "http://air2.example.com:8000",
     "up": true, "last_error": null, "admin_error": null, "last_poll_age_seconds": 0.39,
     "last_poll_duration_seconds": 0.006, "listeners": 475, "assigned_since_poll": 0, "max_listeners": 1000,
     "weight": 1.0, "load": 0.475, "mounts": {"/air": {"listeners": 475, "max_listeners": null}},
     "sessions": 0, "bandwidth_bps": 60800000, "max_bandwidth_bps": null, "stream_errors": {},
     "admin_state": "draining"},
    {"name": "rtmp1", "kind": "nginx_rtmp", "url": "http://10.0.0.3:8080", "public_url": "http://rtmp1.example.com",
     "up": true, "last_error": null, "admin_error": null, "last_poll_age_seconds": 75.2,
     "last_poll_duration_seconds": 0.01, "listeners": 2, "assigned_since_poll": 0, "max_listeners": null,
     "weight": 1.0, "load": 1.35, "mounts": {}, "sessions": 14, "bandwidth_bps": 0, "max_bandwidth_bps": null,
     "stream_errors": {"/hls/stream.m3u8": "playlist stale for 12 s"}, "admin_state": "active"},
    {"name": "gone", "kind": "icecast", "url": "http://10.0.0.9:8000", "public_url": "http://10.0.0.9:8000",
     "up": false, "last_error": "connect: refused <img src=x onerror=alert(1)><script>alert(2)</script>",
     "admin_error": null, "last_poll_age_seconds": 0.5, "last_poll_duration_seconds": 0.001, "listeners": 0,
     "assigned_since_poll": 0, "max_listeners": null, "weight": 1.0, "load": 0, "mounts": {}, "sessions": 0,
     "bandwidth_bps": 0, "max_bandwidth_bps": null, "stream_errors": {}, "admin_state": "draining"},
    {"name": "spare", "kind": "hls", "url": "http://10.0.0.10", "public_url": "http://10.0.0.10",
     "up": true, "last_error": null, "admin_error": null, "last_poll_age_seconds": null,
     "last_poll_duration_seconds": null, "listeners": 0, "assigned_since_poll": 0, "max_listeners": null,
     "weight": 1.0, "load": 0, "mounts": {}, "sessions": 0, "bandwidth_bps": 0, "max_bandwidth_bps": null,
     "stream_errors": {}, "admin_state": "disabled"}
  ],
  "streams": [
    {"name": "apple", "mount": "/air", "fallback": "/nonstop", "listeners": 1287,
     "edges": ["air1", "air2", "gone"], "live_edges": ["air1", "air2"], "kind": "icecast", "mode": "redirect",
     "per_edge": [{"edge": "air1", "live": true, "viewers": 812, "sessions": 0},
                  {"edge": "air2", "live": true, "viewers": 475, "sessions": 0},
                  {"edge": "gone", "live": false, "viewers": 0, "sessions": 0}]},
    {"name": "<b>live</b>", "mount": "/hls/stream.m3u8", "fallback": null, "listeners": 16,
     "edges": ["rtmp1", "spare"], "live_edges": [], "kind": "hls", "mode": "rewrite",
     "per_edge": [{"edge": "rtmp1", "live": false, "viewers": 2, "sessions": 14},
                  {"edge": "spare", "live": false, "viewers": 0, "sessions": 0}]}
  ]
}"#;

#[test]
fn status_page_renders_states_escapes_and_survives_failures() {
    require_web_tools();
    // Everything fine: every state, formatting, escaping.
    let server = PageServer::start(CANNED_STATUS.to_string(), usize::MAX);
    let shot = screenshot_path("status_page_canned.png");
    let shot_arg = shot.to_string_lossy().into_owned();
    let page = read_status_page(&server.url(), 5000, &["--screenshot", &shot_arg]);
    assert_eq!(page["ok"], true, "page.mjs failed: {page}");
    assert_eq!(page["errors"], Value::Array(vec![]), "page errors: {page}");
    assert_eq!(page["error_banner"], Value::Null, "{page}");
    assert_eq!(page["total_listeners"], 1287);
    assert_eq!(page["generation"], "1234");
    assert_eq!(page["streams"]["apple"], 1287);
    // Markup in a name is text, shown as is.
    assert_eq!(page["streams"]["<b>live</b>"], 16, "{page}");
    let edges = &page["edges"];
    for (name, state, listeners, load, poll_age) in [
        ("air1", "up", 812, "0.81", "0.4 s ago"),
        ("air2", "draining", 475, "0.47", "0.4 s ago"),
        ("rtmp1", "up", 2, "1.35", "1 min 15 s ago"),
        ("gone", "down", 0, "0", "0.5 s ago"),
        ("spare", "disabled", 0, "0", "never"),
    ] {
        let e = &edges[name];
        assert_eq!(e["state"], state, "{name}: {e}");
        assert_eq!(e["listeners"], listeners, "{name}: {e}");
        assert_eq!(e["load"], load, "{name}: {e}");
        assert_eq!(e["poll_age"], poll_age, "{name}: {e}");
    }
    // Markup in an error is text: had it been parsed, the text would be
    // gone and the onerror/script would have run (a page error).
    assert_eq!(
        edges["gone"]["last_error"],
        "connect: refused <img src=x onerror=alert(1)><script>alert(2)</script>"
    );
    assert_eq!(
        edges["rtmp1"]["last_error"],
        "/hls/stream.m3u8: playlist stale for 12 s"
    );
    assert_eq!(edges["air1"]["last_error"], "");
    assert_png(&shot);
    for (file, args) in [
        ("status_page_phone.png", ["--viewport", "390x844"]),
        ("status_page_dark.png", ["--color-scheme", "dark"]),
    ] {
        let path = screenshot_path(file);
        let path_arg = path.to_string_lossy().into_owned();
        let page = read_status_page(
            &server.url(),
            5000,
            &[args[0], args[1], "--screenshot", &path_arg],
        );
        assert_eq!(page["ok"], true, "{file}: {page}");
        assert_eq!(page["total_listeners"], 1287, "{file}: {page}");
        assert_png(&path);
    }
    drop(server);

    // /status.json answers once, then fails: the page keeps the data and
    // says so.
    let server = PageServer::start(CANNED_STATUS.to_string(), 1);
    let shot = screenshot_path("status_page_failing.png");
    let shot_arg = shot.to_string_lossy().into_owned();
    let page = read_status_page(&server.url(), 5000, &["--screenshot", &shot_arg]);
    assert_eq!(page["ok"], true, "page.mjs failed: {page}");
    assert!(server.status_requests.load(Ordering::Relaxed) >= 2);
    assert_eq!(page["refreshes_ok"], 1, "{page}");
    let banner = page["error_banner"].as_str().unwrap_or_default();
    assert!(banner.contains("HTTP 500"), "error banner: {page}");
    assert_eq!(page["total_listeners"], 1287, "last data kept: {page}");
    assert_eq!(
        page["edges"]["gone"]["state"], "down",
        "last data kept: {page}"
    );
    assert_png(&shot);
    eprintln!("screenshots in {}", env!("CARGO_TARGET_TMPDIR"));
}
