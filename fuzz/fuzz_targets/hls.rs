//! HLS playlists: the poller's freshness probe (`observe`, m3u8-rs inside)
//! never panics on any body, and the rewriter (`rewrite`, rewrite mode)
//! keeps a playlist a playlist, with the invariants of tests/properties.rs:
//! a body m3u8-rs reads as a media playlist comes out with as many lines
//! and still reads as a media playlist with as many segments; one it reads
//! as a master playlist still reads as one. Bodies that are not UTF-8 only
//! reach `observe` (the rewriter takes text).
//!
//! The comparison needs m3u8-rs to read the body line by line, as RFC 8216
//! and the rewriter do. m3u8-rs is lenient beyond the RFC: a quoted
//! attribute or an `EXTINF` without its comma runs on into the next lines,
//! and a CR not before an LF splits lines; on such bodies its reading
//! before and after says nothing about the rewriter. So the comparison is
//! made only when the segment (media) or variant (master) URIs m3u8-rs
//! reads are the body's URI lines, one for one; no line holds a CR other
//! than its CRLF end (the URL parser drops such a CR from a URI, which
//! changes m3u8-rs's lines); and no URI line holds a double quote (no URI
//! has one, RFC 3986; the rewriter percent-encodes it, which changes where
//! m3u8-rs's quoted attributes end). Reproducers in
//! fuzz/regressions/hls/: uri-line-closes-multiline-quoted-attribute,
//! stray-cr-before-crlf, extinf-without-comma-runs-on.
//!
//! This target found that the rewriter turned a whitespace-only line into
//! the playlist's own URL (a segment that was not there), fixed in
//! src/front/hls.rs: fuzz/regressions/hls/blank-line-becomes-segment*.
#![no_main]

use castgate::front::hls::{rewrite, Target};
use castgate::poll::hls::observe;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use url::Url;

/// An edge as the rewriter sees it: the playlist's own URL and the edge's
/// public base.
struct Edge {
    playlist_url: Url,
    edge_base: Url,
}

/// The edge of tests/properties.rs (base at the root), and one whose base
/// has a path (as in src/front/hls.rs's unit tests), so that both sides of
/// the "playlist under the edge's base" decision are reached.
static EDGES: LazyLock<Vec<Edge>> = LazyLock::new(|| {
    [
        (
            "http://edge1.example:8080/hls/stream.m3u8",
            "http://edge1.example:8080/",
        ),
        (
            "https://b2.example/edge/hls/master.m3u8",
            "https://b2.example/edge",
        ),
    ]
    .iter()
    .filter_map(|(playlist, base)| {
        Some(Edge {
            playlist_url: Url::parse(playlist).ok()?,
            edge_base: Url::parse(base).ok()?,
        })
    })
    .collect()
});

/// The lines of `text` without their ends (LF or CRLF), as the rewriter and
/// RFC 8216 §4.1 split them.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n').map(|raw| {
        raw.strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(raw)
    })
}

/// Lines the rewriter and RFC 8216 §4.1 take for URIs: not blank, not
/// starting with `#`.
fn uri_lines(text: &str) -> Vec<&str> {
    lines(text)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether the URIs m3u8-rs read are the URI lines, one for one (trimmed
/// or not).
fn line_by_line<'a>(read: impl ExactSizeIterator<Item = &'a str>, lines: &[&str]) -> bool {
    read.len() == lines.len() && read.zip(lines).all(|(u, l)| u == *l || u == l.trim())
}

fuzz_target!(|body: &[u8]| {
    let _ = observe(body);
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let uris = uri_lines(text);
    let quoted_uri_line = uris.iter().any(|l| l.contains('"'));
    let stray_cr = lines(text).any(|l| l.contains('\r'));
    let comparable = !quoted_uri_line && !stray_cr;
    let media_before = m3u8_rs::parse_media_playlist_res(body)
        .ok()
        .filter(|m| comparable && line_by_line(m.segments.iter().map(|s| s.uri.as_str()), &uris));
    let master_before = m3u8_rs::parse_master_playlist_res(body).is_ok_and(|m| {
        let variants: Vec<&str> = m
            .variants
            .iter()
            .filter(|v| !v.is_i_frame)
            .map(|v| v.uri.as_str())
            .collect();
        comparable && line_by_line(variants.into_iter(), &uris)
    });
    for edge in EDGES.iter() {
        let out = rewrite(
            text,
            &Target {
                playlist_url: &edge.playlist_url,
                edge_base: &edge.edge_base,
                session_prefix: "/live/s/TOKEN",
            },
        );
        if let Some(before) = &media_before {
            assert_eq!(
                text.lines().count(),
                out.lines().count(),
                "line count changed\n--- in:\n{text:?}\n--- out:\n{out:?}"
            );
            match m3u8_rs::parse_media_playlist_res(out.as_bytes()) {
                Ok(after) => assert_eq!(
                    before.segments.len(),
                    after.segments.len(),
                    "segment count changed\n--- in:\n{text:?}\n--- out:\n{out:?}"
                ),
                Err(e) => panic!(
                    "media playlist no longer parses: {e}\n--- in:\n{text:?}\n--- out:\n{out:?}"
                ),
            }
        }
        if master_before {
            if let Err(e) = m3u8_rs::parse_master_playlist_res(out.as_bytes()) {
                panic!(
                    "master playlist no longer parses: {e}\n--- in:\n{text:?}\n--- out:\n{out:?}"
                );
            }
        }
    }
});
