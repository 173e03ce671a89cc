//! Frame boundaries of relayed audio, so that a stream resumed on another
//! edge ([`super::relay`]) gives the listener whole frames only: the old
//! edge's bytes end at a frame's end, the new edge's begin at a frame's
//! start.
//!
//! Formats (written here: no well-kept crate offers header-only framing
//! without a decoder):
//! - MPEG-1/2/2.5 audio layers I–III (ISO/IEC 11172-3 §2.4.2.3, 13818-3):
//!   a 4-byte header, frame length from bitrate, sample rate and padding;
//! - AAC in ADTS (ISO/IEC 13818-7 §6.2): 12-bit sync, 13-bit frame length;
//! - Ogg (RFC 3533 §6): `OggS` pages, length from the segment table;
//! - anything else: raw bytes, every byte a boundary.
//!
//! A sync is accepted only where the frame after it starts with a header of
//! the same kind too (two in a row), so a stray `0xFF` in audio data or a
//! partial frame at an edge's first byte is skipped.

/// How a content type is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MPEG audio (`audio/mpeg`, `audio/mp3`).
    Mpeg,
    /// AAC in ADTS (`audio/aac`, `audio/aacp`, `audio/x-aac`).
    Adts,
    /// Ogg pages (`application/ogg`, `audio/ogg`, `video/ogg`).
    Ogg,
    /// No framing known: resumes at any byte.
    Raw,
}

impl Kind {
    /// The framing of a `Content-Type` value (parameters ignored).
    pub fn of_content_type(ct: &str) -> Kind {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Kind::Mpeg,
            "audio/aac" | "audio/aacp" | "audio/x-aac" => Kind::Adts,
            "application/ogg" | "audio/ogg" | "video/ogg" | "audio/opus" => Kind::Ogg,
            _ => Kind::Raw,
        }
    }

    /// The length of the frame starting at `b[0]`: `Some(n)` for a valid
    /// header, `None` for no header here, `Some(0)` never. Needs the first
    /// bytes of the header only (4 for MPEG, 7 for ADTS, 27 plus the
    /// segment table for Ogg); returns `None` when `b` is too short.
    pub fn frame_len(self, b: &[u8]) -> Option<usize> {
        match self {
            Kind::Mpeg => mpeg_frame_len(b),
            Kind::Adts => adts_frame_len(b),
            Kind::Ogg => ogg_page_len(b),
            Kind::Raw => None,
        }
    }
}

/// Bitrates in kbit/s by index 1–14: MPEG-1 layers I, II, III, then MPEG-2/2.5
/// layer I, then layers II and III.
const BITRATES: [[u16; 14]; 5] = [
    [
        32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    [
        32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

fn mpeg_frame_len(b: &[u8]) -> Option<usize> {
    let h = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    if h >> 21 != 0x7FF {
        return None;
    }
    let version = (h >> 19) & 3; // 0: 2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
    let layer = (h >> 17) & 3; // 1: III, 2: II, 3: I, 0: reserved
    let bitrate = ((h >> 12) & 0xF) as usize;
    let rate = ((h >> 10) & 3) as usize;
    let padding = ((h >> 9) & 1) as usize;
    if version == 1 || layer == 0 || bitrate == 0 || bitrate == 15 || rate == 3 {
        return None;
    }
    let mpeg1 = version == 3;
    let table = match (mpeg1, layer) {
        (true, 3) => 0,
        (true, 2) => 1,
        (true, _) => 2,
        (false, 3) => 3,
        (false, _) => 4,
    };
    let kbps = usize::from(*BITRATES.get(table)?.get(bitrate - 1)?);
    let base = [44_100, 48_000, 32_000][rate];
    let sample_rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    let bps = kbps * 1000;
    let len = match layer {
        3 => (12 * bps / sample_rate + padding) * 4,
        1 if !mpeg1 => 72 * bps / sample_rate + padding,
        _ => 144 * bps / sample_rate + padding,
    };
    (len >= 4).then_some(len)
}

fn adts_frame_len(b: &[u8]) -> Option<usize> {
    let b = b.get(..7)?;
    if b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return None;
    }
    let len = (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    let header = if b[1] & 1 == 1 { 7 } else { 9 };
    (len > header).then_some(len)
}

fn ogg_page_len(b: &[u8]) -> Option<usize> {
    if b.get(..4)? != b"OggS" || *b.get(4)? != 0 {
        return None;
    }
    let segments = usize::from(*b.get(26)?);
    let table = b.get(27..27 + segments)?;
    Some(27 + segments + table.iter().map(|&l| usize::from(l)).sum::<usize>())
}

/// Where whole frames are in the unsent bytes of one edge's body.
#[derive(Debug, Clone)]
pub struct Framer {
    kind: Kind,
    /// Whether the unsent bytes start at a frame boundary (a frame start
    /// was found on this edge, confirmed by the next header).
    synced: bool,
    /// Bytes dropped while looking for the first frame start.
    dropped: usize,
}

/// Bytes of an edge's body searched for a first frame start before it is
/// taken as raw bytes (a mount whose content type names a format its bytes
/// are not in): 64 KiB, four seconds of 128 kbit/s.
pub const SYNC_SEARCH: usize = 64 * 1024;

impl Framer {
    /// A framer for a new edge body of `kind`, not in sync until a frame
    /// start followed by another frame header is found.
    pub fn new(kind: Kind) -> Framer {
        Framer {
            kind,
            synced: kind == Kind::Raw,
            dropped: 0,
        }
    }

    /// Scan `buf`, the bytes of this edge not yet sent (the bytes held
    /// back last time, then what arrived since), and return `(skip, end)`:
    /// `buf[..skip]` belongs to no frame (the partial frame an edge starts
    /// with, junk between frames) and is dropped; `buf[skip..end]` is whole
    /// frames, to send; `buf[end..]` is an incomplete frame, to hold back
    /// until its end arrives. For raw bytes `(0, buf.len())`. Where sync is
    /// lost mid-buffer, the frames before are returned: call again with
    /// `buf[end..]` until `end` is 0.
    pub fn feed(&mut self, buf: &[u8]) -> (usize, usize) {
        if self.kind == Kind::Raw {
            return (0, buf.len());
        }
        let mut pos = 0;
        let mut skip = 0;
        loop {
            if !self.synced {
                match self.find_start(&buf[pos..]) {
                    Ok(at) => {
                        self.synced = true;
                        pos += at;
                        skip = pos;
                    }
                    Err(keep_from) => {
                        // No start yet: keep only what may still begin one.
                        let end = pos + keep_from;
                        self.dropped += end;
                        if self.dropped > SYNC_SEARCH {
                            // Not this format after all: relay as it comes.
                            self.kind = Kind::Raw;
                            self.synced = true;
                            return (0, buf.len());
                        }
                        return (end, end);
                    }
                }
            }
            match self.kind.frame_len(&buf[pos..]) {
                Some(n) if pos + n <= buf.len() => pos += n,
                Some(_) => return (skip, pos),
                None if self.header_cut(&buf[pos..]) => return (skip, pos),
                None => {
                    // Lost sync (junk between frames): send what is whole,
                    // look for the next start from here next time.
                    self.synced = false;
                    if pos > skip {
                        return (skip, pos);
                    }
                    pos += 1;
                    skip = pos;
                }
            }
        }
    }

    /// Whether `b` may be the start of a header that is cut short.
    fn header_cut(&self, b: &[u8]) -> bool {
        let need = match self.kind {
            Kind::Mpeg => 4,
            Kind::Adts => 7,
            Kind::Ogg => 27 + b.get(26).map_or(0, |&n| usize::from(n)),
            Kind::Raw => 0,
        };
        b.len() < need && {
            let sync = match self.kind {
                Kind::Ogg => b"OggS".as_slice(),
                _ => &[0xFF],
            };
            let n = b.len().min(sync.len());
            b[..n] == sync[..n]
        }
    }

    /// The offset of the first frame start in `b` that is followed by
    /// another header; else `Err(from)`: `b[from..]` may still hold one.
    fn find_start(&self, b: &[u8]) -> Result<usize, usize> {
        let mut at = 0;
        while let Some(i) = next_sync(self.kind, &b[at..]) {
            let p = at + i;
            match self.kind.frame_len(&b[p..]) {
                Some(n) => match b.get(p + n..) {
                    Some(rest) if self.kind.frame_len(rest).is_some() => return Ok(p),
                    Some(rest) if self.header_cut(rest) || rest.len() < 4 => return Err(p),
                    None => return Err(p),
                    Some(_) => {}
                },
                None if self.header_cut(&b[p..]) => return Err(p),
                None => {}
            }
            at = p + 1;
        }
        // Keep a last byte that may be the first of a sync word.
        Err(b.len().saturating_sub(3))
    }
}

/// Offset of the next possible frame start in `b`.
fn next_sync(kind: Kind, b: &[u8]) -> Option<usize> {
    match kind {
        Kind::Ogg => b.windows(4).position(|w| w == b"OggS"),
        _ => b
            .windows(2)
            .position(|w| w[0] == 0xFF && w[1] & 0xE0 == 0xE0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 128 kbit/s 44.1 kHz MPEG-1 layer III header, padded or not.
    fn mp3_frame(padding: bool) -> Vec<u8> {
        let mut h = vec![0xFF, 0xFB, 0x90 | if padding { 0x02 } else { 0x00 }, 0x44];
        let len = mpeg_frame_len(&h).unwrap();
        h.resize(len, 0x11);
        h
    }

    #[test]
    fn mpeg_lengths() {
        assert_eq!(mp3_frame(false).len(), 417);
        assert_eq!(mp3_frame(true).len(), 418);
        // MPEG-2 layer III, 64 kbit/s, 22.05 kHz: 72 × 64000 / 22050 = 208.
        assert_eq!(mpeg_frame_len(&[0xFF, 0xF3, 0x80, 0x00]), Some(208));
        assert_eq!(mpeg_frame_len(&[0xFF, 0xFB, 0xF0, 0x00]), None);
        assert_eq!(mpeg_frame_len(&[0xFF, 0xFB, 0x0C, 0x00]), None);
    }

    #[test]
    fn adts_and_ogg_lengths() {
        // ADTS: 0xFFF1, frame_length 371.
        let len: usize = 371;
        let b = [
            0xFF,
            0xF1,
            0x50,
            0x80 | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1F,
            0xFC,
        ];
        assert_eq!(adts_frame_len(&b), Some(371));
        let mut page = b"OggS\0".to_vec();
        page.resize(26, 0);
        page.extend_from_slice(&[2, 255, 10]);
        assert_eq!(ogg_page_len(&page), Some(27 + 2 + 265));
    }

    /// Feeds `stream` in chunks of `size` as the relay does (held-back
    /// bytes first); returns what would be sent and what is held at the end.
    fn relay(stream: &[u8], size: usize) -> (Vec<u8>, Vec<u8>) {
        let mut f = Framer::new(Kind::Mpeg);
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(size) {
            held.extend_from_slice(chunk);
            // As the relay does: until no progress.
            loop {
                let (skip, end) = f.feed(&held);
                if end == 0 {
                    break;
                }
                out.extend_from_slice(&held[skip..end]);
                held.drain(..end);
            }
        }
        (out, held)
    }

    #[test]
    fn whole_frames_across_chunks_and_junk() {
        // A torn frame's tail and junk before the first whole frame.
        let mut stream = mp3_frame(false)[200..].to_vec();
        stream.extend_from_slice(&[0xFF, 0xE0, 0x12]);
        let mut frames = Vec::new();
        for i in 0..6 {
            frames.extend(mp3_frame(i % 2 == 0));
        }
        stream.extend_from_slice(&frames);
        // The last frame is cut off by the edge.
        stream.extend_from_slice(&mp3_frame(false)[..100]);
        for size in [1, 7, 300, 417, 4096] {
            let (out, held) = relay(&stream, size);
            assert_eq!(out, frames, "chunks of {size}");
            assert_eq!(held.len(), 100, "chunks of {size}");
        }
    }

    #[test]
    fn junk_between_frames_is_dropped() {
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend(mp3_frame(false));
        }
        stream.extend_from_slice(b"TAG junk");
        for _ in 0..3 {
            stream.extend(mp3_frame(true));
        }
        let (out, held) = relay(&stream, 512);
        let mut want = Vec::new();
        for _ in 0..3 {
            want.extend(mp3_frame(false));
        }
        for _ in 0..3 {
            want.extend(mp3_frame(true));
        }
        assert_eq!(out, want);
        assert!(held.is_empty());
    }

    #[test]
    fn raw_is_every_byte() {
        let mut f = Framer::new(Kind::Raw);
        assert_eq!(f.feed(b"abc"), (0, 3));
        assert_eq!(Kind::of_content_type("audio/mpeg; x=1"), Kind::Mpeg);
        assert_eq!(Kind::of_content_type("application/ogg"), Kind::Ogg);
        assert_eq!(Kind::of_content_type("audio/aacp"), Kind::Adts);
        assert_eq!(Kind::of_content_type("text/plain"), Kind::Raw);
    }
}
