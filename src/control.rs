//! The control plane: the config file, runtime changes made through the
//! admin API, and how they combine.
//!
//! The effective config is the file's, with the runtime changes applied on
//! top: edges added through the API, edges removed through it, edges
//! drained or disabled, weights set. Runtime changes survive reloads of the
//! file; each is forgotten when it stops meaning anything (an added edge
//! that the file now defines itself: the file's wins; a removed edge the
//! file no longer has). `GET /api/config` shows the effective config.
//!
//! Every change is validated as a whole config before it is applied, and
//! applied at once (one snapshot swap); a refused change leaves everything
//! as it was.

use crate::config::schema::{Discover, EdgeConfig, FileConfig};
use crate::config::{self, AdminState, Config, ConfigError, ConfigErrors};
use crate::state::State;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Runtime changes on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Edges added through the API, in order.
    pub added: Vec<EdgeConfig>,
    /// Names of file edges removed through the API.
    pub removed: Vec<String>,
    /// Drained or disabled edges.
    pub state: BTreeMap<String, AdminState>,
    /// Weights set through the API.
    pub weight: BTreeMap<String, f64>,
}

impl Overrides {
    /// The file's shape with these changes applied.
    pub fn apply(&self, file: &FileConfig) -> FileConfig {
        let mut merged = file.clone();
        merged.edges.retain(|e| !self.removed.contains(&e.name));
        for e in &self.added {
            if !merged.edges.iter().any(|m| m.name == e.name) {
                merged.edges.push(e.clone());
            }
        }
        for e in &mut merged.edges {
            if let Some(w) = self.weight.get(&e.name) {
                e.weight = *w;
            }
        }
        for s in &mut merged.streams {
            if let Some(list) = &mut s.edges {
                list.retain(|n| !self.removed.contains(n));
            }
        }
        merged
    }

    /// `Ok` when `name` is an edge of the effective config.
    fn require_edge(&self, file: &FileConfig, name: &str) -> Result<(), ControlError> {
        if self.apply(file).edges.iter().any(|e| e.name == name) {
            Ok(())
        } else {
            Err(ControlError::NoEdge(name.to_string()))
        }
    }

    /// Forget changes that no longer mean anything against `file`.
    pub fn prune(&mut self, file: &FileConfig) {
        let in_file = |n: &str| file.edges.iter().any(|e| e.name == n);
        self.removed.retain(|n| in_file(n));
        self.added.retain(|e| !in_file(&e.name));
        let known = |n: &String| in_file(n) || self.added.iter().any(|e| &e.name == n);
        let names: Vec<String> = self
            .state
            .keys()
            .chain(self.weight.keys())
            .cloned()
            .collect();
        for n in names {
            if !known(&n) {
                self.state.remove(&n);
                self.weight.remove(&n);
            }
        }
    }
}

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such edge.
    #[error("no edge named `{0}`")]
    NoEdge(String),
    /// The change would make an invalid config.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The edge exists already.
    #[error("an edge named `{0}` exists already")]
    Exists(String),
}

/// How a reload went; also the `outcome` label of
/// `castgate_config_reloads_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is in force.
    Applied,
    /// The file did not change.
    Unchanged,
    /// The file is invalid; the running config stays. Every error.
    Invalid(Vec<ConfigError>),
    /// The file changes settings that cannot change while running.
    Refused(Vec<ConfigError>),
}

impl ReloadOutcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Invalid(_) => "invalid",
            ReloadOutcome::Refused(_) => "refused",
        }
    }
}

struct Inner {
    /// The last good file shape and its text.
    file: FileConfig,
    text: String,
    overrides: Overrides,
    /// Addresses found for each `discover: dns` edge entry, sorted.
    discovered: Discovered,
}

/// Addresses per `discover: dns` edge entry name.
pub type Discovered = BTreeMap<String, Vec<IpAddr>>;

/// Owns the file and the runtime changes; publishes the effective config.
pub struct Control {
    state: Arc<State>,
    path: PathBuf,
    inner: Mutex<Inner>,
    certs: std::sync::Mutex<Vec<Arc<crate::tls::ReloadableCert>>>,
}

impl Control {
    /// A control plane for the config at `path`, already loaded as `file`
    /// from `text`.
    pub fn new(state: Arc<State>, path: PathBuf, file: FileConfig, text: String) -> Control {
        Control {
            state,
            path,
            inner: Mutex::new(Inner {
                file,
                text,
                overrides: Overrides::default(),
                discovered: Discovered::new(),
            }),
            certs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The HTTPS listeners' certificates, re-read on every reload.
    pub fn set_certificates(&self, certs: Vec<Arc<crate::tls::ReloadableCert>>) {
        if let Ok(mut c) = self.certs.lock() {
            *c = certs;
        }
    }

    /// Re-read every HTTPS certificate; failures keep the running one and
    /// are returned.
    fn reload_certificates(&self) -> Vec<ConfigError> {
        let certs = self.certs.lock().map(|c| c.clone()).unwrap_or_default();
        certs
            .iter()
            .filter_map(|c| c.reload().err())
            .map(|e| ConfigError {
                place: "listen[].tls".into(),
                message: format!("{e}; the running certificate stays"),
            })
            .collect()
    }

    /// The config file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The shared state this control plane publishes to.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Re-read the file and apply it with the runtime changes, or keep the
    /// running config and say why. Counted in
    /// `castgate_config_reloads_total{outcome}` and logged.
    pub async fn reload(&self) -> ReloadOutcome {
        let outcome = self.reload_inner().await;
        self.state
            .metrics
            .reloads
            .with_label_values(&[outcome.label()])
            .inc();
        match &outcome {
            ReloadOutcome::Applied => {
                tracing::info!(path = %self.path.display(), "config reloaded")
            }
            ReloadOutcome::Unchanged => tracing::debug!("config unchanged"),
            ReloadOutcome::Invalid(errors) | ReloadOutcome::Refused(errors) => {
                for e in errors {
                    tracing::error!(path = %self.path.display(), "{e}");
                }
                tracing::error!(
                    path = %self.path.display(),
                    outcome = outcome.label(),
                    "config not reloaded; the running config stays"
                );
            }
        }
        outcome
    }

    async fn reload_inner(&self) -> ReloadOutcome {
        // Certificates renew on their own schedule: re-read them on every
        // reload, whether or not the config file changed.
        let cert_errors = self.reload_certificates();
        if !cert_errors.is_empty() {
            return ReloadOutcome::Invalid(cert_errors);
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                return ReloadOutcome::Invalid(vec![ConfigError {
                    place: self.path.display().to_string(),
                    message: format!("cannot read: {e}"),
                }])
            }
        };
        let mut inner = self.inner.lock().await;
        if text == inner.text {
            return ReloadOutcome::Unchanged;
        }
        let (file, _) = match config::load_str_with_file(&text) {
            Ok(v) => v,
            Err(ConfigErrors(errors)) => return ReloadOutcome::Invalid(errors),
        };
        let refused = not_live(&inner.file, &file);
        if !refused.is_empty() {
            return ReloadOutcome::Refused(refused);
        }
        let mut overrides = inner.overrides.clone();
        overrides.prune(&file);
        match effective(&file, &overrides, &inner.discovered) {
            Ok(config) => {
                if file.server.keepalive_timeout != inner.file.server.keepalive_timeout
                    && config.listen.iter().any(|l| l.tls.is_some())
                {
                    tracing::warn!(
                        "server.keepalive_timeout changed: HTTP/1 connections use it now, \
                         HTTP/2 connections keep the value castgate started with until a restart"
                    );
                }
                inner.file = file;
                inner.text = text;
                inner.overrides = overrides;
                self.state.publish_config(config).await;
                ReloadOutcome::Applied
            }
            // The file is fine alone but not with the runtime changes (e.g.
            // a stream now lists only an edge removed through the API).
            Err(ConfigErrors(errors)) => ReloadOutcome::Invalid(errors),
        }
    }

    /// Apply a change to the runtime overrides, validated as a whole.
    async fn change(
        &self,
        f: impl FnOnce(&FileConfig, &mut Overrides) -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let mut inner = self.inner.lock().await;
        let mut overrides = inner.overrides.clone();
        f(&inner.file, &mut overrides)?;
        let config =
            effective(&inner.file, &overrides, &inner.discovered).map_err(ControlError::Invalid)?;
        inner.overrides = overrides;
        self.state.publish_config(config).await;
        Ok(())
    }

    /// Add an edge (same schema as the file's `edges[]`).
    ///
    /// # Errors
    /// [`ControlError::Exists`], or [`ControlError::Invalid`] with every
    /// problem.
    pub async fn add_edge(&self, edge: EdgeConfig) -> Result<(), ControlError> {
        self.change(|file, o| {
            let name = edge.name.clone();
            if o.apply(file).edges.iter().any(|e| e.name == name) {
                return Err(ControlError::Exists(name));
            }
            o.removed.retain(|n| n != &name);
            o.added.push(edge);
            Ok(())
        })
        .await
    }

    /// Remove an edge, wherever it came from.
    ///
    /// # Errors
    /// [`ControlError::NoEdge`], or [`ControlError::Invalid`] (e.g. a stream
    /// would be left without edges).
    pub async fn remove_edge(&self, name: &str) -> Result<(), ControlError> {
        self.change(|file, o| {
            o.require_edge(file, name)?;
            o.added.retain(|e| e.name != name);
            if file.edges.iter().any(|e| e.name == name) && !o.removed.iter().any(|n| n == name) {
                o.removed.push(name.to_string());
            }
            o.state.remove(name);
            o.weight.remove(name);
            Ok(())
        })
        .await
    }

    /// Drain, disable or enable an edge.
    ///
    /// # Errors
    /// [`ControlError::NoEdge`].
    pub async fn set_state(&self, name: &str, state: AdminState) -> Result<(), ControlError> {
        self.change(|file, o| {
            o.require_edge(file, name)?;
            if state == AdminState::Active {
                o.state.remove(name);
            } else {
                o.state.insert(name.to_string(), state);
            }
            Ok(())
        })
        .await
    }

    /// Set an edge's weight.
    ///
    /// # Errors
    /// [`ControlError::NoEdge`], or [`ControlError::Invalid`] for a weight
    /// that is not a number above 0.
    pub async fn set_weight(&self, name: &str, weight: f64) -> Result<(), ControlError> {
        self.change(|file, o| {
            o.require_edge(file, name)?;
            o.weight.insert(name.to_string(), weight);
            Ok(())
        })
        .await
    }

    /// The effective config's shape (file plus runtime changes), with
    /// secrets replaced by `"<redacted>"`.
    pub async fn effective_file(&self) -> FileConfig {
        let inner = self.inner.lock().await;
        let mut merged = inner.overrides.apply(&inner.file);
        for e in &mut merged.edges {
            if let Some(a) = &mut e.admin {
                a.password = "<redacted>".into();
            }
        }
        merged
    }

    /// Resolve every `discover: dns` entry again; when an address set
    /// changed, publish the new edges at once (unchanged ones keep their
    /// health). A failed lookup keeps the last addresses.
    pub async fn discover(&self) {
        let entries: Vec<EdgeConfig> = {
            let inner = self.inner.lock().await;
            inner
                .overrides
                .apply(&inner.file)
                .edges
                .into_iter()
                .filter(|e| e.discover == Some(Discover::Dns))
                .collect()
        };
        if entries.is_empty() {
            return;
        }
        let mut found = Discovered::new();
        for e in &entries {
            let Ok(url) = url::Url::parse(&e.url) else {
                continue;
            };
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let target = format!("{host}:{port}");
            let lookup = tokio::net::lookup_host(target).await;
            match lookup {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    found.insert(e.name.clone(), ips);
                }
                Err(err) => {
                    tracing::warn!(edge = %e.name, url = %e.url, error = %err, "DNS discovery lookup failed; keeping the last addresses");
                }
            }
        }
        let mut inner = self.inner.lock().await;
        let mut next = inner.discovered.clone();
        next.retain(|name, _| entries.iter().any(|e| &e.name == name));
        for (name, ips) in found {
            next.insert(name, ips);
        }
        if next == inner.discovered {
            return;
        }
        match effective(&inner.file, &inner.overrides, &next) {
            Ok(config) => {
                for (name, ips) in &next {
                    if inner.discovered.get(name) != Some(ips) {
                        tracing::info!(edge = %name, addresses = ?ips, "DNS discovery: addresses changed");
                    }
                }
                inner.discovered = next;
                self.state.publish_config(config).await;
            }
            Err(e) => tracing::error!(error = %e, "DNS discovery result refused"),
        }
    }

    /// The runtime changes now in force.
    pub async fn overrides(&self) -> Overrides {
        self.inner.lock().await.overrides.clone()
    }
}

/// Validate the file with the runtime changes and discovered addresses
/// applied, and set each edge's admin state.
fn effective(
    file: &FileConfig,
    overrides: &Overrides,
    discovered: &Discovered,
) -> Result<Config, ConfigErrors> {
    let mut merged = overrides.apply(file);
    expand_discovered(&mut merged, discovered);
    let mut config = config::validate::validate(&merged, &config::validate::Places::default())?;
    for e in &mut config.edges {
        if let Some(s) = overrides.state.get(&e.name) {
            e.admin_state = *s;
        }
    }
    Ok(config)
}

/// `127.0.0.2` → `127-0-0-2`; `::1` → `--1`: safe in an edge name.
fn address_label(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Replace each `discover: dns` entry with one edge per address found
/// (an entry with no addresses yet stays as it is: polling the name then
/// tells whether it resolves), and stream lists naming the entry with the
/// new names.
fn expand_discovered(merged: &mut FileConfig, discovered: &Discovered) {
    let mut renamed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut edges = Vec::with_capacity(merged.edges.len());
    for e in std::mem::take(&mut merged.edges) {
        let ips = match (e.discover, discovered.get(&e.name)) {
            (Some(Discover::Dns), Some(ips)) if !ips.is_empty() => ips,
            _ => {
                edges.push(e);
                continue;
            }
        };
        let Ok(url) = url::Url::parse(&e.url) else {
            edges.push(e);
            continue;
        };
        let names = renamed.entry(e.name.clone()).or_default();
        for ip in ips {
            let mut d = e.clone();
            d.name = format!("{}-{}", e.name, address_label(ip));
            d.discover = None;
            let mut u = url.clone();
            let _ = u.set_ip_host(*ip);
            d.url = u.to_string();
            if let Some(p) = e
                .public_url
                .as_deref()
                .and_then(|p| url::Url::parse(p).ok())
            {
                if p.host_str() == url.host_str() {
                    let mut p = p;
                    let _ = p.set_ip_host(*ip);
                    d.public_url = Some(p.to_string());
                }
            }
            names.push(d.name.clone());
            edges.push(d);
        }
    }
    merged.edges = edges;
    for s in &mut merged.streams {
        if let Some(list) = &mut s.edges {
            *list = list
                .iter()
                .flat_map(|n| renamed.get(n).cloned().unwrap_or_else(|| vec![n.clone()]))
                .collect();
        }
    }
}

/// Settings a running castgate cannot change: its listeners and process
/// settings. Each difference is an error naming the key.
fn not_live(old: &FileConfig, new: &FileConfig) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut check = |place: &str, changed: bool| {
        if changed {
            out.push(ConfigError {
                place: place.to_string(),
                message: "cannot change while running; restart or upgrade castgate to apply it (nothing was reloaded)".into(),
            });
        }
    };
    check("listen", old.listen != new.listen);
    check("admin.listen", old.admin.listen != new.admin.listen);
    check("server.threads", old.server.threads != new.server.threads);
    check(
        "server.work_stealing",
        old.server.work_stealing != new.server.work_stealing,
    );
    check(
        "server.send_buffer",
        old.server.send_buffer != new.server.send_buffer,
    );
    check(
        "server.grace_period",
        old.server.grace_period != new.server.grace_period,
    );
    check(
        "server.shutdown_timeout",
        old.server.shutdown_timeout != new.server.shutdown_timeout,
    );
    check(
        "sticky.secret_file",
        old.sticky.secret_file != new.sticky.secret_file,
    );
    check(
        "admin.token_file",
        old.admin.token_file != new.admin.token_file,
    );
    // The poller's HTTP client holds the roots it was built with.
    check("poll.ca_file", old.poll.ca_file != new.poll.ca_file);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        config::load_str_with_file(text).unwrap().0
    }

    const BASE: &str = r#"
listen: ["127.0.0.1:1"]
edges:
  - { name: a, kind: icecast, url: "http://a:1" }
  - { name: b, kind: icecast, url: "http://b:1" }
streams:
  - { name: apple, mount: /air, edges: [a, b] }
"#;

    fn extra(name: &str) -> EdgeConfig {
        serde_yaml::from_str(&format!(
            "{{ name: {name}, kind: icecast, url: \"http://{name}:1\" }}"
        ))
        .unwrap()
    }

    #[test]
    fn overrides_apply_and_survive_until_meaningless() {
        let f = file(BASE);
        let mut o = Overrides::default();
        o.added.push(extra("c"));
        o.removed.push("b".into());
        o.state.insert("a".into(), AdminState::Draining);
        o.weight.insert("c".into(), 3.0);
        let c = effective(&f, &o, &Discovered::new()).unwrap();
        let names: Vec<&str> = c.edges.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(c.edges[0].admin_state, AdminState::Draining);
        assert_eq!(c.edges[1].weight, 3.0);
        assert_eq!(c.streams[0].edges, vec![0], "b left the stream's list");

        // The file drops b and defines c itself: those changes are moot.
        let f2 = file(
            &BASE
                .replace(
                    "  - { name: b, kind: icecast, url: \"http://b:1\" }\n",
                    "  - { name: c, kind: icecast, url: \"http://c:2\" }\n",
                )
                .replace("[a, b]", "[a, c]"),
        );
        o.prune(&f2);
        assert!(o.removed.is_empty());
        assert!(o.added.is_empty());
        assert_eq!(
            o.weight.get("c"),
            Some(&3.0),
            "the weight still applies to the file's c"
        );
        let c2 = effective(&f2, &o, &Discovered::new()).unwrap();
        assert_eq!(c2.edges[1].url.as_str(), "http://c:2/");
    }

    #[test]
    fn changes_that_cannot_apply_live_are_named() {
        let a = file(BASE);
        let b = file(&BASE.replace("127.0.0.1:1", "127.0.0.1:2"));
        let errs = not_live(&a, &b);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].place, "listen");
        // Every setting the README says cannot change live, one at a time.
        type Change = fn(&mut FileConfig);
        let changes: [(&str, Change); 10] = [
            ("admin.listen", |f| {
                f.admin.listen = "127.0.0.1:9".parse().unwrap()
            }),
            ("server.threads", |f| f.server.threads += 1),
            ("server.work_stealing", |f| {
                f.server.work_stealing = !f.server.work_stealing
            }),
            ("server.send_buffer", |f| {
                f.server.send_buffer = Some(f.server.send_buffer.unwrap_or(0) + 4096)
            }),
            ("server.grace_period", |f| {
                f.server.grace_period += std::time::Duration::from_secs(1)
            }),
            ("server.shutdown_timeout", |f| {
                f.server.shutdown_timeout += std::time::Duration::from_secs(1)
            }),
            ("sticky.secret_file", |f| {
                f.sticky.secret_file = Some("/etc/castgate/other-secret".into())
            }),
            ("admin.token_file", |f| {
                f.admin.token_file = Some("/etc/castgate/other-token".into())
            }),
            ("poll.ca_file", |f| {
                f.poll.ca_file = Some("/etc/castgate/edges-ca.pem".into())
            }),
            ("listen", |f| f.listen.clear()),
        ];
        for (place, change) in changes {
            let mut c = a.clone();
            change(&mut c);
            let errs = not_live(&a, &c);
            assert_eq!(
                errs.iter().map(|e| e.place.as_str()).collect::<Vec<_>>(),
                [place]
            );
        }
    }

    #[test]
    fn discovered_addresses_become_edges() {
        let f = file(&BASE.replace(
            "  - { name: b, kind: icecast, url: \"http://b:1\" }",
            "  - { name: b, kind: icecast, url: \"http://pool.test:8000\", public_url: \"http://pool.test:8000\", discover: dns }",
        ));
        let mut d = Discovered::new();
        d.insert(
            "b".into(),
            vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
        );
        let c = effective(&f, &Overrides::default(), &d).unwrap();
        let names: Vec<&str> = c.edges.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b-10-0-0-2", "b-10-0-0-3"]);
        assert_eq!(c.edges[1].url.as_str(), "http://10.0.0.2:8000/");
        assert_eq!(c.edges[2].public_url.as_str(), "http://10.0.0.3:8000/");
        assert_eq!(
            c.streams[0].edges,
            vec![0, 1, 2],
            "the stream names the entry: every address"
        );
        // Before the first lookup the entry stands as it is.
        let c = effective(&f, &Overrides::default(), &Discovered::new()).unwrap();
        assert_eq!(c.edges[1].name, "b");
    }

    #[test]
    fn removing_a_streams_last_edge_is_invalid() {
        let f = file(BASE);
        let mut o = Overrides::default();
        o.removed.push("a".into());
        o.removed.push("b".into());
        let err = effective(&f, &o, &Discovered::new()).unwrap_err();
        assert!(err.to_string().contains("streams[0].edges"), "{err}");
    }
}
