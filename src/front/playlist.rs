//! Playlist rendering: the chosen edge's stream URL first, then its
//! backups.
//!
//! - M3U: the de-facto extended M3U (`#EXTM3U`, `#EXTINF:-1,title`, URL),
//!   as Winamp introduced it; served as `audio/x-mpegurl`.
//! - PLS: Winamp's INI-style `[playlist]` with `File1`, `Title1`,
//!   `Length1=-1` (a live stream), `NumberOfEntries`, `Version=2`; served as
//!   `audio/x-scpls`.
//! - XSPF: XML Shareable Playlist Format 1 (xspf.org/spec), one `<track>`
//!   with `<location>` and `<title>`; served as `application/xspf+xml`.

/// The playlist formats the front door answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/{stream}.m3u`
    M3u,
    /// `/{stream}.pls`
    Pls,
    /// `/{stream}.xspf`
    Xspf,
}

impl Format {
    /// The format for a path extension (`m3u`, `pls`, `xspf`).
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "m3u" => Some(Format::M3u),
            "pls" => Some(Format::Pls),
            "xspf" => Some(Format::Xspf),
            _ => None,
        }
    }

    /// The `format` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Format::M3u => "m3u",
            Format::Pls => "pls",
            Format::Xspf => "xspf",
        }
    }

    /// The Content-Type to serve it with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::M3u => "audio/x-mpegurl",
            Format::Pls => "audio/x-scpls",
            Format::Xspf => "application/xspf+xml",
        }
    }
}

/// Render a playlist of `urls` (the chosen edge first, then its backups),
/// every entry titled `title`. A player that goes to the next entry when a
/// stream fails (mpv, VLC) then keeps playing from a backup edge.
///
/// `urls` and `title` come from validated config and edge config, never from
/// the request; line breaks in the title are replaced so a line-based format
/// cannot be split, and XSPF text is XML-escaped.
pub fn render(format: Format, urls: &[String], title: &str) -> String {
    use std::fmt::Write;
    let title = one_line(title);
    let mut out = String::with_capacity(64 + urls.len() * 96);
    match format {
        Format::M3u => {
            out.push_str("#EXTM3U\n");
            for url in urls {
                let _ = write!(out, "#EXTINF:-1,{title}\n{url}\n");
            }
        }
        Format::Pls => {
            let _ = write!(out, "[playlist]\nNumberOfEntries={}\n", urls.len());
            for (i, url) in urls.iter().enumerate() {
                let n = i + 1;
                let _ = write!(out, "File{n}={url}\nTitle{n}={title}\nLength{n}=-1\n");
            }
            out.push_str("Version=2\n");
        }
        Format::Xspf => {
            out.push_str(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <playlist version=\"1\" xmlns=\"http://xspf.org/ns/0/\">\n  <trackList>\n",
            );
            let title = quick_xml::escape::escape(title.as_ref());
            for url in urls {
                let _ = write!(
                    out,
                    "    <track>\n      <location>{}</location>\n      <title>{title}</title>\n    </track>\n",
                    quick_xml::escape::escape(url.as_str()),
                );
            }
            out.push_str("  </trackList>\n</playlist>\n");
        }
    }
    out
}

fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://air1.example.com:1976/air";

    #[test]
    fn m3u() {
        assert_eq!(
            render(Format::M3u, &[URL.into()], "Apple Radio"),
            "#EXTM3U\n#EXTINF:-1,Apple Radio\nhttp://air1.example.com:1976/air\n"
        );
    }

    #[test]
    fn pls_has_every_key_players_read() {
        let pls = render(Format::Pls, &[URL.into()], "Apple");
        for line in [
            "[playlist]",
            "NumberOfEntries=1",
            "File1=http://air1.example.com:1976/air",
            "Title1=Apple",
            "Length1=-1",
            "Version=2",
        ] {
            assert!(pls.lines().any(|l| l == line), "{line} in {pls}");
        }
        assert!(pls.starts_with("[playlist]\n"));
    }

    #[test]
    fn xspf_is_well_formed_and_escaped() {
        let x = render(
            Format::Xspf,
            &["http://h/a?x=1&y=2".into()],
            "Rock & <Roll>",
        );
        let mut reader = quick_xml::Reader::from_str(&x);
        let mut texts = Vec::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                quick_xml::events::Event::Text(t) => {
                    let t = t.unescape().unwrap().trim().to_string();
                    if !t.is_empty() {
                        texts.push(t);
                    }
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(texts, vec!["http://h/a?x=1&y=2", "Rock & <Roll>"]);
    }

    #[test]
    fn backups_follow_the_chosen_edge_in_every_format() {
        let urls = [
            "http://a:8000/air".to_string(),
            "http://b:8000/air".to_string(),
        ];
        assert_eq!(
            render(Format::M3u, &urls, "T"),
            "#EXTM3U\n#EXTINF:-1,T\nhttp://a:8000/air\n#EXTINF:-1,T\nhttp://b:8000/air\n"
        );
        let pls = render(Format::Pls, &urls, "T");
        for line in [
            "NumberOfEntries=2",
            "File1=http://a:8000/air",
            "File2=http://b:8000/air",
            "Length2=-1",
        ] {
            assert!(pls.lines().any(|l| l == line), "{line} in {pls}");
        }
        let x = render(Format::Xspf, &urls, "T");
        assert_eq!(x.matches("<track>").count(), 2);
        assert!(x.find("http://a").unwrap() < x.find("http://b").unwrap());
    }

    #[test]
    fn titles_cannot_add_lines() {
        let m3u = render(Format::M3u, &[URL.into()], "a\nhttp://evil/");
        assert_eq!(m3u.lines().count(), 3);
    }
}
