//! Icecast status bodies: `status-json.xsl` (JSON, or Icecast's broken
//! JSON read leniently) and `/admin/stats` (XML). Whatever an edge answers,
//! the parsers return a status or an error, never panic.
#![no_main]

use castgate::poll::icecast::{parse_admin_stats, parse_status_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = parse_status_json(body);
    let _ = parse_admin_stats(body);
});
