//! Test harness for castgate's integration tests: real `icecast2`, `ffmpeg`
//! and `castgate` processes on 127.0.0.1, plus tiny blocking HTTP helpers
//! built on `std::net`.
//!
//! Use it from an integration test with `mod support;`.
//!
//! Ground rules it keeps, so tests built on it keep them too:
//! * Only loopback: every URL handed to the HTTP helpers must resolve to a
//!   loopback address, anything else is refused.
//! * No fixed ports: every server gets a port from [`free_port`].
//! * No fixed sleeps for readiness: everything waits with [`wait_until`] (or
//!   its non-panicking twin [`poll_until`]) against a deadline.
//! * Every child process is killed and reaped when its handle is dropped,
//!   also when the test panics.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;
pub mod nginx;

/// Password sources use to connect to every harness icecast (user `source`).
pub const SOURCE_PASSWORD: &str = "castgate-source-pw";
/// Icecast admin user of every harness icecast.
pub const ADMIN_USER: &str = "admin";
/// Icecast admin password of every harness icecast.
pub const ADMIN_PASSWORD: &str = "castgate-admin-pw";
/// Relay password of every harness icecast (user `relay`).
pub const RELAY_PASSWORD: &str = "castgate-relay-pw";

/// How often [`wait_until`] and [`poll_until`] re-check their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Connect and whole-exchange timeout of the blocking HTTP helpers.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an icecast gets to answer HTTP after being spawned.
const ICECAST_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long castgate gets to answer `/status.json` after being spawned.
const CASTGATE_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long castgate gets to exit after SIGINT before it is killed.
const CASTGATE_STOP_GRACE: Duration = Duration::from_secs(5);
/// Largest response head the HTTP helpers accept.
const MAX_HEAD_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Finds `bin` on `PATH`, or panics telling how to install it.
///
/// Call it at the top of a test so a missing tool fails with an actionable
/// message instead of an obscure spawn error.
pub fn require_bin(bin: &str, apt_pkg: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(bin))
            .find(|candidate| is_executable(candidate))
    });
    found.unwrap_or_else(|| {
        panic!("{bin} not found: install it with `apt-get install -y {apt_pkg}`")
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and dropping the listener, so another
/// process could grab it before the caller binds it; the servers started by
/// this harness retry with a fresh port when that happens. No port is handed
/// out twice in one test process: the kernel may offer a just-released port
/// again, and `(free_port(), free_port())` once gave castgate's front door
/// and admin listener the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `f` every ~50 ms until it returns true or `timeout` passes; returns
/// whether it succeeded. `f` is always tried at least once.
pub fn poll_until<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// How long after an edge starts failing castgate may still count it up:
/// `fall` failed polls `interval` apart, the last one taking up to
/// `timeout`, plus `margin` for scheduling on a shared machine.
pub const fn down_bound(
    interval: Duration,
    timeout: Duration,
    fall: u32,
    margin: Duration,
) -> Duration {
    interval
        .saturating_mul(fall)
        .saturating_add(timeout)
        .saturating_add(margin)
}

/// Like [`poll_until`], but panics naming `what` when `timeout` passes.
pub fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, f: F) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// The last `lines` lines of a text file, or a note why there are none.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A fresh temp dir for one harness process.
///
/// World-readable because icecast, started as root, drops to an unprivileged
/// user before it opens its logs, and that user must be able to enter it.
fn harness_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir for a test process");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("make the test temp dir world-readable");
    dir
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Kills (SIGKILL) and reaps a child; errors mean it was already gone.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Icecast
// ---------------------------------------------------------------------------

/// Knobs for a harness icecast. Build with struct-update syntax:
/// `IcecastOpts { max_clients: 5, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct IcecastOpts {
    /// Icecast's `<limits><clients>`. Icecast counts *every* client
    /// against it: listeners, sources, relay pulls and HTTP requests in
    /// flight. Once full it refuses every request, status pages included
    /// (403 or a TCP reset), so [`Icecast::listeners`] then reads None.
    pub max_clients: u32,
    /// Icecast's `<limits><sources>` (relayed mounts count too).
    pub max_sources: u32,
    /// Icecast's `<hostname>`: what it puts in `listenurl`. It is *not* the
    /// address the server listens on (always 127.0.0.1).
    pub hostname: String,
    /// Per-mount `<max-listeners>`, e.g. `vec![("/air".into(), 2)]`.
    pub mount_max_listeners: Vec<(String, u32)>,
    /// Loopback address to listen on (default 127.0.0.1); another 127.x
    /// address lets two icecasts share a port, as DNS-discovered edges do.
    pub bind: String,
    /// Port to listen on; default: a free one.
    pub port: Option<u16>,
}

impl Default for IcecastOpts {
    fn default() -> Self {
        IcecastOpts {
            max_clients: 100,
            max_sources: 10,
            hostname: "127.0.0.1".to_string(),
            mount_max_listeners: Vec::new(),
            bind: "127.0.0.1".to_string(),
            port: None,
        }
    }
}

/// A real `icecast2` process on 127.0.0.1 on a free port, with its config,
/// logs and state in its own temp dir. Killed and reaped on drop.
pub struct Icecast {
    /// "origin" or "relay", for messages.
    role: &'static str,
    port: u16,
    opts: IcecastOpts,
    /// `(upstream port, mounts)` when this is a relay.
    relay_of: Option<(u16, Vec<String>)>,
    child: Option<Child>,
    dir: TempDir,
}

impl Icecast {
    /// Starts an icecast that sources connect to directly, and waits until
    /// it is ready.
    pub fn origin(opts: IcecastOpts) -> Icecast {
        Icecast::launch("origin", opts, None)
    }

    /// Starts an icecast relaying `mounts` (same mount names locally) from
    /// `upstream`, and waits until it is ready (not until the mounts are
    /// live: use [`Icecast::wait_mount_live`] for that).
    ///
    /// Relays are not on-demand, so relayed mounts are live without
    /// listeners, and a lost upstream is retried every ~2 s, so a restarted
    /// upstream is picked up quickly. Note the relay's pull counts as one
    /// listener per mount on the upstream.
    pub fn relay(upstream: &Icecast, mounts: &[&str], opts: IcecastOpts) -> Icecast {
        let mounts = mounts.iter().map(|m| m.to_string()).collect();
        Icecast::launch("relay", opts, Some((upstream.port, mounts)))
    }

    fn launch(
        role: &'static str,
        opts: IcecastOpts,
        relay_of: Option<(u16, Vec<String>)>,
    ) -> Icecast {
        let bin = require_bin("icecast2", "icecast2");
        let dir = harness_dir("castgate-icecast-");
        let logs = dir.path().join("logs");
        fs::create_dir(&logs).expect("create icecast log dir");
        // Writable by the unprivileged user icecast switches to when started
        // as root (see `security_xml`).
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o777))
            .expect("chmod icecast log dir");

        let mut icecast = Icecast {
            role,
            port: 0,
            opts,
            relay_of,
            child: None,
            dir,
        };
        // free_port() can race with other processes grabbing the same port:
        // icecast then exits at once, and we retry on a fresh port.
        for _attempt in 0..3 {
            icecast.port = icecast.opts.port.unwrap_or_else(free_port);
            fs::write(icecast.config_path(), icecast.config_xml()).expect("write icecast config");
            icecast.spawn(&bin);
            if icecast.wait_ready() {
                return icecast;
            }
            if icecast.is_running() {
                let log = icecast.log_tail(30);
                icecast.kill();
                panic!(
                    "{role} icecast on port {} did not become ready within {ICECAST_READY_TIMEOUT:?}; error.log:\n{log}",
                    icecast.port
                );
            }
            icecast.kill();
        }
        panic!(
            "{role} icecast exited at startup 3 times; last error.log:\n{}",
            icecast.log_tail(30)
        );
    }

    fn spawn(&mut self, bin: &Path) {
        let out =
            File::create(self.dir.path().join("stdout.log")).expect("create icecast stdout log");
        let err = out.try_clone().expect("clone icecast stdout log handle");
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// Ready = our process still runs and serves a *valid* status-json.
    ///
    /// "GET / answered" alone is not enough: for a few hundred ms after
    /// start icecast 2.4.4 serves status-json.xsl as invalid JSON (see
    /// tests/fixtures/README.md), and a server answering while our child has
    /// exited would be some other process on a raced port.
    fn wait_ready(&mut self) -> bool {
        let mut ready = false;
        // Stop early if the process exits: the caller retries or reports.
        poll_until(ICECAST_READY_TIMEOUT, || {
            if !self.is_running() {
                return true;
            }
            ready = self.status_json_value().is_some();
            ready
        });
        ready && self.is_running()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("icecast.xml")
    }

    fn config_xml(&self) -> String {
        let dir = self.dir.path().display();
        let opts = &self.opts;
        let mounts: String = opts
            .mount_max_listeners
            .iter()
            .map(|(mount, max)| {
                format!(
                    "  <mount type=\"normal\"><mount-name>{}</mount-name><max-listeners>{max}</max-listeners></mount>\n",
                    xml_escape(mount)
                )
            })
            .collect();
        let relays: String = match &self.relay_of {
            None => String::new(),
            Some((upstream_port, relay_mounts)) => {
                // A 1 s update interval makes the relay re-check (and so
                // reconnect) its relays every ~2 s instead of every 120 s.
                let mut xml =
                    String::from("  <master-update-interval>1</master-update-interval>\n");
                for mount in relay_mounts {
                    let mount = xml_escape(mount);
                    xml.push_str(&format!(
                        "  <relay><server>127.0.0.1</server><port>{upstream_port}</port>\
                         <mount>{mount}</mount><local-mount>{mount}</local-mount>\
                         <on-demand>0</on-demand><relay-shoutcast-metadata>1</relay-shoutcast-metadata></relay>\n"
                    ));
                }
                xml
            }
        };
        format!(
            r#"<icecast>
  <location>castgate-tests</location>
  <admin>tests@localhost</admin>
  <hostname>{hostname}</hostname>
  <limits>
    <clients>{clients}</clients>
    <sources>{sources}</sources>
  </limits>
  <authentication>
    <source-password>{SOURCE_PASSWORD}</source-password>
    <relay-password>{RELAY_PASSWORD}</relay-password>
    <admin-user>{ADMIN_USER}</admin-user>
    <admin-password>{ADMIN_PASSWORD}</admin-password>
  </authentication>
  <listen-socket><port>{port}</port><bind-address>{bind}</bind-address></listen-socket>
{relays}{mounts}  <fileserve>1</fileserve>
  <paths>
    <basedir>{dir}</basedir>
    <logdir>{dir}/logs</logdir>
    <webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>3</loglevel>
  </logging>
{security}</icecast>
"#,
            hostname = xml_escape(&opts.hostname),
            bind = xml_escape(&opts.bind),
            clients = opts.max_clients,
            sources = opts.max_sources,
            port = self.port,
            security = security_xml(),
        )
    }

    /// "origin" or "relay".
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The port icecast listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.opts.bind, self.port)
    }

    /// The temp dir holding `icecast.xml` and `logs/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the icecast process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills icecast now (SIGKILL: no goodbye to listeners or relays), as a
    /// crashed edge would die. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts icecast again on the same port with the same config (killing
    /// it first if it still runs) and waits until it is ready. Sources that
    /// were connected are not: start new ones. A relay reconnects its
    /// mounts by itself.
    pub fn restart(&mut self) {
        self.kill();
        let bin = require_bin("icecast2", "icecast2");
        self.spawn(&bin);
        if !self.wait_ready() {
            let running = self.is_running();
            let log = self.log_tail(30);
            self.kill();
            panic!(
                "{} icecast did not come back on port {} (process {}); error.log:\n{log}",
                self.role,
                self.port,
                if running {
                    "running"
                } else {
                    "exited, port taken?"
                },
            );
        }
    }

    /// Raw body of `GET /status-json.xsl` if it answers 200. May be invalid
    /// JSON (see tests/fixtures/README.md).
    pub fn status_json(&self) -> Option<String> {
        let (status, _, body) =
            try_http_request("GET", &format!("{}/status-json.xsl", self.url()), &[]).ok()?;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// Raw body of `GET /admin/stats` (with admin credentials) if it answers 200.
    pub fn admin_stats(&self) -> Option<String> {
        let auth = basic_auth(ADMIN_USER, ADMIN_PASSWORD);
        let url = format!("{}/admin/stats", self.url());
        let (status, _, body) = try_http_request("GET", &url, &[("Authorization", &auth)]).ok()?;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// status-json.xsl parsed, if it answers with valid JSON that has the
    /// server fields (icecast fills those in shortly after start).
    fn status_json_value(&self) -> Option<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_str(&self.status_json()?).ok()?;
        value["icestats"].get("host")?;
        Some(value)
    }

    /// The live sources of status-json: icecast lists none as no `source`
    /// key, one as an object and several as an array.
    fn sources(&self) -> Option<Vec<serde_json::Value>> {
        let mut value = self.status_json_value()?;
        Some(match value["icestats"]["source"].take() {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(sources) => sources,
            source => vec![source],
        })
    }

    /// Live mounts (e.g. `["/air"]`) per status-json.xsl, or None if it
    /// cannot be read. Mounts come from `listenurl`, the only place
    /// status-json names them.
    pub fn mounts(&self) -> Option<Vec<String>> {
        let sources = self.sources()?;
        Some(
            sources
                .iter()
                .filter_map(|s| {
                    s["listenurl"]
                        .as_str()
                        .and_then(url_path)
                        .map(str::to_string)
                })
                .collect(),
        )
    }

    /// Current listener count of `mount` per status-json.xsl; None if the
    /// mount is not live or icecast cannot be read (down, or full: see
    /// [`IcecastOpts::max_clients`]).
    pub fn listeners(&self, mount: &str) -> Option<u64> {
        self.sources()?
            .iter()
            .find(|s| s["listenurl"].as_str().and_then(url_path) == Some(mount))
            .and_then(|s| s["listeners"].as_u64())
    }

    /// Waits until `mount` is listed as live in status-json.xsl.
    pub fn wait_mount_live(&self, mount: &str, timeout: Duration) {
        let what = format!(
            "{mount} to be live on the {} icecast at {}",
            self.role,
            self.url()
        );
        wait_until(&what, timeout, || self.listeners(mount).is_some());
    }

    /// Waits until `mount` is live with exactly `count` listeners.
    pub fn wait_listeners(&self, mount: &str, count: u64, timeout: Duration) {
        let what = format!(
            "{count} listeners on {mount} of the {} icecast at {}",
            self.role,
            self.url()
        );
        wait_until(&what, timeout, || self.listeners(mount) == Some(count));
    }

    /// The last `lines` lines of icecast's error.log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("logs/error.log"), lines)
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} icecast {} error.log (tail) ---\n{}\n---",
                self.role,
                self.url(),
                self.log_tail(20)
            );
        }
        self.kill();
    }
}

/// The path part of an `http://host:port/path` URL.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.find('/').map(|i| &rest[i..])
}

/// Icecast refuses to run as root. As root (here and in CI) it gets a
/// `<changeowner>` block: it binds its port, then switches to an
/// unprivileged user (Debian's `icecast2` user, else `nobody`).
fn security_xml() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return String::new();
    }
    let (user, group) = unprivileged_user().expect(
        "running as root, but found neither user `icecast2` nor `nobody` for icecast to switch to",
    );
    format!(
        "  <security><chroot>0</chroot><changeowner><user>{user}</user><group>{group}</group></changeowner></security>\n"
    )
}

/// `(user, primary group name)` of the first of `icecast2`, `nobody` that exists.
fn unprivileged_user() -> Option<(String, String)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let groups = fs::read_to_string("/etc/group").ok()?;
    ["icecast2", "nobody"].iter().find_map(|wanted| {
        let gid = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == *wanted).then(|| fields[3].to_string())
        })?;
        let group = groups.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 2 && fields[2] == gid).then(|| fields[0].to_string())
        })?;
        Some((wanted.to_string(), group))
    })
}

// ---------------------------------------------------------------------------
// Source
// ---------------------------------------------------------------------------

/// An ffmpeg process sending a 440 Hz sine as 128 kbit/s MP3, in real time,
/// to a mount of an [`Icecast`]. Killed and reaped on drop.
pub struct Source {
    mount: String,
    icecast_url: String,
    args: Vec<String>,
    child: Option<Child>,
    // ffmpeg's stderr goes here, shown when it fails.
    dir: TempDir,
}

impl Source {
    /// Starts the source and waits (30 s at most) until the mount is live.
    /// An ffmpeg that exits before (icecast refusing a source whose
    /// predecessor it has not yet dropped, on a busy machine) is started
    /// again.
    pub fn start(icecast: &Icecast, mount: &str) -> Source {
        let mut source = Source::spawn(icecast, mount);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut live = false;
        while !live && Instant::now() < deadline {
            poll_until(deadline.saturating_duration_since(Instant::now()), || {
                icecast.listeners(mount).is_some() || !source.is_running()
            });
            live = icecast.listeners(mount).is_some();
            if !live && !source.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(300));
                source.respawn();
            }
        }
        if !live {
            let state = if source.is_running() {
                "still running"
            } else {
                "exited"
            };
            panic!(
                "source for {mount} on {} not live within 30s (ffmpeg {state}); ffmpeg stderr:\n{}\nicecast error.log:\n{}",
                icecast.url(),
                source.log(),
                icecast.log_tail(20)
            );
        }
        source
    }

    /// Starts the source without waiting for the mount to go live.
    pub fn spawn(icecast: &Icecast, mount: &str) -> Source {
        let target = format!(
            "icecast://source:{SOURCE_PASSWORD}@{}:{}{mount}",
            icecast.opts.bind,
            icecast.port()
        );
        // -re: send in real time, like a live encoder, not as fast as possible.
        let args = "-nostdin -hide_banner -loglevel error -re -f lavfi -i sine=frequency=440 \
                    -c:a libmp3lame -b:a 128k -content_type audio/mpeg -f mp3"
            .split_whitespace()
            .map(str::to_string)
            .chain([target])
            .collect();
        let mut source = Source {
            mount: mount.to_string(),
            icecast_url: icecast.url(),
            args,
            child: None,
            dir: harness_dir("castgate-source-"),
        };
        source.respawn();
        source
    }

    fn respawn(&mut self) {
        let bin = require_bin("ffmpeg", "ffmpeg");
        let log = File::create(self.dir.path().join("ffmpeg.log")).expect("create ffmpeg log");
        let child = Command::new(&bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// The mount this source sends to.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Whether ffmpeg still runs (it exits when icecast goes away).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills ffmpeg now: the mount goes off air.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Kills ffmpeg if running and starts it again (e.g. after the icecast
    /// was restarted), without waiting for the mount to go live.
    pub fn restart(&mut self) {
        self.kill();
        self.respawn();
    }

    /// What ffmpeg wrote to stderr (only errors, given `-loglevel error`).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("ffmpeg.log"), 50)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- source {}{} ffmpeg stderr ---\n{}\n---",
                self.icecast_url,
                self.mount,
                self.log()
            );
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------

/// A real HTTP listener: one TCP connection that sent `GET` for a mount,
/// read the response head, and keeps draining the body in a background
/// thread. Dropping it closes the socket and joins the thread.
pub struct Listener {
    status: u16,
    headers: Headers,
    bytes: Arc<AtomicU64>,
    open: Arc<AtomicBool>,
    /// A handle on the socket the thread reads, to shut it down on drop.
    socket: TcpStream,
    reader: Option<JoinHandle<()>>,
}

impl Listener {
    /// Connects to a full URL like `http://127.0.0.1:PORT/air` and reads the
    /// response head. Any status is accepted: check [`Listener::status`].
    pub fn connect(url: &str) -> io::Result<Listener> {
        Listener::connect_with(url, &[])
    }

    /// Like [`Listener::connect`], with extra request headers.
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> io::Result<Listener> {
        let target = HttpTarget::parse(url)?;
        let mut stream = target.connect()?;
        stream.write_all(
            target
                .request("GET", headers, "Connection: close\r\n")
                .as_bytes(),
        )?;
        let deadline = Instant::now() + HTTP_TIMEOUT;
        let (status, resp_headers, leftover) = read_head(&mut DeadlineReader {
            stream: &stream,
            deadline,
        })?;
        // From here on the thread blocks in read() until data, EOF, or the
        // shutdown() in Drop.
        stream.set_read_timeout(None)?;

        let bytes = Arc::new(AtomicU64::new(leftover.len() as u64));
        let open = Arc::new(AtomicBool::new(true));
        let socket = stream.try_clone()?;
        let reader = {
            let (bytes, open) = (Arc::clone(&bytes), Arc::clone(&open));
            thread::Builder::new()
                .name("test-listener".into())
                .spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                bytes.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        }
                    }
                    open.store(false, Ordering::Relaxed);
                })?
        };
        Ok(Listener {
            status,
            headers: resp_headers,
            bytes,
            open,
            socket,
            reader: Some(reader),
        })
    }

    /// HTTP status code of the response.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Response headers in order received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// First response header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Body bytes received so far: raw bytes after the response head
    /// (including chunk framing, if the server used chunked encoding).
    pub fn bytes_received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// False once the server closed the connection (or it failed).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` body bytes have arrived.
    pub fn wait_bytes(&self, n: u64, timeout: Duration) {
        wait_until(&format!("listener to receive {n} bytes"), timeout, || {
            self.bytes_received() >= n
        });
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Wakes the reader thread blocked in read() with EOF.
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Connects `n` listeners to a full mount URL (e.g. `http://127.0.0.1:PORT/air`),
/// panicking unless each one gets a 200.
pub fn connect_listeners(url: &str, n: usize) -> Vec<Listener> {
    (0..n)
        .map(|i| {
            let listener = Listener::connect(url).unwrap_or_else(|e| {
                panic!("listener {} of {n} could not connect to {url}: {e}", i + 1)
            });
            assert_eq!(
                listener.status(),
                200,
                "listener {} of {n} to {url} got status {} (headers {:?})",
                i + 1,
                listener.status(),
                listener.headers()
            );
            listener
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Blocking HTTP helpers
// ---------------------------------------------------------------------------

/// Response headers, in the order received.
pub type Headers = Vec<(String, String)>;

/// `(status, headers, body)` of one HTTP exchange.
pub type HttpResponse = (u16, Headers, Vec<u8>);

/// A parsed `http://host:port/path` URL whose host is loopback.
struct HttpTarget {
    addr: SocketAddr,
    /// `host:port` as written, for the Host header.
    authority: String,
    /// Path and query, starting with '/'.
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> io::Result<HttpTarget> {
        let invalid =
            |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port.to_socket_addrs()?.collect();
        // Tests must only ever talk to this machine.
        let addr = addrs
            .iter()
            .copied()
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| {
                invalid("not a loopback address; the test harness only talks to 127.0.0.1")
            })?;
        Ok(HttpTarget {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn request(&self, method: &str, headers: &[(&str, &str)], extra: &str) -> String {
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            self.path, self.authority
        );
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        {
            req.push_str("User-Agent: castgate-tests\r\n");
        }
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str(extra);
        req.push_str("\r\n");
        req
    }
}

/// Reads from a socket, failing with `TimedOut` once `deadline` passes, so a
/// whole exchange (not each read) is bounded.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP exchange deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Reads a response head; returns status, headers and any body bytes read
/// past the head.
fn read_head(reader: &mut impl Read) -> io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let leftover = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Ok((status, headers, leftover))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {size_line:?}"),
            )
        })?;
        if size == 0 {
            // Skip trailers up to the final empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// One blocking HTTP/1.1 request with `Connection: close`, redirects not
/// followed, the whole exchange bounded by a few seconds. Returns
/// `(status, headers, body)`. The body is de-chunked if needed; a response
/// without length that never ends (an audio stream) fails with `TimedOut`:
/// use [`Listener`] for streams. Only loopback URLs are accepted.
pub fn try_http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    try_http_request_with_body(method, url, headers, &[])
}

/// [`http_request`] with a request body (the caller sets Content-Length).
pub fn http_request_with_body(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http_request_with_body(method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// [`try_http_request`] with a request body (the caller sets
/// Content-Length).
pub fn try_http_request_with_body(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let target = HttpTarget::parse(url)?;
    let stream = target.connect()?;
    let mut request = target
        .request(method, headers, "Connection: close\r\n")
        .into_bytes();
    request.extend_from_slice(body);
    (&stream).write_all(&request)?;
    let mut reader = DeadlineReader {
        stream: &stream,
        deadline: Instant::now() + HTTP_TIMEOUT,
    };
    let (status, resp_headers, leftover) = read_head(&mut reader)?;

    let no_body =
        method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304;
    let mut rest = BufReader::new(Cursor::new(leftover).chain(reader));
    let body = if no_body {
        Vec::new()
    } else if header(&resp_headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        read_chunked(&mut rest)?
    } else if let Some(len) = header(&resp_headers, "content-length") {
        let len: usize = len.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad content-length {len:?}"),
            )
        })?;
        let mut body = vec![0u8; len];
        rest.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        rest.read_to_end(&mut body)?;
        body
    };
    Ok((status, resp_headers, body))
}

/// [`try_http_request`] that panics with the URL and error on failure.
pub fn http_request(method: &str, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    try_http_request(method, url, headers).unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Blocking `GET url`; panics if the exchange fails (any status is fine).
/// See [`try_http_request`].
pub fn http_get(url: &str) -> HttpResponse {
    http_request("GET", url, &[])
}

/// First header named `name` (case-insensitive) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The value of an `Authorization` header for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for group in input.as_bytes().chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Castgate
// ---------------------------------------------------------------------------

/// The crate's `castgate` binary, run as `castgate run --config FILE` with
/// the config in its own temp dir and stdout+stderr in `castgate.log` there.
/// Dropping it sends SIGINT, then kills it if it has not exited within 5 s;
/// if the test is panicking, the log tail is printed.
pub struct Castgate {
    front_port: u16,
    admin_port: u16,
    child: Option<Child>,
    dir: TempDir,
}

/// How long [`Castgate::log`] waits for castgate's log writer: four of its
/// 50 ms batch intervals.
const LOG_BATCH_WAIT: Duration = Duration::from_millis(200);

impl Castgate {
    /// Path of the binary under test (built by cargo for integration tests).
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_castgate")
    }

    /// Writes `config_yaml`, starts castgate and waits until
    /// `GET http://127.0.0.1:{admin_port}/status.json` answers 200. The
    /// ports must be the ones the YAML makes castgate listen on.
    pub fn start(config_yaml: &str, front_port: u16, admin_port: u16) -> Castgate {
        Castgate::start_with_args(config_yaml, front_port, admin_port, &[])
    }

    /// [`Castgate::start`] with extra `castgate run` arguments.
    pub fn start_with_args(
        config_yaml: &str,
        front_port: u16,
        admin_port: u16,
        args: &[&str],
    ) -> Castgate {
        let dir = harness_dir("castgate-run-");
        let config = dir.path().join("castgate.yaml");
        fs::write(&config, config_yaml).expect("write castgate config");
        let log = File::create(dir.path().join("castgate.log")).expect("create castgate log");
        let log_too = log.try_clone().expect("clone castgate log handle");
        let child = Command::new(Castgate::bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", Castgate::bin()));
        let mut gate = Castgate {
            front_port,
            admin_port,
            child: Some(child),
            dir,
        };

        let status_url = format!("{}/status.json", gate.admin_url());
        let mut ready = false;
        // Stop early if castgate exits (bad config, port in use...).
        poll_until(CASTGATE_READY_TIMEOUT, || {
            if !gate.is_running() {
                return true;
            }
            ready =
                try_http_request("GET", &status_url, &[]).is_ok_and(|(status, _, _)| status == 200);
            ready
        });
        if !ready {
            let exit = gate
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let failure = match exit {
                Some(status) => format!("castgate exited ({status}) before becoming ready"),
                None => format!(
                    "castgate did not become ready within {CASTGATE_READY_TIMEOUT:?}: \
                     {status_url} never answered 200"
                ),
            };
            // Drop prints the log tail while this panic unwinds.
            panic!("{failure}; config was:\n{config_yaml}");
        }
        // The front door opens after castgate's first poll round.
        let front = format!("127.0.0.1:{front_port}");
        let open = poll_until(CASTGATE_READY_TIMEOUT, || {
            std::net::TcpStream::connect(&front).is_ok()
        });
        if !open && gate.is_running() {
            panic!("castgate's front door {front} never opened; config was:\n{config_yaml}");
        }
        gate
    }

    /// Runs `castgate check --config FILE` on `config_yaml`; returns
    /// `(exit code, stdout, stderr)`, exit code -1 if killed by a signal.
    pub fn check(config_yaml: &str) -> (i32, String, String) {
        let dir = harness_dir("castgate-check-");
        let config = dir.path().join("castgate.yaml");
        fs::write(&config, config_yaml).expect("write castgate config");
        let output = Command::new(Castgate::bin())
            .arg("check")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run {} check: {e}", Castgate::bin()));
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `http://127.0.0.1:{front_port}`.
    pub fn front_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.front_port)
    }

    /// `http://127.0.0.1:{admin_port}`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The config file castgate was started with (rewrite it, then
    /// [`Castgate::signal`] to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("castgate.yaml")
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether castgate is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A figure of castgate's `/proc/PID/status` in KiB, e.g. `"VmRSS"` or
    /// `"VmHWM"`; None if castgate is not running or has no such field.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.pid()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) to castgate.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped
            // (we hold the Child), so the pid cannot have been reused.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    /// Stops castgate: SIGINT, up to 5 s to exit, then SIGKILL. Returns its
    /// exit status (None if it was already stopped or wait failed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: as in `signal`: our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + CASTGATE_STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(POLL_INTERVAL);
        }
        eprintln!("castgate ignored SIGINT for {CASTGATE_STOP_GRACE:?}; killing it");
        let _ = child.kill();
        child.wait().ok()
    }

    /// Everything castgate wrote to stdout and stderr so far. castgate
    /// writes its log lines in batches every 50 ms (`src/logs.rs`): this
    /// waits past a few batches first, so a line logged before the call is
    /// in the answer.
    pub fn log(&self) -> String {
        thread::sleep(LOG_BATCH_WAIT);
        fs::read(self.dir.path().join("castgate.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of castgate's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("castgate.log"), lines)
    }
}

impl Drop for Castgate {
    fn drop(&mut self) {
        let status = self.stop();
        if thread::panicking() {
            eprintln!(
                "--- castgate (front {}, admin {}, exit {status:?}) log tail ---\n{}\n---",
                self.front_url(),
                self.admin_url(),
                self.log_tail(60)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// VLC
// ---------------------------------------------------------------------------

/// VLC 3 (`cvlc`, no interface) playing `url` with the `afile` audio output,
/// decoding to the WAV file `out` (s16 stereo at the stream's rate) so the
/// seconds it decoded can be counted ([`wav_seconds`]). VLC refuses to run
/// as root, so it runs as `nobody` when the test is root (CI): `out`'s
/// directory must be writable by it. HOME is that directory.
pub fn vlc(out: &Path, url: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(require_bin("cvlc", "vlc-bin vlc-plugin-base"));
    c.args([
        "-I",
        "dummy",
        "--quiet",
        "--no-video",
        "--aout=afile",
        "--audiofile-format=s16",
        "--audiofile-channels=2",
    ])
    .arg(format!("--audiofile-file={}", out.display()))
    .arg(url);
    if let Some(dir) = out.parent() {
        c.env("HOME", dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        c.uid(65534).gid(65534);
    }
    c
}

/// Seconds of audio VLC decoded into a WAV file over its life: its `afile`
/// output starts the file again at each new playlist item (a move to a
/// backup entry truncates it), so a thread looks at it every 100 ms and
/// adds up what each start of it held.
pub struct WavWatch {
    total: Arc<std::sync::Mutex<(f64, f64)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WavWatch {
    /// Watches `path` (which may not exist yet).
    pub fn new(path: &Path) -> WavWatch {
        let total = Arc::new(std::sync::Mutex::new((0.0, 0.0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (total, stop, path) = (total.clone(), stop.clone(), path.to_path_buf());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = wav_seconds(&path);
                    let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
                    // (seconds of the files before this one, this one's)
                    if now + 0.5 < t.1 {
                        t.0 += t.1;
                    }
                    t.1 = now;
                    drop(t);
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        WavWatch {
            total,
            stop,
            thread: Some(thread),
        }
    }

    /// Seconds decoded so far, every start of the file added up.
    pub fn seconds(&self) -> f64 {
        let t = self.total.lock().unwrap_or_else(|e| e.into_inner());
        t.0 + t.1
    }
}

impl Drop for WavWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temp dir anyone may write to (for [`vlc`], which runs as nobody).
pub fn shared_temp_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod 777 the temp dir");
    dir
}

/// Seconds of audio in a WAV file that may still be being written: RIFF's
/// channels (offset 22), rate (24) and bits (34) from the header, and
/// everything after its 44 bytes as data (VLC writes the sizes only when it
/// closes). 0 when the file or its header is missing.
pub fn wav_seconds(path: &Path) -> f64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    let le16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let rate = bytes
        .get(24..28)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let frame = f64::from(le16(22)) * f64::from(le16(34)) / 8.0;
    if rate == 0 || frame == 0.0 {
        return 0.0;
    }
    bytes.len().saturating_sub(44) as f64 / (f64::from(rate) * frame)
}
