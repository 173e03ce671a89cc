//! Bad clients at the front door (issue 6): oversized URLs and headers,
//! too many headers, unknown and malformed methods, HTTP/1.0 without Host,
//! pipelined requests. Each gets an answer, a 4xx or a closed connection,
//! never a hang or a crash, and castgate keeps answering everyone else.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source};

struct Farm {
    _ice: Icecast,
    _src: Source,
    cg: Castgate,
    addr: String,
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
        _ice: ice,
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
