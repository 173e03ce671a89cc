//! The castgate command: `castgate run -c FILE` serves; `castgate check -c
//! FILE` validates a config and prints every error.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Context;
use castgate::admin::Admin;
use castgate::config::schema::FileConfig;
use castgate::config::{self, Config};
use castgate::control::Control;
use castgate::front::conn::Guarded;
use castgate::front::FrontDoor;
use castgate::poll::Poller;
use castgate::reload::Reloader;
use castgate::state::State;
use clap::{Parser, Subcommand};
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};

/// mimalloc (its v2 series) instead of glibc malloc: the request path
/// allocates small, short-lived objects (pingora's per-request session and
/// headers), where it measured 3–4% faster; with immediate purging (below)
/// it also gives memory back after a load, where glibc kept the 145 MiB that
/// 1,000 proxied listeners had used (README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, `mi_option_e` index 15;
/// libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Free memory goes back to the system at once. With mimalloc's default
/// delay, a front-door thread that fell idle after 300 proxied listeners
/// left held on to 45 MiB: delayed purges only run when that thread
/// allocates again.
fn purge_freed_memory_at_once() {
    // SAFETY: mi_option_set stores one integer option; it is called before
    // any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// A Pingora front door for live-streaming farms.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT (quick) or SIGTERM (graceful). SIGHUP reloads
    /// the config.
    Run {
        /// The YAML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Log lines as `text` (for people) or `json` (one object a line,
        /// for log shippers).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Take over the listening sockets of a running castgate (binary
        /// upgrade): start this, then send SIGQUIT to the old process. Both
        /// must use the same `server.upgrade_sock`.
        #[arg(long)]
        upgrade: bool,
        /// Detach and run in the background (pingora's daemon mode; the
        /// pid goes to `server.pid_file`). For init systems that follow a
        /// pid file across upgrades (see conf/castgate.service).
        #[arg(long)]
        daemon: bool,
    },
    /// Validate a config file: print `ok`, or every error with its place.
    Check {
        /// The YAML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load_file(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", config.display());
                }
                ExitCode::from(1)
            }
        },
        Command::Run {
            config,
            log_format,
            upgrade,
            daemon,
        } => {
            let format = match log_format {
                LogFormat::Text => castgate::logs::Format::Text,
                LogFormat::Json => castgate::logs::Format::Json,
            };
            castgate::logs::init(format, !daemon);
            let text = match std::fs::read_to_string(&config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", config.display());
                    return ExitCode::from(1);
                }
            };
            let loaded = match config::load_str_with_file(&text) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{}: {e}", config.display());
                    }
                    return ExitCode::from(1);
                }
            };
            // Reloads re-read this path, also after --daemon moved to /.
            let config = std::fs::canonicalize(&config).unwrap_or(config);
            match run(config, text, loaded, upgrade, daemon) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("castgate: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Per-connection buffers of the front door's listeners. pingora's default
/// read buffer is 64 KiB a connection, which an idle keep-alive listener
/// connection holds for nothing: requests to castgate are a few hundred
/// bytes, and pingora parses them from its own 4 KiB header buffer. Writes
/// keep pingora's default (one MSS).
const DOWNSTREAM_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// `server.max_connections` of the config in `state`.
fn config_max_connections(state: &castgate::state::State) -> usize {
    state.snapshot.load().config.server.max_connections
}

/// pingora's options for the front door's HTTP app: an HTTP/2 connection
/// with no request in flight is closed after `server.keepalive_timeout`,
/// as an HTTP/1 one is (pingora's default keeps it forever). pingora takes
/// these once, so for HTTP/2 the value at start applies until a restart.
fn front_options(state: &castgate::state::State) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(state.snapshot.load().config.server.keepalive_timeout);
    options
}

/// File descriptors castgate needs beyond its front-door connections: the
/// admin listener and its clients, edge connections of the poller, logs.
const SPARE_FILES: u64 = 1024;

/// Raise the soft open-file limit to the hard one (as nginx's
/// `worker_rlimit_nofile` or Go's runtime do): each front-door connection
/// is a file, and a proxied listener two. Warns when `max_connections`
/// proxied listeners would not fit.
fn raise_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok {
        tracing::warn!("cannot read the open-file limit (RLIMIT_NOFILE)");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = 2 * max_connections as u64 + SPARE_FILES;
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_file_limit = limit.rlim_cur,
            needed,
            "server.max_connections proxied listeners need more open files than the limit allows; raise LimitNOFILE (systemd) or ulimit -n, or lower server.max_connections"
        );
    }
}

/// Build the pingora server from the config and serve until a signal.
fn run(
    path: PathBuf,
    text: String,
    (file, config): (FileConfig, Config),
    upgrade: bool,
    daemon: bool,
) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        upgrade_sock: config.server.upgrade_sock.clone(),
        pid_file: config.server.pid_file.clone(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        daemon,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let listen = config.listen.clone();
    let admin_listen = config.admin_listen;
    let edges = config.edges.len();
    let streams = config.streams.len();
    if config.sticky.secrets.is_empty() {
        tracing::info!("sticky.secret_file not set: session tokens use a random secret, valid only in this process");
    }
    let send_buffer = config.server.send_buffer;
    let (state, sessions) = State::new(config).context("registering metrics")?;
    let control = Arc::new(Control::new(state.clone(), path, file, text));

    let door = FrontDoor::new(state.clone()).context("building the playlist HTTP client")?;
    let max_connections = config_max_connections(&state);
    raise_open_file_limit(max_connections);
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, door);
    proxy.server_options = Some(front_options(&state));
    let mut front = Service::new(
        "castgate front door".to_string(),
        Guarded::new(proxy, state.clone()),
    );
    let mut socket = TcpSocketOptions::default();
    socket.tcp_snd_buf = send_buffer;
    let mut certs = Vec::new();
    for l in &listen {
        let endpoint = ListenerConfig::tcp(l.addr.to_string())
            .l4_buffer(DOWNSTREAM_BUFFERS)
            .tcp_socket_options(socket.clone());
        match &l.tls {
            None => front.add_listener(endpoint),
            Some(files) => {
                let cert = castgate::tls::ReloadableCert::new(&files.cert, &files.key)
                    .with_context(|| format!("TLS listener {}", l.addr))?;
                let mut settings = TlsSettings::intermediate("", "").context("TLS settings")?;
                settings.set_cert_resolver(cert.clone());
                settings.enable_h2();
                front.add_listener(endpoint.tls(settings));
                certs.push(cert);
            }
        }
    }
    control.set_certificates(certs);
    let mut admin = Service::new(
        "castgate admin".to_string(),
        Admin::new(state.clone(), control.clone()),
    );
    admin.add_tcp(&admin_listen.to_string());
    let poller = Poller::new(state, sessions).context("building the poll HTTP client")?;

    let polled = server.add_service(background_service("castgate poller", poller));
    let front = server.add_service(front);
    front.add_dependency(&polled);
    server.add_service(admin);
    server.add_service(background_service(
        "castgate reloader",
        Reloader::new(control),
    ));
    tracing::info!(
        listen = ?listen.iter().map(|l| format!("{}{}", if l.tls.is_some() { "https://" } else { "http://" }, l.addr)).collect::<Vec<_>>(),
        admin = %admin_listen,
        edges,
        streams,
        "castgate starting"
    );
    server.run_forever();
}
