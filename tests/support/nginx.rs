//! Real nginx processes for HLS tests: an nginx-rtmp edge that takes an RTMP
//! ingest and cuts HLS ([`RtmpEdge`]), ffmpeg RTMP publishers
//! ([`RtmpSource`]) and players ([`RtmpViewer`]), and a plain nginx web
//! server serving a directory of playlists and segments ([`HlsServer`]).
//!
//! HLS locations send `Access-Control-Allow-Origin: *`, as a farm serving
//! web players must: in rewrite and redirect modes browsers fetch segments
//! from the edges directly.
//!
//! Same ground rules as the rest of the harness: 127.0.0.1 only, free ports,
//! readiness polled against deadlines, every process killed and reaped on
//! drop. Needs Debian's `nginx` and `libnginx-mod-rtmp` (and `ffmpeg`).
//!
//! nginx-rtmp quirks worth knowing when reading its `/stat` are written up in
//! `tests/fixtures/nginx-rtmp/README.md`; the short version:
//! * `nclients` of a stream counts the publisher too;
//! * `bw_in`/`bw_out` are bits per second averaged over 10 s windows, so
//!   they read 0 for the first 10-20 s of a stream;
//! * each worker process answers `/stat` with only its own connections, and
//!   `rtmp_auto_push` does not work with Debian 12's build (see
//!   [`RtmpOpts::workers`]).

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_port, harness_dir, kill_and_reap, poll_until, tail, try_http_request, wait_until,
};

/// Where Debian's `libnginx-mod-rtmp` installs the module.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
/// RTMP application every [`RtmpEdge`] serves: `rtmp://HOST:PORT/live/STREAM`.
pub const RTMP_APP: &str = "live";

/// How long an nginx gets to answer HTTP after being spawned.
const NGINX_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publisher gets to show up as publishing in `/stat`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an RTMP player gets to show up in `/stat`.
const VIEWER_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// The nginx binary (on `PATH`, or Debian's `/usr/sbin/nginx` when `PATH`
/// lacks the sbin dirs), or a panic telling how to install it.
pub fn nginx_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nginx");
            sbin.is_file().then_some(sbin)
        })
        .unwrap_or_else(|| {
            panic!("nginx not found: install it with `apt-get install -y nginx libnginx-mod-rtmp`")
        })
}

/// Panics telling how to install nginx-rtmp unless its module is there.
pub fn require_rtmp_module() {
    nginx_bin();
    assert!(
        Path::new(RTMP_MODULE).is_file(),
        "{RTMP_MODULE} not found: install it with `apt-get install -y libnginx-mod-rtmp`"
    );
}

pub fn ffmpeg_bin() -> PathBuf {
    super::require_bin("ffmpeg", "ffmpeg")
}

// ---------------------------------------------------------------------------
// One nginx process (shared by RtmpEdge and HlsServer)
// ---------------------------------------------------------------------------

/// An `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` master process in
/// its own process group, so that killing it also kills its workers (they
/// outlive a SIGKILLed master otherwise, keeping the ports).
struct NginxProcess {
    /// "rtmp edge" or "hls server", for messages.
    role: &'static str,
    child: Option<Child>,
    dir: TempDir,
}

impl NginxProcess {
    fn new(role: &'static str, prefix: &str) -> NginxProcess {
        let dir = harness_dir(prefix);
        fs::create_dir_all(dir.path().join("tmp")).expect("create nginx temp dir");
        NginxProcess {
            role,
            child: None,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn conf_path(&self) -> PathBuf {
        self.path().join("nginx.conf")
    }

    fn error_log(&self) -> PathBuf {
        self.path().join("error.log")
    }

    /// Directives every harness nginx starts its config with: pid, logs and
    /// temp paths inside its dir, `user root` when running as root (workers
    /// otherwise run as `nobody` and cannot write the HLS dir).
    fn main_directives(&self, workers: usize) -> String {
        let dir = self.path().display();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        format!(
            "{user}worker_processes {workers};\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\n\
             events {{ worker_connections 256; }}\n"
        )
    }

    /// Directives for the `http {}` block: logs and temp paths in our dir.
    fn http_directives(&self) -> String {
        let dir = self.path().display();
        format!(
            "  access_log {dir}/access.log;\n\
             \x20 client_body_temp_path {dir}/tmp/body;\n\
             \x20 proxy_temp_path {dir}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {dir}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {dir}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {dir}/tmp/scgi;\n\
             \x20 default_type application/octet-stream;\n"
        )
    }

    fn spawn(&mut self) {
        let bin = nginx_bin();
        let out = File::create(self.path().join("stdout.log")).expect("create nginx stdout log");
        let err = out.try_clone().expect("clone nginx stdout log handle");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(self.path())
            .arg("-c")
            .arg(self.conf_path())
            // Startup errors before error_log is read go here, not /var/log.
            .arg("-e")
            .arg(self.error_log())
            .arg("-g")
            .arg("daemon off;")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the whole process group (master, workers, cache manager)
    /// and reaps the master.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group our unreaped child leads
            // (spawned with process_group(0), so pgid == its pid).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            kill_and_reap(&mut child);
        }
    }

    /// Ready = our master still runs and `GET {ready_url}` answers 200.
    /// Returns false early if the master exits (e.g. a port was taken).
    fn wait_ready(&mut self, ready_url: &str) -> bool {
        let mut ready = false;
        poll_until(NGINX_READY_TIMEOUT, || {
            if !self.is_running() {
                return true;
            }
            ready = try_http_request("GET", ready_url, &[]).is_ok_and(|(s, _, _)| s == 200);
            ready
        });
        ready && self.is_running()
    }

    /// Writes `config`, starts nginx and waits for `ready_url`; retries on
    /// fresh ports (`ports` picks them and renders the config) if nginx exits
    /// at startup, as it does when free_port() raced with someone else.
    fn launch<F: FnMut(&NginxProcess) -> (String, String)>(&mut self, mut ports: F) {
        for _attempt in 0..3 {
            let (config, ready_url) = ports(self);
            fs::write(self.conf_path(), &config).expect("write nginx config");
            self.spawn();
            if self.wait_ready(&ready_url) {
                return;
            }
            if self.is_running() {
                let log = self.log_tail(30);
                self.kill();
                panic!(
                    "{} nginx did not answer {ready_url} within {NGINX_READY_TIMEOUT:?}; error.log:\n{log}\nconfig:\n{config}",
                    self.role
                );
            }
            self.kill();
        }
        panic!(
            "{} nginx exited at startup 3 times; last error.log:\n{}\nconfig:\n{}",
            self.role,
            self.log_tail(30),
            fs::read_to_string(self.conf_path()).unwrap_or_default()
        );
    }

    /// Starts nginx again with the config on disk (same ports).
    fn relaunch(&mut self, ready_url: &str) {
        self.kill();
        self.spawn();
        if !self.wait_ready(ready_url) {
            let running = self.is_running();
            let log = self.log_tail(30);
            self.kill();
            panic!(
                "{} nginx did not come back ({}; {ready_url} never answered 200); error.log:\n{log}",
                self.role,
                if running {
                    "still running"
                } else {
                    "exited, port taken?"
                },
            );
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.error_log(), lines)
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} nginx in {} error.log (tail) ---\n{}\n---",
                self.role,
                self.path().display(),
                self.log_tail(20)
            );
        }
        self.kill();
    }
}

/// `path` made absolute (nginx resolves relative paths against its prefix).
fn absolute(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|e| panic!("cannot make {} absolute: {e}", path.display()))
}

/// The nginx `types {}` block for HLS playlists, segments and keys.
const HLS_TYPES: &str = "types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; \
                         video/iso.segment m4s; video/mp4 mp4; application/octet-stream key; }";

// ---------------------------------------------------------------------------
// RtmpEdge
// ---------------------------------------------------------------------------

/// Knobs for an [`RtmpEdge`]: `RtmpOpts { workers: 2 }` or `Default`.
#[derive(Clone, Debug)]
pub struct RtmpOpts {
    /// nginx `worker_processes` (default 1). With more than one, the config
    /// gets `rtmp_auto_push on;` as real multi-worker nginx-rtmp setups do,
    /// but beware, on Debian 12 (nginx 1.22.1, nginx-rtmp 1.2.2):
    /// * `/stat` is answered by whichever worker accepts the HTTP
    ///   connection and lists only that worker's RTMP connections, so
    ///   successive answers disagree (a stream may be missing);
    /// * auto-push never reaches the other workers (their unix sockets are
    ///   never accepted from: the dynamically loaded module adds its
    ///   listener after the event module enabled the listeners), so an RTMP
    ///   player that lands on another worker than the publisher gets
    ///   nothing, and that worker lists the stream without a publisher.
    ///
    /// HLS works regardless (the publisher's worker writes the files).
    ///
    /// The HTTP listener then has `reuseport`, so that successive `/stat`
    /// requests land on random workers and polling sees each of them; with
    /// one shared socket an idle worker tends to answer every request and
    /// the publisher's worker may never be heard from.
    pub workers: usize,
}

impl Default for RtmpOpts {
    fn default() -> Self {
        RtmpOpts { workers: 1 }
    }
}

/// A real nginx with nginx-rtmp on 127.0.0.1: an RTMP server taking
/// `rtmp://127.0.0.1:RTMP/live/STREAM` that cuts HLS (1 s fragments, 6 s
/// playlist, flat layout) into its dir, and an HTTP server serving
/// `/hls/STREAM.m3u8`, `/hls/STREAM-N.ts` and `/stat` (`rtmp_stat all`).
/// Killed (with its workers) on drop.
pub struct RtmpEdge {
    http_port: u16,
    rtmp_port: u16,
    opts: RtmpOpts,
    nginx: NginxProcess,
}

impl RtmpEdge {
    /// Starts an edge and waits until `/stat` answers.
    pub fn start(opts: RtmpOpts) -> RtmpEdge {
        require_rtmp_module();
        assert!(opts.workers >= 1, "RtmpOpts::workers must be at least 1");
        let nginx = NginxProcess::new("rtmp edge", "castgate-nginx-rtmp-");
        fs::create_dir_all(nginx.path().join("hls")).expect("create hls dir");
        fs::create_dir_all(nginx.path().join("sock")).expect("create rtmp socket dir");
        let mut edge = RtmpEdge {
            http_port: 0,
            rtmp_port: 0,
            opts,
            nginx,
        };
        let mut ports = Vec::new();
        let opts = edge.opts.clone();
        edge.nginx.launch(|nginx| {
            let (http, rtmp) = (free_port(), free_port());
            ports.push((http, rtmp));
            (
                edge_config(nginx, &opts, http, rtmp),
                format!("http://127.0.0.1:{http}/stat"),
            )
        });
        (edge.http_port, edge.rtmp_port) = *ports.last().expect("launch picked ports");
        edge
    }

    /// The port of the HTTP server (`/stat`, `/hls/...`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The port of the RTMP server.
    pub fn rtmp_port(&self) -> u16 {
        self.rtmp_port
    }

    /// `http://127.0.0.1:HTTP`, without a trailing slash.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `rtmp://127.0.0.1:RTMP/live/STREAM`, to publish or play `stream`.
    pub fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{RTMP_APP}/{stream}", self.rtmp_port)
    }

    /// `http://127.0.0.1:HTTP/hls/STREAM.m3u8`.
    pub fn playlist_url(&self, stream: &str) -> String {
        format!("{}/hls/{stream}.m3u8", self.http_url())
    }

    /// `http://127.0.0.1:HTTP/stat`.
    pub fn stat_url(&self) -> String {
        format!("{}/stat", self.http_url())
    }

    /// The temp dir holding `nginx.conf`, `error.log`, `access.log`, `hls/`.
    pub fn dir(&self) -> &Path {
        self.nginx.path()
    }

    /// Where nginx-rtmp writes `STREAM.m3u8` and `STREAM-N.ts`: `dir()/hls`.
    /// Serve it elsewhere with `HlsServer::static_dir(edge.hls_dir())`
    /// (or `HlsServer::serving(edge.dir())`).
    pub fn hls_dir(&self) -> PathBuf {
        self.nginx.path().join("hls")
    }

    /// The options the edge was started with.
    pub fn opts(&self) -> &RtmpOpts {
        &self.opts
    }

    /// Whether the nginx master process is still running.
    pub fn is_running(&mut self) -> bool {
        self.nginx.is_running()
    }

    /// SIGKILLs nginx with all its workers now, as a crashed edge dies:
    /// publishers and players are cut off. HLS files stay on disk. A no-op
    /// if it is not running.
    pub fn kill(&mut self) {
        self.nginx.kill();
    }

    /// Starts nginx again on the same ports (killing it first if it still
    /// runs) and waits until `/stat` answers. Publishers do not come back by
    /// themselves: restart them. The old HLS files are still there (and,
    /// with nginx-rtmp's default `hls_continuous on`, a new publish goes on
    /// numbering from the old playlist).
    pub fn restart(&mut self) {
        let url = self.stat_url();
        self.nginx.relaunch(&url);
    }

    /// Raw body of `GET /stat` if it answers 200. With several workers it
    /// is one worker's view (see [`RtmpOpts::workers`]).
    pub fn stat_xml(&self) -> Option<String> {
        let (status, _, body) = try_http_request("GET", &self.stat_url(), &[]).ok()?;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// `stream` of application `live` in one `/stat` answer; None if that
    /// answer does not list it (or `/stat` cannot be read).
    pub fn stream_stat(&self, stream: &str) -> Option<StreamStat> {
        parse_stat_streams(&self.stat_xml()?)
            .into_iter()
            .find(|s| s.app == RTMP_APP && s.name == stream)
    }

    /// Waits until a `/stat` answer shows `stream` published and active
    /// (media has arrived: see [`StreamStat::is_live`]).
    pub fn wait_publishing(&self, stream: &str, timeout: Duration) {
        let what = format!("{stream} to be published on {}", self.stat_url());
        wait_until(&what, timeout, || {
            self.stream_stat(stream).is_some_and(|s| s.is_live())
        });
    }

    /// Waits until a `/stat` answer shows `stream` published with exactly
    /// `viewers` playing clients.
    pub fn wait_viewers(&self, stream: &str, viewers: usize, timeout: Duration) {
        let what = format!("{viewers} RTMP viewers of {stream} on {}", self.stat_url());
        wait_until(&what, timeout, || {
            self.stream_stat(stream)
                .is_some_and(|s| s.is_live() && s.viewers() == viewers)
        });
    }

    /// Body of `GET /hls/STREAM.m3u8` if it answers 200.
    pub fn playlist(&self, stream: &str) -> Option<String> {
        let (status, _, body) = try_http_request("GET", &self.playlist_url(stream), &[]).ok()?;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until `/hls/STREAM.m3u8` is served with at least 2 segments and
    /// returns it.
    pub fn wait_playlist(&self, stream: &str, timeout: Duration) -> String {
        wait_playlist_at(&self.playlist_url(stream), timeout)
    }

    /// The last `lines` lines of nginx's error.log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.nginx.log_tail(lines)
    }
}

fn edge_config(nginx: &NginxProcess, opts: &RtmpOpts, http_port: u16, rtmp_port: u16) -> String {
    let dir = nginx.path().display();
    let (auto_push, reuseport) = if opts.workers > 1 {
        (
            format!("rtmp_auto_push on;\nrtmp_socket_dir {dir}/sock;\n"),
            // One HTTP socket per worker: the kernel spreads connections by
            // client port, so polling /stat reaches every worker. With one
            // shared socket an idle worker tends to take every request
            // (EPOLLEXCLUSIVE) and the publisher's worker may never answer.
            " reuseport",
        )
    } else {
        (String::new(), "")
    };
    format!(
        "load_module {RTMP_MODULE};\n\
         {main}{auto_push}\
         rtmp {{\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{rtmp_port};\n\
         \x20   application {RTMP_APP} {{\n\
         \x20     live on;\n\
         \x20     hls on;\n\
         \x20     hls_path {dir}/hls;\n\
         \x20     hls_fragment 1s;\n\
         \x20     hls_playlist_length 6s;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n\
         http {{\n\
         {http}\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{http_port}{reuseport};\n\
         \x20   location /stat {{ rtmp_stat all; }}\n\
         \x20   location /hls {{\n\
         \x20     {HLS_TYPES}\n\
         \x20     root {dir};\n\
         \x20     add_header Cache-Control no-cache;\n\
         \x20     add_header Access-Control-Allow-Origin *;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        main = nginx.main_directives(opts.workers),
        http = nginx.http_directives(),
    )
}

fn wait_playlist_at(url: &str, timeout: Duration) -> String {
    let mut last = None;
    let ok = poll_until(timeout, || {
        last = try_http_request("GET", url, &[]).ok();
        last.as_ref().is_some_and(|(status, _, body)| {
            *status == 200 && segment_uris(&String::from_utf8_lossy(body)).len() >= 2
        })
    });
    match last {
        Some((200, _, body)) if ok => String::from_utf8_lossy(&body).into_owned(),
        other => panic!(
            "timed out after {timeout:?} waiting for {url} to list 2 segments; last answer: {}",
            match other {
                Some((status, _, body)) => format!("{status}\n{}", String::from_utf8_lossy(&body)),
                None => "none (connection failed)".to_string(),
            }
        ),
    }
}

// ---------------------------------------------------------------------------
// /stat and playlist parsing (just enough for the tests)
// ---------------------------------------------------------------------------

/// One `<stream>` of a `<live>` section of nginx-rtmp's `/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStat {
    /// The `<application><name>` it is in.
    pub app: String,
    /// Stream name.
    pub name: String,
    /// `<nclients>`: every client of the stream, the publisher included.
    pub nclients: u64,
    /// Stream-level `<publishing/>`: a publisher is connected (set as soon
    /// as it sent `publish`, before any media).
    pub publishing: bool,
    /// Stream-level `<active/>`: media has arrived. For a moment after
    /// `publish` a stream is publishing but not yet active.
    pub active: bool,
    /// `<bw_in>`, bits per second over the last 10 s window.
    pub bw_in: u64,
    /// `<bw_out>`, bits per second sent to this stream's RTMP players.
    pub bw_out: u64,
    /// `<bytes_in>` since the stream began on this worker.
    pub bytes_in: u64,
    /// `<bytes_out>` to RTMP players (HLS downloads are not counted).
    pub bytes_out: u64,
    /// The `<client>` entries (publisher and players).
    pub clients: Vec<ClientStat>,
}

impl StreamStat {
    /// Published and media flowing: `publishing && active`.
    pub fn is_live(&self) -> bool {
        self.publishing && self.active
    }

    /// Clients that are not publishing: the RTMP players.
    pub fn viewers(&self) -> usize {
        self.clients.iter().filter(|c| !c.publishing).count()
    }
}

/// One `<client>` of a stream in `/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStat {
    /// `<id>`: nginx's connection number.
    pub id: u64,
    /// `<address>`.
    pub address: String,
    /// `<flashver>` as the client sent it (ffmpeg publishing:
    /// `FMLE/3.0 (compatible; Lavf59.27`, playing: `LNX 9,0,124,2`).
    pub flashver: Option<String>,
    /// `<publishing/>`: this client is the publisher.
    pub publishing: bool,
    /// `<active/>`: media flows (a publisher sent some; a player was sent
    /// some). A player waiting for an unpublished stream is not active.
    pub active: bool,
}

/// Text of the first `<tag>...</tag>` in `xml`.
fn tag_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

fn tag_u64(xml: &str, tag: &str) -> u64 {
    tag_text(xml, tag)
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Splits `xml` into the bodies of the top-level `<tag>...</tag>` elements
/// (no nesting of the same tag, as in `/stat`).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let Some(j) = body.find(&close) else { break };
        out.push(&body[..j]);
        rest = &body[j + close.len()..];
    }
    out
}

/// Undoes the HTML escaping nginx-rtmp applies to names.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The live streams of every application in one `/stat` answer.
pub fn parse_stat_streams(xml: &str) -> Vec<StreamStat> {
    let mut streams = Vec::new();
    for app in elements(xml, "application") {
        let app_name = unescape(tag_text(app, "name").unwrap_or_default());
        let Some(live) = tag_text(app, "live") else {
            continue;
        };
        for stream in elements(live, "stream") {
            let clients: Vec<ClientStat> = elements(stream, "client")
                .into_iter()
                .map(|c| ClientStat {
                    id: tag_u64(c, "id"),
                    address: unescape(tag_text(c, "address").unwrap_or_default()),
                    flashver: tag_text(c, "flashver").map(unescape),
                    publishing: c.contains("<publishing/>"),
                    active: c.contains("<active/>"),
                })
                .collect();
            // Stream-level flags come after the clients and <meta>.
            let own = stream.rfind("</client>").map_or(stream, |i| &stream[i..]);
            let own = own.rfind("</meta>").map_or(own, |i| &own[i..]);
            streams.push(StreamStat {
                app: app_name.clone(),
                name: unescape(tag_text(stream, "name").unwrap_or_default()),
                nclients: tag_u64(own, "nclients"),
                publishing: own.contains("<publishing/>"),
                active: own.contains("<active/>"),
                bw_in: tag_u64(stream, "bw_in"),
                bw_out: tag_u64(stream, "bw_out"),
                bytes_in: tag_u64(stream, "bytes_in"),
                bytes_out: tag_u64(stream, "bytes_out"),
                clients,
            });
        }
    }
    streams
}

/// `<pid>` of the worker that answered a `/stat`.
pub fn stat_pid(xml: &str) -> Option<u32> {
    tag_text(xml, "pid")?.trim().parse().ok()
}

/// `#EXT-X-MEDIA-SEQUENCE` of a media playlist (RFC 8216: 0 when absent).
pub fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.trim().strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The URI lines of a playlist (non-empty lines not starting with `#`).
pub fn segment_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// RtmpSource
// ---------------------------------------------------------------------------

/// An ffmpeg publishing a 320x240 25 fps test pattern (H.264, keyframe every
/// second) with a 440 Hz sine (AAC 64k) over RTMP, in real time, to one or
/// several edges. ~7 % of a core. Killed and reaped on drop.
pub struct RtmpSource {
    stream: String,
    targets: Vec<String>,
    args: Vec<String>,
    child: Option<Child>,
    // ffmpeg's stderr goes here, shown when it fails.
    dir: TempDir,
}

impl RtmpSource {
    /// Publishes `stream` to `edge` and waits (10 s at most) until `/stat`
    /// shows it live (publishing and active).
    pub fn start(edge: &RtmpEdge, stream: &str) -> RtmpSource {
        RtmpSource::start_many(&[edge], stream)
    }

    /// One encoder feeding several edges through ffmpeg's `tee` muxer with
    /// `onfail=ignore` (one edge failing does not stop the others; a failed
    /// edge is not reconnected: restart the source). Each edge cuts its own
    /// segments. Waits until every edge shows the stream live.
    pub fn start_many(edges: &[&RtmpEdge], stream: &str) -> RtmpSource {
        let mut source = RtmpSource::spawn_many(edges, stream);
        for edge in edges {
            // Remember what was seen rather than asking again: on a
            // multi-worker edge the next /stat may come from another worker.
            let mut published = false;
            poll_until(PUBLISH_TIMEOUT, || {
                published = edge.stream_stat(stream).is_some_and(|s| s.is_live());
                published || !source.is_running()
            });
            if !published {
                let state = if source.is_running() {
                    "still running"
                } else {
                    "exited"
                };
                panic!(
                    "{stream} not published on {} within {PUBLISH_TIMEOUT:?} (ffmpeg {state}); ffmpeg stderr:\n{}\nnginx error.log:\n{}",
                    edge.rtmp_url(stream),
                    source.log(),
                    edge.log_tail(20)
                );
            }
        }
        source
    }

    /// Starts publishing to `edge` without waiting.
    pub fn spawn(edge: &RtmpEdge, stream: &str) -> RtmpSource {
        RtmpSource::spawn_many(&[edge], stream)
    }

    /// Starts publishing to every edge (tee muxer) without waiting.
    pub fn spawn_many(edges: &[&RtmpEdge], stream: &str) -> RtmpSource {
        assert!(!edges.is_empty(), "RtmpSource needs at least one edge");
        let targets: Vec<String> = edges.iter().map(|e| e.rtmp_url(stream)).collect();
        // -re: real time, like a live encoder. -g/-keyint_min 25 at 25 fps:
        // a keyframe every second, so nginx-rtmp can cut 1 s fragments.
        let mut args: Vec<String> = "-nostdin -hide_banner -loglevel error -re \
             -f lavfi -i testsrc=size=320x240:rate=25 -f lavfi -i sine=frequency=440 \
             -map 0:v -map 1:a \
             -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -keyint_min 25 \
             -pix_fmt yuv420p -c:a aac -b:a 64k"
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if targets.len() == 1 {
            args.extend(["-f".into(), "flv".into(), targets[0].clone()]);
        } else {
            // The tee muxer does not ask encoders for global headers the way
            // flv does; without them the FLV has no AVC/AAC sequence header.
            let outputs: Vec<String> = targets
                .iter()
                .map(|t| format!("[f=flv:onfail=ignore]{t}"))
                .collect();
            args.extend([
                "-flags".into(),
                "+global_header".into(),
                "-f".into(),
                "tee".into(),
                outputs.join("|"),
            ]);
        }
        let mut source = RtmpSource {
            stream: stream.to_string(),
            targets,
            args,
            child: None,
            dir: harness_dir("castgate-rtmp-source-"),
        };
        source.respawn();
        source
    }

    fn respawn(&mut self) {
        let bin = ffmpeg_bin();
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

    /// The stream name it publishes.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The RTMP URLs it publishes to.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// Whether ffmpeg still runs (with one target it exits when the edge
    /// goes away; with `tee` only when every target failed).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills ffmpeg now (SIGKILL): the stream is unpublished.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Kills ffmpeg if running and starts it again, without waiting.
    pub fn restart(&mut self) {
        self.kill();
        self.respawn();
    }

    /// What ffmpeg wrote to stderr (only errors, given `-loglevel error`).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("ffmpeg.log"), 50)
    }
}

impl Drop for RtmpSource {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- rtmp source {:?} ffmpeg stderr ---\n{}\n---",
                self.targets,
                self.log()
            );
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// RtmpViewer
// ---------------------------------------------------------------------------

/// An RTMP player: `ffmpeg -i rtmp://.../live/STREAM -c copy -f null -`,
/// shown in `/stat` as a non-publishing client. Killed and reaped on drop.
pub struct RtmpViewer {
    url: String,
    child: Option<Child>,
    dir: TempDir,
}

impl RtmpViewer {
    /// Starts playing `stream` and waits (10 s at most) until a `/stat`
    /// answer shows one more viewer than before. Meant for single-worker
    /// edges: on a multi-worker edge use [`RtmpViewer::spawn`].
    pub fn start(edge: &RtmpEdge, stream: &str) -> RtmpViewer {
        let before = edge.stream_stat(stream).map_or(0, |s| s.viewers());
        let mut viewer = RtmpViewer::spawn(edge, stream);
        let seen = poll_until(VIEWER_TIMEOUT, || {
            !viewer.is_running()
                || edge
                    .stream_stat(stream)
                    .is_some_and(|s| s.viewers() > before)
        }) && viewer.is_running();
        if !seen {
            panic!(
                "RTMP viewer of {} not in /stat within {VIEWER_TIMEOUT:?}; ffmpeg stderr:\n{}",
                viewer.url,
                viewer.log()
            );
        }
        viewer
    }

    /// Starts playing `stream` without waiting.
    pub fn spawn(edge: &RtmpEdge, stream: &str) -> RtmpViewer {
        let url = edge.rtmp_url(stream);
        let dir = harness_dir("castgate-rtmp-viewer-");
        let bin = ffmpeg_bin();
        let log = File::create(dir.path().join("ffmpeg.log")).expect("create ffmpeg log");
        let child = Command::new(&bin)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
            .arg(&url)
            .args(["-c", "copy", "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        RtmpViewer {
            url,
            child: Some(child),
            dir,
        }
    }

    /// The RTMP URL it plays.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether ffmpeg still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the player now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// What ffmpeg wrote to stderr.
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("ffmpeg.log"), 50)
    }
}

impl Drop for RtmpViewer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// HlsServer
// ---------------------------------------------------------------------------

/// A plain nginx (no rtmp) on 127.0.0.1 serving files as `/hls/...` with
/// HLS content types and `Cache-Control: no-cache`: a web edge that only
/// serves what something else writes. Killed on drop.
pub struct HlsServer {
    port: u16,
    /// The directory whose files are `/hls/FILE`.
    served: PathBuf,
    nginx: NginxProcess,
}

impl HlsServer {
    /// Serves `root/hls/FILE` as `/hls/FILE` (nginx `root root;`): `root`
    /// is a dir that contains `hls/`, like [`RtmpEdge::dir`].
    pub fn serving(root: &Path) -> HlsServer {
        let root = absolute(root);
        HlsServer::launch(root.join("hls"), format!("root {};", root.display()), true)
    }

    /// Serves the files of `dir` itself as `/hls/FILE` (nginx `alias`), e.g.
    /// `tests/fixtures/hls` or [`RtmpEdge::hls_dir`].
    pub fn static_dir(dir: &Path) -> HlsServer {
        let dir = absolute(dir);
        HlsServer::launch(dir.clone(), format!("alias {}/;", dir.display()), true)
    }

    /// [`HlsServer::static_dir`] without `Access-Control-Allow-Origin`: an
    /// edge that knows nothing of web players.
    pub fn static_dir_without_cors(dir: &Path) -> HlsServer {
        let dir = absolute(dir);
        HlsServer::launch(dir.clone(), format!("alias {}/;", dir.display()), false)
    }

    /// Serves what `edge` cuts: `HlsServer::static_dir(edge.hls_dir())`.
    pub fn mirror(edge: &RtmpEdge) -> HlsServer {
        HlsServer::static_dir(&edge.hls_dir())
    }

    fn launch(served: PathBuf, location: String, cors: bool) -> HlsServer {
        let cors = if cors {
            "add_header Access-Control-Allow-Origin *;"
        } else {
            ""
        };
        nginx_bin();
        let nginx = NginxProcess::new("hls server", "castgate-nginx-hls-");
        let mut server = HlsServer {
            port: 0,
            served,
            nginx,
        };
        let mut port = 0;
        server.nginx.launch(|nginx| {
            port = free_port();
            let config = format!(
                "{main}http {{\n\
                 {http}\
                 \x20 server {{\n\
                 \x20   listen 127.0.0.1:{port};\n\
                 \x20   location = /health {{ return 200 \"ok\\n\"; }}\n\
                 \x20   location /hls/ {{\n\
                 \x20     {HLS_TYPES}\n\
                 \x20     {location}\n\
                 \x20     add_header Cache-Control no-cache;\n\
                 \x20     {cors}\n\
                 \x20   }}\n\
                 \x20 }}\n\
                 }}\n",
                main = nginx.main_directives(1),
                http = nginx.http_directives(),
            );
            (config, format!("http://127.0.0.1:{port}/health"))
        });
        server.port = port;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/hls/{file}`.
    pub fn url(&self, file: &str) -> String {
        format!("{}/hls/{file}", self.http_url())
    }

    /// `http://127.0.0.1:PORT/hls/STREAM.m3u8`.
    pub fn playlist_url(&self, stream: &str) -> String {
        self.url(&format!("{stream}.m3u8"))
    }

    /// The directory whose files it serves as `/hls/FILE`.
    pub fn served_dir(&self) -> &Path {
        &self.served
    }

    /// Waits until `/hls/STREAM.m3u8` lists at least 2 segments; returns it.
    pub fn wait_playlist(&self, stream: &str, timeout: Duration) -> String {
        wait_playlist_at(&self.playlist_url(stream), timeout)
    }

    /// Whether nginx still runs.
    pub fn is_running(&mut self) -> bool {
        self.nginx.is_running()
    }

    /// SIGKILLs nginx (and its worker) now.
    pub fn kill(&mut self) {
        self.nginx.kill();
    }

    /// Starts it again on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let url = format!("{}/health", self.http_url());
        self.nginx.relaunch(&url);
    }

    /// The last `lines` lines of nginx's error.log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.nginx.log_tail(lines)
    }
}
