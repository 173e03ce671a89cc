//! Binary upgrade without dropping anyone: a new castgate takes over the
//! listening sockets (`castgate run --upgrade` + SIGQUIT to the old one);
//! no connection is refused, and a listener proxied by the old process
//! keeps playing through the grace period.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    connect_listeners, free_port, http_get, wait_until, Castgate, Icecast, IcecastOpts, Source,
};

#[test]
fn upgrade_hands_over_sockets_without_refusing_a_connection() {
    let ice = Icecast::origin(IcecastOpts::default());
    let _src = Source::start(&ice, "/air");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let (front, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listen: ["127.0.0.1:{front}"]
admin: {{ listen: "127.0.0.1:{admin}" }}
server: {{ grace_period: 3s, shutdown_timeout: 2s, upgrade_sock: "{}", pid_file: "{}" }}
edges:
  - {{ name: a, kind: icecast, url: "{}" }}
streams:
  - {{ name: apple, mount: /air, mode: proxy }}
"#,
        sock.display(),
        dir.path().join("castgate.pid").display(),
        ice.url()
    );
    let mut old = Castgate::start(&yaml, front, admin);
    wait_until("edge up", Duration::from_secs(15), || {
        http_get(&format!("{}/apple.m3u", old.front_url())).0 == 200
    });
    let listener = connect_listeners(&format!("{}/apple", old.front_url()), 1)
        .pop()
        .unwrap();

    // Clients keep asking throughout the hand-over (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = format!("{}/apple.m3u", old.front_url());
    let load = {
        let (stop, ok, refused) = (stop.clone(), ok.clone(), refused.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                match support::try_http_request("GET", &url, &[]) {
                    Ok((200, _, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!(
                            "failed at {:?}: {:?}",
                            started.elapsed(),
                            other.map(|r| r.0)
                        );
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // The new process waits on the upgrade socket; then the old one is
    // told to hand over.
    let mut new = Castgate::start_with_args(&yaml, front, admin, &["--upgrade"]);
    wait_until(
        "new process waiting on the upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    );
    let quit = Instant::now();
    old.signal(libc::SIGQUIT);

    // The old process's listener keeps playing during the grace period.
    std::thread::sleep(Duration::from_millis(2500));
    let before = listener.bytes_received();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        listener.bytes_received() > before,
        "the proxied listener kept playing"
    );
    wait_until("old process exits", Duration::from_secs(15), || {
        !old.is_running()
    });
    eprintln!("old process exited {:?} after SIGQUIT", quit.elapsed());
    assert!(
        quit.elapsed() >= Duration::from_secs(3),
        "not before the grace period"
    );

    // The old one is gone: whatever answers on the ports now is the new
    // process, which took them over.
    assert!(new.is_running(), "the new process runs");
    wait_until("the new process answers", Duration::from_secs(5), || {
        http_get(&format!("{}/status.json", new.admin_url())).0 == 200
            && ok.load(Ordering::Relaxed) > 0
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    eprintln!("during the upgrade: {ok} answered, {refused} refused or failed");
    assert!(ok > 50, "{ok}");
    assert_eq!(refused, 0, "no request may fail during the upgrade");
    assert_eq!(http_get(&format!("{}/apple.m3u", new.front_url())).0, 200);
    assert_eq!(http_get(&format!("{}/status.json", new.admin_url())).0, 200);
    let _ = old.stop();
}
