//! Cross-field rules: names, addresses, URLs, references between sections.
//! Every rule runs; every failure is reported with its place.

use super::schema::{EdgeConfig, EdgeKind, FileConfig, StreamConfig, StreamKind, StreamMode};
use super::{AdminState, StickySettings};
use super::{Config, ConfigError, ConfigErrors, Edge, PollSettings, Stream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Where the items of a partly unreadable file came from.
#[derive(Debug, Default, Clone)]
pub struct Places {
    /// `edges[i]` index in the file of each item of `FileConfig::edges`.
    pub edges: Vec<usize>,
    /// `streams[i]` index in the file of each item of `FileConfig::streams`.
    pub streams: Vec<usize>,
    /// Names of edges whose entries failed the shape pass: still known, so a
    /// stream naming them gets no second, misleading error.
    pub unparsed_edge_names: Vec<String>,
}

/// Check a parsed file and build the [`Config`] the program uses. `places`
/// maps list items back to their index in the file; when empty, items are
/// numbered in order.
///
/// # Errors
/// Every rule that fails, in file order.
pub fn validate(file: &FileConfig, places: &Places) -> Result<Config, ConfigErrors> {
    let unparsed_edges = &places.unparsed_edge_names;
    let edge_place = |i: usize| places.edges.get(i).copied().unwrap_or(i);
    let stream_place = |i: usize| places.streams.get(i).copied().unwrap_or(i);
    let mut errors = Vec::new();
    let mut err = |place: String, message: String| errors.push(ConfigError { place, message });

    if file.listen.is_empty() {
        err("listen".into(), "needs at least one address".into());
    }
    let mut listen: Vec<super::Listener> = Vec::new();
    for (i, entry) in file.listen.iter().enumerate() {
        let (addr, tls, place) = match entry {
            super::schema::ListenEntry::Plain(a) => (a, None, format!("listen[{i}]")),
            super::schema::ListenEntry::Tls(t) => {
                (&t.addr, Some(&t.tls), format!("listen[{i}].addr"))
            }
        };
        if let Some(files) = tls {
            for (key, path) in [("cert", &files.cert), ("key", &files.key)] {
                if let Err(e) = std::fs::metadata(path) {
                    err(
                        format!("listen[{i}].tls.{key}"),
                        format!("cannot read `{path}`: {e}"),
                    );
                }
            }
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) if listen.iter().any(|l| l.addr == a) => {
                err(place, format!("{a} is listed twice"))
            }
            Ok(a) => listen.push(super::Listener {
                addr: a,
                tls: tls.cloned(),
            }),
            Err(_) => err(
                place,
                format!("`{addr}` is not an ip:port address (e.g. 0.0.0.0:8080)"),
            ),
        }
    }
    let admin_listen = match file.admin.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                "admin.listen".into(),
                format!(
                    "`{}` is not an ip:port address (e.g. 127.0.0.1:9090)",
                    file.admin.listen
                ),
            );
            None
        }
    };
    if let Some(a) = admin_listen {
        if listen.iter().any(|l| l.addr == a) {
            err(
                "admin.listen".into(),
                format!("{a} is also a front-door listen address"),
            );
        }
    }

    let p = &file.poll;
    if p.interval.is_zero() {
        err("poll.interval".into(), "must be more than 0".into());
    }
    if p.timeout.is_zero() {
        err("poll.timeout".into(), "must be more than 0".into());
    } else if p.timeout > p.interval {
        err(
            "poll.timeout".into(),
            format!(
                "{} exceeds poll.interval {}: polls would overlap",
                humantime::format_duration(p.timeout),
                humantime::format_duration(p.interval)
            ),
        );
    }
    if p.rise == 0 {
        err("poll.rise".into(), "must be at least 1".into());
    }
    if p.fall == 0 {
        err("poll.fall".into(), "must be at least 1".into());
    }
    if p.max_body < 1024 {
        err("poll.max_body".into(), "must be at least 1024 bytes".into());
    }
    for (place, value) in [
        ("server.keepalive_timeout", file.server.keepalive_timeout),
        (
            "server.request_header_timeout",
            file.server.request_header_timeout,
        ),
        ("server.write_timeout", file.server.write_timeout),
    ] {
        if value < Duration::from_secs(1) || value > Duration::from_secs(3600) {
            err(
                place.into(),
                format!("must be between 1s and 1h, not {value:?}"),
            );
        }
    }
    if !(1..=1_000_000).contains(&file.server.max_connections) {
        err(
            "server.max_connections".into(),
            format!(
                "must be between 1 and 1000000, not {}",
                file.server.max_connections
            ),
        );
    }
    if let Some(bytes) = file.server.send_buffer {
        if !(4096..=(64 << 20)).contains(&bytes) {
            err(
                "server.send_buffer".into(),
                format!("must be between 4096 bytes and 64 MiB, not {bytes}"),
            );
        }
    }
    if file.server.threads == 0 {
        err("server.threads".into(), "must be at least 1".into());
    }
    if file.playlist.backups > 16 {
        err("playlist.backups".into(), "must be at most 16".into());
    }
    for (i, h) in file.playlist.hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() < 256
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !ok {
            err(
                format!("playlist.hosts[{i}]"),
                "must be a host name or address, with an optional :port".into(),
            );
        }
    }
    if file.failover.evacuate_rate == 0 {
        err("failover.evacuate_rate".into(), "must be at least 1".into());
    }
    if file.failover.stall < std::time::Duration::from_millis(100) {
        err("failover.stall".into(), "must be at least 100ms".into());
    }
    let sticky = check_sticky(file, &mut err);
    let ca_pem = match &file.poll.ca_file {
        None => None,
        Some(path) => match std::fs::read(path) {
            Ok(pem)
                if reqwest::Certificate::from_pem(&pem).is_ok()
                    && pem.starts_with(b"-----BEGIN") =>
            {
                Some(pem)
            }
            Ok(_) => {
                err(
                    "poll.ca_file".into(),
                    format!("`{path}` holds no PEM certificate"),
                );
                None
            }
            Err(e) => {
                err("poll.ca_file".into(), format!("cannot read `{path}`: {e}"));
                None
            }
        },
    };
    let admin_token = match &file.admin.token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) if t.trim().len() >= 16 => Some(t.trim().to_string()),
            Ok(t) => {
                err(
                    "admin.token_file".into(),
                    format!(
                        "`{path}` holds a {}-character token; use at least 16",
                        t.trim().len()
                    ),
                );
                None
            }
            Err(e) => {
                err(
                    "admin.token_file".into(),
                    format!("cannot read `{path}`: {e}"),
                );
                None
            }
        },
    };
    if file.reload.debounce > std::time::Duration::from_secs(10) {
        err("reload.debounce".into(), "must be at most 10s".into());
    }
    for (i, origin) in file
        .cors
        .allow_origins
        .iter()
        .chain(&file.cors.credentials_origins)
        .enumerate()
    {
        let n = file.cors.allow_origins.len();
        let place = if i < n {
            format!("cors.allow_origins[{i}]")
        } else {
            format!("cors.credentials_origins[{}]", i - n)
        };
        let wildcard_ok = i < n && origin == "*";
        if !wildcard_ok && !valid_origin(origin) {
            err(
                place,
                format!("`{origin}` is not an origin like https://radio.example or http://127.0.0.1:8000{}", if i < n { ", or *" } else { "" }),
            );
        }
    }

    let mut edges = Vec::new();
    let mut edge_index: HashMap<&str, usize> = HashMap::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in file.edges.iter().enumerate() {
        let place = format!("edges[{}]", edge_place(i));
        let duplicate = seen.contains(&e.name.as_str());
        if duplicate {
            err(
                format!("{place}.name"),
                format!("duplicate edge name `{}`", e.name),
            );
        }
        seen.push(&e.name);
        if let Some(edge) = check_edge(&place, e, &mut err) {
            if !duplicate {
                edge_index.insert(e.name.as_str(), edges.len());
                edges.push(edge);
            }
        }
    }
    // Names of edges that failed their own checks still count as known, so a
    // stream naming them is not reported twice.
    let known: Vec<&str> = file
        .edges
        .iter()
        .map(|e| e.name.as_str())
        .chain(unparsed_edges.iter().map(String::as_str))
        .collect();

    let mut streams = Vec::new();
    let mut stream_names: Vec<&str> = Vec::new();
    for (i, s) in file.streams.iter().enumerate() {
        let place = format!("streams[{}]", stream_place(i));
        if stream_names.contains(&s.name.as_str()) {
            err(
                format!("{place}.name"),
                format!("duplicate stream name `{}`", s.name),
            );
        }
        stream_names.push(&s.name);
        if let Some(stream) = check_stream(&place, s, &edges, &edge_index, &known, &mut err) {
            streams.push(stream);
        }
    }
    if file.streams.is_empty() {
        err(
            "streams".into(),
            "needs at least one stream to serve".into(),
        );
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        listen,
        admin_listen: admin_listen.unwrap_or_else(|| ([127, 0, 0, 1], 9090).into()),
        poll: PollSettings {
            interval: p.interval,
            timeout: p.timeout,
            rise: p.rise,
            fall: p.fall,
            max_body: p.max_body,
        },
        poll_tls: super::PollTls { ca_pem },
        policy: file.balance.policy,
        server: file.server.clone(),
        sticky: sticky.unwrap_or(StickySettings {
            secrets: Vec::new(),
            ttl: file.sticky.ttl,
        }),
        cors: file.cors.clone(),
        admin_token,
        admin_allow_remote: file.admin.allow_remote,
        reload: file.reload.clone(),
        access_log: file.log.access,
        failover: file.failover,
        playlist: file.playlist.clone(),
        edges,
        streams,
    })
}

fn check_sticky(file: &FileConfig, err: &mut impl FnMut(String, String)) -> Option<StickySettings> {
    let ttl = file.sticky.ttl;
    if ttl < std::time::Duration::from_secs(10) {
        err("sticky.ttl".into(), "must be at least 10s".into());
    }
    let secrets = match &file.sticky.secret_file {
        None => Vec::new(),
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => {
                // One secret a line: the first signs, every one verifies, so
                // a new secret can be rolled out before it starts signing.
                let secrets: Vec<Vec<u8>> = bytes
                    .split(|b| *b == b'\n')
                    .map(|l| l.trim_ascii().to_vec())
                    .filter(|l| !l.is_empty())
                    .collect();
                if secrets.is_empty() || secrets.iter().any(|s| s.len() < 16) {
                    err(
                        "sticky.secret_file".into(),
                        format!("`{path}` must hold one secret a line, each at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64 > {path}`)"),
                    );
                    return None;
                }
                secrets
            }
            Err(e) => {
                err(
                    "sticky.secret_file".into(),
                    format!("cannot read `{path}`: {e}"),
                );
                return None;
            }
        },
    };
    Some(StickySettings { secrets, ttl })
}

/// `scheme://host[:port]` with nothing after it.
fn valid_origin(origin: &str) -> bool {
    match Url::parse(origin) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && !origin.ends_with('/')
                && u.query().is_none()
        }
        Err(_) => false,
    }
}

/// Parse a bandwidth such as `100Mbit`, `1.5Gbit`, `500kbit` or `64000bit`
/// into bits per second (decimal prefixes, as network links are rated).
///
/// # Errors
/// A message naming the accepted units.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "bit" | "bps" => 1.0,
        "kbit" | "kbps" => 1e3,
        "mbit" | "mbps" => 1e6,
        "gbit" | "gbps" => 1e9,
        _ => {
            return Err(format!(
                "`{text}`: use a number and bit, kbit, Mbit or Gbit (e.g. 100Mbit)"
            ))
        }
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && (n * factor).is_finite() && n * factor >= 1.0 => {
            Ok((n * factor) as u64)
        }
        _ => Err(format!("`{text}`: needs a positive number (e.g. 100Mbit)")),
    }
}

/// `[a-z0-9_-]+`: safe in URLs, metric labels and file names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_edge(place: &str, e: &EdgeConfig, err: &mut impl FnMut(String, String)) -> Option<Edge> {
    let mut ok = true;
    if !valid_name(&e.name) {
        err(
            format!("{place}.name"),
            format!(
                "`{}` must match [a-z0-9_-]+ (at most 64 characters)",
                e.name
            ),
        );
        ok = false;
    }
    let url = check_url(&format!("{place}.url"), &e.url, err);
    let public_url = match &e.public_url {
        Some(p) => check_url(&format!("{place}.public_url"), p, err),
        None => url.clone(),
    };
    if e.max_listeners == Some(0) {
        err(
            format!("{place}.max_listeners"),
            "must be more than 0 (remove the edge or drain it instead)".into(),
        );
        ok = false;
    }
    if !(e.weight.is_finite() && e.weight > 0.0) {
        err(
            format!("{place}.weight"),
            format!("{} must be a number greater than 0", e.weight),
        );
        ok = false;
    }
    let max_bandwidth_bps = match e.max_bandwidth.as_deref().map(parse_bandwidth) {
        None => None,
        Some(Ok(bps)) => Some(bps),
        Some(Err(m)) => {
            err(format!("{place}.max_bandwidth"), m);
            ok = false;
            None
        }
    };
    if e.workers == 0 || e.workers > 64 {
        err(
            format!("{place}.workers"),
            format!("{} must be between 1 and 64", e.workers),
        );
        ok = false;
    }
    if e.workers > 1 && e.kind != EdgeKind::NginxRtmp {
        err(
            format!("{place}.workers"),
            "only nginx_rtmp edges have workers".into(),
        );
        ok = false;
    }
    if e.admin.is_some() && e.kind != EdgeKind::Icecast {
        err(
            format!("{place}.admin"),
            "only icecast edges have admin credentials".into(),
        );
        ok = false;
    }
    Some(Edge {
        name: e.name.clone(),
        kind: e.kind,
        url: url?,
        public_url: public_url?,
        max_listeners: e.max_listeners,
        weight: e.weight,
        max_bandwidth_bps,
        workers: e.workers,
        admin_state: AdminState::Active,
        admin: e.admin.clone(),
    })
    .filter(|_| ok)
}

fn check_url(place: &str, text: &str, err: &mut impl FnMut(String, String)) -> Option<Url> {
    match Url::parse(text) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            err(
                place.to_string(),
                format!("`{text}`: scheme must be http or https"),
            );
            None
        }
        Ok(u) if u.host_str().is_none() => {
            err(place.to_string(), format!("`{text}`: needs a host"));
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            err(
                place.to_string(),
                format!("`{text}`: must not have a query or fragment"),
            );
            None
        }
        Ok(mut u) => {
            // Mounts start with `/`; keep base paths without a trailing one.
            let path = u.path().trim_end_matches('/').to_string();
            u.set_path(&path);
            Some(u)
        }
        Err(e) => {
            err(
                place.to_string(),
                format!("`{text}` is not a URL: {e} (e.g. http://10.0.0.11:8000)"),
            );
            None
        }
    }
}

fn check_mount(place: &str, mount: &str, err: &mut impl FnMut(String, String)) -> bool {
    let ok = mount.starts_with('/')
        && mount.len() > 1
        && !mount.contains(['?', '#', ' '])
        && mount.is_ascii();
    if !ok {
        err(
            place.to_string(),
            format!("`{mount}` must be a mount path like /air (ASCII, no spaces, ? or #)"),
        );
    }
    ok
}

fn check_stream(
    place: &str,
    s: &StreamConfig,
    edges: &[Edge],
    edge_index: &HashMap<&str, usize>,
    known: &[&str],
    err: &mut impl FnMut(String, String),
) -> Option<Stream> {
    let mut ok = true;
    if !valid_name(&s.name) {
        err(
            format!("{place}.name"),
            format!(
                "`{}` must match [a-z0-9_-]+ (at most 64 characters)",
                s.name
            ),
        );
        ok = false;
    }
    let mode = match (s.kind, s.mode) {
        (_, Some(m)) => m,
        (StreamKind::Icecast, None) => StreamMode::Redirect,
        (StreamKind::Hls, None) => StreamMode::Rewrite,
    };
    let mount = match s.kind {
        StreamKind::Icecast => {
            if s.path.is_some() {
                err(
                    format!("{place}.path"),
                    "is for hls streams; icecast streams use mount".into(),
                );
                ok = false;
            }
            if s.rtmp_name.is_some() {
                err(format!("{place}.rtmp_name"), "is for hls streams".into());
                ok = false;
            }
            if mode == StreamMode::Rewrite {
                err(
                    format!("{place}.mode"),
                    "rewrite is for hls streams; icecast streams use redirect or proxy".into(),
                );
                ok = false;
            }
            match &s.mount {
                Some(m) => {
                    ok &= check_mount(&format!("{place}.mount"), m, err);
                    m.clone()
                }
                None => {
                    err(
                        format!("{place}.mount"),
                        "is required for icecast streams (e.g. /air)".into(),
                    );
                    ok = false;
                    String::new()
                }
            }
        }
        StreamKind::Hls => {
            if s.mount.is_some() {
                err(
                    format!("{place}.mount"),
                    "is for icecast streams; hls streams use path".into(),
                );
                ok = false;
            }
            if s.fallback.is_some() {
                err(format!("{place}.fallback"), "is for icecast streams".into());
                ok = false;
            }
            match &s.path {
                Some(p) if p.ends_with(".m3u8") && !p.contains("..") => {
                    ok &= check_mount(&format!("{place}.path"), p, err);
                    p.clone()
                }
                Some(p) => {
                    err(
                        format!("{place}.path"),
                        format!(
                            "`{p}` must be a playlist path ending in .m3u8, like /hls/stream.m3u8"
                        ),
                    );
                    ok = false;
                    String::new()
                }
                None => {
                    err(
                        format!("{place}.path"),
                        "is required for hls streams (e.g. /hls/stream.m3u8)".into(),
                    );
                    ok = false;
                    String::new()
                }
            }
        }
    };
    if let Some(f) = &s.fallback {
        ok &= check_mount(&format!("{place}.fallback"), f, err);
        if f == &mount {
            err(format!("{place}.fallback"), "is the same as mount".into());
            ok = false;
        }
    }
    let rtmp_name = s.rtmp_name.clone().unwrap_or_else(|| {
        let file = mount.rsplit('/').next().unwrap_or("");
        file.strip_suffix(".m3u8").unwrap_or(file).to_string()
    });
    let bitrate_bps = match s.bitrate.as_deref().map(parse_bandwidth) {
        None if s.kind == StreamKind::Hls => 2_000_000,
        None => 128_000,
        Some(Ok(b)) => b,
        Some(Err(m)) => {
            err(format!("{place}.bitrate"), m);
            ok = false;
            0
        }
    };
    let wants_hls = s.kind == StreamKind::Hls;
    let members = match &s.edges {
        Some(names) => {
            let mut members = Vec::new();
            for (j, name) in names.iter().enumerate() {
                match edge_index.get(name.as_str()) {
                    Some(&idx) if members.contains(&idx) => {
                        err(
                            format!("{place}.edges[{j}]"),
                            format!("edge `{name}` is listed twice"),
                        );
                        ok = false;
                    }
                    Some(&idx) if edges[idx].kind.serves_hls() != wants_hls => {
                        err(
                            format!("{place}.edges[{j}]"),
                            format!(
                                "edge `{name}` is {}, which cannot carry a{} stream",
                                edges[idx].kind.as_str(),
                                if wants_hls { "n hls" } else { "n icecast" }
                            ),
                        );
                        ok = false;
                    }
                    Some(&idx) => members.push(idx),
                    None if known.contains(&name.as_str()) => ok = false,
                    None => {
                        err(
                            format!("{place}.edges[{j}]"),
                            format!("unknown edge `{name}`; edges are: {}", known.join(", ")),
                        );
                        ok = false;
                    }
                }
            }
            if names.is_empty() {
                err(
                    format!("{place}.edges"),
                    "is empty; omit it to use every edge of a matching kind".into(),
                );
                ok = false;
            }
            members
        }
        None => edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind.serves_hls() == wants_hls)
            .map(|(i, _)| i)
            .collect(),
    };
    if members.is_empty() && s.edges.as_ref().is_none_or(|l| !l.is_empty()) && ok {
        err(
            format!("{place}.edges"),
            format!(
                "no edge can carry this stream (it needs {} edges)",
                if wants_hls {
                    "nginx_rtmp or hls"
                } else {
                    "icecast"
                }
            ),
        );
        ok = false;
    }
    let steering_ttl = match &s.steering {
        None => None,
        Some(st) => {
            if s.kind != StreamKind::Hls || mode != StreamMode::Rewrite {
                err(
                    format!("{place}.steering"),
                    "is for hls streams in rewrite mode".into(),
                );
                ok = false;
            }
            if st.ttl < std::time::Duration::from_secs(1) || st.ttl.subsec_nanos() != 0 {
                err(
                    format!("{place}.steering.ttl"),
                    "must be whole seconds, at least 1s".into(),
                );
                ok = false;
            }
            Some(st.ttl)
        }
    };
    ok.then(|| Stream {
        name: s.name.clone(),
        kind: s.kind,
        mode,
        mount,
        fallback: s.fallback.clone(),
        rtmp_name,
        bitrate_bps,
        edges: members,
        title: s.title.clone().unwrap_or_else(|| s.name.clone()),
        steering_ttl,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    const GOOD: &str = r#"
listen: ["127.0.0.1:8080"]
admin: { listen: "127.0.0.1:9090" }
poll: { interval: 1s, timeout: 800ms, rise: 1, fall: 2 }
edges:
  - name: air1
    kind: icecast
    url: http://10.0.0.11:1976
    public_url: http://air1.example.com:1976/
    max_listeners: 600
    weight: 1
    admin: { user: admin, password: secret }
  - name: air2
    kind: icecast
    url: http://10.0.0.12:1976
streams:
  - name: apple
    mount: /air
    fallback: /nonstop
    edges: [air1, air2]
"#;

    fn errors(text: &str) -> Vec<String> {
        match load_str(text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn good_config_loads_with_defaults_and_trimmed_urls() {
        let c = load_str(GOOD).expect("valid");
        assert_eq!(c.edges.len(), 2);
        assert_eq!(
            c.edges[0].public_url.as_str(),
            "http://air1.example.com:1976/"
        );
        assert_eq!(c.edges[1].public_url, c.edges[1].url);
        assert_eq!(c.streams[0].edges, vec![0, 1]);
        assert_eq!(c.streams[0].title, "apple");
        assert_eq!(c.server.threads, 1);
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let text = r#"
listen: ["nonsense"]
poll: { interval: 1s, timeout: 2s }
colour: blue
edges:
  - name: air1
    kind: icecast
    url: http://a:1
  - name: air1
    kind: icecast
    url: ftp://b
  - name: Bad Name
    kind: icecast
    url: http://c:1
    weight: 0
  - name: air4
    kind: icecast
    url: http://d:1
    port: 5
streams:
  - name: apple
    mount: air
    edges: [air1, nowhere]
"#;
        let errs = errors(text);
        let joined = errs.join("\n");
        for want in [
            "colour: unknown key",
            "edges[3].port: unknown field `port`",
            "listen[0]: `nonsense` is not an ip:port",
            "poll.timeout: 2s exceeds poll.interval 1s",
            "edges[1].url: `ftp://b`: scheme must be http or https",
            "edges[1].name: duplicate edge name `air1`",
            "edges[2].name: `Bad Name` must match",
            "edges[2].weight: 0 must be a number greater than 0",
            "streams[0].mount: `air` must be a mount path",
            "streams[0].edges[1]: unknown edge `nowhere`",
        ] {
            assert!(joined.contains(want), "missing `{want}` in:\n{joined}");
        }
    }

    #[test]
    fn bad_duration_names_its_key() {
        let errs = errors(&GOOD.replace("interval: 1s", "interval: soon"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("poll.interval: invalid duration `soon`"),
            "{errs:?}"
        );
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let errs = errors("listen: [\"a\"\nedges: {\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("line "), "{errs:?}");
        assert!(errs[0].contains("column"), "{errs:?}");
    }

    #[test]
    fn every_top_level_key_is_accepted() {
        // A key added to FileConfig but not to the loader's list would be
        // refused as unknown.
        let (file, _) = crate::config::load_str_with_file(GOOD).unwrap();
        let value = serde_yaml::to_value(&file).unwrap();
        let keys: Vec<String> = value
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        let mut text = String::new();
        for k in &keys {
            let v = serde_yaml::to_string(&value[k.as_str()]).unwrap();
            text.push_str(&format!(
                "{k}:\n{}\n",
                v.lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        assert!(keys.len() >= 11, "{keys:?}");
        load_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn stream_edges_default_to_every_icecast_edge() {
        let c = load_str(&GOOD.replace("    edges: [air1, air2]\n", "")).expect("valid");
        assert_eq!(c.streams[0].edges, vec![0, 1]);
    }
}
