//! The floor under castgate's front door: a bare pingora `ProxyHttp` that
//! answers every request from `request_filter` with the same fixed
//! playlist, one worker thread, no snapshot, metrics or logs. scripts/bench
//! runs it beside castgate so that the table shows how much of castgate's
//! per-request cost is pingora's own.
//!
//! With a second argument `app`, the same answer comes from a plain
//! pingora-core `HttpServerApp` instead, without pingora-proxy's
//! per-request machinery. Both use castgate's listener buffers and
//! allocator, so the difference to castgate is castgate's own work.
//!
//! `cargo run --release --example bare_front -- 127.0.0.1:8080 [app]`

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::protocols::http::ServerSession;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"#EXTM3U\n#EXTINF:-1,apple\nhttp://127.0.0.1:8000/air\n";

struct Bare;

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let mut h = ResponseHeader::build(200, Some(4))?;
        h.insert_header(http::header::CONTENT_TYPE, "audio/x-mpegurl")?;
        h.insert_header(http::header::CONTENT_LENGTH, BODY.len())?;
        h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(BODY)), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(ErrorType::InternalError, "bare_front never proxies")
    }
}

/// The same answer from a plain pingora-core `HttpServerApp`.
struct BareApp;

#[async_trait]
impl HttpServerApp for BareApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        session.set_keepalive(Some(0));
        let mut h = ResponseHeader::build(200, Some(4)).ok()?;
        h.insert_header(http::header::CONTENT_TYPE, "audio/x-mpegurl")
            .ok()?;
        h.insert_header(http::header::CONTENT_LENGTH, BODY.len())
            .ok()?;
        h.insert_header(http::header::CACHE_CONTROL, "no-store")
            .ok()?;
        session.write_response_header(Box::new(h)).await.ok()?;
        session
            .write_response_body(Bytes::from_static(BODY), true)
            .await
            .ok()?;
        let settings = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // As castgate's front door: no 64 KiB read buffer per connection.
    let endpoint = ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings {
        read: Some(0),
        write: None,
    });
    if std::env::args().nth(2).as_deref() == Some("app") {
        let mut service = Service::new("bare app".into(), BareApp);
        service.add_listener(endpoint);
        server.add_service(service);
    } else {
        let mut service = http_proxy_service(&server.configuration, Bare);
        service.add_listener(endpoint);
        server.add_service(service);
    }
    server.run_forever();
}
