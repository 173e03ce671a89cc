//! Smoke tests of the test harness itself (tests/support): real icecast2 and
//! ffmpeg processes on loopback. They do not run castgate, so they tell a
//! broken harness apart from a broken castgate.

mod support;

use std::time::Duration;

use support::*;

const LIVE: Duration = Duration::from_secs(10);

fn require_tools() {
    require_bin("icecast2", "icecast2");
    require_bin("ffmpeg", "ffmpeg");
}

#[test]
fn relay_serves_listeners_and_comes_back_after_restart() {
    require_tools();
    let origin = Icecast::origin(IcecastOpts::default());
    let _air = Source::start(&origin, "/air");
    let mut relay = Icecast::relay(&origin, &["/air"], IcecastOpts::default());
    relay.wait_mount_live("/air", LIVE);

    let listeners = connect_listeners(&format!("{}/air", relay.url()), 3);
    relay.wait_listeners("/air", 3, LIVE);
    for listener in &listeners {
        assert_eq!(listener.header("content-type"), Some("audio/mpeg"));
        listener.wait_bytes(1, LIVE);
    }
    // The relay's own pull is what the origin sees: one listener.
    origin.wait_listeners("/air", 1, LIVE);

    relay.kill();
    wait_until("listeners to be cut off by the dead relay", LIVE, || {
        listeners.iter().all(|l| !l.is_open())
    });
    assert_eq!(
        relay.listeners("/air"),
        None,
        "a killed relay must not answer"
    );

    relay.restart();
    relay.wait_mount_live("/air", LIVE);
    assert_eq!(relay.listeners("/air"), Some(0));
}

#[test]
fn relay_picks_up_a_restarted_origin() {
    require_tools();
    let mut origin = Icecast::origin(IcecastOpts::default());
    let mut air = Source::start(&origin, "/air");
    let relay = Icecast::relay(&origin, &["/air"], IcecastOpts::default());
    relay.wait_mount_live("/air", LIVE);

    origin.kill();
    wait_until("the relay to drop /air after its origin died", LIVE, || {
        relay.listeners("/air").is_none()
    });

    origin.restart();
    air.restart();
    origin.wait_mount_live("/air", LIVE);
    relay.wait_mount_live("/air", LIVE);
}

#[test]
fn listener_drop_closes_its_connection() {
    require_tools();
    let origin = Icecast::origin(IcecastOpts::default());
    let _air = Source::start(&origin, "/air");
    let url = format!("{}/air", origin.url());

    let mut listeners = connect_listeners(&url, 2);
    origin.wait_listeners("/air", 2, LIVE);
    listeners.pop();
    origin.wait_listeners("/air", 1, LIVE);
    drop(listeners);
    origin.wait_listeners("/air", 0, LIVE);
}

#[test]
fn http_helpers_read_status_and_admin_pages() {
    require_tools();
    let origin = Icecast::origin(IcecastOpts {
        hostname: "edge1.example.invalid".into(),
        ..Default::default()
    });
    let _air = Source::start(&origin, "/air");

    let (status, headers, body) = http_get(&format!("{}/status-json.xsl", origin.url()));
    assert_eq!(status, 200);
    assert!(header(&headers, "Content-Type").is_some_and(|ct| ct.starts_with("application/json")));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("status-json is valid JSON");
    // listenurl is built from <hostname>, not from the address we asked.
    assert_eq!(
        json["icestats"]["source"]["listenurl"],
        format!("http://edge1.example.invalid:{}/air", origin.port())
    );

    let stats_url = format!("{}/admin/stats", origin.url());
    let (status, _, _) = http_get(&stats_url);
    assert_eq!(status, 401, "admin pages need credentials");
    let auth = basic_auth(ADMIN_USER, ADMIN_PASSWORD);
    let (status, _, body) = http_request("GET", &stats_url, &[("Authorization", &auth)]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(r#"<source mount="/air">"#));

    assert!(
        try_http_request("GET", "http://192.0.2.1:80/", &[]).is_err(),
        "the harness must refuse non-loopback targets"
    );
}

#[test]
fn icecast_limits_are_applied() {
    require_tools();
    let origin = Icecast::origin(IcecastOpts {
        mount_max_listeners: vec![("/air".into(), 1)],
        ..Default::default()
    });
    let _air = Source::start(&origin, "/air");
    let url = format!("{}/air", origin.url());

    let _first = connect_listeners(&url, 1);
    origin.wait_listeners("/air", 1, LIVE);
    let second = Listener::connect(&url).expect("connect a second listener");
    assert_eq!(
        second.status(),
        403,
        "per-mount max listeners should refuse the second listener"
    );
}
