//! ICY metadata (SHOUTcast's, kept by Icecast 2.x): a listener that sends
//! `Icy-MetaData: 1` gets `icy-metaint: N` in the answer's head and, after
//! every N bytes of audio, one length byte L and L × 16 bytes of text
//! (`StreamTitle='…';`, NUL-padded); L = 0 when the title has not changed.
//!
//! A relayed stream resumed on another edge ([`super::relay`]) must keep
//! the interval it announced, though the new edge counts its own interval
//! from its own first byte: [`IcyReader`] takes each edge's blocks out of
//! its bytes, and [`IcyWriter`] puts blocks back at the listener's
//! interval, with the latest title.

use bytes::{BufMut, BytesMut};

/// Takes the metadata blocks out of one edge's body.
#[derive(Debug, Clone)]
pub struct IcyReader {
    metaint: usize,
    /// Audio bytes until the next length byte.
    audio_left: usize,
    /// Inside a block: its text so far and the bytes still to come.
    block: Option<(Vec<u8>, usize)>,
    /// The latest non-empty block's text, until taken.
    latest: Option<Vec<u8>>,
}

impl IcyReader {
    /// A reader for an edge that announced `icy-metaint: metaint` (> 0),
    /// from its first body byte.
    pub fn new(metaint: usize) -> IcyReader {
        IcyReader {
            metaint,
            audio_left: metaint,
            block: None,
            latest: None,
        }
    }

    /// Remove the metadata bytes from `buf[from..]` (bytes just read from
    /// the edge) in place, leaving its audio.
    pub fn strip(&mut self, buf: &mut BytesMut, from: usize) {
        let mut read = from;
        let mut write = from;
        let len = buf.len();
        while read < len {
            match self.block.as_mut() {
                None if self.audio_left > 0 => {
                    let n = self.audio_left.min(len - read);
                    buf.copy_within(read..read + n, write);
                    read += n;
                    write += n;
                    self.audio_left -= n;
                }
                None => {
                    let size = usize::from(buf[read]) * 16;
                    read += 1;
                    if size == 0 {
                        self.audio_left = self.metaint;
                    } else {
                        self.block = Some((Vec::with_capacity(size), size));
                    }
                }
                Some((text, left)) => {
                    let n = (*left).min(len - read);
                    text.extend_from_slice(&buf[read..read + n]);
                    read += n;
                    *left -= n;
                    if *left == 0 {
                        let mut text = std::mem::take(text);
                        while text.last() == Some(&0) {
                            text.pop();
                        }
                        if !text.is_empty() {
                            self.latest = Some(text);
                        }
                        self.block = None;
                        self.audio_left = self.metaint;
                    }
                }
            }
        }
        buf.truncate(write);
    }

    /// The text of the latest metadata block seen since the last call.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.latest.take()
    }
}

/// Puts metadata blocks into a listener's body every `metaint` audio bytes.
#[derive(Debug, Clone)]
pub struct IcyWriter {
    metaint: usize,
    /// Audio bytes until the next block.
    until: usize,
    /// The title to send at the next block, if it changed.
    pending: Option<Vec<u8>>,
    /// The title sent last.
    sent: Vec<u8>,
}

/// Longest metadata text, bytes (the length byte counts 16-byte units).
const MAX_TEXT: usize = 255 * 16;

impl IcyWriter {
    /// A writer for a listener told `icy-metaint: metaint` (> 0).
    pub fn new(metaint: usize) -> IcyWriter {
        IcyWriter {
            metaint,
            until: metaint,
            pending: None,
            sent: Vec::new(),
        }
    }

    /// The metadata text (e.g. `StreamTitle='…';`) for the next block; the
    /// same text as the one sent last is not sent again.
    pub fn set(&mut self, text: Vec<u8>) {
        if text != self.sent {
            self.pending = Some(text);
        } else {
            self.pending = None;
        }
    }

    /// Append `audio` to `out` with a block after every `metaint` audio
    /// bytes of the listener's body.
    pub fn write(&mut self, mut audio: &[u8], out: &mut BytesMut) {
        out.reserve(audio.len() + 1 + audio.len() / self.metaint.max(1) * 2);
        while !audio.is_empty() {
            let n = self.until.min(audio.len());
            out.put_slice(&audio[..n]);
            audio = &audio[n..];
            self.until -= n;
            if self.until == 0 {
                self.block(out);
                self.until = self.metaint;
            }
        }
    }

    fn block(&mut self, out: &mut BytesMut) {
        match self.pending.take() {
            Some(mut text) => {
                text.truncate(MAX_TEXT);
                let units = text.len().div_ceil(16);
                out.put_u8(units as u8);
                out.put_slice(&text);
                out.put_bytes(0, units * 16 - text.len());
                self.sent = text;
            }
            None => out.put_u8(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edge's ICY body: `blocks` rounds of `metaint` audio bytes (value
    /// `audio`) and a block with `title` on the first round.
    fn edge_body(metaint: usize, rounds: usize, title: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in 0..rounds {
            out.extend(std::iter::repeat_n(r as u8, metaint));
            if r == 0 {
                let units = title.len().div_ceil(16);
                out.push(units as u8);
                out.extend_from_slice(title);
                out.extend(std::iter::repeat_n(0, units * 16 - title.len()));
            } else {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn strips_blocks_across_reads() {
        let body = edge_body(100, 5, b"StreamTitle='A';");
        for size in [1, 3, 17, 101, 1000] {
            let mut r = IcyReader::new(100);
            let mut buf = BytesMut::new();
            for chunk in body.chunks(size) {
                let from = buf.len();
                buf.extend_from_slice(chunk);
                r.strip(&mut buf, from);
            }
            assert_eq!(buf.len(), 500, "reads of {size}");
            assert!(buf[..100].iter().all(|&b| b == 0) && buf[400..].iter().all(|&b| b == 4));
            assert_eq!(r.take().as_deref(), Some(&b"StreamTitle='A';"[..]));
            assert_eq!(r.take(), None);
        }
    }

    #[test]
    fn writes_blocks_at_its_own_interval_and_titles_once() {
        let mut w = IcyWriter::new(64);
        w.set(b"StreamTitle='A';".to_vec());
        let mut out = BytesMut::new();
        w.write(&[7u8; 100], &mut out);
        w.set(b"StreamTitle='A';".to_vec());
        w.write(&[7u8; 100], &mut out);
        // 200 audio bytes: blocks after 64 (the title), 128 and 192 (empty).
        let mut r = IcyReader::new(64);
        let from = 0;
        let mut buf = out.clone();
        r.strip(&mut buf, from);
        assert_eq!(buf.len(), 200);
        assert_eq!(r.take().as_deref(), Some(&b"StreamTitle='A';"[..]));
        assert_eq!(out.len(), 200 + 1 + 16 + 1 + 1);
    }
}
