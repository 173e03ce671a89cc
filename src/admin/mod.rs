//! The admin listener: `GET /metrics` (Prometheus text format 0.0.4) and
//! `GET /status.json` (see [`status`]). Plain HTTP, meant for loopback or a
//! management network; it changes nothing.

pub mod api;
pub mod status;

use crate::control::Control;
use crate::state::State;
use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The status page: one self-contained HTML file (no external assets).
pub const PAGE: &str = include_str!("page.html");

/// Largest admin request body read, bytes.
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP application.
pub struct Admin {
    state: Arc<State>,
    control: Arc<Control>,
}

impl Admin {
    /// An admin app reading `state`, changing things through `control`.
    pub fn new(state: Arc<State>, control: Arc<Control>) -> Self {
        Admin { state, control }
    }

    /// Answer one request: method and path in, full response out.
    pub fn answer(&self, method: &Method, path: &str) -> Response<Vec<u8>> {
        if method != Method::GET && method != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                b"405 only GET\n".to_vec(),
            );
        }
        match path {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.state.metrics.render(),
            ),
            "/status.json" => {
                let snap = self.state.snapshot.load();
                match serde_json::to_vec_pretty(&status::status(&snap, &self.state.carrying)) {
                    Ok(mut body) => {
                        body.push(b'\n');
                        reply(StatusCode::OK, "application/json", body)
                    }
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        format!("500 {e}\n").into_bytes(),
                    ),
                }
            }
            "/" | "/index.html" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                PAGE.as_bytes().to_vec(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"404 not found\n".to_vec(),
            ),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        let mut too_large = false;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > MAX_BODY {
                too_large = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if too_large {
            session.set_keepalive(None);
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                b"{\"error\":\"body over 64 KiB\"}\n".to_vec(),
            );
        }
        if path == "/api" || path.starts_with("/api/") {
            let (status, value) = api::handle(
                &self.state,
                &self.control,
                &method,
                &path,
                authorization.as_deref(),
                &body,
            )
            .await;
            let mut out = serde_json::to_vec_pretty(&value).unwrap_or_default();
            out.push(b'\n');
            let mut r = reply(status, "application/json", out);
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"castgate\""),
                );
            }
            return r;
        }
        self.answer(&method, &path)
    }
}
