//! Session tokens (`{edge}.{expiry}.{session}.{mac}`):
//! 1. the input as a string verifies only if it is exactly the token the
//!    signer would issue for the claims it carries (a forgery would need
//!    the HMAC secret);
//! 2. a token from `issue`, changed by fuzzer-chosen mutations, verifies
//!    again only when the mutations gave back the original (as the
//!    proptest in src/balance/sticky.rs: a change in the last character
//!    that decodes to the same MAC bytes is not counted as a change).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use castgate::balance::sticky::Sticky;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The secret and ttl of the proptest in src/balance/sticky.rs.
static SIGNER: LazyLock<Sticky> =
    LazyLock::new(|| Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600)));

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// One change to a token's bytes; positions wrap around its length.
#[derive(Arbitrary, Debug)]
enum Mutation {
    Replace { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { len: usize },
    Append(Vec<u8>),
    Splice { at: usize, len: u8, with: Vec<u8> },
    Swap { a: usize, b: usize },
}

impl Mutation {
    fn apply(&self, t: &mut Vec<u8>) {
        let wrap = |i: usize, n: usize| if n == 0 { 0 } else { i % n };
        match self {
            Mutation::Replace { at, byte } => {
                if !t.is_empty() {
                    let i = wrap(*at, t.len());
                    t[i] = *byte;
                }
            }
            Mutation::Insert { at, byte } => {
                let i = wrap(*at, t.len() + 1);
                t.insert(i, *byte);
            }
            Mutation::Remove { at } => {
                if !t.is_empty() {
                    let i = wrap(*at, t.len());
                    t.remove(i);
                }
            }
            Mutation::Truncate { len } => t.truncate(wrap(*len, t.len() + 1)),
            Mutation::Append(more) => t.extend_from_slice(more),
            Mutation::Splice { at, len, with } => {
                let i = wrap(*at, t.len() + 1);
                let end = (i + usize::from(*len)).min(t.len());
                t.splice(i..end, with.iter().copied());
            }
            Mutation::Swap { a, b } => {
                if !t.is_empty() {
                    let (a, b) = (wrap(*a, t.len()), wrap(*b, t.len()));
                    t.swap(a, b);
                }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Case {
    /// Bytes mapped onto edge-name characters (`[a-z0-9_-]`, as config
    /// validation allows).
    edge: Vec<u8>,
    mutations: Vec<Mutation>,
}

fn edge_name(raw: &[u8]) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-";
    let name: String = raw
        .iter()
        .take(32)
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect();
    if name.is_empty() {
        "edge-1".to_string()
    } else {
        name
    }
}

fn mac_bytes(token: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(&token[token.rfind('.').map_or(0, |i| i + 1)..])
        .ok()
}

fn body(token: &str) -> &str {
    token.rfind('.').map_or("", |i| &token[..i])
}

fuzz_target!(|data: &[u8]| {
    let s = &*SIGNER;

    // 1. Arbitrary strings.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(claims) = s.verify(text, now()) {
            assert_eq!(text, s.sign(&claims), "verified a token it did not issue");
        }
    }

    // 2. Mutations of an issued token.
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let (token, claims) = s.issue(&edge_name(&case.edge), now());
    assert_eq!(s.verify(&token, now()), Some(claims.clone()), "{token}");
    let mut bytes = token.clone().into_bytes();
    for m in case.mutations.iter().take(4) {
        m.apply(&mut bytes);
    }
    let Ok(mutated) = String::from_utf8(bytes) else {
        return;
    };
    let verified = s.verify(&mutated, now());
    if mutated == token {
        assert_eq!(verified, Some(claims));
    } else {
        // Same signed fields and a MAC that decodes to the same bytes: the
        // base64url text of one MAC.
        let same_mac = body(&mutated) == body(&token)
            && mac_bytes(&mutated).is_some()
            && mac_bytes(&mutated) == mac_bytes(&token);
        if !same_mac {
            assert!(
                verified.is_none(),
                "{mutated:?} (from {token:?}) verified as {verified:?}"
            );
        }
    }
});
