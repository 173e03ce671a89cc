//! What a poll learned about an edge, whatever its kind.

/// What one poll learned about an edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeStatus {
    /// Live mounts, in the order the edge listed them.
    pub mounts: Vec<MountStatus>,
    /// True when the body was not valid JSON and was read by the lenient
    /// scanner (Icecast's known XSLT escaping fault).
    pub lenient: bool,
    /// Measured output of the whole edge, bits per second, where the edge
    /// reports it (nginx-rtmp `bw_out`).
    pub bw_out_bps: Option<u64>,
}

impl EdgeStatus {
    /// Listeners on every mount of the edge.
    pub fn listeners(&self) -> u64 {
        self.mounts.iter().map(|m| m.listeners).sum()
    }

    /// The status of `mount`, if it is live on this edge.
    pub fn mount(&self, mount: &str) -> Option<&MountStatus> {
        self.mounts.iter().find(|m| m.mount == mount)
    }
}

/// One live mount (Icecast) or stream (HLS: keyed by playlist path) on an
/// edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStatus {
    /// The mount path, e.g. `/air` (the path of `listenurl`), or the HLS
    /// playlist path of a stream, e.g. `/hls/stream.m3u8`.
    pub mount: String,
    /// Listeners connected now (Icecast: relays pulling from this edge
    /// count too; nginx-rtmp: RTMP viewers, the publisher not counted).
    pub listeners: u64,
    /// The mount's own listener limit from `/admin/stats`; `None` when
    /// unlimited or unknown.
    pub max_listeners: Option<u64>,
}
