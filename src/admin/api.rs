//! The admin API (JSON), on the admin listener.
//!
//! | call | effect |
//! |---|---|
//! | `GET /api/edges` | every edge: config, operator state, health, load |
//! | `GET /api/edges/{name}` | one edge |
//! | `POST /api/edges` | add an edge; body: an `edges[]` entry as JSON |
//! | `DELETE /api/edges/{name}` | remove an edge |
//! | `POST /api/edges/{name}/drain` | no new listeners; those there stay |
//! | `POST /api/edges/{name}/disable` | out of rotation; HLS sessions move |
//! | `POST /api/edges/{name}/enable` | back in rotation |
//! | `POST /api/edges/{name}/evacuate` | disable (HLS sessions move at their next request), and move every proxied stream castgate relays from it to other edges (`failover.evacuate_rate` a second, no listener cut); answers `{"edge", "state", "moving": N}` at once |
//! | `PUT /api/edges/{name}/weight` | body `{"weight": 2.5}` |
//! | `GET /api/config` | the effective config (file + runtime changes) |
//! | `POST /api/reload` | re-read the config file now |
//!
//! Mutating calls need `Authorization: Bearer <token>` (`admin.token_file`):
//! without a configured token they are disabled (403), with a wrong or
//! missing one they get 401. On a non-loopback admin listener they are
//! refused (403) unless `admin.allow_remote` is set: the listener is plain
//! HTTP. Answers are JSON; errors are
//! `{"error": "...", "errors": [...]}`.

use crate::admin::status;
use crate::config::schema::EdgeConfig;
use crate::config::AdminState;
use crate::control::{Control, ControlError, ReloadOutcome};
use crate::state::State;
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// One API answer: status and JSON body.
pub type Reply = (StatusCode, Value);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, json!({ "error": message.into() }))
}

/// Compare secrets in constant time (subtle's `ConstantTimeEq`: no early
/// exit on the first differing byte, and no branch the compiler may add).
/// A length mismatch answers at once; the length of the token is not
/// treated as secret.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Whether `authorization` (the header's value) carries the configured
/// token. `Err` is the refusal to send.
pub fn authorize(token: Option<&str>, authorization: Option<&str>) -> Result<(), Reply> {
    let Some(token) = token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "mutating calls are disabled: set admin.token_file to enable them",
        ));
    };
    let given = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same_secret(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer token is needed",
        )),
    }
}

fn control_error(e: ControlError) -> Reply {
    match e {
        ControlError::NoEdge(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        ControlError::Exists(_) => error(StatusCode::CONFLICT, e.to_string()),
        ControlError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": "the change would make an invalid config; nothing was changed",
                "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            }),
        ),
    }
}

/// The JSON view of every edge, from the status document plus config.
fn edges_json(state: &State) -> Vec<Value> {
    let snap = state.snapshot.load();
    let doc = status::status(&snap, &state.carrying);
    doc.edges
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect()
}

/// Answer one `/api/...` request. `authorization` is the header's value;
/// `body` the request body (at most 64 KiB, read by the caller).
pub async fn handle(
    state: &State,
    control: &Control,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Reply {
    let rest = path.trim_start_matches("/api").trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (token, remote_refused) = {
        let config = &state.snapshot.load().config;
        (
            config.admin_token.clone(),
            !config.admin_listen.ip().is_loopback() && !config.admin_allow_remote,
        )
    };
    let mutating = !matches!(*method, Method::GET | Method::HEAD);
    if mutating && remote_refused {
        return error(
            StatusCode::FORBIDDEN,
            "mutating calls are refused on a non-loopback plain-HTTP admin listener; set admin.allow_remote to allow them",
        );
    }
    if mutating {
        if let Err(refusal) = authorize(token.as_deref(), authorization) {
            return refusal;
        }
    }
    let (action, reply) = match (method.clone(), parts.as_slice()) {
        (Method::GET, ["edges"]) => return (StatusCode::OK, Value::Array(edges_json(state))),
        (Method::GET, ["edges", name]) => {
            return edges_json(state)
                .into_iter()
                .find(|e| e["name"] == *name)
                .map(|e| (StatusCode::OK, e))
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, format!("no edge named `{name}`")))
        }
        (Method::GET, ["config"]) => {
            let file = control.effective_file().await;
            let o = control.overrides().await;
            return (
                StatusCode::OK,
                json!({
                    "config": file,
                    "runtime": {
                        "added": o.added.iter().map(|e| &e.name).collect::<Vec<_>>(),
                        "removed": o.removed,
                        "state": o.state,
                        "weight": o.weight,
                    },
                    "file": control.path().display().to_string(),
                }),
            );
        }
        (Method::POST, ["edges"]) => {
            let edge: EdgeConfig = match serde_json::from_slice(body) {
                Ok(e) => e,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("body is not an edge: {e}"))
                }
            };
            let name = edge.name.clone();
            let r = match control.add_edge(edge).await {
                Ok(()) => (StatusCode::CREATED, json!({ "added": name })),
                Err(e) => control_error(e),
            };
            ("add", r)
        }
        (Method::DELETE, ["edges", name]) => {
            let r = match control.remove_edge(name).await {
                Ok(()) => (StatusCode::OK, json!({ "removed": name })),
                Err(e) => control_error(e),
            };
            ("remove", r)
        }
        (Method::POST, ["edges", name, verb @ ("drain" | "enable" | "disable")]) => {
            let to = match *verb {
                "drain" => AdminState::Draining,
                "disable" => AdminState::Disabled,
                _ => AdminState::Active,
            };
            let r = match control.set_state(name, to).await {
                Ok(()) => (
                    StatusCode::OK,
                    json!({ "edge": name, "state": to.as_str() }),
                ),
                Err(e) => control_error(e),
            };
            (*verb, r)
        }
        (Method::POST, ["edges", name, "evacuate"]) => {
            // Out of rotation (no new listeners, and HLS sessions move at
            // their next request), then the relayed streams move now.
            let r = match control.set_state(name, AdminState::Disabled).await {
                Ok(()) => {
                    let rate = state.snapshot.load().config.failover.evacuate_rate;
                    let moving = state.carrying.evacuate(name, rate);
                    (
                        StatusCode::OK,
                        json!({ "edge": name, "state": "disabled", "moving": moving }),
                    )
                }
                Err(e) => control_error(e),
            };
            ("evacuate", r)
        }
        (Method::PUT, ["edges", name, "weight"]) => {
            let weight = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v.as_f64()
                    .or_else(|| v.get("weight").and_then(Value::as_f64))
            });
            let r = match weight {
                None => error(StatusCode::BAD_REQUEST, "body must be {\"weight\": NUMBER}"),
                Some(w) => match control.set_weight(name, w).await {
                    Ok(()) => (StatusCode::OK, json!({ "edge": name, "weight": w })),
                    Err(e) => control_error(e),
                },
            };
            ("weight", r)
        }
        (Method::POST, ["reload"]) => {
            let outcome = control.reload().await;
            let r = match &outcome {
                ReloadOutcome::Applied | ReloadOutcome::Unchanged => {
                    (StatusCode::OK, json!({ "outcome": outcome.label() }))
                }
                ReloadOutcome::Invalid(errors) | ReloadOutcome::Refused(errors) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "outcome": outcome.label(),
                        "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    }),
                ),
            };
            ("reload", r)
        }
        (_, ["edges"] | ["edges", _] | ["edges", _, _] | ["config"] | ["reload"]) => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here"),
            )
        }
        _ => return error(StatusCode::NOT_FOUND, format!("no API call at {path}")),
    };
    state
        .metrics
        .api_changes
        .with_label_values(&[action, reply.0.as_str()])
        .inc();
    tracing::info!(action, path, code = reply.0.as_u16(), "admin API change");
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain_on(admin_extra: &str) -> StatusCode {
        let mut token = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut token, b"0123456789abcdef0123").unwrap();
        let text = format!(
            "listen: [\"127.0.0.1:1\"]\nadmin: {{ listen: \"0.0.0.0:2\", token_file: \"{}\"{admin_extra} }}\nedges:\n  - {{ name: a, kind: icecast, url: \"http://a:1\" }}\nstreams:\n  - {{ name: apple, mount: /air }}\n",
            token.path().display()
        );
        let (file, config) = crate::config::load_str_with_file(&text).unwrap();
        let (state, _table) = State::new(config).unwrap();
        let control = Control::new(state.clone(), "/nonexistent".into(), file, text);
        let (code, _) = handle(
            &state,
            &control,
            &Method::POST,
            "/api/edges/a/drain",
            Some("Bearer 0123456789abcdef0123"),
            b"",
        )
        .await;
        code
    }

    #[tokio::test]
    async fn remote_plain_http_admin_refuses_changes_unless_allowed() {
        assert_eq!(drain_on("").await, StatusCode::FORBIDDEN);
        assert_eq!(drain_on(", allow_remote: true").await, StatusCode::OK);
    }

    #[test]
    fn tokens() {
        assert_eq!(
            authorize(None, Some("Bearer x")).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        let t = Some("0123456789abcdef");
        assert!(authorize(t, Some("Bearer 0123456789abcdef")).is_ok());
        assert_eq!(
            authorize(t, Some("Bearer 0123456789abcdeX")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(authorize(t, None).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            authorize(t, Some("Basic abc")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
    }
}
