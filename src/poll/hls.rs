//! HLS freshness: is a stream's media playlist still moving?
//!
//! A live media playlist (RFC 8216) gains segments: its
//! `EXT-X-MEDIA-SEQUENCE` grows, or (EVENT playlists) its segment list gets
//! longer. A playlist that has not changed for 3 × `EXT-X-TARGETDURATION`
//! is stale (RFC 8216 §6.3.4 has players give up after the same span), and
//! one with `EXT-X-ENDLIST` is over.

use std::time::{Duration, Instant};

/// What one fetch of a playlist showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistObs {
    /// A master playlist; freshness is judged on its first variant (URI as
    /// written, to be resolved against the master's URL).
    Master {
        /// URI of the first variant stream.
        first_variant: String,
    },
    /// A media playlist.
    Media(MediaObs),
}

/// The parts of a media playlist that tell whether it is moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaObs {
    /// `EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// `EXT-X-TARGETDURATION`, whole seconds as the tag carries them.
    pub target_duration: Duration,
    /// Number of segments listed.
    pub segments: usize,
    /// URI of the last segment (the newest).
    pub last_uri: String,
    /// `EXT-X-ENDLIST` present: the stream is over.
    pub ended: bool,
}

/// Why a playlist body was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// Not an M3U8 playlist.
    #[error("not an HLS playlist: {0}")]
    NotPlaylist(String),
    /// A master playlist without any variant.
    #[error("master playlist lists no variant")]
    NoVariant,
}

/// Read a playlist body (parsed with m3u8-rs).
///
/// # Errors
/// [`HlsError`] when the body is not a playlist or a master has no variant.
pub fn observe(body: &[u8]) -> Result<PlaylistObs, HlsError> {
    if !body.starts_with(b"#EXTM3U") {
        return Err(HlsError::NotPlaylist("does not start with #EXTM3U".into()));
    }
    match m3u8_rs::parse_playlist_res(body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m
            .variants
            .iter()
            .find(|v| !v.is_i_frame)
            .map(|v| PlaylistObs::Master {
                first_variant: v.uri.clone(),
            })
            .ok_or(HlsError::NoVariant),
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => Ok(PlaylistObs::Media(MediaObs {
            media_sequence: m.media_sequence,
            target_duration: Duration::from_secs(m.target_duration.max(1)),
            segments: m.segments.len(),
            last_uri: m.segments.last().map(|s| s.uri.clone()).unwrap_or_default(),
            ended: m.end_list,
        })),
        Err(e) => Err(HlsError::NotPlaylist(
            e.to_string().chars().take(200).collect(),
        )),
    }
}

/// Freshness memory of one playlist on one edge, kept across polls.
#[derive(Debug, Clone)]
pub struct Freshness {
    last: Option<(u64, usize, String)>,
    changed_at: Instant,
    target: Duration,
    ended: bool,
}

impl Freshness {
    /// Memory for a playlist first seen at `now`.
    pub fn new(now: Instant) -> Self {
        Freshness {
            last: None,
            changed_at: now,
            target: Duration::from_secs(6),
            ended: false,
        }
    }

    /// Record an observation made at `now`; returns whether the playlist is
    /// live: not ended, and changed within 3 × target duration.
    pub fn update(&mut self, obs: &MediaObs, now: Instant) -> bool {
        let key = (obs.media_sequence, obs.segments, obs.last_uri.clone());
        if self.last.as_ref() != Some(&key) {
            self.last = Some(key);
            self.changed_at = now;
        }
        self.target = obs.target_duration;
        self.ended = obs.ended;
        self.is_live(now)
    }

    /// Whether the playlist counts as live at `now` without a new look.
    pub fn is_live(&self, now: Instant) -> bool {
        !self.ended && self.last.is_some() && now.duration_since(self.changed_at) <= self.target * 3
    }

    /// Time since the playlist last changed.
    pub fn age(&self, now: Instant) -> Duration {
        now.duration_since(self.changed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(seq: u64, n: usize, ended: bool) -> String {
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n"
        );
        for i in 0..n {
            p.push_str(&format!("#EXTINF:2.000,\nstream-{}.ts\n", seq + i as u64));
        }
        if ended {
            p.push_str("#EXT-X-ENDLIST\n");
        }
        p
    }

    fn obs(body: &str) -> MediaObs {
        match observe(body.as_bytes()).unwrap() {
            PlaylistObs::Media(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_media_and_master() {
        let m = obs(&media(7, 3, false));
        assert_eq!(
            (m.media_sequence, m.segments, m.target_duration),
            (7, 3, Duration::from_secs(2))
        );
        assert_eq!(m.last_uri, "stream-9.ts");
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\nhi/index.m3u8\n";
        assert_eq!(
            observe(master.as_bytes()).unwrap(),
            PlaylistObs::Master {
                first_variant: "low/index.m3u8".into()
            }
        );
        assert!(observe(b"<html>").is_err());
        assert!(observe(b"").is_err());
    }

    #[test]
    fn advancing_is_live_stuck_goes_stale_ended_is_over() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        assert!(f.update(&obs(&media(1, 3, false)), t0));
        assert!(f.update(&obs(&media(1, 3, false)), t0 + Duration::from_secs(5)));
        // 3 × 2 s without change: stale.
        assert!(!f.update(&obs(&media(1, 3, false)), t0 + Duration::from_secs(7)));
        // It moves again: live.
        assert!(f.update(&obs(&media(2, 3, false)), t0 + Duration::from_secs(8)));
        // An EVENT playlist grows without a new sequence number.
        assert!(f.update(&obs(&media(2, 4, false)), t0 + Duration::from_secs(13)));
        assert!(!f.update(&obs(&media(3, 3, true)), t0 + Duration::from_secs(14)));
    }
}
