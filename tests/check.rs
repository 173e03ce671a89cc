//! `castgate check`: the shipped configs pass; bad ones are refused with
//! every error and its place, and exit code 1.

use std::io::Write;
use std::process::Command;

fn check(yaml: &str) -> (i32, String, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(yaml.as_bytes()).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["check", "--config"])
        .arg(file.path())
        .output()
        .expect("run castgate check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
listen: ["127.0.0.1:8080"]
admin: { listen: "127.0.0.1:9090" }
poll: { interval: 1s, timeout: 800ms, rise: 1, fall: 2 }
edges:
  - name: air1
    kind: icecast
    url: http://127.0.0.1:8001
  - name: air2
    kind: icecast
    url: http://127.0.0.1:8002
streams:
  - name: apple
    mount: /air
    fallback: /nonstop
    edges: [air1, air2]
"#;

#[test]
fn shipped_configs_are_valid() {
    for name in ["castgate.yaml", "demo.yaml"] {
        let path = format!("{}/conf/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO_BIN_EXE_castgate"))
            .args(["check", "-c", &path])
            .output()
            .expect("run castgate check");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }
}

#[test]
fn a_good_config_prints_ok() {
    let (code, stdout, _) = check(GOOD);
    assert_eq!((code, stdout.trim()), (0, "ok"));
}

#[test]
fn every_error_is_printed_at_once_with_its_place() {
    let bad = GOOD
        .replace("interval: 1s", "interval: 1 fortnight-ish")
        .replace(
            "  - name: air2\n    kind: icecast\n    url: http://127.0.0.1:8002\n",
            "  - name: air1\n    kind: icecast\n    url: http://127.0.0.1:8002\n    colour: red\n  - name: air3\n    kind: icecast\n    url: http://127.0.0.1:8003\n",
        )
        .replace("edges: [air1, air2]", "edges: [air1, air9]");
    let (code, stdout, stderr) = check(&bad);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    for want in [
        "poll.interval: invalid duration",
        "edges[1].colour: unknown field `colour`",
        "streams[0].edges[1]: unknown edge `air9`",
    ] {
        assert!(stderr.contains(want), "missing `{want}` in:\n{stderr}");
    }
    let dup = GOOD.replace("name: air2", "name: air1");
    let (code, _, stderr) = check(&dup);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("edges[1].name: duplicate edge name `air1`"),
        "{stderr}"
    );
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let (code, _, stderr) = check("listen: [\"127.0.0.1:8080\"\nedges:\n  - name: [\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("line "), "{stderr}");
    assert!(stderr.contains("column "), "{stderr}");
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let (code, _, stderr) = check(&format!("{GOOD}\nbalancer: {{ policy: fastest }}\n"));
    assert_eq!(code, 1);
    assert!(stderr.contains("balancer: unknown key"), "{stderr}");
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["check", "-c", "/nonexistent/castgate.yaml"])
        .output()
        .expect("run castgate check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn connection_guards_out_of_range_are_refused_together() {
    let bad = format!(
        "{GOOD}server: {{ request_header_timeout: 0s, write_timeout: 2h, max_connections: 0, send_buffer: 100 }}\n"
    );
    let (code, _, stderr) = check(&bad);
    assert_eq!(code, 1);
    for want in [
        "server.request_header_timeout: must be between 1s and 1h",
        "server.write_timeout: must be between 1s and 1h",
        "server.max_connections: must be between 1 and 1000000, not 0",
        "server.send_buffer: must be between 4096 bytes and 64 MiB, not 100",
    ] {
        assert!(stderr.contains(want), "missing `{want}` in:\n{stderr}");
    }
}
