//! Smoke tests of the nginx part of the test harness (tests/support/nginx.rs):
//! real nginx + nginx-rtmp edges, ffmpeg RTMP publishers and players, on
//! loopback. They do not run castgate, so they tell a broken harness apart
//! from a broken castgate.

mod support;

use std::path::Path;
use std::time::Duration;

use support::nginx::*;
use support::*;

/// Generous: a 2-core CI machine may be running other tests' encoders.
const LIVE: Duration = Duration::from_secs(15);

fn require_tools() {
    require_rtmp_module();
    require_bin("ffmpeg", "ffmpeg");
}

#[test]
fn edge_cuts_a_playlist_that_advances() {
    require_tools();
    let edge = RtmpEdge::start(RtmpOpts::default());
    let _source = RtmpSource::start(&edge, "cam");

    let playlist = edge.wait_playlist("cam", LIVE);
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1"), "{playlist}");
    let segments = segment_uris(&playlist);
    assert!(segments
        .iter()
        .all(|s| s.starts_with("cam-") && s.ends_with(".ts")));

    // Served over HTTP with HLS content types.
    let (status, headers, _) = http_get(&edge.playlist_url("cam"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    let (status, headers, body) = http_get(&format!("{}/hls/{}", edge.http_url(), segments[0]));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("video/mp2t"));
    assert_eq!(body.first(), Some(&0x47), "MPEG-TS sync byte");

    // Once 6 s of fragments are listed, old ones slide out.
    let first = media_sequence(&playlist);
    wait_until("EXT-X-MEDIA-SEQUENCE to advance", LIVE, || {
        edge.playlist("cam")
            .is_some_and(|p| media_sequence(&p) > first)
    });
}

#[test]
fn stat_shows_publisher_and_viewers() {
    require_tools();
    let edge = RtmpEdge::start(RtmpOpts::default());
    let idle = edge.stat_xml().expect("/stat answers");
    assert!(parse_stat_streams(&idle).is_empty(), "{idle}");

    let _source = RtmpSource::start(&edge, "cam");
    let stat = edge.stream_stat("cam").expect("cam in /stat");
    assert!(stat.publishing && stat.active, "{stat:?}");
    // nclients counts the publisher.
    assert_eq!(stat.nclients, 1, "{stat:?}");
    assert_eq!(stat.viewers(), 0);
    assert_eq!(stat.clients[0].address, "127.0.0.1");
    assert!(stat.clients[0].publishing);

    let _viewer = RtmpViewer::start(&edge, "cam");
    let _viewer2 = RtmpViewer::start(&edge, "cam");
    edge.wait_viewers("cam", 2, LIVE);
    let stat = edge.stream_stat("cam").expect("cam in /stat");
    assert_eq!(stat.nclients, 3, "{stat:?}");
    assert!(stat.bytes_in > 0, "{stat:?}");
    wait_until("bytes_out to RTMP viewers", LIVE, || {
        edge.stream_stat("cam").is_some_and(|s| s.bytes_out > 0)
    });
}

#[test]
fn one_tee_source_feeds_two_edges() {
    require_tools();
    let a = RtmpEdge::start(RtmpOpts::default());
    let b = RtmpEdge::start(RtmpOpts::default());
    let source = RtmpSource::start_many(&[&a, &b], "cam");
    assert_eq!(source.targets().len(), 2);
    assert_ne!(a.http_port(), b.http_port());
    a.wait_playlist("cam", LIVE);
    b.wait_playlist("cam", LIVE);

    // A plain web server can serve an edge's output.
    let web = HlsServer::mirror(&b);
    let playlist = web.wait_playlist("cam", LIVE);
    let segment = &segment_uris(&playlist)[0];
    let (status, headers, _) = http_get(&web.url(segment));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("video/mp2t"));
    let served = HlsServer::serving(b.dir());
    served.wait_playlist("cam", LIVE);
}

#[test]
fn killing_the_source_freezes_the_playlist() {
    require_tools();
    let edge = RtmpEdge::start(RtmpOpts::default());
    let mut source = RtmpSource::start(&edge, "cam");
    edge.wait_playlist("cam", LIVE);
    source.kill();
    wait_until("cam to leave /stat", LIVE, || {
        edge.stat_xml()
            .is_some_and(|x| parse_stat_streams(&x).is_empty())
    });
    // nginx-rtmp keeps serving the last playlist for a while (its cleanup
    // removes it ~15 s later), but it no longer changes.
    let frozen = edge.playlist("cam").expect("playlist still served");
    let changed = poll_until(Duration::from_secs(3), || {
        edge.playlist("cam").is_some_and(|p| p != frozen)
    });
    assert!(!changed, "playlist changed after the source was killed");
}

#[test]
fn edge_restarts_on_the_same_ports() {
    require_tools();
    let mut edge = RtmpEdge::start(RtmpOpts::default());
    let (http, rtmp) = (edge.http_port(), edge.rtmp_port());
    edge.kill();
    assert!(!edge.is_running());
    assert!(
        edge.stat_xml().is_none(),
        "workers must die with the master"
    );
    edge.restart();
    assert_eq!((edge.http_port(), edge.rtmp_port()), (http, rtmp));
    let _source = RtmpSource::start(&edge, "cam");
}

#[test]
fn multi_worker_edge_serves_hls_and_each_worker_answers_stat() {
    require_tools();
    let edge = RtmpEdge::start(RtmpOpts { workers: 2 });
    // start() polls /stat until an answer (from the publisher's worker)
    // shows the stream.
    let _source = RtmpSource::start(&edge, "cam");
    edge.wait_playlist("cam", LIVE);

    // Each worker answers /stat with its own view. Debian 12's nginx-rtmp
    // does not auto-push to the other worker, so its answer lacks "cam";
    // only the worker count is asserted here (see
    // tests/fixtures/nginx-rtmp/README.md).
    let mut pids = std::collections::BTreeMap::new();
    wait_until("/stat answers from 2 workers", LIVE, || {
        if let Some(xml) = edge.stat_xml() {
            let has_cam = parse_stat_streams(&xml).iter().any(|s| s.name == "cam");
            pids.insert(stat_pid(&xml).expect("<pid> in /stat"), has_cam);
        }
        pids.len() >= 2
    });
    assert!(pids.values().any(|&has_cam| has_cam), "{pids:?}");
}

#[test]
fn hls_server_serves_fixture_playlists() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hls");
    let web = HlsServer::static_dir(&dir);
    let (status, headers, body) = http_get(&web.url("nginx-rtmp-media.m3u8"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        body,
        std::fs::read(dir.join("nginx-rtmp-media.m3u8")).unwrap()
    );
    assert_eq!(http_get(&web.url("missing.m3u8")).0, 404);
}

#[test]
fn stat_fixtures_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx-rtmp");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();

    assert!(parse_stat_streams(&read("stat-idle.xml")).is_empty());

    let one = parse_stat_streams(&read("stat-one-stream.xml"));
    assert_eq!(one.len(), 1);
    assert!(one[0].publishing);
    assert_eq!((one[0].nclients, one[0].viewers()), (1, 0));

    let viewers = parse_stat_streams(&read("stat-viewers.xml"));
    assert_eq!(viewers.len(), 1);
    assert_eq!((viewers[0].nclients, viewers[0].viewers()), (3, 2));

    let two = parse_stat_streams(&read("stat-two-streams.xml"));
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|s| s.is_live()));

    // A player waiting for an unpublished stream makes it listed, not live.
    let waiting = parse_stat_streams(&read("stat-player-without-publisher.xml"));
    let later = waiting.iter().find(|s| s.name == "later").unwrap();
    assert!(!later.publishing && !later.active);
    assert_eq!((later.nclients, later.viewers()), (1, 1));

    // After the publisher died its players stay, bw_in is stale.
    let gone = parse_stat_streams(&read("stat-after-unpublish.xml"));
    let cam = gone.iter().find(|s| s.name == "cam").unwrap();
    assert!(!cam.is_live());
    assert_eq!((cam.nclients, cam.viewers()), (2, 2));
    assert!(cam.bw_in > 0);

    let publisher = read("stat-multi-worker-publisher.xml");
    let other = read("stat-multi-worker-other.xml");
    assert_ne!(stat_pid(&publisher), stat_pid(&other));
    assert_eq!(parse_stat_streams(&publisher).len(), 1);
    assert!(parse_stat_streams(&other).is_empty());
}
