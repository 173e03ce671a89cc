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
//!
//! Also here, for sessions that move between edges which cut their own
//! segments: [`renumber`] applies a session's [`Timeline`] (RFC 8216
//! §6.2.2: numbers only grow, a change of timeline is marked with
//! `EXT-X-DISCONTINUITY`), [`timeline_for_move`] makes one from where the
//! player was ([`Answered`] remembers it), and [`steered`] and
//! [`steering_manifest`] make HLS Content Steering's multivariant playlist
//! and manifest (HLS Content Steering 1.2).

use crate::balance::sticky::Timeline;
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

/// Where a media playlist ends: the Media Sequence Number of its last
/// segment and that segment's Discontinuity Sequence Number (RFC 8216
/// §4.3.3.2, §4.3.3.3: the header's numbers, plus one per segment and per
/// `EXT-X-DISCONTINUITY` before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Media Sequence Number of the newest segment.
    pub last: u64,
    /// Discontinuity Sequence Number of the newest segment.
    pub disc: u64,
}

/// Tags that belong to the segment after them and go with it when it is
/// left out (RFC 8216bis §4.4.4).
const SEGMENT_TAGS: &[&str] = &[
    "#EXTINF:",
    "#EXT-X-BYTERANGE:",
    "#EXT-X-DISCONTINUITY",
    "#EXT-X-PROGRAM-DATE-TIME:",
    "#EXT-X-GAP",
    "#EXT-X-BITRATE:",
    "#EXT-X-PART:",
];

/// Whether a tag line is `EXT-X-DISCONTINUITY` itself (not its `-SEQUENCE`).
fn is_discontinuity(line: &str) -> bool {
    line.trim_end() == "#EXT-X-DISCONTINUITY"
}

/// The header value of tag `name` (`#EXT-X-MEDIA-SEQUENCE:` ...), if any.
fn header_number(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// Every segment of a media playlist as (Media Sequence Number,
/// Discontinuity Sequence Number), oldest first; empty for a multivariant
/// playlist.
pub fn numbers(body: &str) -> Vec<Position> {
    if !body.contains("#EXTINF:") {
        return Vec::new();
    }
    let mut seq = header_number(body, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
    let mut disc = header_number(body, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if is_discontinuity(line) {
            disc += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push(Position { last: seq, disc });
            seq += 1;
        }
    }
    out
}

/// Where a media playlist ends; `None` for a multivariant playlist or one
/// without segments. (The last of [`numbers`], without collecting them: it
/// runs on every rewritten playlist.)
pub fn position(body: &str) -> Option<Position> {
    if !body.contains("#EXTINF:") {
        return None;
    }
    let mut seq = header_number(body, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
    let mut disc = header_number(body, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
    let mut last = None;
    for line in body.lines() {
        let line = line.trim();
        if is_discontinuity(line) {
            disc += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            last = Some(Position { last: seq, disc });
            seq += 1;
        }
    }
    last
}

/// `EXT-X-TARGETDURATION` of a media playlist, whole seconds (at least 1).
pub fn target_duration(body: &str) -> Option<u64> {
    header_number(body, "#EXT-X-TARGETDURATION:").map(|t| t.max(1))
}

/// The timeline for a session that leaves an edge where its player last saw
/// `seen` (in the numbers castgate answered) `behind` segments ago, for an
/// edge whose playlist has segments `to` (oldest first, from [`numbers`]):
/// the new edge's segment `behind` before its newest (or its oldest) is
/// answered as `seen.last + 1`, after a discontinuity. The player goes on
/// from about where it was in time, with the latency it had, rather than
/// jumping to the new edge's live edge; its numbers only grow.
pub fn timeline_for_move(seen: Position, to: &[Position], behind: u64) -> Option<Timeline> {
    let wide = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let back = usize::try_from(behind).unwrap_or(usize::MAX);
    let at = to.len().checked_sub(1)?.saturating_sub(back);
    let first = to.get(at)?;
    Some(Timeline {
        first: first.last,
        seq: wide(seen.last)
            .saturating_add(1)
            .saturating_sub(wide(first.last)),
        disc: wide(seen.disc)
            .saturating_add(1)
            .saturating_sub(wide(first.disc)),
    })
}

/// The timeline that changes nothing.
pub const UNCHANGED: Timeline = Timeline {
    first: 0,
    seq: 0,
    disc: 0,
};

/// The timeline for a pathway of a steered session: the pathway's newest
/// segment (`theirs`) numbered `target.last`, nothing left out, and its
/// Discontinuity Sequence Numbers `place` past `target.disc`, so each
/// pathway is a timeline of its own (place 0: the session's edge).
pub fn timeline_aligned(target: Position, theirs: Position, place: i64) -> Timeline {
    let wide = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Timeline {
        first: 0,
        seq: wide(target.last).saturating_sub(wide(theirs.last)),
        disc: wide(target.disc)
            .saturating_add(place)
            .saturating_sub(wide(theirs.disc)),
    }
}

/// A media playlist renumbered by `timeline` (see [`Timeline`]): segments
/// before `timeline.first` left out with their own tags, the rest numbered
/// `s + seq`, `EXT-X-DISCONTINUITY` before `first`, and
/// `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE` (placed right
/// after `#EXTM3U`) saying so. Other lines are kept byte for byte. `None`
/// for a multivariant playlist, or when no segment is at or after `first`
/// (the edge restarted its numbering: the timeline no longer applies).
pub fn renumber(body: &str, timeline: &Timeline) -> Option<String> {
    if !body.contains("#EXTINF:") {
        return None;
    }
    let seq0 = header_number(body, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
    let mut own_disc = header_number(body, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
    let mut out = String::with_capacity(body.len());
    let mut pending: Vec<&str> = Vec::new();
    let mut pending_disc = false;
    let mut index = 0u64;
    // (first answered segment's edge number, its disc number, whether a
    // DISCONTINUITY tag was written right before it)
    let mut first_shown: Option<(u64, u64, bool)> = None;
    let mut eol = "\n";
    for raw in body.split_inclusive('\n') {
        let (line, e) = split_eol(raw);
        if !e.is_empty() {
            eol = e;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("#EXT-X-MEDIA-SEQUENCE:")
            || trimmed.starts_with("#EXT-X-DISCONTINUITY-SEQUENCE:")
        {
            continue;
        }
        if trimmed.starts_with('#') {
            if SEGMENT_TAGS.iter().any(|t| trimmed.starts_with(t))
                && !trimmed.starts_with("#EXT-X-DISCONTINUITY-")
            {
                if is_discontinuity(trimmed) {
                    own_disc += 1;
                    pending_disc = true;
                }
                pending.push(raw);
            } else {
                out.push_str(raw);
            }
            continue;
        }
        if trimmed.is_empty() {
            out.push_str(raw);
            continue;
        }
        let s = seq0 + index;
        index += 1;
        if s >= timeline.first {
            let inject = s == timeline.first;
            if inject {
                out.push_str("#EXT-X-DISCONTINUITY");
                out.push_str(eol);
            }
            for l in pending.drain(..) {
                if !(inject && is_discontinuity(l.trim())) {
                    out.push_str(l);
                }
            }
            if first_shown.is_none() {
                first_shown = Some((s, own_disc, inject || pending_disc));
            }
            out.push_str(raw);
        }
        pending.clear();
        pending_disc = false;
    }
    for l in pending {
        out.push_str(l);
    }
    let (s0, disc0, tagged) = first_shown?;
    let shift = |n: u64, by: i64| {
        i64::try_from(n)
            .unwrap_or(i64::MAX)
            .saturating_add(by)
            .max(0)
    };
    let media_sequence = shift(s0, timeline.seq);
    let disc_sequence = (shift(disc0, timeline.disc) - i64::from(tagged)).max(0);
    let header = format!(
        "#EXT-X-MEDIA-SEQUENCE:{media_sequence}{eol}#EXT-X-DISCONTINUITY-SEQUENCE:{disc_sequence}{eol}"
    );
    let at = out.find('\n').map_or(out.len(), |i| i + 1);
    out.insert_str(at, &header);
    Some(out)
}

/// How long [`Answered`] remembers a session after its last playlist: at
/// least half of this, at most all of it.
pub const REMEMBER_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Sessions [`Answered`] remembers at most.
pub const MAX_REMEMBERED: usize = 100_000;

/// Where castgate's last answered media playlist of each rewrite-mode
/// session ended (in the numbers the player saw), so that a move to an
/// edge with other segment numbers can continue them
/// ([`timeline_for_move`]), and the timeline each move gave it (a player
/// that keeps asking its old URL after the `302` gets the same one again).
/// In memory, per instance: a session that moves on an instance that never
/// answered it moves without a timeline, as before. The timeline, once
/// made, travels in the session's token.
///
/// Two generations of a map: sessions are written to the current one;
/// when it holds half of [`MAX_REMEMBERED`] or is half of [`REMEMBER_FOR`]
/// old it becomes the previous one and the old previous is dropped; a
/// session found only in the previous one moves back to the current. Every
/// call is O(1) under one short lock.
#[derive(Debug, Default)]
pub struct Answered {
    inner: std::sync::Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: std::collections::HashMap<u64, Remembered>,
    previous: std::collections::HashMap<u64, Remembered>,
    /// When `current` became current; `None` before the first write.
    since: Option<std::time::Instant>,
}

#[derive(Debug, Clone, Default)]
struct Remembered {
    seen: Option<(Position, std::time::Instant)>,
    /// The session's last move, (from, to), and the timeline it got: given
    /// again to a player that asks its old URL after the `302`. A later move
    /// replaces it, so a move back and forth is computed afresh.
    last_move: Option<(std::sync::Arc<str>, std::sync::Arc<str>, Timeline)>,
}

impl Generations {
    fn get(&self, session: u64) -> Option<&Remembered> {
        self.current
            .get(&session)
            .or_else(|| self.previous.get(&session))
    }

    /// The session's entry in the current generation, made or moved there.
    fn entry(&mut self, session: u64, now: std::time::Instant) -> &mut Remembered {
        let old = self
            .since
            .is_none_or(|t| now.duration_since(t) >= REMEMBER_FOR / 2);
        if old || self.current.len() >= MAX_REMEMBERED / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.since = Some(now);
        }
        if !self.current.contains_key(&session) {
            let moved = self.previous.remove(&session).unwrap_or_default();
            self.current.insert(session, moved);
        }
        self.current.entry(session).or_default()
    }
}

impl Answered {
    fn with<T>(&self, f: impl FnOnce(&mut Generations) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Session `session` was just answered a media playlist ending at
    /// `seen`.
    pub fn record(&self, session: u64, seen: Position) {
        let now = std::time::Instant::now();
        self.with(|g| g.entry(session, now).seen = Some((seen, now)));
    }

    /// Where the last answer to `session` ended, and when it was given, if
    /// remembered.
    pub fn seen(&self, session: u64) -> Option<(Position, std::time::Instant)> {
        self.with(|g| g.get(session).and_then(|r| r.seen))
    }

    /// The timeline `session` got when it last moved, if that move was
    /// from `from` to `to`.
    pub fn moved_to(&self, session: u64, from: &str, to: &str) -> Option<Timeline> {
        self.with(|g| {
            g.get(session)
                .and_then(|r| r.last_move.as_ref())
                .filter(|(f, t, _)| &**f == from && &**t == to)
                .map(|(_, _, timeline)| *timeline)
        })
    }

    /// `session` moved from `from` to `to` with `timeline`.
    pub fn record_move(
        &self,
        session: u64,
        from: std::sync::Arc<str>,
        to: std::sync::Arc<str>,
        timeline: Timeline,
    ) {
        let now = std::time::Instant::now();
        self.with(|g| g.entry(session, now).last_move = Some((from, to, timeline)));
    }

    /// Sessions remembered now (both generations).
    pub fn len(&self) -> usize {
        self.with(|g| g.current.len() + g.previous.len())
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One pathway of a steered multivariant playlist (HLS Content Steering
/// 1.2, RFC 8216bis §4.4.6.6): an edge, and where its copy's URIs point.
#[derive(Debug, Clone)]
pub struct Pathway<'a> {
    /// `PATHWAY-ID`: the edge's name (`[a-z0-9_-]+`, a legal Pathway ID).
    pub id: &'a str,
    /// Where this pathway's URIs point, as for [`rewrite`]: its session
    /// prefix carries a token for this edge.
    pub target: Target<'a>,
}

/// Tags that are entries of a multivariant playlist, repeated per pathway.
const ENTRY_TAGS: &[&str] = &[
    "#EXT-X-STREAM-INF:",
    "#EXT-X-I-FRAME-STREAM-INF:",
    "#EXT-X-MEDIA:",
];

/// Attributes of `EXT-X-STREAM-INF` and `EXT-X-I-FRAME-STREAM-INF` that name
/// a rendition group (RFC 8216bis §4.4.6.2).
const GROUP_REFS: &[&str] = &["AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"];

/// A multivariant playlist steered between `pathways` (the first is the
/// session's edge): `#EXT-X-CONTENT-STEERING` naming `server_uri` and the
/// first pathway, then every variant and rendition once per pathway with
/// `PATHWAY-ID` and that pathway's URIs. Rendition groups get the pathway
/// as a suffix (`GROUP-ID="aud"` → `"aud-b"`, and the variants' references
/// with them), so a player applying a pathway uses its renditions only.
///
/// `edge_body` is the edge's own playlist at the stream's path: a
/// multivariant playlist is repeated per pathway (its session-level tags
/// once); a media playlist (nginx-rtmp without variants) gets one variant
/// per pathway made around it: `BANDWIDTH` = `bandwidth` bits/s, URI = the
/// pathway's session prefix + `path`.
pub fn steered(
    edge_body: &str,
    path: &str,
    bandwidth: u64,
    pathways: &[Pathway<'_>],
    server_uri: &str,
) -> String {
    let mut out = String::from("#EXTM3U\n");
    let first = pathways.first().map_or("", |p| p.id);
    let steering =
        format!("#EXT-X-CONTENT-STEERING:SERVER-URI=\"{server_uri}\",PATHWAY-ID=\"{first}\"\n");
    if position(edge_body).is_some() || !edge_body.contains("#EXT-X-STREAM-INF:") {
        out.push_str(&steering);
        for p in pathways {
            out.push_str(&format!(
                "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},PATHWAY-ID=\"{}\"\n{}{path}\n",
                p.id, p.target.session_prefix
            ));
        }
        return out;
    }
    for (n, p) in pathways.iter().enumerate() {
        let copy = rewrite(edge_body, &p.target);
        let mut lines = copy.lines().peekable();
        while let Some(line) = lines.next() {
            let line = line.trim_end();
            if line.starts_with("#EXTM3U") || line.starts_with("#EXT-X-CONTENT-STEERING:") {
                continue;
            }
            if ENTRY_TAGS.iter().any(|t| line.starts_with(t)) {
                let mut tag = with_pathway(line, p.id);
                if line.starts_with("#EXT-X-STREAM-INF:") {
                    // Its URI is the next line that is neither blank nor a tag.
                    while lines
                        .peek()
                        .is_some_and(|l| l.trim().is_empty() || l.starts_with('#'))
                    {
                        lines.next();
                    }
                    if let Some(uri) = lines.next() {
                        tag.push('\n');
                        tag.push_str(uri.trim());
                    }
                }
                out.push_str(&tag);
                out.push('\n');
            } else if n == 0 && !line.trim().is_empty() {
                // Session-level tags (VERSION, INDEPENDENT-SEGMENTS, START,
                // SESSION-DATA, SESSION-KEY, DEFINE ...): once, before the
                // entries of the first pathway.
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    // The steering tag right after #EXTM3U (tag order does not matter in a
    // multivariant playlist; keeping it first keeps it easy to find).
    out.insert_str("#EXTM3U\n".len(), &steering);
    out
}

/// An entry line for `pathway`: `PATHWAY-ID` set on variants, and rendition
/// group names (`GROUP-ID` and the variants' references) suffixed.
fn with_pathway(line: &str, pathway: &str) -> String {
    let is_media = line.starts_with("#EXT-X-MEDIA:");
    let mut line = line.to_string();
    let names: &[&str] = if is_media { &["GROUP-ID"] } else { GROUP_REFS };
    for name in names {
        if let Some(new) = map_quoted(&line, name, |g| format!("{g}-{pathway}")) {
            line = new;
        }
    }
    if !is_media {
        line = match map_quoted(&line, "PATHWAY-ID", |_| pathway.to_string()) {
            Some(replaced) => replaced,
            None => format!("{line},PATHWAY-ID=\"{pathway}\""),
        };
    }
    line
}

/// `line` with the quoted value of attribute `name` (exactly that name)
/// mapped by `f`; `None` when it has none.
fn map_quoted(line: &str, name: &str, f: impl Fn(&str) -> String) -> Option<String> {
    let key = format!("{name}=\"");
    let mut from = 0;
    while let Some(i) = line[from..].find(&key) {
        let at = from + i;
        if matches!(line[..at].chars().last(), Some(':') | Some(',')) {
            let start = at + key.len();
            let len = line[start..].find('"')?;
            return Some(format!(
                "{}{}{}",
                &line[..start],
                f(&line[start..start + len]),
                &line[start + len..]
            ));
        }
        from = at + 1;
    }
    None
}

/// The steering manifest (HLS Content Steering 1.2, "Steering Manifest"):
/// `VERSION` 1, `TTL` in seconds, `RELOAD-URI`, and `PATHWAY-PRIORITY`, the
/// pathway IDs best first. JSON text.
pub fn steering_manifest(ttl_seconds: u64, reload_uri: &str, priority: &[&str]) -> String {
    serde_json::json!({
        "VERSION": 1,
        "TTL": ttl_seconds,
        "RELOAD-URI": reload_uri,
        "PATHWAY-PRIORITY": priority,
    })
    .to_string()
}

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

    /// A live media playlist as nginx-rtmp writes it: segments `from..to`
    /// (inclusive), a discontinuity before `disc_at` if given.
    fn live(from: u64, to: u64, disc_at: Option<u64>) -> String {
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:{from}\n#EXT-X-TARGETDURATION:1\n"
        );
        for s in from..=to {
            if disc_at == Some(s) {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            p.push_str(&format!("#EXTINF:1.000,\nstream-{s}.ts\n"));
        }
        p
    }

    /// (Media Sequence Number, Discontinuity Sequence Number, URI) of each
    /// segment, as a player reads them (hls.js: a DISCONTINUITY tag raises
    /// the number of the segment after it).
    fn segments_of(body: &str) -> Vec<(u64, u64, String)> {
        let mut seq = header_number(body, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
        let mut disc = header_number(body, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
        let mut out = Vec::new();
        for line in body.lines() {
            if is_discontinuity(line) {
                disc += 1;
            } else if !line.is_empty() && !line.starts_with('#') {
                out.push((seq, disc, line.to_string()));
                seq += 1;
            }
        }
        out
    }

    /// The memory stays within MAX_REMEMBERED however many sessions pass,
    /// keeps the recent ones, and moves a session seen again back to the
    /// current generation.
    #[test]
    fn answered_is_bounded_and_keeps_recent_sessions() {
        let a = Answered::default();
        let p = |last| Position { last, disc: 0 };
        a.record(7, p(1));
        for s in 100..100 + MAX_REMEMBERED as u64 * 2 {
            a.record(s, p(s));
            if s % 10_000 == 0 {
                // Session 7 keeps playing.
                a.record(7, p(s));
            }
        }
        assert!(a.len() <= MAX_REMEMBERED, "{}", a.len());
        assert!(a.seen(7).is_some(), "a session seen recently is remembered");
        assert!(a.seen(100).is_none(), "the oldest are forgotten");
        let last = 100 + MAX_REMEMBERED as u64 * 2 - 1;
        assert_eq!(a.seen(last).map(|(pos, _)| pos.last), Some(last));
        let t = Timeline {
            first: 3,
            seq: 4,
            disc: 1,
        };
        a.record_move(last, "a".into(), "b".into(), t);
        assert_eq!(a.moved_to(last, "a", "b"), Some(t));
        assert_eq!(a.moved_to(last, "a", "c"), None);
        // Back, then forth again: the old timeline is not given again.
        let back = Timeline {
            first: 9,
            seq: 2,
            disc: 2,
        };
        a.record_move(last, "b".into(), "a".into(), back);
        assert_eq!(a.moved_to(last, "a", "b"), None);
    }

    #[test]
    fn position_is_the_newest_segment_and_its_timeline() {
        assert_eq!(
            position(&live(7, 9, None)),
            Some(Position { last: 9, disc: 0 })
        );
        let mut p = live(7, 9, Some(8));
        p = p.replace(
            "#EXT-X-MEDIA-SEQUENCE:7",
            "#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:4",
        );
        assert_eq!(position(&p), Some(Position { last: 9, disc: 5 }));
        assert_eq!(
            position("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n"),
            None
        );
    }

    /// A player on edge A (segments up to 104) moves to edge B, whose own
    /// numbers are far lower, and refreshes as B's window slides: every
    /// number it sees only grows, keeps its segment and its timeline, and
    /// the first of B's segments comes after a discontinuity.
    #[test]
    fn a_move_keeps_the_media_sequence_growing_with_one_discontinuity() {
        let mut seen: std::collections::BTreeMap<u64, (u64, String)> = Default::default();
        let mut record = |body: &str| {
            let segs = segments_of(body);
            for (seq, disc, uri) in &segs {
                if let Some((d, u)) = seen.get(seq) {
                    assert_eq!((d, u), (disc, uri), "segment {seq} changed:\n{body}");
                }
                seen.insert(*seq, (*disc, uri.clone()));
            }
            segs
        };
        for last in 100..=104 {
            record(&live(last - 4, last, None));
        }
        let seen_a = position(&live(100, 104, None)).unwrap();
        // The player last saw a's playlist two segments ago: it goes on
        // with b's segment two before b's newest.
        let timeline = timeline_for_move(seen_a, &numbers(&live(40, 45, None)), 2).unwrap();
        assert_eq!(timeline.first, 43);
        let mut firsts = Vec::new();
        for last in 45..=55 {
            let body = renumber(&live(last - 5, last, None), &timeline).unwrap();
            let segs = record(&body);
            firsts.push(segs[0].0);
            assert!(segs.iter().all(|(_, _, u)| {
                let n: u64 = u[7..u.len() - 3].parse().unwrap();
                n >= 43
            }));
        }
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
        let after: Vec<_> = seen
            .range(105..)
            .map(|(s, (d, u))| (*s, *d, u.clone()))
            .collect();
        assert_eq!(
            after.first(),
            Some(&(105, 1, "stream-43.ts".to_string())),
            "{after:?}"
        );
        assert!(after.iter().all(|(_, d, _)| *d == 1));
        assert!(seen.range(..105).all(|(_, (d, _))| *d == 0));
        // B's own discontinuity after the move is kept and counted.
        let body = renumber(&live(50, 57, Some(56)), &timeline).unwrap();
        let segs = segments_of(&body);
        assert_eq!(segs.last().map(|s| (s.0, s.1)), Some((57 + 62, 2)));
        // A renumbered playlist renumbers again the same way (idempotent
        // headers: no duplicate MEDIA-SEQUENCE lines).
        assert_eq!(body.matches("#EXT-X-MEDIA-SEQUENCE:").count(), 1);
        // B restarting its numbering: the timeline no longer applies.
        assert_eq!(renumber(&live(0, 3, None), &timeline), None);
        assert_eq!(
            renumber(
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n",
                &timeline
            ),
            None
        );
    }

    #[test]
    fn a_media_playlist_is_steered_with_one_variant_per_pathway() {
        let (a, b) = (
            Url::parse("http://a.example:8080/").unwrap(),
            Url::parse("http://b.example/").unwrap(),
        );
        let (pa, pb) = (
            Url::parse("http://a.example:8080/hls/stream.m3u8").unwrap(),
            Url::parse("http://b.example/hls/stream.m3u8").unwrap(),
        );
        let pathways = [
            Pathway {
                id: "a",
                target: Target {
                    playlist_url: &pa,
                    edge_base: &a,
                    session_prefix: "/live/s/TA",
                },
            },
            Pathway {
                id: "b",
                target: Target {
                    playlist_url: &pb,
                    edge_base: &b,
                    session_prefix: "/live/s/TB",
                },
            },
        ];
        let out = steered(
            &live(3, 5, None),
            "/hls/stream.m3u8",
            2_000_000,
            &pathways,
            "/live/s/TA/steering.json",
        );
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/live/s/TA/steering.json\",PATHWAY-ID=\"a\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=2000000,PATHWAY-ID=\"a\"\n/live/s/TA/hls/stream.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2000000,PATHWAY-ID=\"b\"\n/live/s/TB/hls/stream.m3u8\n"
        );
        // m3u8-rs reads it as a multivariant playlist with both variants.
        match m3u8_rs::parse_playlist_res(out.as_bytes()) {
            Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => assert_eq!(m.variants.len(), 2),
            other => panic!("{other:?}"),
        }

        // A multivariant playlist: entries per pathway, groups suffixed,
        // session tags once, the edge's own steering tag dropped.
        let master = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://other/s.json\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",URI=\"en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud\"\n\nlow.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"low-i.m3u8\"\n";
        let out = steered(
            master,
            "/hls/stream.m3u8",
            1,
            &pathways,
            "/live/s/TA/steering.json",
        );
        let want = "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/live/s/TA/steering.json\",PATHWAY-ID=\"a\"\n\
#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud-a\",NAME=\"en\",URI=\"/live/s/TA/hls/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud-a\",PATHWAY-ID=\"a\"\n/live/s/TA/hls/low.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"/live/s/TA/hls/low-i.m3u8\",PATHWAY-ID=\"a\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud-b\",NAME=\"en\",URI=\"/live/s/TB/hls/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud-b\",PATHWAY-ID=\"b\"\n/live/s/TB/hls/low.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"/live/s/TB/hls/low-i.m3u8\",PATHWAY-ID=\"b\"\n";
        assert_eq!(out, want);
        let manifest: serde_json::Value = serde_json::from_str(&steering_manifest(
            10,
            "/live/s/T2/steering.json",
            &["b", "a"],
        ))
        .unwrap();
        assert_eq!(
            manifest,
            serde_json::json!({"VERSION": 1, "TTL": 10, "RELOAD-URI": "/live/s/T2/steering.json", "PATHWAY-PRIORITY": ["b", "a"]})
        );
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

    /// Every input the `hls` fuzz target ever failed on
    /// (fuzz/regressions/hls/, see its README): the poller's probe and the
    /// rewriter take it without panicking, and the rewriter keeps its lines
    /// and its URI lines (the blank-line bug made a segment out of one).
    #[test]
    fn fuzz_regressions_replay() {
        let dir = format!("{}/fuzz/regressions/hls", env!("CARGO_MANIFEST_DIR"));
        let base = Url::parse("http://edge1.example:8080/").unwrap();
        let pl = Url::parse("http://edge1.example:8080/hls/stream.m3u8").unwrap();
        let uri_lines = |t: &str| {
            t.split_inclusive('\n')
                .map(|raw| split_eol(raw).0)
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count()
        };
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some() {
                continue; // README.md
            }
            seen += 1;
            let bytes = std::fs::read(&path).unwrap();
            let _ = crate::poll::hls::observe(&bytes);
            let body = String::from_utf8_lossy(&bytes);
            let out = rewrite(&body, &target_for(&pl, &base));
            assert_eq!(
                body.split_inclusive('\n').count(),
                out.split_inclusive('\n').count(),
                "{path:?}: {out:?}"
            );
            assert_eq!(uri_lines(&body), uri_lines(&out), "{path:?}: {out:?}");
            let _ = position(&body);
            let _ = renumber(
                &body,
                &Timeline {
                    first: 1,
                    seq: 5,
                    disc: 1,
                },
            );
        }
        assert!(seen >= 5, "regression inputs found: {seen}");
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
