//! TLS: an HTTPS front door with a certificate the test makes, verified by
//! a real client, offering HTTP/2; the certificate renewed on SIGHUP;
//! HTTP/2 connections that never send their preface, or sit idle, closed;
//! and HTTPS edges polled with a configured CA.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{
    free_port, http_get, require_bin, wait_until, Castgate, Icecast, IcecastOpts, Source,
};

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf for `castgate.test` and 127.0.0.1 signed by `ca`, written as
/// `{stem}.pem` / `{stem}.key`.
fn leaf(ca: &Ca, dir: &Path, stem: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["castgate.test".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

/// One Icecast origin with a source on `/air`, and castgate with a plain
/// and a TLS listener (`{dir}/site.pem` and `.key`, see [`leaf`]) serving
/// it as stream `apple` (redirect mode) and `wire` (proxy mode); `extra` is
/// added to castgate's config as is.
struct TlsFarm {
    cg: Castgate,
    tls_port: u16,
    /// castgate's config as started.
    yaml: String,
    _src: Source,
    _ice: Icecast,
}

impl TlsFarm {
    fn start(dir: &Path, extra: &str) -> TlsFarm {
        let ice = Icecast::origin(IcecastOpts::default());
        let src = Source::start(&ice, "/air");
        let (front, tls_port, admin) = (free_port(), free_port(), free_port());
        let yaml = format!(
            r#"
listen:
  - "127.0.0.1:{front}"
  - {{ addr: "127.0.0.1:{tls_port}", tls: {{ cert: "{d}/site.pem", key: "{d}/site.key" }} }}
admin: {{ listen: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
playlist: {{ hosts: ["castgate.test:{tls_port}"] }}
{extra}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air }}
  - {{ name: wire, mount: /air, mode: proxy }}
"#,
            ice.url(),
            d = dir.display()
        );
        let cg = Castgate::start(&yaml, front, admin);
        TlsFarm {
            cg,
            tls_port,
            yaml,
            _src: src,
            _ice: ice,
        }
    }
}

/// `curl` over HTTPS to castgate.test (resolved to 127.0.0.1), verifying
/// with `ca_file`; returns (exit code, "HTTP_VERSION CODE", body).
fn curl(port: u16, ca_file: &Path, path: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(require_bin("curl", "curl"))
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca_file)
        .args(["--resolve", &format!("castgate.test:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://castgate.test:{port}{path}"))
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A relayed stream reaches an HTTP/2 listener as DATA frames on its
/// stream and an HTTP/1.1-over-TLS listener close-delimited: curl gets
/// audio over both until it hangs up.
#[test]
fn relayed_streams_reach_http2_and_http1_listeners_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("castgate test CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca1.cert.pem()).unwrap();
    leaf(&ca1, dir.path(), "site");
    let farm = TlsFarm::start(dir.path(), "");
    wait_until("HTTPS playlist", Duration::from_secs(15), || {
        curl(farm.tls_port, &ca_file, "/wire.m3u", &[])
            .1
            .ends_with(" 200")
    });
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out_file = dir.path().join(format!("wire-{version}.mp3"));
        let out_path = out_file.to_string_lossy().into_owned();
        // The stream never ends: curl stops it after --max-time 5 (exit 28).
        let (code, out) = curl(farm.tls_port, &ca_file, "/wire", &[flag, "-o", &out_path]);
        let got = std::fs::metadata(&out_file).map_or(0, |m| m.len());
        assert_eq!(code, 28, "{flag}: curl ended the transfer itself: {out}");
        assert!(out.ends_with(&format!("\n{version} 200")), "{flag}: {out}");
        // 5 s of 128 kbit/s is 80 KB; allow for the TLS and Icecast start.
        assert!(got > 32 * 1024, "{flag}: {got} bytes of the stream");
    }
}

#[test]
fn https_front_door_with_http2_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (ca("castgate test CA 1"), ca("castgate test CA 2"));
    std::fs::write(dir.path().join("ca1.pem"), ca1.cert.pem()).unwrap();
    std::fs::write(dir.path().join("ca2.pem"), ca2.cert.pem()).unwrap();
    leaf(&ca1, dir.path(), "site");

    let farm = TlsFarm::start(dir.path(), "");
    let (cg, tls_port) = (&farm.cg, farm.tls_port);
    let ca1_file = dir.path().join("ca1.pem");
    let ca2_file = dir.path().join("ca2.pem");
    wait_until("HTTPS playlist", Duration::from_secs(15), || {
        curl(tls_port, &ca1_file, "/apple.m3u", &[])
            .1
            .ends_with(" 200")
    });
    let (code, out) = curl(tls_port, &ca1_file, "/apple.m3u", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("#EXTM3U"), "{out}");
    assert!(out.ends_with("\n2 200"), "HTTP/2 by ALPN: {out}");
    let (_, out) = curl(tls_port, &ca1_file, "/apple.m3u", &["--http1.1"]);
    assert!(out.ends_with("\n1.1 200"), "{out}");
    // A client that does not trust the issuer refuses the certificate.
    let (code, out) = curl(tls_port, &ca2_file, "/apple.m3u", &[]);
    assert_eq!(
        code, 60,
        "curl's CURLE_PEER_FAILED_VERIFICATION (60), not any failure: {out}"
    );

    // Renew the certificate from another CA; SIGHUP applies it.
    leaf(&ca2, dir.path(), "site");
    cg.signal(libc::SIGHUP);
    wait_until("new certificate served", Duration::from_secs(5), || {
        curl(tls_port, &ca2_file, "/apple.m3u", &[]).0 == 0
    });
    assert_eq!(
        curl(tls_port, &ca1_file, "/apple.m3u", &[]).0,
        60,
        "the old CA no longer verifies"
    );

    // A broken renewal keeps the running certificate.
    std::fs::write(dir.path().join("site.pem"), "not a certificate").unwrap();
    cg.signal(libc::SIGHUP);
    wait_until("reload refused", Duration::from_secs(5), || {
        cg.log().contains("the running certificate stays")
    });
    assert_eq!(curl(tls_port, &ca2_file, "/apple.m3u", &[]).0, 0);
}

#[test]
fn https_edges_are_polled_with_the_configured_ca() {
    let nginx = support::nginx::nginx_bin();
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("castgate edge CA");
    std::fs::write(dir.path().join("ca.pem"), ca1.cert.pem()).unwrap();
    leaf(&ca1, dir.path(), "edge");
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    // nginx terminating TLS in front of the Icecast edge.
    let port = free_port();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "{}pid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/edge.pem;\n    ssl_certificate_key {d}/edge.key;\n    location / {{ proxy_pass {}; }}\n  }}\n}}\n",
            if unsafe { libc::geteuid() } == 0 { "user root;\n" } else { "" },
            ice.url()
        ),
    )
    .unwrap();
    // Its own process group, killed whole: nginx workers outlive a killed
    // master, and must not keep this test's output pipes open.
    use std::os::unix::process::CommandExt;
    let proxy = Command::new(nginx)
        .args(["-p"])
        .arg(dir.path())
        .args(["-c"])
        .arg(dir.path().join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start nginx");
    struct KillGroup(std::process::Child);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the process group of our own unreaped child.
            unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
    let _guard = KillGroup(proxy);

    let start = |ca: bool| {
        let (front, admin) = (free_port(), free_port());
        let ca_line = if ca {
            format!(", ca_file: \"{d}/ca.pem\"")
        } else {
            String::new()
        };
        Castgate::start(
            &format!(
                "listen: [\"127.0.0.1:{front}\"]\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\npoll: {{ interval: 500ms, timeout: 400ms{ca_line} }}\nedges:\n  - {{ name: secure, kind: icecast, url: \"https://127.0.0.1:{port}\" }}\nstreams:\n  - {{ name: apple, mount: /air }}\n"
            ),
            front,
            admin,
        )
    };
    let edge = |cg: &Castgate| {
        let (_, _, body) = support::http_get(&format!("{}/status.json", cg.admin_url()));
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["edges"][0].clone()
    };
    let trusted = start(true);
    wait_until("the HTTPS edge is up", Duration::from_secs(15), || {
        edge(&trusted)["up"] == true
    });
    let untrusted = start(false);
    wait_until("a poll failed", Duration::from_secs(15), || {
        !edge(&untrusted)["last_error"].is_null()
    });
    let e = edge(&untrusted);
    assert_eq!(e["up"], false);
    eprintln!("without the CA: {}", e["last_error"]);
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4) and an empty
/// SETTINGS frame, which a client sends first.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to castgate.test on 127.0.0.1:`port`, verified against
/// `ca`, with HTTP/2 agreed by ALPN; nothing sent yet.
fn h2_connect(port: u16, ca: &Ca) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("castgate.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    tls
}

/// Reads (and drops) what castgate sends until it closes the connection;
/// how long that took from `since`. Panics if it is still open after 20 s.
fn closed_after(tls: &mut Tls, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("HTTP/2 connection still open {:?} on", since.elapsed())
            }
            Err(_) => return since.elapsed(),
        }
    }
}

/// HTTP/2 over TLS: a connection that sends no connection preface, or
/// sends it a byte every 0.5 s, is closed at `server.request_header_timeout`
/// (pingora alone waits for the preface forever); one that sends its
/// preface and then no request is closed at `server.keepalive_timeout`
/// (pingora alone keeps it forever); requests in between are served.
#[test]
fn http2_connections_without_preface_or_requests_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("castgate test CA");
    leaf(&ca, dir.path(), "site");
    let farm = TlsFarm::start(
        dir.path(),
        "server: { request_header_timeout: 2s, keepalive_timeout: 4s }",
    );
    let (cg, tls_port) = (&farm.cg, farm.tls_port);
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    wait_until("HTTP/2 playlist", Duration::from_secs(15), || {
        curl(tls_port, &ca_file, "/apple.m3u", &[])
            .1
            .ends_with("\n2 200")
    });

    // Silent after the TLS handshake: cut at the head deadline.
    let opened = Instant::now();
    let mut silent = h2_connect(tls_port, &ca);
    let silent_for = closed_after(&mut silent, opened);

    // The preface a byte every 0.5 s (12 s in all): cut at the deadline.
    let opened = Instant::now();
    let mut slow = h2_connect(tls_port, &ca);
    let mut cut_at = None;
    for byte in &H2_PREFACE_AND_SETTINGS[..24] {
        if tls_write(&mut slow, &[*byte]).is_err() {
            cut_at = Some(opened.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let slow_for = cut_at.unwrap_or_else(|| closed_after(&mut slow, opened));

    // Preface and SETTINGS, then nothing: idle, cut at the keep-alive
    // timeout (after the server's own SETTINGS and ACK, read and dropped).
    let mut idle = h2_connect(tls_port, &ca);
    tls_write(&mut idle, H2_PREFACE_AND_SETTINGS).expect("preface");
    let sent = Instant::now();
    let idle_for = closed_after(&mut idle, sent);

    eprintln!("HTTP/2 closed: silent {silent_for:?}, slow preface {slow_for:?}, idle {idle_for:?}");
    let bound = Duration::from_secs(2);
    for (what, took) in [("silent", silent_for), ("slow preface", slow_for)] {
        assert!(
            took >= bound - Duration::from_millis(300) && took < bound + Duration::from_secs(3),
            "{what} HTTP/2 connection closed after {took:?}; request_header_timeout is 2 s"
        );
    }
    let keepalive = Duration::from_secs(4);
    assert!(
        idle_for >= keepalive - Duration::from_millis(300)
            && idle_for < keepalive + Duration::from_secs(3),
        "idle HTTP/2 connection closed after {idle_for:?}; keepalive_timeout is 4 s"
    );
    let (_, _, body) = http_get(&format!("{}/metrics", cg.admin_url()));
    let body = String::from_utf8_lossy(&body);
    let timeouts: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("castgate_request_header_timeouts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(timeouts >= 2.0, "both preface timeouts counted: {timeouts}");
    // And HTTP/2 still serves.
    assert!(curl(tls_port, &ca_file, "/apple.m3u", &[])
        .1
        .ends_with("\n2 200"));

    // A reload that changes keepalive_timeout says HTTP/2 keeps the old one.
    std::fs::write(
        cg.config_path(),
        farm.yaml
            .replace("keepalive_timeout: 4s", "keepalive_timeout: 5s"),
    )
    .unwrap();
    cg.signal(libc::SIGHUP);
    wait_until(
        "a warning that HTTP/2 keeps its keep-alive timeout",
        Duration::from_secs(5),
        || {
            cg.log()
                .contains("HTTP/2 connections keep the value castgate started with")
        },
    );
}

/// Writes all of `bytes` through TLS and flushes.
fn tls_write(tls: &mut Tls, bytes: &[u8]) -> std::io::Result<()> {
    tls.write_all(bytes)?;
    tls.flush()
}
