//! What a player or a browser sees at the front door: formats, headers,
//! methods, keep-alive, unknown paths; and a clean stop on signals.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{
    free_port, header, http_get, http_request, wait_until, Castgate, Icecast, IcecastOpts, Source,
};

struct Farm {
    ice: Icecast,
    _src: Source,
    cg: Castgate,
}

fn farm() -> Farm {
    let ice = Icecast::origin(IcecastOpts::default());
    let src = Source::start(&ice, "/air");
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 500ms, timeout: 400ms }}
server: {{ grace_period: 1s, shutdown_timeout: 2s }}
edges:
  - {{ name: a, kind: icecast, url: "{}", public_url: "http://radio.example.net:8000/" }}
streams:
  - {{ name: apple, mount: /air, title: "Apple Radio" }}
"#,
        ice.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until("edge up", Duration::from_secs(15), || {
        http_get(&format!("{}/apple.m3u", cg.front_url())).0 == 200
    });
    Farm { ice, _src: src, cg }
}

const EDGE: &str = "http://radio.example.net:8000/air";

#[test]
fn each_format_has_its_type_body_and_no_store() {
    let f = farm();
    let cases = [
        ("apple.m3u", "audio/x-mpegurl", "#EXTM3U\n"),
        ("apple.pls", "audio/x-scpls", "[playlist]\n"),
        ("apple.xspf", "application/xspf+xml", "<?xml"),
    ];
    for (path, ctype, start) in cases {
        let (code, headers, body) = http_get(&format!("{}/{path}", f.cg.front_url()));
        let body = String::from_utf8(body).expect("utf-8 playlist");
        assert_eq!(code, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), Some(ctype), "{path}");
        assert_eq!(
            header(&headers, "cache-control"),
            Some("no-store"),
            "{path}"
        );
        assert_eq!(
            header(&headers, "content-length"),
            Some(body.len().to_string().as_str()),
            "{path}"
        );
        assert!(body.starts_with(start), "{path}: {body}");
        assert!(body.contains(EDGE), "{path}: {body}");
        assert!(body.contains("Apple Radio"), "{path}: {body}");
    }
    let (_, _, pls) = http_get(&format!("{}/apple.pls", f.cg.front_url()));
    let pls = String::from_utf8(pls).unwrap();
    for line in [
        "NumberOfEntries=1",
        &format!("File1={EDGE}"),
        "Title1=Apple Radio",
        "Length1=-1",
        "Version=2",
    ] {
        assert!(pls.lines().any(|l| l == line), "{line} in {pls}");
    }
}

#[test]
fn redirect_keeps_the_query_string() {
    let f = farm();
    let (code, headers, _) = http_get(&format!("{}/apple?token=abc&x=1", f.cg.front_url()));
    assert_eq!(code, 302);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("{EDGE}?token=abc&x=1").as_str())
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let (_, headers, _) = http_get(&format!("{}/apple", f.cg.front_url()));
    assert_eq!(header(&headers, "location"), Some(EDGE));
}

/// The query string is the only client input that reaches a Location.
/// Bytes pingora's parser lets through in a query (braces, bar, backslash,
/// caret, backquote, brackets, raw UTF-8) are percent-encoded; quotes and
/// angle brackets are refused by the parser with a 400.
#[test]
fn redirect_query_is_percent_encoded() {
    let f = farm();
    let addr = f.cg.front_url().trim_start_matches("http://").to_string();
    let ask = |query: &[u8]| {
        let stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = b"GET /apple?".to_vec();
        request.extend_from_slice(query);
        request.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
        (&stream).write_all(&request).expect("write request");
        read_response(&mut BufReader::new(&stream))
    };
    let (code, headers, _) = ask("x={|}\\^`[]é&y=%41".as_bytes());
    assert_eq!(code, 302);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("{EDGE}?x=%7B%7C%7D%5C%5E%60%5B%5D%C3%A9&y=%41").as_str())
    );
    for refused in [&b"x=\"a"[..], b"x=<b>"] {
        assert_eq!(ask(refused).0, 400, "{}", String::from_utf8_lossy(refused));
    }
}

#[test]
fn head_unknown_paths_and_methods() {
    let f = farm();
    let url = |p: &str| format!("{}{p}", f.cg.front_url());
    // HEAD then GET on one raw connection: the HEAD answer has the GET
    // answer's headers and Content-Length and no body bytes on the wire
    // (else the GET's status line would not come next).
    let addr = f.cg.front_url().trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let send = |method: &str| {
        (&stream)
            .write_all(format!("{method} /apple.m3u HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("write request")
    };
    send("HEAD");
    let (code, head_headers) = read_head(&mut reader);
    assert_eq!(code, 200);
    send("GET");
    let (code, get_headers, body) = read_response(&mut reader);
    assert_eq!(
        code, 200,
        "the GET's answer follows the HEAD's head directly"
    );
    assert!(!body.is_empty());
    assert_eq!(
        header(&head_headers, "content-length"),
        Some(body.len().to_string().as_str()),
        "HEAD announces the GET's length"
    );
    assert_eq!(
        header(&head_headers, "content-type"),
        header(&get_headers, "content-type")
    );
    for p in [
        "/",
        "/nope.m3u",
        "/apple.mp3",
        "/apple/x",
        "/APPLE.m3u",
        "/apple.m3u/../x",
    ] {
        assert_eq!(http_get(&url(p)).0, 404, "{p}");
    }
    let (code, headers, _) = http_request("POST", &url("/apple.m3u"), &[("Content-Length", "0")]);
    assert_eq!(code, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD, OPTIONS"));
    let _ = &f.ice;
}

/// Read one HTTP/1.1 response with a Content-Length from a kept-alive stream.
fn read_response(reader: &mut BufReader<&TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (code, headers) = read_head(reader);
    let len: usize = header(&headers, "content-length")
        .and_then(|l| l.parse().ok())
        .expect("content-length");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    (code, headers, body)
}

/// Read a response's status line and headers, nothing after them.
fn read_head(reader: &mut BufReader<&TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (code, headers)
}

#[test]
fn keep_alive_survives_playlists_redirects_404s_and_503s() {
    let mut f = farm();
    let addr = f.cg.front_url().trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut ask = |path: &str| {
        (&stream)
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("write request");
        read_response(&mut reader)
    };
    assert_eq!(ask("/apple.m3u").0, 200);
    assert_eq!(ask("/apple").0, 302);
    assert_eq!(ask("/missing").0, 404);
    assert_eq!(ask("/apple.pls").0, 200);
    // The edge dies: 503s come back on the same connection.
    f.ice.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, headers, _) = ask("/apple.xspf");
        if code == 503 {
            assert!(header(&headers, "retry-after").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no 503 after the edge died");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ask("/apple.m3u").0, 503);
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut f = farm();
        let started = Instant::now();
        f.cg.signal(signal);
        wait_until("castgate exits", Duration::from_secs(10), || {
            !f.cg.is_running()
        });
        let status = f.cg.stop().expect("exit status");
        assert!(
            status.success(),
            "signal {signal}: {status:?}\n{}",
            f.cg.log_tail(20)
        );
        // grace_period 1s + shutdown_timeout 2s, plus start-up slack.
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn access_log_lines_in_text_and_json() {
    let f = farm();
    http_get(&format!("{}/apple.m3u", f.cg.front_url()));
    http_get(&format!("{}/nope.m3u", f.cg.front_url()));
    wait_until("access lines", Duration::from_secs(5), || {
        f.cg.log()
            .lines()
            .any(|l| l.contains("castgate::access") && l.contains("code=404"))
    });
    let log = f.cg.log();
    let line = log
        .lines()
        .find(|l| l.contains("castgate::access") && l.contains("stream=\"apple\""))
        .expect("an access line for the playlist");
    for field in [
        "client=127.0.0.1:",
        "format=\"m3u\"",
        "edge=\"a\"",
        "code=200",
        "micros=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }

    // JSON: one object a line, fields as keys; and it can be switched off.
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: [\"127.0.0.1:{front}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nedges:\n  - {{ name: a, kind: icecast, url: \"{}\" }}\nstreams:\n  - {{ name: apple, mount: /air }}\n",
        f.ice.url()
    );
    let json = Castgate::start_with_args(&yaml, front, admin, &["--log-format", "json"]);
    http_get(&format!("{}/nope.m3u", json.front_url()));
    wait_until("json access line", Duration::from_secs(5), || {
        json.log().lines().any(|l| l.contains("castgate::access"))
    });
    let log = json.log();
    let line = log
        .lines()
        .find(|l| l.contains("castgate::access"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["target"], "castgate::access");
    assert_eq!(v["fields"]["code"], 404);
    drop(json);

    let (front, admin) = (free_port(), free_port());
    let quiet_yaml = format!(
        "listen: [\"127.0.0.1:{front}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nlog: {{ access: false }}\nedges:\n  - {{ name: a, kind: icecast, url: \"{}\" }}\nstreams:\n  - {{ name: apple, mount: /air }}\n",
        f.ice.url()
    );
    let quiet = Castgate::start(&quiet_yaml, front, admin);
    http_get(&format!("{}/nope.m3u", quiet.front_url()));
    http_get(&format!("{}/status.json", quiet.admin_url()));
    assert!(!quiet.log().contains("castgate::access"), "access log off");
}

/// A handler that panics (debug builds have a path that does) answers 500
/// and closes that connection; castgate keeps serving, on new connections
/// and on connections opened before.
#[test]
fn a_panicking_handler_answers_500_and_castgate_keeps_serving() {
    let f = farm();
    let addr = f.cg.front_url().trim_start_matches("http://").to_string();
    let before = TcpStream::connect(&addr).expect("connect");
    before
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut before_reader = BufReader::new(&before);
    let ask = |stream: &TcpStream, reader: &mut BufReader<&TcpStream>, path: &str| {
        let mut w = stream;
        w.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("write request");
        read_response(reader)
    };
    assert_eq!(ask(&before, &mut before_reader, "/apple.m3u").0, 200);
    for _ in 0..3 {
        let s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (code, headers, body) = ask(&s, &mut BufReader::new(&s), "/.castgate/test-panic");
        assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
    assert_eq!(ask(&before, &mut before_reader, "/apple.m3u").0, 200);
    assert_eq!(http_get(&format!("{}/apple.pls", f.cg.front_url())).0, 200);
    assert!(f.cg.log().contains("a request handler panicked"));
    // Each panic is counted as a 500.
    let (_, _, metrics) = http_get(&format!("{}/metrics", f.cg.admin_url()));
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .lines()
            .any(|l| l == "castgate_requests_total{code=\"500\",format=\"-\",stream=\"-\"} 3"),
        "{metrics}"
    );
}

/// An idle keep-alive connection is closed after `server.keepalive_timeout`
/// (pingora alone keeps it forever); one that keeps asking stays open.
#[test]
fn idle_keep_alive_connections_are_closed_after_the_timeout() {
    use std::io::Read;
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 500ms, timeout: 400ms }}
server: {{ keepalive_timeout: 1s }}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air }}
"#,
        ice.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until("edge up", Duration::from_secs(15), || {
        http_get(&format!("{}/apple.m3u", cg.front_url())).0 == 200
    });
    let addr = cg.front_url().trim_start_matches("http://").to_string();
    let open = |addr: &str| {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let ask = |s: &TcpStream, reader: &mut BufReader<&TcpStream>| {
        let mut w = s;
        w.write_all(format!("GET /apple.m3u HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("write request");
        read_response(reader).0
    };
    // Idle after one request: closed by castgate in about a second.
    let idle = open(&addr);
    let mut idle_reader = BufReader::new(&idle);
    assert_eq!(ask(&idle, &mut idle_reader), 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = idle_reader
        .read_to_end(&mut rest)
        .expect("EOF, not a read timeout");
    let waited = started.elapsed();
    assert_eq!(n, 0);
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // Busy: a request every 400 ms keeps the connection for 3 s.
    let busy = open(&addr);
    let mut busy_reader = BufReader::new(&busy);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(ask(&busy, &mut busy_reader), 200);
        std::thread::sleep(Duration::from_millis(400));
    }
}
