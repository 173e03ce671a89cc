//! DNS discovery: an edge entry whose name resolves to several addresses
//! becomes one edge per address, added and removed as the record changes.
//! The record is a name in /etc/hosts that the test owns (needs root, as in
//! CI); the edges are real Icecasts on 127.0.0.2 and 127.0.0.3.

mod support;

use std::time::Duration;
use support::{free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source};

/// Lines this test added to /etc/hosts, removed on drop.
struct HostsEntries {
    name: String,
}

impl HostsEntries {
    fn set(&self, addresses: &[&str]) {
        let current = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
        let mut kept: Vec<String> = current
            .lines()
            .filter(|l| !l.split_whitespace().any(|w| w == self.name))
            .map(str::to_string)
            .collect();
        for a in addresses {
            kept.push(format!("{a} {}", self.name));
        }
        // Written in place: /etc/hosts may be a bind mount.
        std::fs::write("/etc/hosts", kept.join("\n") + "\n").expect("write /etc/hosts");
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        self.set(&[]);
    }
}

fn edge_names(cg: &Castgate) -> Vec<(String, bool)> {
    let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    s["edges"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or("").to_string(),
                        e["up"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dns_discovery_follows_the_record() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test edits /etc/hosts and must run as root (CI does)"
    );
    let port = free_port();
    let on = |bind: &str| {
        let ice = Icecast::origin(IcecastOpts {
            bind: bind.to_string(),
            port: Some(port),
            ..IcecastOpts::default()
        });
        let src = Source::start(&ice, "/air");
        (ice, src)
    };
    let (_two, _s2) = on("127.0.0.2");
    let (_three, _s3) = on("127.0.0.3");
    let hosts = HostsEntries {
        name: format!("castgate-pool-{}.test", std::process::id()),
    };
    hosts.set(&["127.0.0.2"]);

    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 500ms, timeout: 400ms }}
edges:
  - {{ name: pool, kind: icecast, url: "http://{}:{port}", discover: dns }}
streams:
  - {{ name: apple, mount: /air }}
"#,
        hosts.name
    );
    let cg = Castgate::start(&yaml, front, admin);
    let has = |names: &[(&str, bool)]| {
        let now = edge_names(&cg);
        names.len() == now.len()
            && names
                .iter()
                .all(|(n, up)| now.iter().any(|(m, u)| m == n && u == up))
    };
    wait_until("one discovered edge, up", Duration::from_secs(15), || {
        has(&[("pool-127-0-0-2", true)])
    });

    // The record grows: a second edge appears; the first keeps its health,
    // in every look at /status.json from before the change until a second
    // after both are up (a reset would show it down until its next poll).
    let mut first_down = 0;
    let mut looks = 0;
    hosts.set(&["127.0.0.2", "127.0.0.3"]);
    wait_until("two discovered edges, up", Duration::from_secs(15), || {
        looks += 1;
        let now = edge_names(&cg);
        if !now.iter().any(|(n, up)| n == "pool-127-0-0-2" && *up) {
            first_down += 1;
        }
        has(&[("pool-127-0-0-2", true), ("pool-127-0-0-3", true)])
    });
    let settle = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < settle {
        looks += 1;
        if !has(&[("pool-127-0-0-2", true), ("pool-127-0-0-3", true)]) {
            first_down += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        first_down, 0,
        "the first edge stayed up in all {looks} looks while the record grew"
    );
    // Listeners go to both: the chosen edge is the playlist's first entry
    // (the others are its backups).
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let (_, _, body) = http_get(&format!("{}/apple.m3u", cg.front_url()));
        let body = String::from_utf8_lossy(&body).into_owned();
        let first = body
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap_or("");
        seen.insert(first.to_string());
    }
    assert_eq!(
        seen,
        [
            format!("http://127.0.0.2:{port}/air"),
            format!("http://127.0.0.3:{port}/air")
        ]
        .into_iter()
        .collect(),
        "listeners go to both addresses"
    );

    // The record shrinks: the edge goes.
    hosts.set(&["127.0.0.3"]);
    wait_until("one edge left", Duration::from_secs(15), || {
        has(&[("pool-127-0-0-3", true)])
    });
    for _ in 0..5 {
        let (_, _, body) = http_get(&format!("{}/apple.m3u", cg.front_url()));
        assert!(String::from_utf8_lossy(&body).contains("127.0.0.3"));
    }
}
