//! Cross-origin answers for web players (the Fetch standard's CORS
//! protocol): a station page on its own origin reads playlists and
//! segments through castgate with hls.js.

use crate::config::CorsConfig;
use std::borrow::Cow;

/// The CORS response headers for one request, computed from its `Origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsHeaders {
    /// `Access-Control-Allow-Origin`: `*` or the request's origin.
    pub allow_origin: Option<Cow<'static, str>>,
    /// `Access-Control-Allow-Credentials: true` (only for listed origins).
    pub allow_credentials: bool,
    /// `Vary: Origin` (the answer depends on the origin).
    pub vary_origin: bool,
}

impl CorsHeaders {
    /// Decide the headers for a request from `origin` (its `Origin` header,
    /// if any). With `*` allowed, every answer carries `*` so that caches
    /// and players without `Origin` see the same thing; an origin listed in
    /// `credentials_origins` gets itself back with credentials allowed.
    pub fn for_request(cors: &CorsConfig, origin: Option<&str>) -> CorsHeaders {
        if let Some(o) = origin {
            if cors.credentials_origins.iter().any(|c| c == o) {
                return CorsHeaders {
                    allow_origin: Some(Cow::Owned(o.to_string())),
                    allow_credentials: true,
                    vary_origin: true,
                };
            }
        }
        if cors.allow_origins.iter().any(|a| a == "*") {
            return CorsHeaders {
                allow_origin: Some(Cow::Borrowed("*")),
                allow_credentials: false,
                vary_origin: !cors.credentials_origins.is_empty(),
            };
        }
        match origin {
            Some(o) if cors.allow_origins.iter().any(|a| a == o) => CorsHeaders {
                allow_origin: Some(Cow::Owned(o.to_string())),
                allow_credentials: false,
                vary_origin: true,
            },
            _ => CorsHeaders {
                vary_origin: true,
                ..Default::default()
            },
        }
    }

    /// The headers as name/value pairs, borrowed (nothing is allocated on
    /// the request path).
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        let origin = self.allow_origin.as_deref();
        [
            origin.map(|o| ("Access-Control-Allow-Origin", o)),
            // Players read these on redirects and partial answers.
            origin.map(|_| {
                (
                    "Access-Control-Expose-Headers",
                    "Content-Length, Content-Range, Location",
                )
            }),
            self.allow_credentials
                .then_some(("Access-Control-Allow-Credentials", "true")),
            self.vary_origin.then_some(("Vary", "Origin")),
        ]
        .into_iter()
        .flatten()
    }
}

/// `Access-Control-Allow-Headers` for a preflight: the requested headers
/// when they are plain header names, else a safe default.
pub fn allow_headers(requested: Option<&str>) -> String {
    match requested {
        Some(r)
            if !r.is_empty()
                && r.len() < 512
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b)) =>
        {
            r.to_string()
        }
        _ => "Range".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(allow: &[&str], creds: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: allow.iter().map(|s| s.to_string()).collect(),
            credentials_origins: creds.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn star_by_default_credentials_only_for_listed() {
        let c = cors(&["*"], &["https://radio.example"]);
        let h = CorsHeaders::for_request(&c, Some("https://evil.example"));
        assert_eq!(h.allow_origin.as_deref(), Some("*"));
        assert!(!h.allow_credentials);
        let h = CorsHeaders::for_request(&c, Some("https://radio.example"));
        assert_eq!(h.allow_origin.as_deref(), Some("https://radio.example"));
        assert!(h.allow_credentials && h.vary_origin);
        let h = CorsHeaders::for_request(&c, None);
        assert_eq!(h.allow_origin.as_deref(), Some("*"));
    }

    #[test]
    fn a_list_allows_only_its_origins() {
        let c = cors(&["https://a.example"], &[]);
        assert_eq!(
            CorsHeaders::for_request(&c, Some("https://a.example"))
                .allow_origin
                .as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            CorsHeaders::for_request(&c, Some("https://b.example")).allow_origin,
            None
        );
        assert_eq!(allow_headers(Some("range, x-foo")), "range, x-foo");
        assert_eq!(allow_headers(Some("a\r\nb")), "Range");
    }
}
