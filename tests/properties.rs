//! Property tests over castgate's parsers and the HLS rewriter (issue 6):
//! whatever an edge or an operator hands them, they answer or refuse, and
//! never panic; rewritten playlists keep every tag and name only the chosen
//! edge or castgate itself.
//!
//! Run: `cargo test --test properties` (`PROPTEST_CASES=10000` for more).

use castgate::config::load_str;
use castgate::front::hls::{rewrite, Target};
use castgate::poll::hls::observe;
use castgate::poll::icecast::{parse_admin_stats, parse_status_json};
use castgate::poll::rtmp::parse_stat;
use proptest::prelude::*;
use url::Url;

/// Fragments of the documents the parsers expect, so that random input
/// reaches deep into them rather than failing on the first byte.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{\"icestats\":{".to_string()),
        Just("\"source\":".to_string()),
        Just("\"listenurl\":\"http://127.0.0.1:8000/air\",".to_string()),
        Just("\"listeners\":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(",".to_string()),
        Just("\"title\":.5".to_string()),
        Just("<rtmp>".to_string()),
        Just("</rtmp>".to_string()),
        Just("<stream><name>cam</name>".to_string()),
        Just("</stream>".to_string()),
        Just("<client><publishing/></client>".to_string()),
        Just("<nclients>3</nclients>".to_string()),
        Just("<!DOCTYPE x [<!ENTITY a \"aaaa\">]>&a;".to_string()),
        Just("#EXTM3U\n".to_string()),
        Just("#EXT-X-TARGETDURATION:4\n".to_string()),
        Just("#EXTINF:4.0,\nseg.ts\n".to_string()),
        Just("#EXT-X-ENDLIST\n".to_string()),
        "[ -~]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

fn document() -> impl Strategy<Value = String> {
    proptest::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn status_parsers_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_status_json(&body);
        let _ = parse_admin_stats(&body);
        let _ = parse_stat(&body);
        let _ = observe(&body);
    }

    #[test]
    fn status_parsers_never_panic_on_near_documents(doc in document()) {
        let body = doc.as_bytes();
        let _ = parse_status_json(body);
        let _ = parse_admin_stats(body);
        let _ = parse_stat(body);
        let _ = observe(body);
    }

    /// An Icecast status with any listener counts and mounts parses to
    /// exactly those mounts and counts.
    #[test]
    fn icecast_status_round_trips(mounts in proptest::collection::btree_map("/[a-z]{1,8}", 0u64..100_000, 1..20)) {
        let sources: Vec<String> = mounts.iter().map(|(m, n)| format!(
            r#"{{"listeners":{n},"listenurl":"http://127.0.0.1:8000{m}","server_type":"audio/mpeg"}}"#
        )).collect();
        let source = if sources.len() == 1 { sources[0].clone() } else { format!("[{}]", sources.join(",")) };
        let body = format!(r#"{{"icestats":{{"host":"127.0.0.1","source":{source}}}}}"#);
        let status = parse_status_json(body.as_bytes()).unwrap();
        prop_assert_eq!(status.mounts.len(), mounts.len());
        for m in &status.mounts {
            prop_assert_eq!(Some(&m.listeners), mounts.get(&m.mount));
        }
    }

    /// Rewriting a media playlist keeps every line that is not a URI as it
    /// was, keeps the line count, and leaves only absolute URIs on the
    /// chosen edge; the output still parses as HLS.
    #[test]
    fn rewritten_media_playlists_name_only_the_edge(
        segments in proptest::collection::vec(("[a-z0-9_-]{1,12}", 1u32..10, prop_oneof![Just(""), Just("../"), Just("/hls/"), Just("sub/")]), 1..12),
        key in proptest::option::of("[a-z0-9]{1,8}"),
        sequence in 0u64..1_000_000,
    ) {
        let mut body = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n");
        if let Some(k) = &key {
            body.push_str(&format!("#EXT-X-KEY:METHOD=AES-128,URI=\"{k}.key\",IV=0x00000000000000000000000000000001\n"));
        }
        for (name, secs, dir) in &segments {
            body.push_str(&format!("#EXTINF:{secs}.000,\n{dir}{name}.ts\n"));
        }
        let playlist_url = Url::parse("http://edge1.example:8080/hls/stream.m3u8").unwrap();
        let edge_base = Url::parse("http://edge1.example:8080/").unwrap();
        let out = rewrite(&body, &Target {
            playlist_url: &playlist_url,
            edge_base: &edge_base,
            session_prefix: "/live/s/TOKEN",
        });
        prop_assert_eq!(body.lines().count(), out.lines().count());
        for (before, after) in body.lines().zip(out.lines()) {
            if before.starts_with("#EXT-X-KEY:") {
                prop_assert!(after.contains("URI=\"http://edge1.example:8080/"), "{}", after);
                let attrs = |l: &str| l.replace(l.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or(""), "");
                prop_assert_eq!(attrs(before), attrs(after));
            } else if before.starts_with('#') {
                prop_assert_eq!(before, after);
            } else {
                prop_assert!(after.starts_with("http://edge1.example:8080/"), "{}", after);
                prop_assert!(after.ends_with(".ts"), "{}", after);
            }
        }
        let parsed = m3u8_rs::parse_media_playlist_res(out.as_bytes());
        prop_assert!(parsed.is_ok(), "output does not parse: {}", out);
        prop_assert_eq!(parsed.unwrap().segments.len(), segments.len());
    }

    /// A master playlist's variants come back through castgate under the
    /// session prefix; nothing in the answer names another host.
    #[test]
    fn rewritten_master_playlists_point_back_through_castgate(
        variants in proptest::collection::vec(("[a-z0-9_-]{1,10}", 100_000u64..10_000_000), 1..6),
    ) {
        let mut body = String::from("#EXTM3U\n");
        for (name, bw) in &variants {
            body.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={bw}\n{name}.m3u8\n"));
        }
        let playlist_url = Url::parse("http://edge1.example:8080/hls/master.m3u8").unwrap();
        let edge_base = Url::parse("http://edge1.example:8080/").unwrap();
        let out = rewrite(&body, &Target {
            playlist_url: &playlist_url,
            edge_base: &edge_base,
            session_prefix: "/live/s/TOKEN",
        });
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            prop_assert!(line.starts_with("/live/s/TOKEN/hls/"), "{}", line);
        }
        prop_assert!(m3u8_rs::parse_master_playlist_res(out.as_bytes()).is_ok(), "{}", out);
    }

    /// Configuration text of any shape is refused with errors or accepted;
    /// never a panic.
    #[test]
    fn config_loading_never_panics(text in "[ -~\n]{0,400}") {
        let _ = load_str(&text);
    }

    /// Valid-looking configs with random values in every place.
    #[test]
    fn config_with_random_values_never_panics(
        listen in "[ -~]{0,24}",
        interval in "[ -~]{0,8}",
        fall in any::<i64>(),
        name in "[ -~]{0,12}",
        kind in prop_oneof![Just("icecast"), Just("nginx_rtmp"), Just("hls"), Just("x")],
        url in "[ -~]{0,30}",
        weight in any::<f64>(),
        mount in "[ -~]{0,12}",
        mode in prop_oneof![Just("redirect"), Just("proxy"), Just("rewrite"), Just("x")],
    ) {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let text = format!(
            "listen: [{}]\npoll: {{ interval: {}, fall: {fall} }}\nedges:\n  - {{ name: {}, kind: {kind}, url: {}, weight: {weight} }}\nstreams:\n  - {{ name: {}, mount: {}, mode: {mode} }}\n",
            q(&listen), q(&interval), q(&name), q(&url), q(&name), q(&mount),
        );
        let _ = load_str(&text);
    }
}
