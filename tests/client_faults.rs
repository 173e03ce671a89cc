//! Bad clients at the front door (issue 6): oversized URLs and headers,
//! too many headers, unknown and malformed methods, HTTP/1.0 without Host,
//! pipelined requests, slowloris, more connections than the limit, a
//! listener that stops reading a proxied stream. Each gets an answer, a
//! 4xx (a 503 for a connection over the limit) or a closed connection,
//! never a hang or a crash, and castgate keeps answering everyone else.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source};

struct Farm {
    ice: Icecast,
    _src: Source,
    cg: Castgate,
    addr: String,
}

fn farm() -> Farm {
    farm_with("{}")
}

/// A farm whose castgate has `server` (a YAML flow mapping) as its
/// `server:` section.
fn farm_with(server: &str) -> Farm {
    let ice = Icecast::origin(IcecastOpts::default());
    let src = Source::start(&ice, "/air");
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 500ms, timeout: 400ms }}
server: {server}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air }}
  - {{ name: radio, mount: /air, mode: proxy }}
"#,
        ice.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until("edge up", Duration::from_secs(15), || {
        http_get(&format!("{}/apple.m3u", cg.front_url())).0 == 200
    });
    let addr = cg.front_url().trim_start_matches("http://").to_string();
    Farm {
        ice,
        _src: src,
        cg,
        addr,
    }
}

/// Send `request` on a fresh connection and read until castgate closes it
/// (or 10 s pass): the status codes of every response in what came back.
fn exchange(addr: &str, request: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before the whole request is written.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close within 10 s: {e}"),
        }
    }
    String::from_utf8_lossy(&got)
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

fn still_serving(f: &Farm) {
    assert_eq!(http_get(&format!("{}/apple.m3u", f.cg.front_url())).0, 200);
}

fn refused_or_closed(codes: &[u16], what: &str) {
    assert!(
        codes.iter().all(|c| (400..500).contains(c)) && codes.len() <= 1,
        "{what}: expected a 4xx or a closed connection, got {codes:?}"
    );
}

#[test]
fn oversized_and_malformed_requests_get_4xx_or_a_close() {
    let f = farm();
    let long_path = format!(
        "GET /apple.m3u?{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "x".repeat(200_000)
    );
    refused_or_closed(&exchange(&f.addr, long_path.as_bytes()), "200 KB URL");
    still_serving(&f);

    // pingora reads request heads up to 1 MiB (a bounded cost per
    // connection); past that the request is refused.
    let long_header = format!(
        "GET /apple.m3u HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "y".repeat(2_000_000)
    );
    refused_or_closed(&exchange(&f.addr, long_header.as_bytes()), "2 MB header");
    still_serving(&f);

    let mut many = String::from("GET /apple.m3u HTTP/1.1\r\nHost: a\r\n");
    for i in 0..2000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    refused_or_closed(&exchange(&f.addr, many.as_bytes()), "2,000 headers");
    still_serving(&f);

    for garbage in [
        &b"G@T /apple.m3u HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /apple.m3u HTTP/9.9\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello on a plain port",
        b"GET\r\n\r\n",
    ] {
        refused_or_closed(
            &exchange(&f.addr, garbage),
            &String::from_utf8_lossy(garbage),
        );
        still_serving(&f);
    }
}

#[test]
fn unknown_methods_http10_and_pipelining() {
    let f = farm();
    // A well-formed but unknown method: 405 with Allow.
    assert_eq!(
        exchange(
            &f.addr,
            b"DELETE /apple.m3u HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ),
        vec![405]
    );
    // HTTP/1.0 without Host: a redirect-mode playlist needs none; a
    // proxy-mode playlist names castgate itself, so it needs the Host.
    assert_eq!(
        exchange(&f.addr, b"GET /apple.m3u HTTP/1.0\r\n\r\n"),
        vec![200]
    );
    assert_eq!(
        exchange(&f.addr, b"GET /radio.m3u HTTP/1.0\r\n\r\n"),
        vec![400]
    );
    // Three pipelined requests in one write: pingora (pipelining off, its
    // default) answers the first and closes the connection, and the client
    // retries the rest on a new one (RFC 9112 §9.3.2). No hang, no mix-up.
    assert_eq!(
        exchange(
            &f.addr,
            b"GET /apple.m3u HTTP/1.1\r\nHost: a\r\n\r\nGET /missing HTTP/1.1\r\nHost: a\r\n\r\nGET /apple HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ),
        vec![200]
    );
    still_serving(&f);
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}

/// Read one answer's head and `Content-Length` body from a kept-alive
/// connection: its status code.
fn read_answer(s: &mut TcpStream) -> std::io::Result<u16> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body)?;
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ErrorKind::InvalidData.into())
}

/// A counter or gauge from castgate's /metrics (0 when absent).
fn metric(f: &Farm, name: &str) -> f64 {
    let (_, _, body) = http_get(&format!("{}/metrics", f.cg.admin_url()));
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// Slowloris: a client sending its request head a byte every 0.5 s is
/// disconnected once `server.request_header_timeout` has passed (pingora
/// alone only bounds each read, by 60 s), and so is one that connects and
/// sends nothing. Meanwhile everyone else is served, and a kept-alive
/// connection that waits longer than the bound between two requests is
/// not cut (that wait is the keep-alive timeout's).
#[test]
fn slow_request_heads_are_cut_at_the_deadline() {
    let f = farm_with("{ request_header_timeout: 2s, keepalive_timeout: 10s }");
    let bound = Duration::from_secs(2);

    let mut silent = TcpStream::connect(&f.addr).expect("connect");
    let mut slow = TcpStream::connect(&f.addr).expect("connect");
    let mut kept = TcpStream::connect(&f.addr).expect("connect");
    let start = Instant::now();
    kept.write_all(b"GET /apple.m3u HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("request");
    assert_eq!(read_answer(&mut kept).expect("first answer"), 200);

    let head = b"GET /apple.m3u HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    let mut sent = 0usize;
    let cut = loop {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if slow.write_all(&[byte]).is_err() || closed_by_server(&mut slow) {
            break start.elapsed();
        }
        sent += 1;
        // Everyone else is served in the meantime.
        still_serving(&f);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a client sending a header byte every 0.5 s was still connected after 15 s ({sent} bytes sent)"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("slowloris cut after {cut:?} ({sent} bytes sent; bound {bound:?})");
    assert!(
        cut >= bound - Duration::from_millis(100) && cut < bound + Duration::from_secs(2),
        "slow head cut after {cut:?}, bound {bound:?}"
    );
    assert!(
        closed_by_server(&mut silent),
        "a client that sent nothing for {:?} is still connected",
        start.elapsed()
    );

    // The kept-alive connection has idled past the head bound: its next
    // request is still answered.
    let idle = bound + Duration::from_secs(1);
    if let Some(rest) = idle.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    kept.write_all(b"GET /apple.m3u HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("second request");
    assert_eq!(read_answer(&mut kept).expect("second answer"), 200);

    let timeouts = metric(&f, "castgate_request_header_timeouts_total");
    assert!(timeouts >= 2.0, "request head timeouts counted: {timeouts}");
}

/// Raise this process's open-file limit to its hard limit; fails when even
/// that cannot hold `needed` files.
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit is {} (raise it: ulimit -Hn {needed}, or LimitNOFILE= in the CI unit)",
        limit.rlim_max
    );
}

/// 10,000 idle keep-alive connections against `server.max_connections:
/// 9000`: exactly 9,000 are served and stay open, the other 1,000 get a
/// 503 and a close, as does a newcomer while the farm is full; a freed
/// slot serves the next newcomer; castgate's memory per connection stays
/// bounded; and the keep-alive timeout closes every idle one.
#[test]
fn ten_thousand_idle_connections_meet_the_limit() {
    const LIMIT: usize = 9_000;
    const CLIENTS: usize = 10_000;
    raise_open_files(CLIENTS as u64 + 500);
    let f = farm_with(&format!(
        "{{ max_connections: {LIMIT}, keepalive_timeout: 15s, request_header_timeout: 30s }}"
    ));
    let rss_before = f.cg.proc_status_kib("VmRSS").expect("castgate RSS");
    let request = b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut conns = Vec::with_capacity(CLIENTS);
    let opened = Instant::now();
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(&f.addr).expect("connect");
        s.write_all(request).expect("request");
        conns.push(s);
    }
    let (mut served, mut refused) = (Vec::new(), 0usize);
    for mut s in conns {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        match read_answer(&mut s) {
            Ok(404) => served.push(s),
            Ok(503) => {
                refused += 1;
                // A refused connection is closed after its answer.
                let mut rest = [0u8; 1];
                assert!(matches!(s.read(&mut rest), Ok(0) | Err(_)));
            }
            other => panic!("expected 404 or 503, got {other:?}"),
        }
    }
    eprintln!(
        "{CLIENTS} connections opened and answered in {:?}: {} served, {refused} refused",
        opened.elapsed(),
        served.len()
    );
    assert_eq!(served.len(), LIMIT);
    assert_eq!(refused, CLIENTS - LIMIT);
    assert_eq!(metric(&f, "castgate_connections_open"), LIMIT as f64);
    let rss_full = f.cg.proc_status_kib("VmRSS").expect("castgate RSS");
    let per_conn = (rss_full.saturating_sub(rss_before)) as f64 / LIMIT as f64;
    eprintln!("castgate RSS {rss_before} KiB → {rss_full} KiB: {per_conn:.1} KiB a connection");
    assert!(
        per_conn < 96.0,
        "{per_conn:.1} KiB per idle connection (pingora's own floor is about 36 KiB)"
    );

    // While full, a newcomer gets a prompt 503, not a hang.
    let asked = Instant::now();
    assert_eq!(
        exchange(&f.addr, b"GET /apple.m3u HTTP/1.1\r\nHost: a\r\n\r\n"),
        vec![503]
    );
    assert!(asked.elapsed() < Duration::from_secs(2));
    // Freed slots serve the next newcomers.
    served.truncate(LIMIT - 100);
    wait_until(
        "a newcomer served once slots are free",
        Duration::from_secs(5),
        || http_get(&format!("{}/apple.m3u", f.cg.front_url())).0 == 200,
    );
    assert!(metric(&f, "castgate_connections_refused_total") >= (CLIENTS - LIMIT + 1) as f64);

    // Idle keep-alive connections are closed by the keep-alive timeout.
    wait_until(
        "the keep-alive timeout closes every idle connection",
        Duration::from_secs(30),
        || metric(&f, "castgate_connections_open") == 0.0,
    );
    let mut probe = served.pop().expect("a served connection");
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = [0u8; 1];
    assert!(matches!(probe.read(&mut rest), Ok(0) | Err(_)));
}

/// A listener that stops reading a proxied stream is disconnected once a
/// write to it has waited `server.write_timeout` (with `send_buffer`
/// bounding what the kernel queues for it first), and castgate drops its
/// connection to the edge too. Without the timeout it stays connected
/// until Icecast's own queue limit (512 KB, about 30 s of this stream).
#[test]
fn a_listener_that_stops_reading_is_disconnected() {
    let f = farm_with("{ write_timeout: 2s, send_buffer: 4096 }");
    let mut s = TcpStream::connect(&f.addr).expect("connect");
    s.write_all(b"GET /radio HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("request");
    let mut first = [0u8; 16384];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = s.read(&mut first).expect("the stream starts");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    wait_until(
        "the edge counts the listener",
        Duration::from_secs(10),
        || f.ice.listeners("/air") == Some(1),
    );
    // Stop reading.
    let stalled = Instant::now();
    wait_until(
        "castgate drops the stalled listener and its edge connection",
        Duration::from_secs(20),
        || f.ice.listeners("/air") == Some(0),
    );
    eprintln!(
        "stalled listener dropped {:?} after it stopped reading",
        stalled.elapsed()
    );
    // What was queued drains, then the connection is closed.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled listener's connection is still open: {e}"),
        }
    }
    still_serving(&f);
}
