//! nginx-rtmp `/stat` parsing (`rtmp_stat all;`): a pure function from the
//! XML body to the streams it lists. Fixtures recorded from Debian's
//! libnginx-mod-rtmp are in `tests/fixtures/nginx-rtmp/`.
//!
//! Shape: `<rtmp><server><application><name>live</name><live><stream>`
//! with `<name>`, `<bw_out>` (bits per second), `<nclients>` (every client,
//! the publisher included), one `<client>` per connection (the publisher's
//! has `<publishing/>`), and `<publishing/>` on the stream while a
//! publisher is connected.

use super::icecast::ParseError;

/// One stream in one application, as `/stat` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtmpStream {
    /// The application, e.g. `live`.
    pub app: String,
    /// The stream name, e.g. `stream`.
    pub name: String,
    /// A publisher is connected.
    pub publishing: bool,
    /// RTMP play clients (every client but the publisher).
    pub viewers: u64,
    /// Output bandwidth of the stream, bits per second.
    pub bw_out_bps: u64,
}

/// Everything castgate reads from one `/stat` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtmpStat {
    /// Streams in every application.
    pub streams: Vec<RtmpStream>,
    /// The answering worker's total output, bits per second.
    pub bw_out_bps: u64,
    /// The answering worker's process id (`<pid>`); with several workers,
    /// each answers with its own connections only.
    pub pid: Option<u32>,
}

impl RtmpStat {
    /// Merge the answers of distinct workers into one view of the server:
    /// a stream is publishing if any worker has its publisher; viewers and
    /// bandwidth add up. Answers from the same pid count once.
    pub fn merge(answers: Vec<RtmpStat>) -> RtmpStat {
        let mut seen_pids = Vec::new();
        let mut out = RtmpStat::default();
        for a in answers {
            if let Some(pid) = a.pid {
                if seen_pids.contains(&pid) {
                    continue;
                }
                seen_pids.push(pid);
            }
            out.bw_out_bps += a.bw_out_bps;
            for s in a.streams {
                match out
                    .streams
                    .iter_mut()
                    .find(|o| o.app == s.app && o.name == s.name)
                {
                    Some(o) => {
                        o.publishing |= s.publishing;
                        o.viewers += s.viewers;
                        o.bw_out_bps += s.bw_out_bps;
                    }
                    None => out.streams.push(s),
                }
            }
        }
        out.pid = seen_pids.first().copied();
        out
    }

    /// Distinct worker pids among answers.
    pub fn distinct_pids(answers: &[RtmpStat]) -> usize {
        let mut pids: Vec<u32> = answers.iter().filter_map(|a| a.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }
}

/// Parse an nginx-rtmp `/stat` body.
///
/// # Errors
/// [`ParseError::Stat`] for malformed XML or a body without `<rtmp>`.
pub fn parse_stat(body: &[u8]) -> Result<RtmpStat, ParseError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    // Element names from the root to the current element.
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut stat = RtmpStat::default();
    let mut seen_rtmp = false;
    let mut app = String::new();
    let mut stream: Option<RtmpStream> = None;
    let mut nclients: Option<u64> = None;
    let mut clients = 0u64;
    let mut publishers = 0u64;
    let mut client_publishing = false;
    let xml = |e: quick_xml::Error| ParseError::Stat(e.to_string());
    loop {
        let event = reader.read_event_into(&mut buf).map_err(xml)?;
        match event {
            Event::Start(e) => {
                let name = e.name().as_ref().to_vec();
                if path.is_empty() && name == b"rtmp" {
                    seen_rtmp = true;
                }
                if name == b"stream" && parent_is(&path, b"live") {
                    stream = Some(RtmpStream {
                        app: app.clone(),
                        ..Default::default()
                    });
                    nclients = None;
                    clients = 0;
                    publishers = 0;
                }
                if name == b"client" && parent_is(&path, b"stream") {
                    client_publishing = false;
                }
                path.push(name);
            }
            Event::Empty(e) => {
                let name = e.name();
                if name.as_ref() == b"publishing" {
                    if parent_is(&path, b"client") {
                        client_publishing = true;
                    } else if parent_is(&path, b"stream") {
                        if let Some(s) = stream.as_mut() {
                            s.publishing = true;
                        }
                    }
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(xml)?;
                let text = text.trim();
                let number = || text.parse::<u64>().unwrap_or(0);
                let here = path.last().map(Vec::as_slice);
                let parent = path.len().checked_sub(2).map(|i| path[i].as_slice());
                match (parent, here) {
                    (Some(b"application"), Some(b"name")) => app = text.to_string(),
                    (Some(b"rtmp"), Some(b"pid")) => stat.pid = text.parse().ok(),
                    (Some(b"rtmp"), Some(b"bw_out")) => stat.bw_out_bps = number(),
                    (Some(b"stream"), Some(field)) => {
                        if let Some(s) = stream.as_mut() {
                            match field {
                                b"name" => s.name = text.to_string(),
                                b"bw_out" => s.bw_out_bps = number(),
                                b"nclients" => nclients = Some(number()),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                if name == b"client" && parent_is(&path, b"stream") {
                    clients += 1;
                    publishers += u64::from(client_publishing);
                }
                if name == b"stream" && parent_is(&path, b"live") {
                    if let Some(mut s) = stream.take() {
                        // Prefer counting clients; fall back on nclients
                        // (which includes the publisher) when the client
                        // list is absent.
                        s.viewers = if clients > 0 {
                            clients - publishers
                        } else {
                            nclients
                                .unwrap_or(0)
                                .saturating_sub(u64::from(s.publishing))
                        };
                        if !s.name.is_empty() {
                            stat.streams.push(s);
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_rtmp {
        return Err(ParseError::Stat(
            "no <rtmp> element: not an nginx-rtmp /stat body".into(),
        ));
    }
    if !path.is_empty() {
        return Err(ParseError::Stat("truncated /stat body".into()));
    }
    Ok(stat)
}

fn parent_is(path: &[Vec<u8>], name: &[u8]) -> bool {
    path.last().is_some_and(|p| p == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version><bw_in>1000</bw_in><bw_out>2000</bw_out>
<server><application><name>live</name><live>
<stream><name>stream</name><time>5000</time><bw_in>800</bw_in><bw_out>1600</bw_out>
<client><id>1</id><address>127.0.0.1</address><publishing/><active/></client>
<client><id>2</id><address>127.0.0.1</address><active/></client>
<client><id>3</id><address>127.0.0.1</address><active/></client>
<meta><video><width>320</width></video></meta>
<nclients>3</nclients><publishing/><active/></stream>
<stream><name>idle</name><bw_out>0</bw_out><client><id>4</id></client><nclients>1</nclients></stream>
<nclients>4</nclients></live></application></server></rtmp>"#;

    #[test]
    fn publishing_viewers_and_bandwidth() {
        let s = parse_stat(SAMPLE.as_bytes()).unwrap();
        assert_eq!(s.bw_out_bps, 2000);
        assert_eq!(
            s.streams,
            vec![
                RtmpStream {
                    app: "live".into(),
                    name: "stream".into(),
                    publishing: true,
                    viewers: 2,
                    bw_out_bps: 1600
                },
                RtmpStream {
                    app: "live".into(),
                    name: "idle".into(),
                    publishing: false,
                    viewers: 1,
                    bw_out_bps: 0
                },
            ]
        );
    }

    #[test]
    fn nclients_counts_the_publisher_when_clients_are_absent() {
        let body = "<rtmp><server><application><name>live</name><live><stream><name>s</name><nclients>3</nclients><publishing/></stream></live></application></server></rtmp>";
        let s = parse_stat(body.as_bytes()).unwrap();
        assert_eq!(s.streams[0].viewers, 2);
    }

    #[test]
    fn junk_and_truncated_bodies_are_errors() {
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"<html><body>nginx</body></html>").is_err());
        assert!(parse_stat(&SAMPLE.as_bytes()[..SAMPLE.len() / 2]).is_err());
        assert!(parse_stat(b"{\"rtmp\":1}").is_err());
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/nginx-rtmp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn recorded_stat_bodies() {
        let one = parse_stat(&fixture("stat-one-stream.xml")).unwrap();
        assert_eq!(one.streams.len(), 1);
        assert!(one.streams[0].publishing);
        assert_eq!(one.streams[0].viewers, 0, "the publisher is not a viewer");

        let v = parse_stat(&fixture("stat-viewers.xml")).unwrap();
        let cam = &v.streams[0];
        assert_eq!(
            (
                cam.name.as_str(),
                cam.app.as_str(),
                cam.publishing,
                cam.viewers
            ),
            ("cam", "live", true, 2)
        );
        // Bits per second, averaged by nginx-rtmp over its last window.
        assert!(cam.bw_out_bps > 100_000, "{cam:?}");
        assert!(v.bw_out_bps > 100_000, "{v:?}");

        let two = parse_stat(&fixture("stat-two-streams.xml")).unwrap();
        let names: Vec<&str> = two.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["cam", "radio"]);
        assert!(two.streams.iter().all(|s| s.publishing));

        // A player waiting for a stream nobody publishes: listed, not live.
        let waiting = parse_stat(&fixture("stat-player-without-publisher.xml")).unwrap();
        let later = waiting.streams.iter().find(|s| s.name == "later").unwrap();
        assert!(!later.publishing);
        assert_eq!(later.viewers, 1);

        // With several workers, the worker without the publisher lists
        // nothing; the poller's memory bridges that (see poll::tests).
        assert!(parse_stat(&fixture("stat-multi-worker-other.xml"))
            .unwrap()
            .streams
            .is_empty());
        assert!(
            parse_stat(&fixture("stat-multi-worker-publisher.xml"))
                .unwrap()
                .streams[0]
                .publishing
        );
        assert!(parse_stat(&fixture("stat-idle.xml"))
            .unwrap()
            .streams
            .is_empty());
    }

    #[test]
    fn idle_server_has_no_streams() {
        let s = parse_stat(b"<rtmp><server><application><name>live</name><live><nclients>0</nclients></live></application></server></rtmp>").unwrap();
        assert!(s.streams.is_empty());
    }
}
