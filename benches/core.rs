//! Hot-path benchmarks: status parsing, selection, playlist rendering.
//! Run: `cargo bench --bench core`.

use castgate::balance::{policy, EdgeHealth, Snapshot};
use castgate::config::load_str;
use castgate::front::playlist::{render, Format};
use castgate::poll::icecast::{parse_status_json, EdgeStatus, MountStatus};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::sync::Arc;

fn status_body(mounts: usize) -> Vec<u8> {
    let sources: Vec<String> = (0..mounts)
        .map(|i| {
            format!(
                r#"{{"genre":"various","listener_peak":{i},"listeners":{i},"listenurl":"http://127.0.0.1:8000/m{i}","server_name":"Unspecified name","server_type":"audio/mpeg","stream_start_iso8601":"2026-11-22T00:24:31+0000","title":"Artist - Title {i}","dummy":null}}"#
            )
        })
        .collect();
    let source = if mounts == 1 {
        sources[0].clone()
    } else {
        format!("[{}]", sources.join(","))
    };
    format!(r#"{{"icestats":{{"admin":"a@b","host":"127.0.0.1","server_id":"Icecast 2.4.4","source":{source}}}}}"#).into_bytes()
}

fn parsing(c: &mut Criterion) {
    for n in [1, 50] {
        let body = status_body(n);
        c.bench_function(&format!("parse_status_json/{n}_mounts"), |b| {
            b.iter(|| parse_status_json(black_box(&body)).unwrap())
        });
    }
}

fn snapshot(edges: usize) -> Snapshot {
    let mut text = String::from("listen: [\"127.0.0.1:1\"]\nedges:\n");
    for i in 0..edges {
        text.push_str(&format!(
            "  - {{ name: e{i}, kind: icecast, url: \"http://127.0.0.{}:8000\" }}\n",
            i % 250 + 1
        ));
    }
    text.push_str("streams:\n  - { name: apple, mount: /air }\n");
    let config = Arc::new(load_str(&text).unwrap());
    let health: Vec<EdgeHealth> = (0..edges)
        .map(|i| EdgeHealth {
            up: true,
            status: Some(EdgeStatus {
                mounts: vec![MountStatus {
                    mount: "/air".into(),
                    listeners: (i * 7 % 100) as u64,
                    max_listeners: None,
                }],
                lenient: false,
                bw_out_bps: None,
            }),
            ..Default::default()
        })
        .collect();
    let policy: Arc<dyn policy::Policy> = Arc::from(policy::from_name(config.policy));
    Snapshot::build(config, policy, &health, 1, None)
}

fn selection(c: &mut Criterion) {
    for n in [10, 100, 1000] {
        let snap = snapshot(n);
        c.bench_function(&format!("choose/{n}_edges"), |b| {
            b.iter(|| snap.choose(black_box(0)).unwrap().edge)
        });
    }
}

fn playlists(c: &mut Criterion) {
    let url = "http://air1.example.com:1976/air";
    for f in [Format::M3u, Format::Pls, Format::Xspf] {
        c.bench_function(&format!("render/{}", f.label()), |b| {
            b.iter(|| render(f, black_box(url), black_box("Apple Radio")))
        });
    }
}

criterion_group!(benches, parsing, selection, playlists);
criterion_main!(benches);
