//! HLS playlist rewriting (RFC 8216) for `mode: rewrite`.
//!
//! The edge's playlist is answered with every URI made absolute:
//! - media segments, and the `URI` attributes of `EXT-X-KEY`,
//!   `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`
//!   and `EXT-X-SESSION-DATA`: on the edge's `public_url`, so the bytes
//!   come from the edge;
//! - playlists (variant lines after `EXT-X-STREAM-INF`, and the `URI`
//!   attributes of `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF` and
//!   `EXT-X-RENDITION-REPORT`): back through castgate under the session's
//!   token, so every refresh stays on the same edge, is counted, and moves
//!   if that edge fails.
//!
//! Everything else is kept byte for byte, line endings included. This is a
//! line-level transform on purpose: m3u8-rs (used to read playlists in the
//! poller) re-serialises what it parsed and so cannot promise the rest of
//! the bytes unchanged.

use url::Url;

/// Where a rewritten playlist's URIs should point.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The playlist's own URL on the edge's public side: the base that
    /// relative URIs are resolved against.
    pub playlist_url: &'a Url,
    /// The edge's public base (`public_url`); playlists under it are sent
    /// back through castgate.
    pub edge_base: &'a Url,
    /// Root-relative prefix of this session's castgate URLs, e.g.
    /// `/live/s/{token}`; a playlist at `{edge_base}/hls/a.m3u8` becomes
    /// `{session_prefix}/hls/a.m3u8`.
    pub session_prefix: &'a str,
}

/// Tags whose `URI` attribute names a playlist.
const PLAYLIST_TAGS: &[&str] = &[
    "#EXT-X-MEDIA:",
    "#EXT-X-I-FRAME-STREAM-INF:",
    "#EXT-X-RENDITION-REPORT:",
];

/// Tags whose `URI` attribute names media bytes or data.
const MEDIA_TAGS: &[&str] = &[
    "#EXT-X-KEY:",
    "#EXT-X-SESSION-KEY:",
    "#EXT-X-MAP:",
    "#EXT-X-PART:",
    "#EXT-X-PRELOAD-HINT:",
    "#EXT-X-SESSION-DATA:",
];

/// Rewrite a playlist body for `target`.
pub fn rewrite(body: &str, target: &Target<'_>) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 2);
    let mut next_is_variant = false;
    for raw in body.split_inclusive('\n') {
        let (line, eol) = split_eol(raw);
        if line.trim().is_empty() {
            // Blank (whitespace only): players ignore it, so must we; taken
            // for a URI it would resolve to the playlist's own URL.
            out.push_str(raw);
            continue;
        }
        if line.starts_with('#') {
            if line.starts_with("#EXT-X-STREAM-INF:") {
                next_is_variant = true;
            }
            let playlist = PLAYLIST_TAGS.iter().any(|t| line.starts_with(t));
            let media = MEDIA_TAGS.iter().any(|t| line.starts_with(t));
            match (playlist || media)
                .then(|| rewrite_uri_attribute(line, |uri| target.map(uri, playlist)))
                .flatten()
            {
                Some(new) => {
                    out.push_str(&new);
                    out.push_str(eol);
                }
                None => out.push_str(raw),
            }
            continue;
        }
        // A URI line: a variant playlist after EXT-X-STREAM-INF, else a
        // media segment.
        let uri = line.trim();
        match target.map(uri, next_is_variant) {
            Some(new) => {
                out.push_str(&new);
                out.push_str(eol);
            }
            None => out.push_str(raw),
        }
        next_is_variant = false;
    }
    out
}

impl Target<'_> {
    /// The new text of `uri`: a castgate session URL for a playlist on this
    /// edge, else an absolute URL. `None` when it cannot be resolved (kept
    /// as it was).
    fn map(&self, uri: &str, playlist: bool) -> Option<String> {
        let abs = self.playlist_url.join(uri).ok()?;
        if playlist && same_origin(&abs, self.edge_base) {
            let base_path = self.edge_base.path().trim_end_matches('/');
            if let Some(rest) = abs.path().strip_prefix(base_path) {
                if rest.starts_with('/') {
                    let mut s = format!("{}{rest}", self.session_prefix);
                    if let Some(q) = abs.query() {
                        s.push('?');
                        s.push_str(q);
                    }
                    return Some(s);
                }
            }
        }
        Some(abs.into())
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Split a line into content and its line ending (`\r\n`, `\n` or none).
fn split_eol(raw: &str) -> (&str, &str) {
    if let Some(l) = raw.strip_suffix("\r\n") {
        (l, "\r\n")
    } else if let Some(l) = raw.strip_suffix('\n') {
        (l, "\n")
    } else {
        (raw, "")
    }
}

/// Replace the value of the `URI` attribute of a tag line (the attribute
/// named exactly `URI`, not e.g. `X-ASSET-URI`). `None` when there is none.
fn rewrite_uri_attribute(line: &str, map: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut from = 0;
    while let Some(i) = line[from..].find("URI=\"") {
        let at = from + i;
        let before = line[..at].chars().last();
        if matches!(before, Some(':') | Some(',')) {
            let start = at + "URI=\"".len();
            let len = line[start..].find('"')?;
            let new = map(&line[start..start + len])?;
            return Some(format!("{}{}{}", &line[..start], new, &line[start + len..]));
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_for<'a>(playlist: &'a Url, base: &'a Url) -> Target<'a> {
        Target {
            playlist_url: playlist,
            edge_base: base,
            session_prefix: "/live/s/TOKEN",
        }
    }

    #[test]
    fn media_playlist_segments_key_and_map_go_to_the_edge() {
        let body = "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:2\r\n#EXT-X-MEDIA-SEQUENCE:42\r\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x1\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n\
#EXT-X-DATERANGE:ID=\"ad\",START-DATE=\"2026-01-01T00:00:00Z\",X-ASSET-URI=\"keep.me\"\r\n\
#EXTINF:2.000,\r\nstream-42.m4s\r\n#EXTINF:2.000,\r\n/other/stream-43.m4s?x=1\r\n";
        let base = Url::parse("http://b1.example:8080/").unwrap();
        let pl = Url::parse("http://b1.example:8080/hls/stream.m3u8").unwrap();
        let out = rewrite(body, &target_for(&pl, &base));
        let want = "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:2\r\n#EXT-X-MEDIA-SEQUENCE:42\r\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"http://b1.example:8080/hls/key.bin\",IV=0x1\r\n#EXT-X-MAP:URI=\"http://b1.example:8080/hls/init.mp4\"\r\n\
#EXT-X-DATERANGE:ID=\"ad\",START-DATE=\"2026-01-01T00:00:00Z\",X-ASSET-URI=\"keep.me\"\r\n\
#EXTINF:2.000,\r\nhttp://b1.example:8080/hls/stream-42.m4s\r\n#EXTINF:2.000,\r\nhttp://b1.example:8080/other/stream-43.m4s?x=1\r\n";
        assert_eq!(out, want);
    }

    #[test]
    fn master_playlist_variants_and_renditions_come_back_through_castgate() {
        let body =
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",URI=\"audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud\"\nlow/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100000,URI=\"low/iframes.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=2000000\nhttp://cdn.example/hi/index.m3u8\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"/keys/k1\"\n";
        let base = Url::parse("https://b2.example/edge").unwrap();
        let pl = Url::parse("https://b2.example/edge/hls/master.m3u8").unwrap();
        let out = rewrite(body, &target_for(&pl, &base));
        let want = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",URI=\"/live/s/TOKEN/hls/audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud\"\n/live/s/TOKEN/hls/low/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100000,URI=\"/live/s/TOKEN/hls/low/iframes.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=2000000\nhttp://cdn.example/hi/index.m3u8\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"https://b2.example/keys/k1\"\n";
        assert_eq!(out, want);
    }

    /// Found by the `hls` fuzz target: a whitespace-only line became a
    /// segment naming the playlist itself.
    #[test]
    fn blank_lines_stay_blank() {
        let base = Url::parse("http://b1.example:8080/").unwrap();
        let pl = Url::parse("http://b1.example:8080/hls/stream.m3u8").unwrap();
        for body in [
            "#EXTM3U\n\r",
            "#EXTM3U\n   \n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n \t\r\nlow.m3u8\n",
        ] {
            let out = rewrite(body, &target_for(&pl, &base));
            assert!(!out.contains("stream.m3u8"), "{body:?} -> {out:?}");
        }
        assert_eq!(
            rewrite(
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n \nlow.m3u8\n",
                &target_for(&pl, &base)
            ),
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n \n/live/s/TOKEN/hls/low.m3u8\n",
            "a blank line between a variant's tag and its URI keeps it a variant"
        );
    }

    #[test]
    fn non_uri_lines_are_untouched_and_no_final_newline_is_kept() {
        let body =
            "#EXTM3U\n# a comment with URI=\"x\"\n#EXT-X-UNKNOWN:URI=\"y\"\n\n#EXTINF:1,\nseg.ts";
        let base = Url::parse("http://e/").unwrap();
        let pl = Url::parse("http://e/a/p.m3u8").unwrap();
        let out = rewrite(body, &target_for(&pl, &base));
        assert_eq!(out, "#EXTM3U\n# a comment with URI=\"x\"\n#EXT-X-UNKNOWN:URI=\"y\"\n\n#EXTINF:1,\nhttp://e/a/seg.ts");
    }

    /// Every recorded playlist: tag and blank lines byte for byte (unless a
    /// URI attribute changed), URI lines absolute or castgate paths, line
    /// count unchanged.
    #[test]
    fn recorded_playlists_round_trip() {
        let dir = format!("{}/tests/fixtures/hls", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("m3u8") {
                continue;
            }
            seen += 1;
            let body = std::fs::read_to_string(&path).unwrap();
            let base = Url::parse("http://b1.example:8080/").unwrap();
            let pl = Url::parse("http://b1.example:8080/hls/x.m3u8").unwrap();
            let out = rewrite(&body, &target_for(&pl, &base));
            assert_eq!(body.lines().count(), out.lines().count(), "{path:?}");
            assert_eq!(body.ends_with('\n'), out.ends_with('\n'), "{path:?}");
            for (a, b) in body.lines().zip(out.lines()) {
                if a.is_empty() || (a.starts_with('#') && !a.contains("URI=\"")) {
                    assert_eq!(a, b, "{path:?}");
                } else if !a.starts_with('#') {
                    assert!(
                        b.starts_with("http://b1.example:8080/hls/")
                            || b.starts_with("/live/s/TOKEN/hls/"),
                        "{path:?}: {b}"
                    );
                } else {
                    // Only the URI value changed.
                    let tail = |l: &str| l.split("URI=\"").next().map(str::to_string);
                    assert_eq!(tail(a), tail(b), "{path:?}");
                }
            }
            if body.contains("#EXT-X-STREAM-INF") {
                assert!(
                    out.contains("/live/s/TOKEN/hls/"),
                    "{path:?}: variants come back through castgate"
                );
            }
            if body.contains("EXT-X-KEY") || body.contains("EXT-X-MAP") {
                assert!(
                    out.contains("URI=\"http://b1.example:8080/hls/"),
                    "{path:?}"
                );
            }
        }
        assert!(seen >= 5, "fixtures found: {seen}");
    }

    proptest::proptest! {
        #[test]
        fn tag_lines_without_uris_survive_any_text(lines in proptest::collection::vec("#[A-Z-]{1,12}:[ -~]{0,30}", 0..20)) {
            let body = lines.join("\n");
            let base = Url::parse("http://e/").unwrap();
            let pl = Url::parse("http://e/p.m3u8").unwrap();
            let out = rewrite(&body, &target_for(&pl, &base));
            for (a, b) in body.lines().zip(out.lines()) {
                let known = PLAYLIST_TAGS.iter().chain(MEDIA_TAGS).any(|t| a.starts_with(t));
                if !known {
                    proptest::prop_assert_eq!(a, b);
                }
            }
        }
    }
}
