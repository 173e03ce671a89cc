//! Configuration text (YAML): any UTF-8 is refused with errors or accepted,
//! never a panic. Input that is not UTF-8 is cut at its first invalid byte.
//!
//! `load_str` reads the files a config names (`sticky.secret_file`,
//! `admin.token_file`, `poll.ca_file`, TLS certificates), so the fuzzer may
//! read files by the paths it makes up; scripts/fuzz runs it with stdin
//! from /dev/null.
#![no_main]

use castgate::config::load_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => match std::str::from_utf8(&data[..e.valid_up_to()]) {
            Ok(prefix) => prefix,
            Err(_) => return,
        },
    };
    let _ = load_str(text);
});
