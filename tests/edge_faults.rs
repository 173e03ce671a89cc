//! Misbehaving edges: castgate keeps sending listeners to the healthy edge,
//! marks the bad one down with a reason an operator can act on, and never
//! lets a hanging edge hold a poll round up beyond `poll.timeout`.
//!
//! One real icecast edge (ffmpeg on `/air`) stands next to fake edges:
//! small HTTP servers written here, on `std::net` on 127.0.0.1, one thread
//! per connection. Each fake first answers like a real edge (a valid status:
//! an Icecast fake lists the stream's `/air` live, so it is eligible and
//! playlists name it; an nginx-rtmp fake publishes `spare`), so castgate
//! marks it up; then it is switched into one way of failing, and back. A
//! listener on the healthy edge stays connected throughout.

mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::{
    down_bound, free_port, http_get, require_bin, wait_until, Castgate, Icecast, IcecastOpts,
    Source,
};

/// Poll settings of every test here.
const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(400);
const RISE: u32 = 1;
const FALL: u32 = 2;
/// Slack for scheduling on a shared 2-core machine and for the ~100 ms
/// between two looks at `/status.json`.
const MARGIN: Duration = Duration::from_millis(500);
/// A failing edge is down within this long after it starts failing: `fall`
/// failed polls, the last one taking up to `timeout`.
const DOWN_BOUND: Duration = down_bound(INTERVAL, TIMEOUT, FALL, MARGIN);
/// An edge answering properly again is up within this long.
const UP_BOUND: Duration = INTERVAL
    .saturating_mul(RISE)
    .saturating_add(TIMEOUT)
    .saturating_add(MARGIN);
/// The healthy edge's last poll is never older than this: rounds start
/// every `interval` and each lasts at most `timeout`, whatever the others do.
const CADENCE_BOUND: Duration = INTERVAL
    .saturating_mul(2)
    .saturating_add(Duration::from_millis(200));
/// How long the farm is watched after every failing edge is down, to see
/// that it stays so and that the healthy edge keeps its cadence.
const SETTLE: Duration = INTERVAL.saturating_mul(4);
/// Castgate's `poll.max_body` default.
const MAX_BODY: usize = 1 << 20;
/// What the huge fakes send (or announce): 50 MB.
const HUGE: usize = 50 * 1000 * 1000;

// ---------------------------------------------------------------------------
// The fake edge
// ---------------------------------------------------------------------------

/// Which status endpoint a fake serves, as the edge kind castgate polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `GET /status-json.xsl`.
    Icecast,
    /// `GET /stat`.
    NginxRtmp,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Icecast => "/status-json.xsl",
            Kind::NginxRtmp => "/stat",
        }
    }

    fn yaml(self) -> &'static str {
        match self {
            Kind::Icecast => "icecast",
            Kind::NginxRtmp => "nginx_rtmp",
        }
    }
}

/// How a fake edge answers its status path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Like a real edge: 200 with a small valid status listing `/spare`.
    None,
    /// Nothing listens on the port.
    Refuse,
    /// Accepts, reads the request, never answers.
    Silent,
    /// Sends the head, then the body one byte every 200 ms.
    Trickle,
    /// `500 Internal Server Error`.
    Status500,
    /// 200 with an HTML page.
    Html,
    /// 200 without Content-Length, the connection closed in the middle of
    /// a status listing `/air`: the body just ends.
    Truncated,
    /// 200 announcing the whole status in Content-Length, the connection
    /// closed halfway through it.
    CutShort,
    /// 200 without Content-Length, 50 MB of status JSON.
    Huge,
    /// 200 announcing 50 MB in Content-Length, then sending it.
    HugeDeclared,
    /// 200 with 100,000 nested `[`.
    Bomb,
    /// The same bomb as `icestats.source`, so it reaches the lenient
    /// reader kept for Icecast's own broken JSON.
    IcestatsBomb,
    /// `{"icestats": 5}`.
    ShapeNumber,
    /// `[1,2,3]`.
    ShapeArray,
    /// Alternates a proper answer and a 500, request by request.
    Flap,
    /// nginx-rtmp `/stat` with a "billion laughs" XML entity expansion.
    BillionLaughs,
}

struct Shared {
    kind: Kind,
    port: u16,
    fault: Mutex<Fault>,
    /// Whether the port is bound right now (false while refusing).
    listening: AtomicBool,
    stop: AtomicBool,
    /// Requests answered in `Fault::Flap`.
    flaps: AtomicU64,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A fake edge on 127.0.0.1. Dropping it stops the acceptor and every
/// connection thread and joins them.
struct FakeEdge {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeEdge {
    fn start(kind: Kind) -> FakeEdge {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake edge");
        let port = listener.local_addr().expect("fake edge address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking fake edge listener");
        let shared = Arc::new(Shared {
            kind,
            port,
            fault: Mutex::new(Fault::None),
            listening: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            flaps: AtomicU64::new(0),
        });
        let for_thread = shared.clone();
        let acceptor = thread::spawn(move || accept_loop(listener, for_thread));
        FakeEdge {
            shared,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// Switches how the edge answers from the next request on; returns once
    /// the port is closed (`Refuse`) or open again (anything else).
    fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
        let listening = fault != Fault::Refuse;
        wait_until(
            &format!("fake edge {} listening: {listening}", self.url()),
            Duration::from_secs(10),
            || self.shared.listening.load(Ordering::SeqCst) == listening,
        );
    }
}

impl Drop for FakeEdge {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Accepts until stopped, one thread per connection; closes the port while
/// the fault is `Refuse` and binds it again after.
fn accept_loop(first: TcpListener, shared: Arc<Shared>) {
    let mut listener = Some(first);
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        if shared.fault() == Fault::Refuse {
            listener = None;
        } else if listener.is_none() {
            listener = TcpListener::bind(("127.0.0.1", shared.port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .ok();
        }
        shared.listening.store(listener.is_some(), Ordering::SeqCst);
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((stream, _))) => {
                let shared = shared.clone();
                workers.push(thread::spawn(move || serve(stream, &shared)));
            }
            // Nothing pending (or refusing): look again shortly.
            _ => thread::sleep(Duration::from_millis(5)),
        }
        let (done, running): (Vec<_>, Vec<_>) =
            workers.into_iter().partition(JoinHandle::is_finished);
        workers = running;
        for w in done {
            w.join().expect("fake edge connection thread panicked");
        }
    }
    drop(listener);
    for w in workers {
        w.join().expect("fake edge connection thread panicked");
    }
}

/// One connection: read the request, answer it as the current fault says,
/// close.
fn serve(mut stream: TcpStream, edge: &Shared) {
    // Short timeouts so every loop below notices `stop` quickly.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(50)));
    let Some(path) = read_request_path(&mut stream, edge) else {
        return;
    };
    if path != edge.kind.path() {
        let _ = respond(
            &mut stream,
            edge,
            "404 Not Found",
            "text/plain",
            b"no such page",
        );
        return;
    }
    let mut fault = edge.fault();
    if fault == Fault::Flap {
        fault = if edge.flaps.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Fault::None
        } else {
            Fault::Status500
        };
    }
    let json = "application/json; charset=UTF-8";
    // Errors mean castgate hung up, which is its right: nothing to do.
    let _ = match fault {
        Fault::None | Fault::Refuse | Fault::Flap => {
            let (ctype, body) = good_body(edge);
            respond(&mut stream, edge, "200 OK", ctype, body.as_bytes())
        }
        Fault::Silent => {
            wait_for_hangup(&mut stream, edge);
            Ok(())
        }
        Fault::Trickle => trickle(&mut stream, edge),
        Fault::Status500 => respond(
            &mut stream,
            edge,
            "500 Internal Server Error",
            "text/html",
            b"<html><body><h1>500 Internal Server Error</h1></body></html>",
        ),
        Fault::Html => respond(
            &mut stream,
            edge,
            "200 OK",
            "text/html",
            b"<!DOCTYPE html><html><head><title>It works!</title></head>\
              <body><h1>It works!</h1><p>Default page.</p></body></html>",
        ),
        Fault::Truncated => {
            let body = air_status(edge.port);
            let cut = &body.as_bytes()[..body.len() * 2 / 3];
            send_head(&mut stream, edge, "200 OK", json, None)
                .and_then(|()| send(&mut stream, edge, cut))
        }
        Fault::CutShort => {
            let body = air_status(edge.port);
            let cut = &body.as_bytes()[..body.len() / 2];
            send_head(&mut stream, edge, "200 OK", json, Some(body.len()))
                .and_then(|()| send(&mut stream, edge, cut))
        }
        Fault::Huge => huge(&mut stream, edge, None),
        Fault::HugeDeclared => huge(&mut stream, edge, Some(HUGE)),
        Fault::Bomb => {
            let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
            respond(&mut stream, edge, "200 OK", json, body.as_bytes())
        }
        Fault::IcestatsBomb => {
            let body = format!(
                r#"{{"icestats":{{"source":{}{}}}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            respond(&mut stream, edge, "200 OK", json, body.as_bytes())
        }
        Fault::ShapeNumber => respond(&mut stream, edge, "200 OK", json, br#"{"icestats": 5}"#),
        Fault::ShapeArray => respond(&mut stream, edge, "200 OK", json, b"[1,2,3]"),
        Fault::BillionLaughs => {
            let body = billion_laughs();
            respond(&mut stream, edge, "200 OK", "text/xml", body.as_bytes())
        }
    };
}

/// The path of the request line, once the whole head has arrived.
fn read_request_path(stream: &mut TcpStream, edge: &Shared) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if edge.stopped() || Instant::now() > deadline || head.len() > 64 * 1024 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace().nth(1).map(str::to_string)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Writes all of `bytes`, riding out write timeouts until stopped.
fn send(stream: &mut TcpStream, edge: &Shared, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        if edge.stopped() {
            return Err(io::Error::other("fake edge stopped"));
        }
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An HTTP/1.0 head as Icecast sends it (`Connection: Close`), with a
/// Content-Length when `len` is given.
fn send_head(
    stream: &mut TcpStream,
    edge: &Shared,
    status: &str,
    ctype: &str,
    len: Option<usize>,
) -> io::Result<()> {
    let length = len.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
    let head = format!(
        "HTTP/1.0 {status}\r\nServer: fake-edge\r\nConnection: Close\r\n\
         Content-Type: {ctype}\r\n{length}\r\n"
    );
    send(stream, edge, head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    edge: &Shared,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> io::Result<()> {
    send_head(stream, edge, status, ctype, Some(body.len()))?;
    send(stream, edge, body)
}

/// Holds the connection open without a word until the client hangs up.
fn wait_for_hangup(stream: &mut TcpStream, edge: &Shared) {
    let mut buf = [0u8; 512];
    while !edge.stopped() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// A proper status (announced in full), one byte every 200 ms.
fn trickle(stream: &mut TcpStream, edge: &Shared) -> io::Result<()> {
    let (ctype, body) = good_body(edge);
    send_head(stream, edge, "200 OK", ctype, Some(body.len()))?;
    for byte in body.as_bytes() {
        send(stream, edge, std::slice::from_ref(byte))?;
        for _ in 0..4 {
            if edge.stopped() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// 50 MB of status JSON (sources listing `/air`), written 64 KiB at a time
/// until done or until castgate hangs up.
fn huge(stream: &mut TcpStream, edge: &Shared, declared: Option<usize>) -> io::Result<()> {
    send_head(
        stream,
        edge,
        "200 OK",
        "application/json; charset=UTF-8",
        declared,
    )?;
    let source = format!(
        r#"{{"listeners":1,"listenurl":"http://127.0.0.1:{}/air","server_name":"padding"}}"#,
        edge.port
    );
    let opening = format!(r#"{{"icestats":{{"source":[{source}"#);
    let chunk = format!(",{source}").repeat(64 * 1024 / (source.len() + 1));
    send(stream, edge, opening.as_bytes())?;
    let mut sent = opening.len();
    let close = "]}}";
    while sent + chunk.len() + close.len() <= HUGE {
        send(stream, edge, chunk.as_bytes())?;
        sent += chunk.len();
    }
    // End the JSON at exactly 50 MB: whitespace padding keeps it valid.
    let pad = HUGE.saturating_sub(sent + close.len());
    send(
        stream,
        edge,
        format!("{}{close}", " ".repeat(pad)).as_bytes(),
    )
}

/// What a real edge of this kind answers: Icecast `/air` live with no
/// listeners (an eligible edge for the stream); nginx-rtmp `spare`
/// publishing.
fn good_body(edge: &Shared) -> (&'static str, String) {
    match edge.kind {
        Kind::Icecast => (
            "application/json; charset=UTF-8",
            icecast_status(edge.port, "/air"),
        ),
        Kind::NginxRtmp => (
            "text/xml",
            "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<rtmp><nginx_version>1.22.1</nginx_version>\
             <pid>4242</pid><bw_in>0</bw_in><bw_out>0</bw_out><server><application><name>live</name>\
             <live><stream><name>spare</name><bw_out>0</bw_out><nclients>1</nclients><publishing/>\
             <active/></stream><nclients>1</nclients></live></application></server></rtmp>"
                .to_string(),
        ),
    }
}

/// An Icecast 2.4.4 status-json.xsl body with `mount` live.
fn icecast_status(port: u16, mount: &str) -> String {
    format!(
        r#"{{"icestats":{{"admin":"ops@example.net","host":"127.0.0.1","location":"fake","server_id":"Icecast 2.4.4","server_start":"Sun, 22 Nov 2026 00:39:06 +0000","source":{{"genre":"various","listener_peak":0,"listeners":0,"listenurl":"http://127.0.0.1:{port}{mount}","server_description":"Unspecified description","server_name":"Unspecified name","server_type":"audio/mpeg","title":"A title long enough to be cut in the middle of it","dummy":null}}}}}}"#
    )
}

/// A status naming `/air`, the stream's mount: were castgate to believe a
/// cut-off copy of it, listeners would be sent to the fake.
fn air_status(port: u16) -> String {
    icecast_status(port, "/air")
}

/// `/stat` whose text is `&lol9;`: 10^9 "lol"s if an XML reader expanded
/// the internal entities (about 3 GB).
fn billion_laughs() -> String {
    let mut entities = String::from("  <!ENTITY lol0 \"lol\">\n");
    for i in 1..=9 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        entities.push_str(&format!("  <!ENTITY lol{i} \"{refs}\">\n"));
    }
    format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE rtmp [\n{entities}]>\n<rtmp><pid>4242</pid>\
         <server><application><name>live</name><live><stream><name>&lol9;</name>\
         <nclients>1</nclients><publishing/></stream></live></application></server></rtmp>"
    )
}

// ---------------------------------------------------------------------------
// The farm
// ---------------------------------------------------------------------------

/// The real edge: icecast with ffmpeg on `/air`.
struct Healthy {
    ice: Icecast,
    _source: Source,
}

fn healthy_edge() -> Healthy {
    require_bin("icecast2", "icecast2");
    require_bin("ffmpeg", "ffmpeg");
    let ice = Icecast::origin(IcecastOpts::default());
    let source = Source::start(&ice, "/air");
    ice.wait_mount_live("/air", Duration::from_secs(20));
    Healthy {
        ice,
        _source: source,
    }
}

/// Castgate over the healthy edge `good` and the named fakes; one stream
/// `apple` on `/air`.
fn start_castgate(healthy: &Healthy, fakes: &[(&str, &FakeEdge)]) -> Castgate {
    let (front, admin) = (free_port(), free_port());
    let mut yaml = format!(
        "listen: [\"127.0.0.1:{front}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         poll: {{ interval: {}ms, timeout: {}ms, rise: {RISE}, fall: {FALL} }}\n\
         edges:\n  - {{ name: good, kind: icecast, url: \"{}\" }}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis(),
        healthy.ice.url()
    );
    for (name, fake) in fakes {
        yaml.push_str(&format!(
            "  - {{ name: {name}, kind: {}, url: \"{}\" }}\n",
            fake.shared.kind.yaml(),
            fake.url()
        ));
    }
    yaml.push_str("streams:\n  - { name: apple, mount: /air }\n");
    Castgate::start(&yaml, front, admin)
}

/// `/status.json`'s edges.
fn edge_list(cg: &Castgate) -> Vec<serde_json::Value> {
    let (code, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    assert_eq!(code, 200, "/status.json");
    let status: serde_json::Value = serde_json::from_slice(&body).expect("status.json is JSON");
    status["edges"].as_array().cloned().unwrap_or_default()
}

fn edge<'a>(edges: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    edges
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("edge {name} missing from /status.json: {edges:?}"))
}

fn seconds(v: &serde_json::Value) -> Duration {
    Duration::from_secs_f64(v.as_f64().unwrap_or(f64::INFINITY).min(1e6))
}

fn wait_all_up(cg: &Castgate, names: &[&str]) {
    wait_until("every edge up", Duration::from_secs(20), || {
        let edges = edge_list(cg);
        names.iter().all(|n| edge(&edges, n)["up"] == true)
    });
}

/// The entries of `/apple.m3u` (the chosen edge and its backups), which
/// must answer 200.
fn playlist_entries(cg: &Castgate, when: &str) -> Vec<String> {
    let (code, _, body) = http_get(&format!("{}/apple.m3u", cg.front_url()));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "/apple.m3u {when}: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// What a listener sees once every fake is down: `/apple.m3u` names the
/// healthy edge alone (a faulty edge is not eligible).
fn assert_playlist_names(cg: &Castgate, healthy: &Healthy, when: &str) {
    assert_eq!(
        playlist_entries(cg, when),
        [format!("{}/air", healthy.ice.url())],
        "/apple.m3u {when} must name the healthy edge alone"
    );
}

/// While the Icecast fakes answer properly they are eligible: the playlist
/// names at least one of them (so naming the healthy edge alone later is
/// castgate's doing, not the farm's).
fn assert_playlist_names_a_fake(cg: &Castgate, cases: &[Case], fakes: &[FakeEdge], when: &str) {
    let icecast: Vec<String> = cases
        .iter()
        .zip(fakes)
        .filter(|(c, _)| c.kind == Kind::Icecast)
        .map(|(_, f)| format!("{}/air", f.url()))
        .collect();
    if icecast.is_empty() {
        return;
    }
    let entries = playlist_entries(cg, when);
    assert!(
        entries.iter().any(|e| icecast.contains(e)),
        "/apple.m3u {when} names an Icecast fake: {entries:?}"
    );
}

/// The healthy edge as an operator sees it: up, polled recently and fast.
/// Returns its poll age.
fn assert_healthy_polled(edges: &[serde_json::Value], when: &str) -> Duration {
    let good = edge(edges, "good");
    assert_eq!(good["up"], true, "healthy edge {when}: {good}");
    assert!(good["last_error"].is_null(), "healthy edge {when}: {good}");
    let age = seconds(&good["last_poll_age_seconds"]);
    assert!(
        age < CADENCE_BOUND,
        "healthy edge last polled {age:?} ago {when} (bound {CADENCE_BOUND:?}): a bad edge held up a poll round; {good}"
    );
    let took = seconds(&good["last_poll_duration_seconds"]);
    assert!(
        took < TIMEOUT,
        "healthy edge's own poll took {took:?} {when}; {good}"
    );
    age
}

/// A kernel figure of castgate's from /proc/PID/status, in KiB.
fn proc_kib(cg: &Castgate, field: &str) -> u64 {
    cg.proc_status_kib(field)
        .unwrap_or_else(|| panic!("no {field} of castgate in /proc"))
}

/// One fake edge failing one way, and what `last_error` must then say
/// (every word, case-insensitive).
struct Case {
    name: &'static str,
    kind: Kind,
    fault: Fault,
    says: &'static [&'static str],
}

/// The scenario every case goes through: the fakes answer properly and are
/// up; all start failing at once; each must be down within
/// interval × fall + timeout with its reason, staying down, while the
/// playlist keeps naming the healthy edge and the healthy edge keeps its
/// poll cadence; then all answer properly again and each must be up within
/// interval × rise + timeout. Returns castgate's (VmRSS, VmHWM) growth in
/// KiB from before the faults to after them.
fn run(cases: &[Case]) -> (u64, u64) {
    let healthy = healthy_edge();
    let fakes: Vec<FakeEdge> = cases.iter().map(|c| FakeEdge::start(c.kind)).collect();
    let named: Vec<(&str, &FakeEdge)> = cases.iter().map(|c| c.name).zip(&fakes).collect();
    let cg = start_castgate(&healthy, &named);
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.push("good");
    wait_all_up(&cg, &names);
    assert_playlist_names_a_fake(&cg, cases, &fakes, "with every edge answering properly");
    // A listener on the healthy edge, there before the faults and after.
    let listener = support::Listener::connect(&format!("{}/air", healthy.ice.url()))
        .expect("a listener on the healthy edge");
    assert_eq!(listener.status(), 200);
    wait_until(
        "castgate counts the healthy edge's listener",
        Duration::from_secs(10),
        || edge(&edge_list(&cg), "good")["listeners"] == 1,
    );
    // A few rounds with everything well, so the baseline includes whatever
    // the poller allocates once.
    let generation = |cg: &Castgate| {
        let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
        serde_json::from_slice::<serde_json::Value>(&body).expect("status.json")["generation"]
            .as_u64()
            .unwrap_or(0)
    };
    let g0 = generation(&cg);
    wait_until("three more poll rounds", Duration::from_secs(10), || {
        generation(&cg) >= g0 + 3
    });
    let rss0 = proc_kib(&cg, "VmRSS");
    let hwm0 = proc_kib(&cg, "VmHWM");

    // Fail, all at once.
    let started = Instant::now();
    for (case, fake) in cases.iter().zip(&fakes) {
        fake.set(case.fault);
    }
    let mut down_after: Vec<Option<Duration>> = vec![None; cases.len()];
    let mut all_down_at = None;
    let mut max_age = Duration::ZERO;
    let mut max_bad_poll = Duration::ZERO;
    let hard_deadline = DOWN_BOUND + Duration::from_secs(10);
    loop {
        let edges = edge_list(&cg);
        let now = started.elapsed();
        max_age = max_age.max(assert_healthy_polled(&edges, "while the fakes fail"));
        for (i, case) in cases.iter().enumerate() {
            let e = edge(&edges, case.name);
            max_bad_poll = max_bad_poll.max(seconds(&e["last_poll_duration_seconds"]));
            match (e["up"] == true, down_after[i]) {
                (false, None) => down_after[i] = Some(now),
                (true, Some(at)) => panic!(
                    "{} ({:?}) was down {at:?} after the fault began, up again at {now:?}: {e}",
                    case.name, case.fault
                ),
                _ => {}
            }
        }
        if all_down_at.is_none() && down_after.iter().all(Option::is_some) {
            all_down_at = Some(now);
        }
        if all_down_at.is_some() {
            assert_playlist_names(&cg, &healthy, &format!("{now:?} into the faults"));
        }
        if all_down_at.is_some_and(|t| now >= t + SETTLE) || now > hard_deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let edges = edge_list(&cg);
    let mut report = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let e = edge(&edges, case.name);
        let error = e["last_error"].as_str().unwrap_or("").to_string();
        report.push(format!(
            "  {:<14} down after {:>5.2}s  last_error: {error}",
            case.name,
            down_after[i].map_or(f64::NAN, |d| d.as_secs_f64())
        ));
        let down = down_after[i]
            .unwrap_or_else(|| panic!("{} ({:?}) never went down: {e}", case.name, case.fault));
        assert!(
            down <= DOWN_BOUND,
            "{} ({:?}) went down {down:?} after the fault began; bound {DOWN_BOUND:?}",
            case.name,
            case.fault
        );
        let lower = error.to_lowercase();
        assert!(
            case.says.iter().all(|w| lower.contains(&w.to_lowercase())),
            "{} ({:?}): last_error {error:?} should mention {:?}",
            case.name,
            case.fault,
            case.says
        );
    }
    eprintln!(
        "faults ({} edges), healthy poll age at most {max_age:?}, slowest failing poll {max_bad_poll:?}:\n{}",
        cases.len(),
        report.join("\n")
    );
    // No failing poll outlasts poll.timeout (plus time to be scheduled).
    assert!(
        max_bad_poll <= TIMEOUT + Duration::from_millis(200),
        "a failing edge's poll took {max_bad_poll:?}; poll.timeout is {TIMEOUT:?}"
    );
    let rss_growth = proc_kib(&cg, "VmRSS").saturating_sub(rss0);
    let hwm_growth = proc_kib(&cg, "VmHWM").saturating_sub(hwm0);

    // Proper answers again: each edge is back within `rise` polls.
    let recovering = Instant::now();
    for fake in &fakes {
        fake.set(Fault::None);
    }
    let mut up_after: Vec<Option<Duration>> = vec![None; cases.len()];
    wait_until(
        "every fake edge up again",
        UP_BOUND + Duration::from_secs(10),
        || {
            let edges = edge_list(&cg);
            let now = recovering.elapsed();
            for (i, case) in cases.iter().enumerate() {
                let e = edge(&edges, case.name);
                if up_after[i].is_none() && e["up"] == true {
                    assert!(
                        e["last_error"].is_null(),
                        "{} up with an error: {e}",
                        case.name
                    );
                    up_after[i] = Some(now);
                }
            }
            up_after.iter().all(Option::is_some)
        },
    );
    for (case, up) in cases.iter().zip(&up_after) {
        let up = up.unwrap_or_default();
        assert!(
            up <= UP_BOUND,
            "{} ({:?}) came back {up:?} after answering properly again; bound {UP_BOUND:?}",
            case.name,
            case.fault
        );
    }
    eprintln!(
        "recovered: slowest edge up {:?} after proper answers resumed",
        up_after.iter().flatten().max().copied().unwrap_or_default()
    );
    assert_playlist_names_a_fake(&cg, cases, &fakes, "after the fakes recovered");
    // The healthy edge kept its listener, and castgate still counts it.
    let before = listener.bytes_received();
    listener.wait_bytes(before + 4096, Duration::from_secs(10));
    assert!(listener.is_open(), "the healthy edge's listener stayed");
    assert_eq!(edge(&edge_list(&cg), "good")["listeners"], 1);
    (rss_growth, hwm_growth)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Edges that cannot be reached or never finish answering cost one
/// `poll.timeout` each, concurrently: they are down within
/// interval × fall + timeout, and the healthy edge is polled every round.
#[test]
fn refusing_and_hanging_edges_never_hold_up_a_poll_round() {
    run(&[
        Case {
            name: "refused",
            kind: Kind::Icecast,
            fault: Fault::Refuse,
            says: &["connect", "refused"],
        },
        Case {
            name: "silent",
            kind: Kind::Icecast,
            fault: Fault::Silent,
            says: &["timeout"],
        },
        Case {
            name: "trickle",
            kind: Kind::Icecast,
            fault: Fault::Trickle,
            says: &["timeout"],
        },
    ]);
}

/// Edges that answer, but not with a usable status: each is down with the
/// reason, no body is read past `poll.max_body`, nothing is expanded, and
/// castgate's memory stays flat.
#[test]
fn bad_answers_mark_the_edge_down_with_the_reason_and_memory_stays_flat() {
    let (rss, hwm) = run(&[
        Case {
            name: "status500",
            kind: Kind::Icecast,
            fault: Fault::Status500,
            says: &["HTTP status 500"],
        },
        Case {
            name: "html",
            kind: Kind::Icecast,
            fault: Fault::Html,
            says: &["not an Icecast status-json.xsl body"],
        },
        Case {
            name: "truncated",
            kind: Kind::Icecast,
            fault: Fault::Truncated,
            says: &["truncated"],
        },
        Case {
            name: "cut-short",
            kind: Kind::Icecast,
            fault: Fault::CutShort,
            says: &["body", "end of file"],
        },
        Case {
            name: "huge",
            kind: Kind::Icecast,
            fault: Fault::Huge,
            says: &["over 1048576 bytes"],
        },
        Case {
            name: "huge-declared",
            kind: Kind::Icecast,
            fault: Fault::HugeDeclared,
            says: &["over 1048576 bytes"],
        },
        Case {
            name: "bomb",
            kind: Kind::Icecast,
            fault: Fault::Bomb,
            says: &["recursion limit"],
        },
        Case {
            name: "icestats-bomb",
            kind: Kind::Icecast,
            fault: Fault::IcestatsBomb,
            says: &["recursion limit"],
        },
        Case {
            name: "shape-number",
            kind: Kind::Icecast,
            fault: Fault::ShapeNumber,
            says: &["unexpected status-json.xsl shape"],
        },
        Case {
            name: "shape-array",
            kind: Kind::Icecast,
            fault: Fault::ShapeArray,
            says: &["not an Icecast status-json.xsl body"],
        },
        Case {
            name: "laughs",
            kind: Kind::NginxRtmp,
            fault: Fault::BillionLaughs,
            says: &["nginx-rtmp /stat", "lol9"],
        },
    ]);
    eprintln!("castgate memory during the faults: VmRSS +{rss} KiB, VmHWM +{hwm} KiB");
    // Two edges offering 50 MB each poll: reading stops at max_body (1 MiB).
    let limit_kib = 6 * 1024;
    assert!(
        rss <= limit_kib && hwm <= limit_kib,
        "castgate grew by VmRSS {rss} KiB / VmHWM {hwm} KiB while edges sent 50 MB bodies (max_body {MAX_BODY} bytes)"
    );
}

/// An edge failing every other poll is held up by `fall: 2` (no flapping
/// in and out of the listeners' rotation) while its errors stay visible;
/// once really down, it is back at its first proper answer (`rise: 1`).
#[test]
fn a_flapping_edge_is_held_by_hysteresis_and_a_recovered_edge_is_back_within_rise() {
    let healthy = healthy_edge();
    let fake = FakeEdge::start(Kind::Icecast);
    let cg = start_castgate(&healthy, &[("flappy", &fake)]);
    wait_all_up(&cg, &["good", "flappy"]);

    fake.set(Fault::Flap);
    let started = Instant::now();
    let (mut saw_error, mut saw_clean) = (false, false);
    // Eight polls of alternating answers.
    while started.elapsed() < INTERVAL * 8 {
        let edges = edge_list(&cg);
        assert_healthy_polled(&edges, "while an edge flaps");
        let e = edge(&edges, "flappy");
        assert_eq!(
            e["up"], true,
            "one failed poll in two must not take the edge down with fall: {FALL}: {e}"
        );
        match e["last_error"].as_str() {
            Some(err) => {
                assert!(err.contains("HTTP status 500"), "{e}");
                saw_error = true;
            }
            None => saw_clean = true,
        }
        // Up, so still eligible: the playlist answers and may name it.
        playlist_entries(&cg, "while an edge flaps");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        saw_error && saw_clean,
        "the flapping edge's answers should alternate in /status.json (error seen: {saw_error}, clean seen: {saw_clean})"
    );
    let served = fake.shared.flaps.load(Ordering::SeqCst);
    assert!(served >= 6, "only {served} polls in {:?}", INTERVAL * 8);
    let (_, _, metrics) = http_get(&format!("{}/metrics", cg.admin_url()));
    let metrics = String::from_utf8_lossy(&metrics);
    let errors = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("castgate_poll_errors_total{edge=\"flappy\",reason=\"status\"} ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        errors >= 3.0,
        "poll errors counted for the flapping edge: {errors}\n{metrics}"
    );

    // Really down: the port closes (the edge's process died).
    let killed = Instant::now();
    fake.set(Fault::Refuse);
    wait_until("the dead edge down", DOWN_BOUND, || {
        edge(&edge_list(&cg), "flappy")["up"] == false
    });
    let down = killed.elapsed();
    assert_playlist_names(&cg, &healthy, "with an edge down");

    // Back: up at the first proper answer.
    let back = Instant::now();
    fake.set(Fault::None);
    wait_until("the restarted edge up", UP_BOUND, || {
        let edges = edge_list(&cg);
        assert_healthy_polled(&edges, "while an edge comes back");
        edge(&edges, "flappy")["up"] == true
    });
    eprintln!(
        "flappy: {served} alternating polls without going down; down {down:?} after its port closed, up {:?} after it answered again",
        back.elapsed()
    );
    let e = edge(&edge_list(&cg), "flappy").clone();
    assert!(e["last_error"].is_null(), "{e}");
    let entries = playlist_entries(&cg, "after an edge came back");
    assert!(
        entries.contains(&format!("{}/air", fake.url())),
        "the edge that came back is named again: {entries:?}"
    );
}
