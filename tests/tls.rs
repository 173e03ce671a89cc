//! TLS: an HTTPS front door with a certificate the test makes, verified by
//! a real client, offering HTTP/2; the certificate renewed on SIGHUP; and
//! HTTPS edges polled with a configured CA.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{free_port, require_bin, wait_until, Castgate, Icecast, IcecastOpts, Source};

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

#[test]
fn https_front_door_with_http2_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (ca("castgate test CA 1"), ca("castgate test CA 2"));
    std::fs::write(dir.path().join("ca1.pem"), ca1.cert.pem()).unwrap();
    std::fs::write(dir.path().join("ca2.pem"), ca2.cert.pem()).unwrap();
    leaf(&ca1, dir.path(), "site");

    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let (front, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        r#"
listen:
  - "127.0.0.1:{front}"
  - {{ addr: "127.0.0.1:{tls_port}", tls: {{ cert: "{d}/site.pem", key: "{d}/site.key" }} }}
admin: {{ listen: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air }}
"#,
        ice.url(),
        d = dir.path().display()
    );
    let cg = Castgate::start(&yaml, front, admin);
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
    let (code, _) = curl(tls_port, &ca2_file, "/apple.m3u", &[]);
    assert_ne!(code, 0, "verification must fail with the wrong CA");

    // Renew the certificate from another CA; SIGHUP applies it.
    leaf(&ca2, dir.path(), "site");
    cg.signal(libc::SIGHUP);
    wait_until("new certificate served", Duration::from_secs(5), || {
        curl(tls_port, &ca2_file, "/apple.m3u", &[]).0 == 0
    });
    assert_ne!(curl(tls_port, &ca1_file, "/apple.m3u", &[]).0, 0);

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
