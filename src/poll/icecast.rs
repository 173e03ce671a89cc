//! Icecast 2.4 status parsing: pure functions from a recorded body to an
//! [`EdgeStatus`]. Fixtures recorded from icecast2 2.4.4 are in
//! `tests/fixtures/icecast-2.4.4/` (see the README there).
//!
//! Two sources:
//! - `GET /status-json.xsl` (no credentials). `icestats.source` is absent (no
//!   mount live), an object (one) or an array (several); each source has
//!   `listeners` (number) and `listenurl` (`http://{hostname}:{port}{mount}`,
//!   where hostname is Icecast's configured `<hostname>`, not ours).
//!   Icecast 2.4.4 builds this JSON with XSLT and emits a metadata value that
//!   looks like a number raw: a title of `.5` becomes `"title":.5`, which is
//!   not JSON. A song title must never take an edge out of rotation, so a
//!   body that fails strict JSON is read again by [`scan_lenient`].
//! - `GET /admin/stats` (basic auth): XML `<icestats><source mount="/air">`
//!   with `<listeners>` and `<max_listeners>` (a number or `unlimited`).

pub use super::status::{EdgeStatus, MountStatus};
use serde::Deserialize;

/// Why a status body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not Icecast status JSON at all (no `icestats`).
    #[error("not an Icecast status-json.xsl body: {0}")]
    NotIcecast(String),
    /// `icestats` is there but its shape is wrong.
    #[error("unexpected status-json.xsl shape: {0}")]
    Shape(String),
    /// The body ends before the JSON does (cut off in transit).
    #[error("truncated status-json.xsl body: {0}")]
    Truncated(String),
    /// The admin XML could not be read.
    #[error("bad /admin/stats XML: {0}")]
    Xml(String),
    /// nginx-rtmp's `/stat` XML could not be read. Its own variant so that
    /// an nginx-rtmp edge's `last_error` does not name Icecast's admin page.
    #[error("bad nginx-rtmp /stat XML: {0}")]
    Stat(String),
}

#[derive(Deserialize)]
struct Root {
    icestats: IceStats,
}

#[derive(Deserialize)]
struct IceStats {
    #[serde(default)]
    source: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Source),
    Many(Vec<Source>),
}

#[derive(Deserialize)]
struct Source {
    #[serde(default)]
    listenurl: Option<String>,
    #[serde(default)]
    listeners: Option<serde_json::Value>,
}

/// Parse an Icecast 2.4 `status-json.xsl` body.
///
/// Sources without a usable `listenurl` are skipped (a mount without a path
/// cannot be sent to). `listeners` may be a number or a numeric string;
/// absent counts as 0.
///
/// # Errors
/// [`ParseError::NotIcecast`] for a body that is neither JSON with
/// `icestats` nor Icecast's broken JSON; [`ParseError::Shape`] for JSON with
/// `icestats` of the wrong shape.
pub fn parse_status_json(body: &[u8]) -> Result<EdgeStatus, ParseError> {
    let root: Root = match serde_json::from_slice(body) {
        Ok(root) => root,
        Err(e) => {
            // Valid JSON of the wrong shape is an error; invalid JSON may be
            // Icecast's own faulty output, read leniently.
            return match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) if v.get("icestats").is_some() => Err(ParseError::Shape(e.to_string())),
                Ok(_) => Err(ParseError::NotIcecast(e.to_string())),
                Err(_) => scan_lenient(body).ok_or_else(|| {
                    if e.is_eof() {
                        ParseError::Truncated(e.to_string())
                    } else {
                        ParseError::NotIcecast(e.to_string())
                    }
                }),
            };
        }
    };
    let sources = match root.icestats.source {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    let mut mounts = Vec::with_capacity(sources.len());
    for s in sources {
        let Some(mount) = s.listenurl.as_deref().and_then(mount_of) else {
            continue;
        };
        let listeners = match &s.listeners {
            None | Some(serde_json::Value::Null) => 0,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| ParseError::Shape(format!("listeners {n} of {mount}")))?,
            Some(serde_json::Value::String(t)) => t
                .trim()
                .parse()
                .map_err(|_| ParseError::Shape(format!("listeners `{t}` of {mount}")))?,
            Some(other) => return Err(ParseError::Shape(format!("listeners {other} of {mount}"))),
        };
        push_mount(&mut mounts, mount, listeners);
    }
    Ok(EdgeStatus {
        mounts,
        lenient: false,
        bw_out_bps: None,
    })
}

/// Read Icecast's not-quite-JSON: every `"listenurl":"…"` with the
/// `"listeners":N` that precedes it in the same source object (the XSLT
/// writes keys in alphabetical order, so `listeners` comes just before
/// `listenurl`, and free-text fields such as `title` come after it).
/// Returns `None` unless the body carries `"icestats"` and is whole (see
/// [`whole`]).
pub fn scan_lenient(body: &[u8]) -> Option<EdgeStatus> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("\"icestats\"") || !whole(text) {
        return None;
    }
    const URL_KEY: &str = "\"listenurl\":\"";
    const LISTENERS_KEY: &str = "\"listeners\":";
    let mut mounts = Vec::new();
    let mut pieces = text.split(URL_KEY);
    let mut before = pieces.next()?;
    for piece in pieces {
        let url_end = piece.find('"').unwrap_or(piece.len());
        let listeners = before.rfind(LISTENERS_KEY).and_then(|i| {
            let digits: String = before[i + LISTENERS_KEY.len()..]
                .chars()
                .skip_while(|c| *c == ' ' || *c == '"')
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        });
        if let Some(mount) = mount_of(&piece[..url_end]) {
            push_mount(&mut mounts, mount, listeners.unwrap_or(0));
        }
        before = piece;
    }
    Some(EdgeStatus {
        mounts,
        lenient: true,
        bw_out_bps: None,
    })
}

/// Whether `text` closes every string, object and array it opens and
/// nests at most 16 levels deep (Icecast's output nests 4).
///
/// Icecast's own faults (bad value tokens; at startup, one `{` missing)
/// leave the structure whole. A body cut off in transit (served without
/// Content-Length, the connection closed early) does not, and the lenient
/// reader used to take it for a status listing whatever mounts came before
/// the cut, so listeners were sent to an edge answering garbage; a JSON
/// bomb under `icestats` likewise read as a healthy edge without mounts.
fn whole(text: &str) -> bool {
    const MAX_DEPTH: i32 = 16;
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    // Below zero is Icecast's startup body, which closes one `}` too many.
    !in_string && depth <= 0
}

/// Per-mount figures from `GET /admin/stats` (Icecast 2.4 XML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminMount {
    /// Mount path from the `mount` attribute.
    pub mount: String,
    /// `<listeners>`.
    pub listeners: u64,
    /// `<max_listeners>`; `None` for `unlimited`.
    pub max_listeners: Option<u64>,
}

/// Parse an Icecast 2.4 `/admin/stats` XML body into its sources.
///
/// # Errors
/// [`ParseError::Xml`] for malformed XML or a body without `<icestats>`.
pub fn parse_admin_stats(body: &[u8]) -> Result<Vec<AdminMount>, ParseError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut seen_icestats = false;
    // Depth inside the current <source>, and which child we are in.
    let mut current: Option<AdminMount> = None;
    let mut field: Option<&'static str> = None;
    let mut depth = 0usize;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| ParseError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                match e.name().as_ref() {
                    b"icestats" if depth == 1 => seen_icestats = true,
                    b"source" if depth == 2 => {
                        let mount = e
                            .try_get_attribute("mount")
                            .map_err(|e| ParseError::Xml(e.to_string()))?
                            .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()));
                        current = mount.map(|mount| AdminMount {
                            mount,
                            listeners: 0,
                            max_listeners: None,
                        });
                    }
                    b"listeners" if depth == 3 => field = Some("listeners"),
                    b"max_listeners" if depth == 3 => field = Some("max_listeners"),
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let (Some(f), Some(m)) = (field, current.as_mut()) {
                    let text = t.unescape().map_err(|e| ParseError::Xml(e.to_string()))?;
                    let value = text.trim().parse::<u64>().ok();
                    match f {
                        "listeners" => m.listeners = value.unwrap_or(0),
                        _ => m.max_listeners = value,
                    }
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some(m) = current.take() {
                        out.push(m);
                    }
                }
                field = None;
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_icestats {
        return Err(ParseError::Xml("no <icestats> element".into()));
    }
    Ok(out)
}

/// The mount of a `listenurl`: its path, when it is a path of at least one
/// character after `/`.
fn mount_of(listenurl: &str) -> Option<String> {
    let url = url::Url::parse(listenurl).ok()?;
    let path = url.path();
    (path.len() > 1).then(|| path.to_string())
}

/// Add a mount, merging duplicates (a mount listed twice counts once, with
/// the larger listener figure).
fn push_mount(mounts: &mut Vec<MountStatus>, mount: String, listeners: u64) {
    match mounts.iter_mut().find(|m| m.mount == mount) {
        Some(m) => m.listeners = m.listeners.max(listeners),
        None => mounts.push(MountStatus {
            mount,
            listeners,
            max_listeners: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/icecast-2.4.4/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn mounts(s: &EdgeStatus) -> Vec<(&str, u64)> {
        s.mounts
            .iter()
            .map(|m| (m.mount.as_str(), m.listeners))
            .collect()
    }

    #[test]
    fn no_source_means_no_live_mount() {
        let s = parse_status_json(&fixture("status-json-no-source.json")).unwrap();
        assert!(s.mounts.is_empty());
        assert!(!s.lenient);
    }

    #[test]
    fn one_source_is_an_object() {
        let s = parse_status_json(&fixture("status-json-one-source.json")).unwrap();
        assert_eq!(mounts(&s), vec![("/air", 2)]);
    }

    #[test]
    fn several_sources_are_an_array() {
        let s = parse_status_json(&fixture("status-json-two-sources.json")).unwrap();
        let m = mounts(&s);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m.iter().any(|(name, _)| *name == "/air"));
        assert!(m.iter().any(|(name, _)| *name == "/nonstop"));
        assert_eq!(s.listeners(), m.iter().map(|(_, n)| n).sum::<u64>());
    }

    #[test]
    fn relay_mounts_use_listenurl_path_whatever_the_hostname() {
        let s = parse_status_json(&fixture("status-json-relay.json")).unwrap();
        assert!(s.mount("/air").is_some(), "{s:?}");
    }

    #[test]
    fn numeric_titles_break_icecast_json_but_not_the_edge() {
        for name in [
            "status-json-invalid-title.json",
            "status-json-title-types.json",
        ] {
            let s = parse_status_json(&fixture(name)).unwrap();
            assert_eq!(mounts(&s), vec![("/air", 3), ("/nonstop", 2)], "{name}");
        }
        let s = parse_status_json(&fixture("status-json-invalid-title.json")).unwrap();
        assert!(s.lenient);
    }

    #[test]
    fn broken_startup_body_reads_as_no_mounts() {
        let s = parse_status_json(&fixture("status-json-startup-invalid.json")).unwrap();
        assert!(s.mounts.is_empty());
    }

    #[test]
    fn junk_and_truncated_bodies_are_errors() {
        for body in [
            &b""[..],
            b"<html>It works!</html>",
            b"{\"other\":1}",
            b"\xff\xfe\x00",
            b"[1,2,3]",
        ] {
            assert!(parse_status_json(body).is_err(), "{body:?}");
        }
        let full = fixture("status-json-two-sources.json");
        for cut in [1, 10, full.len() / 2, full.len() - 3] {
            // A cut body either fails or (lenient) never invents a mount.
            if let Ok(s) = parse_status_json(&full[..cut]) {
                assert!(s.mounts.len() <= 2);
            }
        }
    }

    #[test]
    fn cut_off_and_deeply_nested_bodies_are_not_read_leniently() {
        // Cut inside the title, after `listenurl`: /air must not come back.
        let full = fixture("status-json-one-source.json");
        let text = std::str::from_utf8(&full).unwrap();
        let cut = text.find("Lovelace").unwrap();
        assert!(matches!(
            parse_status_json(&full[..cut]),
            Err(ParseError::Truncated(_))
        ));
        // Cut after a whole source, and cut after a quirk (strict JSON
        // fails on `.5` first): still no status.
        let two = fixture("status-json-invalid-title.json");
        let text = std::str::from_utf8(&two).unwrap();
        let after_first = text.find("},{").unwrap() + 1;
        assert!(parse_status_json(&two[..after_first]).is_err());
        assert!(parse_status_json(&two[..two.len() - 2]).is_err());
        let bomb = format!(
            r#"{{"icestats":{{"source":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            parse_status_json(bomb.as_bytes()),
            Err(ParseError::NotIcecast(_))
        ));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(matches!(
            parse_status_json(
                br#"{"icestats":{"source":[{"listenurl":"http://h/a","listeners":-1}]}}"#
            ),
            Err(ParseError::Shape(_))
        ));
        assert!(matches!(
            parse_status_json(br#"{"icestats":{"source":"x"}}"#),
            Err(ParseError::Shape(_))
        ));
    }

    #[test]
    fn huge_body_with_many_mounts_parses() {
        let sources: Vec<String> = (0..5000)
            .map(|i| format!(r#"{{"listeners":{i},"listenurl":"http://h:1/m{i}"}}"#))
            .collect();
        let body = format!(r#"{{"icestats":{{"source":[{}]}}}}"#, sources.join(","));
        let s = parse_status_json(body.as_bytes()).unwrap();
        assert_eq!(s.mounts.len(), 5000);
        assert_eq!(s.mount("/m4999").map(|m| m.listeners), Some(4999));
    }

    #[test]
    fn admin_stats_gives_max_listeners() {
        let m = parse_admin_stats(&fixture("admin-stats-two-sources.xml")).unwrap();
        let air = m.iter().find(|m| m.mount == "/air").unwrap();
        let nonstop = m.iter().find(|m| m.mount == "/nonstop").unwrap();
        assert_eq!(air.max_listeners, None);
        assert_eq!(nonstop.max_listeners, Some(50));
        assert_eq!(air.listeners, 2);
        assert!(parse_admin_stats(b"<html/>").is_err());
    }
}
