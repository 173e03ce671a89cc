//! HLS sessions that move between edges which cut their own segments keep a
//! media sequence players can follow (RFC 8216 §6.2.2): in rewrite mode a
//! session moved off a dead nginx-rtmp slicer sees numbers that only grow,
//! each number keeping its segment, and one `EXT-X-DISCONTINUITY` where the
//! new slicer's segments begin; and ffmpeg reading the stream through
//! castgate keeps going when its slicer is killed.
//!
//! The two slicers are fed by their own ffmpeg pushes, the second started
//! several seconds after the first, so the second's segment numbers are
//! lower: without the renumbering a player that moves from the first to the
//! second sees the sequence go back (and ffmpeg waits until it catches up).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::nginx::{RtmpEdge, RtmpOpts, RtmpSource};
use support::{free_port, header, http_get, wait_until, Castgate};

/// The playlist path of the test stream on both slicers.
const PATH: &str = "/hls/stream.m3u8";

/// How much later the second slicer starts: its segment numbers are this
/// many seconds (1 s fragments) behind the first's.
const LATER: Duration = Duration::from_secs(8);

/// Two nginx-rtmp slicers, `a` publishing `LATER` before `b`, and castgate
/// in rewrite mode in front of them with `a` the only live edge at first.
struct TwoSlicers {
    a: RtmpEdge,
    b: RtmpEdge,
    _src_a: RtmpSource,
    src_b: Option<RtmpSource>,
    cg: Castgate,
}

fn live_edges(cg: &Castgate) -> usize {
    let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    s["streams"][0]["live_edges"]
        .as_array()
        .map_or(0, |e| e.len())
}

impl TwoSlicers {
    fn start() -> TwoSlicers {
        let a = RtmpEdge::start(RtmpOpts::default());
        let b = RtmpEdge::start(RtmpOpts::default());
        let src_a = RtmpSource::start(&a, "stream");
        a.wait_playlist("stream", Duration::from_secs(30));
        let (front, admin) = (free_port(), free_port());
        let yaml = format!(
            r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 500ms, timeout: 400ms, rise: 1, fall: 2 }}
edges:
  - {{ name: a, kind: nginx_rtmp, url: "{}" }}
  - {{ name: b, kind: nginx_rtmp, url: "{}" }}
streams:
  - {{ name: live, kind: hls, path: {PATH}, mode: rewrite }}
"#,
            a.http_url(),
            b.http_url()
        );
        let cg = Castgate::start(&yaml, front, admin);
        wait_until("edge a live in castgate", Duration::from_secs(20), || {
            live_edges(&cg) == 1
        });
        TwoSlicers {
            a,
            b,
            _src_a: src_a,
            src_b: None,
            cg,
        }
    }

    /// Start `b`'s push (its segments numbered from 0, `LATER` behind
    /// `a`'s) and wait until castgate counts it live.
    fn start_b(&mut self) {
        self.src_b = Some(RtmpSource::start(&self.b, "stream"));
        self.b.wait_playlist("stream", Duration::from_secs(30));
        wait_until("edge b live in castgate", Duration::from_secs(20), || {
            live_edges(&self.cg) == 2
        });
        // nginx-rtmp writes EXT-X-DISCONTINUITY before a push's first
        // segment and drops it, when that segment leaves the window, without
        // the DISCONTINUITY-SEQUENCE that RFC 8216 §6.2.2 asks for: its own
        // numbering of that segment's timeline changes. Wait until it has.
        wait_until(
            "b's first discontinuity out of its window",
            Duration::from_secs(20),
            || {
                self.b
                    .playlist("stream")
                    .is_some_and(|p| !p.contains("#EXT-X-DISCONTINUITY"))
            },
        );
    }
}

/// The edge of the last session playlist castgate answered for `/live`,
/// from its access log: the edge a player is on.
fn last_session_edge(cg: &Castgate) -> String {
    cg.log()
        .lines()
        .rev()
        .find(|l| l.contains("path=/live/s/"))
        .and_then(|l| l.split("edge=\"").nth(1))
        .and_then(|e| e.split('"').next())
        .map(str::to_string)
        .expect("the player's playlist refreshes are in the access log")
}

/// (Media Sequence Number, Discontinuity Sequence Number, URI) of each
/// segment as a player reads them (a DISCONTINUITY tag raises the number of
/// the segment after it).
fn segments_of(body: &str) -> Vec<(u64, u64, String)> {
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
    let mut out = Vec::new();
    for line in body.lines() {
        if line.trim() == "#EXT-X-DISCONTINUITY" {
            disc += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push((seq, disc, line.to_string()));
            seq += 1;
        }
    }
    out
}

/// A player's view of a live playlist: refreshes `url` (root-relative,
/// following `302`s to their new URL as RFC 8216 players do), and checks on
/// every refresh that a number, once seen, keeps its segment and its
/// Discontinuity Sequence Number.
struct Follower {
    /// castgate's front door, `http://127.0.0.1:{port}`.
    front: String,
    url: String,
    seen: BTreeMap<u64, (u64, String)>,
    /// Media sequence of the first segment of each answer, in order.
    firsts: Vec<u64>,
    moves: usize,
    /// Whether a segment's Discontinuity Sequence Number must hold too.
    strict: bool,
}

impl Follower {
    /// A player that starts at `/{stream}.m3u8`.
    fn start(front: &str, stream: &str) -> Follower {
        Follower {
            front: front.to_string(),
            url: format!("/{stream}.m3u8"),
            seen: BTreeMap::new(),
            firsts: Vec::new(),
            moves: 0,
            strict: false,
        }
    }

    /// The segments seen, by number: (disc, URI).
    fn after(&self, seq: u64) -> Vec<(u64, u64, String)> {
        self.seen
            .range(seq + 1..)
            .map(|(s, (d, u))| (*s, *d, u.clone()))
            .collect()
    }

    fn refresh(&mut self) {
        let mut url = self.url.clone();
        for _ in 0..3 {
            let (code, headers, body) = http_get(&format!("{}{url}", self.front));
            if code == 302 {
                url = header(&headers, "location").expect("Location").to_string();
                if self.url.contains("/s/") {
                    self.moves += 1;
                }
                self.url = url.clone();
                continue;
            }
            assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
            let body = String::from_utf8(body).expect("utf-8 playlist");
            let segs = segments_of(&body);
            assert!(!segs.is_empty(), "{body}");
            for (seq, disc, uri) in &segs {
                if let Some((d, u)) = self.seen.get(seq) {
                    assert_eq!(u, uri, "segment {seq} changed between refreshes:\n{body}");
                    // nginx-rtmp itself drops the DISCONTINUITY it writes
                    // when a push starts without raising its
                    // DISCONTINUITY-SEQUENCE (it writes none): only what
                    // castgate answers after the move is held to it.
                    if self.strict {
                        assert_eq!(d, disc, "segment {seq} changed its timeline:\n{body}");
                    }
                }
                self.seen.insert(*seq, (*disc, uri.clone()));
            }
            self.firsts.push(segs[0].0);
            return;
        }
        panic!("more than 3 redirects for {}", self.url);
    }
}

#[test]
fn a_session_moved_between_slicers_keeps_its_media_sequence() {
    let mut farm = TwoSlicers::start();
    let mut player = Follower::start(&farm.cg.front_url(), "live");
    let (a_url, b_url) = (farm.a.http_url(), farm.b.http_url());
    // On a, while b starts LATER behind it.
    let b_at = Instant::now() + LATER;
    while Instant::now() < b_at {
        player.refresh();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        player.seen.values().all(|(_, u)| u.starts_with(&a_url)),
        "on a first"
    );
    farm.start_b();
    let own =
        |e: &RtmpEdge| support::nginx::media_sequence(&e.playlist("stream").unwrap_or_default());
    let (a_own, b_own) = (own(&farm.a), own(&farm.b));
    eprintln!("own media sequences before the kill: a {a_own}, b {b_own}");
    assert!(a_own > b_own + 3, "b numbers its segments lower than a");
    for _ in 0..2 {
        player.refresh();
        std::thread::sleep(Duration::from_millis(500));
    }
    let last_on_a = *player.seen.keys().last().expect("segments seen");
    let disc_on_a = player.seen.values().last().map_or(0, |(d, _)| *d);
    // a dies; the player refreshes on as it would.
    player.strict = true;
    farm.a.kill();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        player.refresh();
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = player.after(last_on_a);
    eprintln!(
        "moves {}, last on a {last_on_a} (disc {disc_on_a}), then {:?}",
        player.moves,
        after.iter().map(|(s, d, _)| (s, d)).collect::<Vec<_>>()
    );
    assert!(player.moves >= 1, "the session moved");
    assert!(
        player.firsts.windows(2).all(|w| w[0] <= w[1]),
        "the media sequence never goes back: {:?}",
        player.firsts
    );
    assert!(after.len() >= 5, "b's segments follow a's: {after:?}");
    assert!(
        after.iter().all(|(_, _, u)| u.starts_with(&b_url)),
        "every later segment comes from b: {after:?}"
    );
    assert!(
        after.iter().all(|(_, d, _)| *d == disc_on_a + 1),
        "b's segments come after exactly one discontinuity: {after:?}"
    );
    let numbers: Vec<u64> = after.iter().map(|(s, _, _)| *s).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "b's segments numbered one after another: {numbers:?}"
    );
}

/// Longest wall time within `from..to` during which ffmpeg's output time
/// did not grow (ffmpeg reports progress only as it writes), and the output
/// time reached.
fn longest_stall(progress: &[(Instant, f64)], from: Instant, to: Instant) -> (Duration, f64) {
    let mut stall = Duration::ZERO;
    let (mut grew_at, mut reached) = (from, 0.0f64);
    for &(at, t) in progress.iter().filter(|(at, _)| *at >= from && *at <= to) {
        if t > reached {
            stall = stall.max(at - grew_at);
            grew_at = at;
            reached = t;
        }
    }
    (stall.max(to - grew_at), reached)
}

#[test]
fn ffmpeg_reading_through_castgate_survives_its_slicer_dying() {
    let mut farm = TwoSlicers::start();
    let url = format!("{}/live.m3u8", farm.cg.front_url());
    let bin = support::nginx::ffmpeg_bin();
    let mut child = Command::new(&bin)
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "warning",
            "-i",
            &url,
            "-map",
            "0:a",
            "-f",
            "null",
            "-",
            "-progress",
            "pipe:1",
            "-stats_period",
            "0.25",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, f64)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(us) = line.strip_prefix("out_time_us=") {
                if let Ok(us) = us.trim().parse::<f64>() {
                    let _ = tx.send((Instant::now(), us / 1e6));
                }
            }
        }
    });
    let mut progress = Vec::new();
    let collect = |until: Instant, progress: &mut Vec<(Instant, f64)>| {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(p) => progress.push(p),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(_) => break,
            }
        }
    };
    // ffmpeg plays from a, the only live edge; b starts later, numbering
    // its segments lower.
    collect(Instant::now() + LATER, &mut progress);
    farm.start_b();
    // What ffmpeg reported meanwhile.
    collect(Instant::now() + Duration::from_millis(500), &mut progress);
    let session_edge = last_session_edge(&farm.cg);
    let before = progress.last().map_or(0.0, |p| p.1);
    eprintln!("ffmpeg on edge {session_edge}: {before:.1}s of audio so far");
    assert_eq!(session_edge, "a", "ffmpeg's session is on a");
    farm.a.kill();
    let killed_at = Instant::now();
    let until = killed_at + Duration::from_secs(15);
    collect(until, &mut progress);
    let alive = matches!(child.try_wait(), Ok(None));
    support::kill_and_reap(&mut child);
    let log = errors.join().unwrap_or_default();
    let (stall, reached) = longest_stall(&progress, killed_at, until);
    let gained = reached - before;
    eprintln!(
        "after the kill of {session_edge}: longest stall {:.2}s, {gained:.1}s of audio in 15s; ffmpeg said:\n{}",
        stall.as_secs_f64(),
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(alive, "ffmpeg still running after its slicer died:\n{log}");
    assert!(
        stall <= Duration::from_secs(4),
        "ffmpeg's longest stall after the kill {stall:?} (2 × target duration + a poll)"
    );
    assert!(
        gained >= 10.0,
        "ffmpeg decoded {gained:.1}s of 15s after the kill"
    );
}

/// VLC 3 (its `adaptive` HLS module) playing `/live.m3u8` through castgate
/// keeps decoding when its slicer dies: at least 10 s of audio in the 15 s
/// after the kill.
#[test]
fn vlc_playing_through_castgate_survives_its_slicer_dying() {
    let mut farm = TwoSlicers::start();
    let dir = support::shared_temp_dir();
    let out = dir.path().join("vlc.wav");
    let watch = support::WavWatch::new(&out);
    let mut child = support::vlc(&out, &format!("{}/live.m3u8", farm.cg.front_url()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cvlc");
    wait_until("VLC decoding", Duration::from_secs(30), || {
        watch.seconds() > 2.0
    });
    // VLC plays from a, the only live edge; b starts later, numbering its
    // segments lower.
    std::thread::sleep(LATER);
    farm.start_b();
    let session_edge = last_session_edge(&farm.cg);
    assert_eq!(session_edge, "a", "VLC's session is on a");
    let before = watch.seconds();
    farm.a.kill();
    std::thread::sleep(Duration::from_secs(15));
    let gained = watch.seconds() - before;
    let alive = matches!(child.try_wait(), Ok(None));
    support::kill_and_reap(&mut child);
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut log);
    }
    eprintln!(
        "VLC after the kill of a: {gained:.1}s of audio in 15s (before: {before:.1}s); VLC said:\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(alive, "VLC still running after its slicer died:\n{log}");
    assert!(
        gained >= 10.0,
        "VLC decoded {gained:.1}s of 15s after the kill"
    );
}
