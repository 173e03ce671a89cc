//! nginx-rtmp `/stat` XML: whatever an edge answers, the parser returns a
//! status or an error, never panics.
#![no_main]

use castgate::poll::rtmp::parse_stat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = parse_stat(body);
});
