//! The admin listener: `GET /metrics` (Prometheus text format 0.0.4) and
//! `GET /status.json` (see [`status`]). Plain HTTP, meant for loopback or a
//! management network; it changes nothing.

pub mod status;

use crate::state::State;
use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin HTTP application.
pub struct Admin {
    state: Arc<State>,
}

impl Admin {
    /// An admin app reading `state`.
    pub fn new(state: Arc<State>) -> Self {
        Admin { state }
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
                match serde_json::to_vec_pretty(&status::status(&snap)) {
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
            "/" => reply(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"castgate admin: /status.json /metrics\n".to_vec(),
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
        // The request body is ignored; read it so keep-alive stays usable.
        let _ = session.drain_request_body().await;
        self.answer(&method, &path)
    }
}
