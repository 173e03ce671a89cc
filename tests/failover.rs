//! Listener continuity in proxy mode: when the relay carrying a proxied
//! listener dies, castgate resumes the same response from another relay.
//! The listener's connection stays open, its bytes stay whole MPEG frames,
//! and a listener that asked for ICY metadata keeps its interval.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source};

/// What one raw listener saw.
struct Heard {
    /// The response head.
    head: String,
    /// Every body byte.
    body: Vec<u8>,
    /// The longest time between two reads that returned bytes.
    longest_silence: Duration,
    /// The connection ended (EOF or error) before the test stopped it.
    closed: Option<String>,
}

/// A listener on a raw socket that records everything until `stop`.
fn listen(addr: String, icy: bool, stop: Arc<AtomicBool>) -> JoinHandle<Heard> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).expect("connect to castgate");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let meta = if icy { "Icy-MetaData: 1\r\n" } else { "" };
        write!(s, "GET /apple HTTP/1.1\r\nHost: {addr}\r\n{meta}\r\n").unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 16384];
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        let mut closed = None;
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = Some("EOF".to_string());
                    break;
                }
                Ok(n) => {
                    let now = Instant::now();
                    // The wait for the head is not a silence of the stream.
                    if !all.is_empty() {
                        longest = longest.max(now - last);
                    }
                    last = now;
                    all.extend_from_slice(&buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    closed = Some(e.to_string());
                    break;
                }
            }
        }
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(all.len(), |i| i + 4);
        Heard {
            head: String::from_utf8_lossy(&all[..end]).into_owned(),
            body: all[end..].to_vec(),
            longest_silence: longest,
            closed,
        }
    })
}

/// MPEG audio frame length from a 4-byte header (ISO/IEC 11172-3), as an
/// independent check of what castgate sends.
fn mpeg_frame_len(h: &[u8]) -> Option<usize> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3;
    let layer = (h[1] >> 1) & 3;
    let bitrate = usize::from(h[2] >> 4);
    let rate = usize::from((h[2] >> 2) & 3);
    let padding = usize::from((h[2] >> 1) & 1);
    // The sources here are MPEG-1 layer III (libmp3lame, 44.1 kHz).
    if version != 3 || layer != 1 || bitrate == 0 || bitrate == 15 || rate == 3 {
        return None;
    }
    const KBPS: [usize; 14] = [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    let sample_rate = [44_100, 48_000, 32_000][rate];
    Some(144 * KBPS[bitrate - 1] * 1000 / sample_rate + padding)
}

/// Take ICY blocks out of `body` at `metaint`: the audio, and the texts of
/// the non-empty blocks. Panics on a block that is not ICY's.
fn strip_icy(body: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
    let mut audio = Vec::new();
    let mut titles = Vec::new();
    let mut pos = 0;
    while pos + metaint < body.len() {
        audio.extend_from_slice(&body[pos..pos + metaint]);
        let len = usize::from(body[pos + metaint]) * 16;
        let start = pos + metaint + 1;
        if start + len > body.len() {
            break;
        }
        if len > 0 {
            let text = String::from_utf8_lossy(&body[start..start + len])
                .trim_end_matches('\0')
                .to_string();
            assert!(
                text.starts_with("StreamTitle='"),
                "byte {}: not an ICY block: {text:?}",
                pos + metaint
            );
            titles.push(text);
        }
        pos = start + len;
    }
    (audio, titles)
}

/// How many whole frames `audio` is, from its first byte; panics at the
/// first byte that is not a frame start (a torn frame).
fn whole_frames(audio: &[u8], who: &str) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    while pos + 4 <= audio.len() {
        let Some(n) = mpeg_frame_len(&audio[pos..]) else {
            panic!(
                "{who}: byte {pos} of {} is not an MPEG frame header (after {frames} frames): {:02x?}",
                audio.len(),
                &audio[pos..(pos + 8).min(audio.len())]
            );
        };
        pos += n;
        frames += 1;
    }
    frames
}

/// `n` Icecast relays of `origin`'s `/air`, each live.
fn relays_of(origin: &Icecast, n: usize) -> Vec<Icecast> {
    // Room for every listener of the relay test on the last relay standing
    // (Icecast's default of 100 clients would refuse resumes past it).
    let opts = IcecastOpts {
        max_clients: 500,
        ..IcecastOpts::default()
    };
    let relays: Vec<Icecast> = (0..n)
        .map(|_| Icecast::relay(origin, &["/air"], opts.clone()))
        .collect();
    for r in &relays {
        r.wait_mount_live("/air", Duration::from_secs(15));
    }
    relays
}

/// Wait until the relays together count `n` listeners on `/air`.
fn wait_listeners_on(relays: &[Icecast], n: u64) {
    wait_until(
        &format!("{n} listeners on the relays"),
        Duration::from_secs(20),
        || {
            relays
                .iter()
                .filter_map(|r| r.listeners("/air"))
                .sum::<u64>()
                == n
        },
    );
}

/// Wait until castgate sees every edge up with `/air` live on it.
fn wait_all_live(cg: &Castgate) {
    wait_until(
        "every relay up with /air live",
        Duration::from_secs(15),
        || {
            let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
            let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            s["edges"].as_array().is_some_and(|e| {
                e.iter()
                    .all(|e| e["up"] == true && e["mounts"].get("/air").is_some())
            })
        },
    );
}

fn metric_sum(cg: &Castgate, prefix: &str) -> f64 {
    let (_, _, body) = http_get(&format!("{}/metrics", cg.admin_url()));
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Listeners of the relay test: `CASTGATE_FAILOVER_LISTENERS`, default 60
/// (issue 13 asks 200; measured with it, see the README).
fn relay_test_listeners() -> usize {
    std::env::var("CASTGATE_FAILOVER_LISTENERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// 60 proxied listeners (`CASTGATE_FAILOVER_LISTENERS`), a third with
/// `Icy-MetaData: 1`, on three relays
/// of one origin; two relays killed one after the other. Every listener's
/// connection stays open, its bytes are whole MPEG frames from the first to
/// the last (and whole ICY blocks at the interval it was told), and the
/// longest silence any listener had is at most 3 s (see the bound below).
#[test]
fn proxied_listeners_survive_their_relays_dying() {
    let origin = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&origin, "/air");
    let auth = support::basic_auth(support::ADMIN_USER, support::ADMIN_PASSWORD);
    let (code, _, _) = support::http_request(
        "GET",
        &format!(
            "{}/admin/metadata?mount=/air&mode=updinfo&song=Before",
            origin.url()
        ),
        &[("Authorization", &auth)],
    );
    assert_eq!(code, 200);
    let mut relays = relays_of(&origin, 3);
    let (front, admin) = (free_port(), free_port());
    let edges: String = relays
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "  - {{ name: r{i}, kind: icecast, url: \"{}\" }}\n",
                r.url()
            )
        })
        .collect();
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 1s, timeout: 800ms }}
server: {{ threads: 2 }}
edges:
{edges}
streams:
  - {{ name: apple, mount: /air, mode: proxy }}
"#
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_all_live(&cg);
    let addr = format!("127.0.0.1:{front}");
    let stop = Arc::new(AtomicBool::new(false));
    let n = relay_test_listeners();
    let listeners: Vec<(bool, JoinHandle<Heard>)> = (0..n)
        .map(|i| {
            let icy = i % 3 == 0;
            std::thread::sleep(Duration::from_millis(20));
            (icy, listen(addr.clone(), icy, stop.clone()))
        })
        .collect();
    wait_listeners_on(&relays, n as u64);
    let on: Vec<u64> = relays
        .iter()
        .map(|r| r.listeners("/air").unwrap_or(0))
        .collect();
    eprintln!("listeners per relay before the kills: {on:?}");
    std::thread::sleep(Duration::from_secs(3));
    relays[0].kill();
    std::thread::sleep(Duration::from_secs(4));
    relays[1].kill();
    std::thread::sleep(Duration::from_secs(4));
    // A new title reaches every listener that asked for titles.
    support::http_request(
        "GET",
        &format!(
            "{}/admin/metadata?mount=/air&mode=updinfo&song=After",
            origin.url()
        ),
        &[("Authorization", &auth)],
    );
    std::thread::sleep(Duration::from_secs(3));
    let survivor = relays[2].listeners("/air");
    stop.store(true, Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    for (i, (icy, l)) in listeners.into_iter().enumerate() {
        let heard = l.join().expect("listener thread");
        let who = format!("listener {i}{}", if icy { " (ICY)" } else { "" });
        assert!(
            heard.closed.is_none(),
            "{who}: connection closed: {:?}",
            heard.closed
        );
        assert!(
            heard.head.starts_with("HTTP/1.1 200"),
            "{who}: {}",
            heard.head
        );
        let audio = if icy {
            let metaint: usize = heard
                .head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("icy-metaint:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{who}: no icy-metaint: {}", heard.head));
            let (audio, titles) = strip_icy(&heard.body, metaint);
            assert_eq!(
                titles.first().map(String::as_str),
                Some("StreamTitle='Before';"),
                "{who}: {titles:?}"
            );
            assert_eq!(
                titles.last().map(String::as_str),
                Some("StreamTitle='After';"),
                "{who}: {titles:?}"
            );
            audio
        } else {
            heard.body
        };
        let frames = whole_frames(&audio, &who);
        // 17 s of 128 kbit/s MP3 at 38.3 frames a second.
        assert!(frames > 400, "{who}: only {frames} frames");
        longest = longest.max(heard.longest_silence);
    }
    let failovers = metric_sum(&cg, "castgate_failovers_total{");
    eprintln!(
        "{n} listeners, two of three relays killed: 0 closed, {failovers} resumes, longest silence {longest:?}, {survivor:?} on the last relay"
    );
    // Two of three relays' listeners resumed at least once.
    assert!(
        failovers >= (2 * n / 3) as f64,
        "{failovers} resumes counted"
    );
    // A killed relay closes its connections, so a resume starts at once:
    // the silence is the relay's last gap before the kill plus one connect
    // and head. Measured 1.4 s alone and 2.3 s with the whole suite on two
    // cores (debug build); the bound is failover.stall (2 s) plus 1 s, so
    // a resume that waited for stall detection would still show.
    assert!(
        longest <= Duration::from_secs(3),
        "longest silence {longest:?}"
    );
    // The listeners hung up: each one's access line tells its resumes and
    // the silence they cost.
    let mut log = String::new();
    wait_until(
        "the listeners' access lines",
        Duration::from_secs(10),
        || {
            log = cg.log();
            log.lines()
                .filter(|l| l.contains("path=/apple ") && l.contains(" resumes="))
                .count()
                >= n / 2
        },
    );
    assert!(
        log.contains("relayed stream resumed on another edge"),
        "{log}"
    );
    let resumed = log
        .lines()
        .find(|l| l.contains("path=/apple ") && l.contains(" resumes="))
        .unwrap_or_default();
    assert!(resumed.contains(" gap_ms="), "{resumed}");
}

/// A desktop player playing a playlist castgate answers, decoding to a
/// file so the seconds it decoded can be counted.
#[derive(Clone, Copy, Debug)]
enum Player {
    /// mpv with `--ao=pcm`: raw s16 stereo 44.1 kHz (176,400 bytes a second).
    Mpv,
    /// VLC 3 with the `afile` audio output ([`support::vlc`]): a WAV file.
    Vlc,
}

impl Player {
    fn command(self, out: &std::path::Path, url: &str) -> std::process::Command {
        match self {
            Player::Mpv => {
                let mut c = std::process::Command::new(support::require_bin("mpv", "mpv"));
                c.args([
                    "--no-config",
                    "--no-video",
                    "--really-quiet",
                    "--ao=pcm",
                    "--ao-pcm-waveheader=no",
                    "--audio-format=s16",
                    "--audio-channels=stereo",
                    "--audio-samplerate=44100",
                ])
                .arg(format!("--ao-pcm-file={}", out.display()))
                .arg(url);
                c
            }
            Player::Vlc => support::vlc(out, url),
        }
    }
}

/// mpv and VLC playing `/apple.m3u` and `/apple.pls` (the chosen relay,
/// then its backups) keep playing when that relay dies: they go to the
/// next entry, and decode audio for at least 80% of the time they ran.
#[test]
fn players_move_to_a_playlist_backup_when_their_relay_dies() {
    let origin = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&origin, "/air");
    let mut relays = relays_of(&origin, 2);
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
poll: {{ interval: 1s, timeout: 800ms }}
edges:
  - {{ name: r0, kind: icecast, url: "{}" }}
  - {{ name: r1, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air }}
"#,
        relays[0].url(),
        relays[1].url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    wait_all_live(&cg);
    let (_, _, body) = http_get(&format!("{}/apple.m3u", cg.front_url()));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(relays.iter().all(|r| body.contains(&r.url())), "{body}");
    let dir = support::shared_temp_dir();
    for player in [Player::Mpv, Player::Vlc] {
        for list in ["apple.m3u", "apple.pls"] {
            let out = dir.path().join(format!("{player:?}-{list}.audio"));
            let started = Instant::now();
            // VLC starts its file again at each playlist entry.
            let watch = matches!(player, Player::Vlc).then(|| support::WavWatch::new(&out));
            let mut child = player
                .command(&out, &format!("{}/{list}", cg.front_url()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("run {player:?}: {e}"));
            wait_until(
                &format!("{player:?} on a relay"),
                Duration::from_secs(15),
                || relays.iter().any(|r| r.listeners("/air") == Some(1)),
            );
            std::thread::sleep(Duration::from_secs(4));
            let playing = relays
                .iter()
                .position(|r| r.listeners("/air") == Some(1))
                .expect("the player's relay");
            relays[playing].kill();
            std::thread::sleep(Duration::from_secs(10));
            let ran = started.elapsed();
            let _ = child.kill();
            let output = child.wait_with_output().expect("the player's output");
            let decoded = match &watch {
                Some(w) => w.seconds(),
                None => std::fs::metadata(&out).map_or(0, |m| m.len()) as f64 / (44_100.0 * 4.0),
            };
            eprintln!(
                "{player:?} {list}: relay {playing} killed at 4 s; decoded {decoded:.1} s of audio in {:.1} s",
                ran.as_secs_f64()
            );
            assert!(
                decoded >= 0.8 * ran.as_secs_f64(),
                "{player:?} {list} decoded {decoded:.1} s in {ran:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            // Bring the relay back for the next run.
            relays[playing].restart();
            relays[playing].wait_mount_live("/air", Duration::from_secs(15));
            wait_all_live(&cg);
        }
    }
}

/// `POST /api/edges/r0/evacuate` under 40 proxied listeners
/// (`CASTGATE_FAILOVER_LISTENERS` × 2/3): the relay is
/// drained and every listener castgate relays from it moves to the other
/// relay, at most `failover.evacuate_rate` a second, none closed, their
/// bytes whole MPEG frames; then r0 has no castgate listener.
#[test]
fn evacuating_a_relay_moves_its_listeners_without_cutting_one() {
    const TOKEN: &str = "evacuate-test-token-0123456789";
    let origin = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&origin, "/air");
    let relays = relays_of(&origin, 2);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}", token_file: "{}" }}
poll: {{ interval: 1s, timeout: 800ms }}
failover: {{ evacuate_rate: 10 }}
edges:
  - {{ name: r0, kind: icecast, url: "{}" }}
  - {{ name: r1, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air, mode: proxy }}
"#,
        token.display(),
        relays[0].url(),
        relays[1].url()
    );
    let cg = Castgate::start(&yaml, front, admin);
    let relayed = |edge: usize| -> u64 {
        let (_, _, body) = http_get(&format!("{}/status.json", cg.admin_url()));
        let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        s["edges"][edge]["relayed"].as_u64().unwrap_or(u64::MAX)
    };
    wait_all_live(&cg);
    let addr = format!("127.0.0.1:{front}");
    let stop = Arc::new(AtomicBool::new(false));
    let n = (relay_test_listeners() * 2 / 3) as u64;
    let listeners: Vec<JoinHandle<Heard>> = (0..n)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(20));
            listen(addr.clone(), i % 3 == 0, stop.clone())
        })
        .collect();
    wait_listeners_on(&relays, n);
    std::thread::sleep(Duration::from_secs(2));
    let on_r0 = relayed(0);
    assert!(on_r0 > 5, "{on_r0} listeners on r0");
    let auth = format!("Bearer {TOKEN}");
    let started = Instant::now();
    let (code, _, body) = support::http_request(
        "POST",
        &format!("{}/api/edges/r0/evacuate", cg.admin_url()),
        &[("Authorization", &auth), ("Content-Length", "0")],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["moving"].as_u64(), Some(on_r0), "{reply}");
    assert_eq!(reply["state"], "disabled", "{reply}");
    wait_until("r0 evacuated", Duration::from_secs(30 + n / 10), || {
        relayed(0) == 0
    });
    let took = started.elapsed();
    wait_until("r0 has no listener", Duration::from_secs(10), || {
        relays[0].listeners("/air") == Some(0)
    });
    wait_until("r1 has them all", Duration::from_secs(10), || {
        relays[1].listeners("/air") == Some(n)
    });
    // 10 a second: the last leaves (n - 1) / 10 s after the first.
    let bound = Duration::from_millis((on_r0 - 1) * 100);
    assert!(
        took >= bound,
        "{on_r0} moved in {took:?}, faster than 10 a second"
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for (i, l) in listeners.into_iter().enumerate() {
        let heard = l.join().expect("listener thread");
        let who = format!("listener {i}");
        assert!(
            heard.closed.is_none(),
            "{who}: connection closed: {:?}",
            heard.closed
        );
        if i % 3 != 0 {
            whole_frames(&heard.body, &who);
        }
    }
    eprintln!(
        "evacuate: {on_r0} of {n} listeners moved off r0 in {took:?} at 10 a second, none closed"
    );
}
