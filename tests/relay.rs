//! castgate's own relay for proxy-mode Icecast streams: the edge's framing
//! and ICY headers reach the listener unchanged (streamripper and raw
//! readers record them), and a request keeps the snapshot it was decided
//! on through reloads and admin changes until it ends.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    free_port, http_get, http_request, require_bin, wait_until, Castgate, Icecast, IcecastOpts,
    Listener, Source,
};

/// castgate proxying `/apple` (mount `/air`) from `ice`.
fn proxying(ice: &Icecast) -> Castgate {
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 1s, timeout: 800ms }}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air, mode: proxy }}
"#,
        ice.url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until("edge up", Duration::from_secs(15), || {
        http_get(&format!("{}/apple.m3u", cg.front_url())).0 == 200
    });
    cg
}

/// Set the mount's song title through Icecast's admin API, as a source
/// client's metadata update does; Icecast sends it in its ICY metadata.
fn set_title(ice: &Icecast, mount: &str, title: &str) {
    let auth = support::basic_auth(support::ADMIN_USER, support::ADMIN_PASSWORD);
    let url = format!(
        "{}/admin/metadata?mount={mount}&mode=updinfo&song={title}",
        ice.url()
    );
    let (code, _, body) = http_request("GET", &url, &[("Authorization", &auth)]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
}

/// A request written on a raw socket; returns the head (as text) and the
/// socket, positioned after it, with the body bytes already read.
fn raw_request(addr: &str, request: &str) -> (String, Vec<u8>, TcpStream) {
    let mut s = TcpStream::connect(addr).expect("connect to castgate");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).expect("read the head");
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    (head, got[end..].to_vec(), s)
}

/// Read ICY metadata blocks (a length byte × 16, then text) every
/// `metaint` bytes from `body` + `s` until `blocks` non-empty ones were seen
/// or `budget` runs out; returns their texts. Any byte out of place (a
/// chunk-size line, say) makes a length or a text that is not ICY's.
fn icy_titles(mut body: Vec<u8>, s: &mut TcpStream, metaint: usize, blocks: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut titles = Vec::new();
    let mut pos = 0;
    let mut buf = [0u8; 16384];
    while titles.len() < blocks {
        assert!(
            Instant::now() < deadline,
            "{} ICY titles within 40 s: {titles:?}",
            blocks
        );
        // Need the audio block, the length byte and up to 255 × 16 bytes.
        while body.len() < pos + metaint + 1 + 255 * 16 {
            let n = s.read(&mut buf).expect("read the stream");
            assert!(n > 0, "the stream ended");
            body.extend_from_slice(&buf[..n]);
        }
        let len = body[pos + metaint] as usize * 16;
        let text = &body[pos + metaint + 1..pos + metaint + 1 + len];
        if len > 0 {
            let text = String::from_utf8_lossy(text)
                .trim_end_matches('\0')
                .to_string();
            assert!(
                text.starts_with("StreamTitle='"),
                "not an ICY metadata block at byte {}: {text:?}",
                pos + metaint
            );
            titles.push(text);
        }
        pos += metaint + 1 + len;
    }
    titles
}

/// What an embedded radio or a ripper does: HTTP/1.1 or 1.0, `Icy-MetaData:
/// 1`, `Connection: close`, then raw bytes after the head. They get the
/// edge's framing (close-delimited, no chunked), its ICY headers, and
/// metadata blocks exactly every `icy-metaint` bytes.
#[test]
fn raw_readers_get_the_edges_framing_and_icy_metadata() {
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    set_title(&ice, "/air", "First");
    let cg = proxying(&ice);
    let addr = cg.front_url().trim_start_matches("http://").to_string();
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let (head, body, mut s) = raw_request(
            &addr,
            &format!(
                "GET /apple {version}\r\nHost: {addr}\r\nIcy-MetaData: 1\r\nUser-Agent: raw/1\r\nConnection: close\r\n\r\n"
            ),
        );
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!lower.contains("\ntransfer-encoding:"), "re-framed: {head}");
        assert!(!lower.contains("\ncontent-length:"), "{head}");
        assert!(lower.contains("connection: close\r\n"), "{head}");
        assert!(
            lower.contains("server: icecast"),
            "the edge's headers: {head}"
        );
        assert!(lower.contains("icy-metadata: 1\r\n"), "{head}");
        let metaint: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("icy-metaint:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no icy-metaint: {head}"));
        let titles = icy_titles(body, &mut s, metaint, 1);
        assert_eq!(titles[0], "StreamTitle='First';", "{version}");
    }
    // Without Icy-MetaData the edge sends plain MP3, and so does castgate.
    let (head, _, _) = raw_request(
        &addr,
        &format!("GET /apple HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    );
    assert!(!head.to_ascii_lowercase().contains("icy-metaint"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
}

/// streamripper (HTTP/1.1, `Icy-MetaData: 1`, no chunked decoding) records
/// through castgate what it records from the edge directly: a file of
/// MPEG audio, split at the title change.
#[test]
fn streamripper_records_through_proxy_mode() {
    let bin = require_bin("streamripper", "streamripper");
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    set_title(&ice, "/air", "One");
    let cg = proxying(&ice);
    let dir = tempfile::tempdir().unwrap();
    let rip = |url: &str, sub: &str| -> (String, u64) {
        let out = dir.path().join(sub);
        let title_changer = {
            let ice_url = ice.url();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(4));
                let auth = support::basic_auth(support::ADMIN_USER, support::ADMIN_PASSWORD);
                let url = format!("{ice_url}/admin/metadata?mount=/air&mode=updinfo&song=Two");
                http_request("GET", &url, &[("Authorization", &auth)]);
            })
        };
        let run = Command::new(&bin)
            .arg(url)
            .args(["-l", "9", "-d"])
            .arg(&out)
            .args(["-s", "-a", "all.mp3", "--quiet"])
            .output()
            .expect("run streamripper");
        title_changer.join().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        (text, file_size(&out.join("all.mp3")))
    };
    let (direct_log, direct) = rip(&format!("{}/air", ice.url()), "direct");
    let (through_log, through) = rip(&format!("{}/apple", cg.front_url()), "through");
    eprintln!("streamripper: {direct} bytes direct, {through} bytes through castgate");
    assert!(
        direct > 64 * 1024,
        "direct rip: {direct} bytes; {direct_log}"
    );
    assert!(
        !through_log.contains("SR_ERROR"),
        "streamripper failed through castgate: {through_log}"
    );
    // Nine seconds of 128 kbit/s is 144 KB; allow for start-up.
    assert!(
        through > 64 * 1024,
        "rip through castgate: {through} bytes; {through_log}"
    );
    let ripped = std::fs::read(dir.path().join("through").join("all.mp3")).unwrap();
    let frames = ripped
        .windows(2)
        .filter(|w| w[0] == 0xFF && w[1] & 0xE0 == 0xE0)
        .count();
    assert!(frames > 100, "{frames} MPEG frame headers in the rip");
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// `castgate_requests_total` for one stream, format `proxy`, code 200.
fn proxied_requests(cg: &Castgate, stream: &str) -> u64 {
    let (_, _, body) = http_get(&format!("{}/metrics", cg.admin_url()));
    let want =
        format!("castgate_requests_total{{code=\"200\",format=\"proxy\",stream=\"{stream}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Listeners decided on one snapshot keep it: reloads that remove and
/// reorder streams and edges, and an admin API deletion of an edge above
/// theirs, do not move them, and each is counted under its own stream when
/// it ends (positions into a later snapshot named another stream, or
/// indexed past the end and panicked).
#[test]
fn carried_listeners_keep_their_snapshot_through_reloads_and_deletions() {
    const TOKEN: &str = "relay-test-token-0123456789";
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (front, admin) = (free_port(), free_port());
    let config = |edges: &str, streams: &str| {
        format!(
            r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}", token_file: "{}" }}
poll: {{ interval: 1s, timeout: 800ms }}
edges:
{edges}
streams:
{streams}
"#,
            token.display()
        )
    };
    let a = format!("  - {{ name: a, kind: icecast, url: \"{}\" }}\n", ice.url());
    let gone = "  - { name: gone, kind: icecast, url: \"http://127.0.0.1:9\" }\n";
    let spare = "  - { name: spare, kind: icecast, url: \"http://127.0.0.1:9\" }\n";
    let h = "  - { name: h, kind: hls, url: \"http://127.0.0.1:9\" }\n";
    let radio = "  - { name: radio, mount: /air, mode: proxy }\n";
    let apple = "  - { name: apple, mount: /air }\n";
    let wire = "  - { name: wire, mount: /air, mode: proxy, edges: [a] }\n";
    let live = "  - { name: live, kind: hls, path: /hls/x.m3u8, edges: [h] }\n";
    let first = config(
        &format!("{gone}{spare}{a}{h}"),
        &format!("{radio}{apple}{wire}{live}"),
    );
    let cg = Castgate::start(&first, front, admin);
    wait_until("edge a up", Duration::from_secs(15), || {
        http_get(&format!("{}/wire.m3u", cg.front_url())).0 == 200
    });
    let on_wire = Listener::connect(&format!("{}/wire", cg.front_url())).unwrap();
    let on_radio = Listener::connect(&format!("{}/radio", cg.front_url())).unwrap();
    for l in [&on_wire, &on_radio] {
        assert_eq!(l.status(), 200);
        l.wait_bytes(16 * 1024, Duration::from_secs(10));
    }
    ice.wait_listeners("/air", 2, Duration::from_secs(10));

    // The admin API deletes an edge above theirs.
    let auth = format!("Bearer {TOKEN}");
    let (code, _, body) = http_request(
        "DELETE",
        &format!("{}/api/edges/gone", cg.admin_url()),
        &[("Authorization", &auth), ("Content-Length", "0")],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    // A reload removes `radio` and reorders the rest.
    let path = cg.config_path();
    std::fs::write(
        &path,
        config(&format!("{a}{spare}{h}"), &format!("{wire}{apple}{live}")),
    )
    .unwrap();
    cg.signal(libc::SIGHUP);
    wait_until("the reload applied", Duration::from_secs(10), || {
        http_get(&format!("{}/radio.m3u", cg.front_url())).0 == 404
    });
    // And another leaves only two streams and one edge.
    std::fs::write(&path, config(&a, &format!("{wire}{apple}"))).unwrap();
    cg.signal(libc::SIGHUP);
    wait_until("the second reload applied", Duration::from_secs(10), || {
        http_get(&format!("{}/live.m3u8", cg.front_url())).0 == 404
    });
    // Both are still carried by edge a, the edge they were sent to.
    for l in [&on_wire, &on_radio] {
        let had = l.bytes_received();
        l.wait_bytes(had + 16 * 1024, Duration::from_secs(10));
    }
    assert_eq!(ice.listeners("/air"), Some(2));

    drop(on_radio);
    drop(on_wire);
    support::poll_until(Duration::from_secs(10), || {
        proxied_requests(&cg, "radio") + proxied_requests(&cg, "wire") >= 2
    });
    let log = cg.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(proxied_requests(&cg, "radio"), 1, "radio's listener");
    assert_eq!(proxied_requests(&cg, "wire"), 1, "wire's listener");
    assert_eq!(
        proxied_requests(&cg, "apple"),
        0,
        "no proxied request on apple"
    );
}

/// A proxy-mode playlist names castgate by the request's `Host` only when
/// castgate is known by it (`playlist.hosts`, or by default an IP literal
/// or localhost): a client cannot have it hand out `evil.example`.
#[test]
fn proxy_mode_playlists_name_only_hosts_castgate_is_known_by() {
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let cg = proxying(&ice);
    let addr = cg.front_url().trim_start_matches("http://").to_string();
    let ask = |cg: &Castgate, host: &str| {
        let addr = cg.front_url().trim_start_matches("http://").to_string();
        let (head, body, mut s) = raw_request(
            &addr,
            &format!("GET /apple.m3u HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        let mut rest = body;
        let _ = s.read_to_end(&mut rest);
        (head, String::from_utf8_lossy(&rest).into_owned())
    };
    let (head, body) = ask(&cg, &addr);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(&format!("http://{addr}/apple")), "{body}");
    for evil in ["evil.example", "evil.example:80"] {
        let (head, body) = ask(&cg, evil);
        assert!(head.starts_with("HTTP/1.1 400"), "Host {evil}: {head}");
        assert!(!body.contains("evil"), "{body}");
    }
    // With playlist.hosts, those names and no others.
    let path = cg.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("poll:", "playlist: { hosts: [radio.example] }\npoll:"),
    )
    .unwrap();
    cg.signal(libc::SIGHUP);
    wait_until("the reload applied", Duration::from_secs(10), || {
        ask(&cg, &addr).0.starts_with("HTTP/1.1 400")
    });
    let (head, body) = ask(&cg, "radio.example");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("http://radio.example/apple"), "{body}");
    assert!(ask(&cg, "evil.example").0.starts_with("HTTP/1.1 400"));
}
