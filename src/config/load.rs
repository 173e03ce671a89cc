//! Reading a config file: YAML syntax, then each section on its own so that
//! one bad edge does not hide the errors of the next.

use super::schema::{
    AdminConfig, BalanceConfig, CorsConfig, EdgeConfig, FailoverConfig, FileConfig, LogConfig,
    PlaylistConfig, PollConfig, ReloadConfig, ServerConfig, StickyConfig, StreamConfig,
};
use super::{validate, Config, ConfigError, ConfigErrors};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::path::Path;

/// The top-level keys a config file may have.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen", "admin", "poll", "balance", "server", "sticky", "cors", "reload", "log", "failover",
    "playlist", "edges", "streams",
];

/// Read and validate the config file at `path`.
///
/// # Errors
/// Every problem found, each with its place; a file that cannot be read is
/// one error whose place is the path.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            place: path.display().to_string(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&text)
}

/// Parse and validate config text (YAML).
///
/// # Errors
/// Every problem found: YAML syntax errors with line and column, unknown
/// keys, wrong types and bad values with their key path.
pub fn load_str(text: &str) -> Result<Config, ConfigErrors> {
    load_str_with_file(text).map(|(_, config)| config)
}

/// Parse and validate config text; also return the file's shape, which the
/// control plane merges runtime changes into.
///
/// # Errors
/// As [`load_str`].
pub fn load_str_with_file(text: &str) -> Result<(FileConfig, Config), ConfigErrors> {
    let parsed = parse(text)?;
    match validate::validate(&parsed.file, &parsed.places) {
        Ok(config) if parsed.errors.is_empty() => Ok((parsed.file, config)),
        Ok(_) => Err(ConfigErrors(parsed.errors)),
        Err(ConfigErrors(more)) => {
            let mut all = parsed.errors;
            all.extend(more);
            Err(ConfigErrors(all))
        }
    }
}

/// What the shape pass could read, and what it could not.
struct Parsed {
    file: FileConfig,
    /// Shape errors (unknown keys, wrong types), in file order.
    errors: Vec<ConfigError>,
    /// File indexes of the kept list items, and names of unreadable edges.
    places: validate::Places,
}

/// Parse the YAML into the file's shape, collecting shape errors section by
/// section. Only a YAML syntax error stops early (nothing can be read past it).
fn parse(text: &str) -> Result<Parsed, ConfigErrors> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| {
        let place = match e.location() {
            Some(l) => format!("line {} column {}", l.line(), l.column()),
            None => "file".to_string(),
        };
        ConfigErrors(vec![ConfigError {
            place,
            message: strip_location(&e.to_string()),
        }])
    })?;
    let mut errors = Vec::new();
    let map = match root {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(ConfigErrors(vec![ConfigError {
            place: "file".into(),
            message:
                "the top level must be a mapping of keys (listen, admin, poll, edges, streams, ...)"
                    .into(),
        }]))
        }
    };
    for key in map.keys() {
        match key.as_str() {
            Some(k) if TOP_LEVEL_KEYS.contains(&k) => {}
            _ => errors.push(ConfigError {
                place: key_name(key),
                message: format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            }),
        }
    }
    let mut file = FileConfig {
        listen: super::schema::default_listen(),
        admin: AdminConfig::default(),
        poll: PollConfig::default(),
        balance: BalanceConfig::default(),
        server: ServerConfig::default(),
        sticky: StickyConfig::default(),
        cors: CorsConfig::default(),
        reload: ReloadConfig::default(),
        log: LogConfig::default(),
        failover: FailoverConfig::default(),
        playlist: PlaylistConfig::default(),
        edges: Vec::new(),
        streams: Vec::new(),
    };
    if let Some(v) = map.get("listen") {
        if let Some(listen) = section(v, "listen", &mut errors) {
            file.listen = listen;
        }
    }
    if let Some(v) = map.get("admin") {
        if let Some(admin) = section(v, "admin", &mut errors) {
            file.admin = admin;
        }
    }
    if let Some(v) = map.get("poll") {
        if let Some(poll) = section(v, "poll", &mut errors) {
            file.poll = poll;
        }
    }
    if let Some(v) = map.get("balance") {
        if let Some(balance) = section(v, "balance", &mut errors) {
            file.balance = balance;
        }
    }
    if let Some(v) = map.get("sticky") {
        if let Some(sticky) = section(v, "sticky", &mut errors) {
            file.sticky = sticky;
        }
    }
    if let Some(v) = map.get("cors") {
        if let Some(cors) = section(v, "cors", &mut errors) {
            file.cors = cors;
        }
    }
    if let Some(v) = map.get("reload") {
        if let Some(reload) = section(v, "reload", &mut errors) {
            file.reload = reload;
        }
    }
    if let Some(v) = map.get("log") {
        if let Some(log) = section(v, "log", &mut errors) {
            file.log = log;
        }
    }
    if let Some(v) = map.get("playlist") {
        if let Some(playlist) = section(v, "playlist", &mut errors) {
            file.playlist = playlist;
        }
    }
    if let Some(v) = map.get("failover") {
        if let Some(failover) = section(v, "failover", &mut errors) {
            file.failover = failover;
        }
    }
    if let Some(v) = map.get("server") {
        if let Some(server) = section(v, "server", &mut errors) {
            file.server = server;
        }
    }
    let mut places_of = validate::Places::default();
    if let Some(v) = map.get("edges") {
        let (places, edges) = list::<EdgeConfig>(v, "edges", &mut errors)
            .into_iter()
            .unzip();
        places_of.edges = places;
        file.edges = edges;
        if let Value::Sequence(items) = v {
            for item in items {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    if !file.edges.iter().any(|e| e.name == name) {
                        places_of.unparsed_edge_names.push(name.to_string());
                    }
                }
            }
        }
    }
    if let Some(v) = map.get("streams") {
        let (places, streams) = list::<StreamConfig>(v, "streams", &mut errors)
            .into_iter()
            .unzip();
        places_of.streams = places;
        file.streams = streams;
    }
    Ok(Parsed {
        file,
        errors,
        places: places_of,
    })
}

/// Deserialize one section; on failure record the error under `place`.
fn section<T: DeserializeOwned>(
    value: &Value,
    place: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(shape_error(place, &e));
            None
        }
    }
}

/// Deserialize a list item by item, so each bad item is reported with its
/// index. Items that fail are dropped; each kept one comes with its index in
/// the file.
fn list<T: DeserializeOwned>(
    value: &Value,
    place: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(usize, T)> {
    let Value::Sequence(items) = value else {
        if !value.is_null() {
            errors.push(ConfigError {
                place: place.to_string(),
                message: "must be a list".into(),
            });
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(v) = section(item, &format!("{place}[{i}]"), errors) {
            out.push((i, v));
        }
    }
    out
}

/// Turn a deserialization error into a placed error: the key path below
/// the section (for an unknown key, the key itself) is joined onto `place`.
fn shape_error(place: &str, e: &serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let mut place = place.to_string();
    let path = e.path().to_string();
    if path != "." && !path.is_empty() {
        place = format!("{place}.{path}");
    }
    ConfigError {
        place,
        message: strip_location(&e.inner().to_string()),
    }
}

/// serde_yaml appends " at line L column C"; for sections given as values
/// that location is meaningless, and for syntax errors it is in `place`.
fn strip_location(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}
