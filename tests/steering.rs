//! HLS Content Steering (HLS Content Steering 1.2; RFC 8216bis §4.4.6.6,
//! §7) over two real nginx-rtmp slicers fed by their own ffmpeg pushes:
//! the multivariant playlist castgate makes, the pathways' numbering, the
//! steering manifest's priority as edges drain and die, and the config
//! checks. hls.js following it through a slicer's death is in
//! `tests/webplayer.rs`.

mod support;

use std::time::Duration;
use support::nginx::{RtmpEdge, RtmpOpts, RtmpSource};
use support::{free_port, header, http_get, http_request, wait_until, Castgate};

const PATH: &str = "/hls/stream.m3u8";
const TOKEN: &str = "steering-test-token-0123456789";

struct Farm {
    a: RtmpEdge,
    b: RtmpEdge,
    _sources: Vec<RtmpSource>,
    _token: tempfile::NamedTempFile,
    cg: Castgate,
}

fn farm() -> Farm {
    let a = RtmpEdge::start(RtmpOpts::default());
    let b = RtmpEdge::start(RtmpOpts::default());
    let sa = RtmpSource::start(&a, "stream");
    // b's push starts later: its segment numbers are lower than a's.
    std::thread::sleep(Duration::from_secs(4));
    let sb = RtmpSource::start(&b, "stream");
    a.wait_playlist("stream", Duration::from_secs(30));
    b.wait_playlist("stream", Duration::from_secs(30));
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), format!("{TOKEN}\n")).expect("write token");
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}", token_file: "{}" }}
poll: {{ interval: 500ms, timeout: 400ms, rise: 1, fall: 2 }}
edges:
  - {{ name: a, kind: nginx_rtmp, url: "{}" }}
  - {{ name: b, kind: nginx_rtmp, url: "{}" }}
streams:
  - {{ name: live, kind: hls, path: {PATH}, mode: rewrite, bitrate: 3Mbit, steering: {{ ttl: 5s }} }}
"#,
        token.path().display(),
        a.http_url(),
        b.http_url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_until("both edges live", Duration::from_secs(20), || {
        live_edges(&cg) == 2
    });
    Farm {
        a,
        b,
        _sources: vec![sa, sb],
        _token: token,
        cg,
    }
}

fn status(cg: &Castgate) -> serde_json::Value {
    let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    serde_json::from_slice(&body).unwrap_or_default()
}

fn live_edges(cg: &Castgate) -> usize {
    status(cg)["streams"][0]["live_edges"]
        .as_array()
        .map_or(0, |e| e.len())
}

/// (PATHWAY-ID, URI) of each variant of a multivariant playlist, and its
/// steering SERVER-URI.
fn pathways(body: &str) -> (Vec<(String, String)>, String) {
    let mut out = Vec::new();
    let mut lines = body.lines();
    let mut server = String::new();
    while let Some(line) = lines.next() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-CONTENT-STEERING:") {
            server = attrs
                .split("SERVER-URI=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or_default()
                .to_string();
        }
        if line.starts_with("#EXT-X-STREAM-INF:") {
            let id = line
                .split("PATHWAY-ID=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or_default()
                .to_string();
            out.push((id, lines.next().unwrap_or_default().to_string()));
        }
    }
    (out, server)
}

/// (Media Sequence Number, Discontinuity Sequence Number) of the newest
/// segment of a media playlist, as a player counts them.
fn newest(body: &str) -> (u64, u64) {
    let number = |tag: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (mut seq, mut disc) = (
        number("#EXT-X-MEDIA-SEQUENCE:"),
        number("#EXT-X-DISCONTINUITY-SEQUENCE:"),
    );
    let mut last = (0, 0);
    for line in body.lines() {
        if line.trim() == "#EXT-X-DISCONTINUITY" {
            disc += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            last = (seq, disc);
            seq += 1;
        }
    }
    last
}

fn manifest(cg: &Castgate, uri: &str) -> (u16, serde_json::Value) {
    let (code, headers, body) = http_get(&format!("{}{uri}", cg.front_url()));
    if code == 200 {
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
    (code, serde_json::from_slice(&body).unwrap_or_default())
}

fn priority(m: &serde_json::Value) -> Vec<String> {
    m["PATHWAY-PRIORITY"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn steered_playlist_pathways_line_up_and_the_manifest_follows_the_farm() {
    let mut f = farm();
    let cg = &f.cg;
    let (code, headers, body) = http_get(&format!("{}/live.m3u8", cg.front_url()));
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let parsed = m3u8_rs::parse_playlist_res(body.as_bytes());
    assert!(
        matches!(parsed, Ok(m3u8_rs::Playlist::MasterPlaylist(ref m)) if m.variants.len() == 2),
        "a multivariant playlist with two variants: {body}"
    );
    assert!(body.contains("BANDWIDTH=3000000"), "{body}");
    let (variants, server_uri) = pathways(&body);
    let ids: Vec<&str> = variants.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{body}");
    assert!(ids.contains(&"a") && ids.contains(&"b"), "{body}");
    let first = ids[0].to_string();
    assert!(
        body.contains(&format!("PATHWAY-ID=\"{first}\"\n#EXT-X-STREAM-INF")),
        "the steering tag names the session's edge: {body}"
    );
    assert!(server_uri.starts_with("/live/s/") && server_uri.ends_with("/steering.json"));

    // Both pathways' media playlists, through castgate: each from its own
    // edge, their newest segments numbered alike (the slicers' own numbers
    // differ by about 4), each pathway on its own timeline.
    let own =
        |e: &RtmpEdge| support::nginx::media_sequence(&e.playlist("stream").unwrap_or_default());
    eprintln!("own media sequences: a {}, b {}", own(&f.a), own(&f.b));
    let mut ends = Vec::new();
    for (id, uri) in &variants {
        let (code, _, body) = http_get(&format!("{}{uri}", cg.front_url()));
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(code, 200, "{id}: {body}");
        let edge_url = if id == "a" {
            f.a.http_url()
        } else {
            f.b.http_url()
        };
        assert!(body.contains(&format!("{edge_url}/hls/")), "{id}: {body}");
        ends.push(newest(&body));
    }
    eprintln!("newest segment per pathway (seq, disc): {ends:?}");
    assert!(
        ends[0].0.abs_diff(ends[1].0) <= 1,
        "pathways number their newest segments alike: {ends:?}"
    );
    assert_ne!(ends[0].1, ends[1].1, "each pathway has its own timeline");

    // The manifest: the session's edge first, then the other.
    let (code, m) = manifest(cg, &server_uri);
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["VERSION"], 1);
    assert_eq!(m["TTL"], 5);
    let other = if first == "a" { "b" } else { "a" };
    assert_eq!(priority(&m), [first.as_str(), other]);
    let reload = m["RELOAD-URI"].as_str().unwrap_or_default().to_string();
    assert!(
        reload.starts_with("/live/s/") && reload.ends_with("/steering.json"),
        "{m}"
    );
    // The player reports it moved to the other pathway: that one first.
    let (_, m) = manifest(
        cg,
        &format!("{server_uri}?_HLS_pathway={other}&_HLS_throughput=1"),
    );
    assert_eq!(priority(&m), [other, first.as_str()]);
    // A manifest load is a sighting of the session.
    wait_until("the session counted", Duration::from_secs(10), || {
        let s = status(cg);
        (0..2)
            .filter_map(|i| s["streams"][0]["per_edge"][i]["sessions"].as_u64())
            .sum::<u64>()
            == 1
    });
    // A forged token gets nothing.
    let forged = server_uri.replacen("/live/s/", "/live/s/x", 1);
    assert_eq!(manifest(cg, &forged).0, 404);

    // Draining the first edge takes it out of the priority.
    let auth = format!("Bearer {TOKEN}");
    let admin = |verb: &str| {
        http_request(
            "POST",
            &format!("{}/api/edges/{first}/{verb}", cg.admin_url()),
            &[("Authorization", &auth), ("Content-Length", "0")],
        )
        .0
    };
    assert_eq!(admin("drain"), 200);
    let (_, m) = manifest(cg, &reload);
    assert_eq!(priority(&m), [other], "a draining edge is left out");
    assert_eq!(admin("enable"), 200);
    let (_, m) = manifest(cg, &reload);
    assert_eq!(priority(&m).len(), 2, "back when enabled: {m}");

    // The other edge dies: within the poller's fall it leaves the priority.
    if other == "a" {
        f.a.kill();
    } else {
        f.b.kill();
    }
    wait_until("the dead edge left out", Duration::from_secs(10), || {
        priority(&manifest(&f.cg, &reload).1) == [first.as_str()]
    });
    // And a new session gets one pathway only.
    let (_, _, body) = http_get(&format!("{}/live.m3u8", f.cg.front_url()));
    let (variants, _) = pathways(&String::from_utf8_lossy(&body));
    assert_eq!(variants.len(), 1, "{variants:?}");
}

#[test]
fn steering_is_refused_where_it_cannot_apply() {
    for (stream, place) in [
        (
            "{ name: air, mount: /air, steering: {} }",
            "streams[0].steering",
        ),
        (
            "{ name: live, kind: hls, path: /hls/s.m3u8, mode: proxy, steering: {} }",
            "streams[0].steering",
        ),
        (
            "{ name: live, kind: hls, path: /hls/s.m3u8, steering: { ttl: 500ms } }",
            "streams[0].steering.ttl",
        ),
    ] {
        let kind = if stream.contains("hls") {
            "nginx_rtmp"
        } else {
            "icecast"
        };
        let yaml = format!(
            "listen: [\"127.0.0.1:1\"]\nadmin: {{ listen: \"127.0.0.1:2\" }}\n\
             edges:\n  - {{ name: e, kind: {kind}, url: \"http://127.0.0.1:3\" }}\n\
             streams:\n  - {stream}\n"
        );
        let errors = castgate::config::load_str(&yaml).expect_err(stream);
        let text = format!("{errors:?}");
        assert!(text.contains(place), "{stream}: {text}");
    }
}
