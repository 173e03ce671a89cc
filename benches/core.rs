//! Hot-path benchmarks: status parsing (Icecast JSON, nginx-rtmp XML),
//! selection, playlist rendering, HLS rewriting.
//! Run: `cargo bench --bench core`.

use castgate::balance::{policy, EdgeHealth, Snapshot};
use castgate::config::load_str;
use castgate::front::hls::{rewrite, Target};
use castgate::front::playlist::{render, Format};
use castgate::front::{decide, Action, Request};
use castgate::poll::icecast::{parse_status_json, EdgeStatus, MountStatus};
use castgate::poll::rtmp::parse_stat;
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

/// An nginx-rtmp `/stat` page (the shape of tests/fixtures/nginx-rtmp)
/// with `streams` live streams of one publisher and two viewers each.
fn rtmp_stat_body(streams: usize) -> Vec<u8> {
    let client = |id: usize, publishing: bool| {
        format!(
            "<client><id>{id}</id><address>127.0.0.1</address><time>10903</time>\
             <flashver>LNX 9,0,124,2</flashver><dropped>0</dropped><avsync>-13</avsync>\
             <timestamp>21863</timestamp>{}<active/></client>",
            if publishing { "<publishing/>" } else { "" }
        )
    };
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<rtmp><nginx_version>1.22.1</nginx_version>\
         <pid>19992</pid><uptime>23</uptime><bw_in>268368</bw_in><bw_out>444672</bw_out>\
         <server><application><name>live</name><live>",
    );
    for i in 0..streams {
        body.push_str(&format!(
            "<stream><name>cam{i}</name><time>21875</time><bw_in>264160</bw_in>\
             <bytes_in>651285</bytes_in><bw_out>484432</bw_out><bytes_out>607388</bytes_out>\
             {}{}{}<meta><video><width>320</width><height>240</height><codec>H264</codec></video>\
             <audio><codec>AAC</codec></audio></meta><nclients>3</nclients><publishing/><active/></stream>",
            client(3 * i, false),
            client(3 * i + 1, false),
            client(3 * i + 2, true)
        ));
    }
    body.push_str(&format!(
        "<nclients>{}</nclients></live></application></server></rtmp>\n",
        3 * streams
    ));
    body.into_bytes()
}

fn rtmp_parsing(c: &mut Criterion) {
    let body = rtmp_stat_body(100);
    assert_eq!(parse_stat(&body).unwrap().streams.len(), 100);
    c.bench_function("parse_rtmp_stat/100_streams", |b| {
        b.iter(|| parse_stat(black_box(&body)).unwrap())
    });
}

fn hls_rewriting(c: &mut Criterion) {
    let mut body = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:120\n#EXT-X-TARGETDURATION:4\n",
    );
    for i in 120..130 {
        body.push_str(&format!("#EXTINF:4.000,\nstream-{i}.ts\n"));
    }
    let playlist_url = url::Url::parse("https://video1.example.com/hls/stream.m3u8").unwrap();
    let edge_base = url::Url::parse("https://video1.example.com/").unwrap();
    let target = Target {
        playlist_url: &playlist_url,
        edge_base: &edge_base,
        session_prefix: "/live/s/ZWRnZQ.1795000000.00ff00ff00ff00ff.c2lnbmF0dXJl",
    };
    assert!(rewrite(&body, &target).contains("https://video1.example.com/hls/stream-129.ts"));
    c.bench_function("hls_rewrite/10_segments", |b| {
        b.iter(|| rewrite(black_box(&body), &target))
    });
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
    let reports: castgate::balance::EdgeReports = config
        .edges
        .iter()
        .zip(health)
        .map(|(e, health)| {
            let report = castgate::balance::EdgeReport {
                health,
                refreshed: true,
            };
            (castgate::balance::EdgeKey::of(e), report)
        })
        .collect();
    let policy: Arc<dyn policy::Policy> = Arc::from(policy::from_name(config.policy));
    Snapshot::build(config, policy, &reports, 1, None)
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
    let urls = [
        "http://air1.example.com:1976/air".to_string(),
        "http://air2.example.com:1976/air".to_string(),
    ];
    for f in [Format::M3u, Format::Pls, Format::Xspf] {
        c.bench_function(&format!("render/{}", f.label()), |b| {
            b.iter(|| render(f, black_box(&urls), black_box("Apple Radio")))
        });
    }
}

/// castgate's own work for one playlist request (route, choose, render),
/// without pingora's HTTP handling around it.
fn deciding(c: &mut Criterion) {
    let snap = snapshot(10);
    let (state, _table) = castgate::state::State::new((*snap.config).clone()).unwrap();
    let get = http::Method::GET;
    let req = Request {
        method: &get,
        path: "/apple.m3u",
        query: None,
        host: Some("radio.example"),
        cookie: None,
    };
    assert!(matches!(decide(&snap, &state, &req), Action::Answer(a) if a.status == 200));
    c.bench_function("decide/playlist_10_edges", |b| {
        b.iter(|| decide(black_box(&snap), &state, black_box(&req)))
    });
}

criterion_group!(
    benches,
    deciding,
    parsing,
    rtmp_parsing,
    selection,
    playlists,
    hls_rewriting
);
criterion_main!(benches);
