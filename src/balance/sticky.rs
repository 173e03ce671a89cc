//! Signed session tokens: which edge a session is on, until when.
//!
//! Shape: `{edge}.{expiry}.{session}[.{timeline}].{mac}` where `edge` is
//! the edge's name (`[a-z0-9_-]+`), `expiry` is Unix seconds (decimal),
//! `session` is 16 hex digits, `timeline` (present once a session has moved
//! between HLS edges that number their segments differently, see
//! [`Timeline`]) is `{first}_{seq}_{disc}` in decimal (`seq` and `disc` may
//! be negative), and `mac` is the unpadded base64url HMAC-SHA256 (RFC 2104,
//! FIPS 180-4) of the fields before it joined by `.`. Every character is
//! safe in a URL path segment and in a cookie value. Tokens are stateless:
//! any instance holding the same secret verifies them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The edge's configured name.
    pub edge: String,
    /// Unix seconds after which the token is ignored.
    pub expiry: u64,
    /// Random id of the session, for counting.
    pub session: u64,
    /// How the edge's segment numbers map to the ones this session's player
    /// has seen; `None` until the session moves between HLS edges.
    pub timeline: Option<Timeline>,
}

/// The renumbering that keeps one HLS session's media sequence growing
/// across a move between edges that cut their own segments (RFC 8216
/// §6.2.2: a segment keeps its Media Sequence Number and numbers only
/// grow; a change of timeline is marked with `EXT-X-DISCONTINUITY`).
///
/// The edge's segment `s` is answered as `s + seq`, with the Discontinuity
/// Sequence Number it has on the edge plus `disc`; segments before `first`
/// (which the player saw, under other numbers, from the edge it left) are
/// left out, and `EXT-X-DISCONTINUITY` marks `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// The edge's Media Sequence Number of the first segment answered.
    pub first: u64,
    /// Added to the edge's Media Sequence Numbers.
    pub seq: i64,
    /// Added to the edge's Discontinuity Sequence Numbers.
    pub disc: i64,
}

/// Issues tokens with one secret and verifies them with any of a list
/// (secret rotation: add the new secret second, let it spread, then move it
/// first).
#[derive(Clone)]
pub struct Sticky {
    /// The first signs; every one verifies. Never empty.
    keys: Vec<HmacSha256>,
    ttl: Duration,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sticky {
    /// A signer with `secret` (any length; HMAC hashes long keys) whose
    /// tokens last `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Sticky {
        Sticky::with_secrets(&[secret.to_vec()], ttl)
    }

    /// A signer with several secrets: the first signs, all verify. An
    /// empty list gets a random secret.
    pub fn with_secrets(secrets: &[Vec<u8>], ttl: Duration) -> Sticky {
        let mut keys: Vec<HmacSha256> = secrets
            .iter()
            // HMAC accepts keys of any length, so this never drops one.
            .filter_map(|s| <HmacSha256 as Mac>::new_from_slice(s).ok())
            .collect();
        if keys.is_empty() {
            let secret: [u8; 32] = rand::random();
            keys.extend(<HmacSha256 as Mac>::new_from_slice(&secret).ok());
        }
        Sticky { keys, ttl }
    }

    /// A signer with a fresh random 32-byte secret.
    pub fn random(ttl: Duration) -> Sticky {
        Sticky::with_secrets(&[], ttl)
    }

    /// How long tokens last.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new token for a new session on `edge`, valid for the ttl from `now`.
    pub fn issue(&self, edge: &str, now: SystemTime) -> (String, Claims) {
        let claims = Claims {
            edge: edge.to_string(),
            expiry: unix(now) + self.ttl.as_secs(),
            session: rand::random(),
            timeline: None,
        };
        (self.sign(&claims), claims)
    }

    /// The same session on another edge (a move after its edge failed).
    pub fn reissue(&self, session: u64, edge: &str, now: SystemTime) -> (String, Claims) {
        self.reissue_with(session, edge, None, now)
    }

    /// The same session on `edge` with `timeline` (an HLS move that keeps
    /// the player's media sequence).
    pub fn reissue_with(
        &self,
        session: u64,
        edge: &str,
        timeline: Option<Timeline>,
        now: SystemTime,
    ) -> (String, Claims) {
        let claims = Claims {
            edge: edge.to_string(),
            expiry: unix(now) + self.ttl.as_secs(),
            session,
            timeline,
        };
        (self.sign(&claims), claims)
    }

    /// The token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut body = format!("{}.{}.{:016x}", claims.edge, claims.expiry, claims.session);
        if let Some(t) = &claims.timeline {
            body.push_str(&format!(".{}_{}_{}", t.first, t.seq, t.disc));
        }
        let tag = match self.keys.first() {
            Some(key) => {
                let mut mac = key.clone();
                mac.update(body.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            }
            None => String::new(),
        };
        format!("{body}.{tag}")
    }

    /// The claims of `token` if its MAC is right and it has not expired at
    /// `now`; `None` for anything forged, tampered, expired or malformed.
    pub fn verify(&self, token: &str, now: SystemTime) -> Option<Claims> {
        self.authentic(token).filter(|c| unix(now) < c.expiry)
    }

    /// The claims of a token whose MAC is right, expired or not. An expired
    /// token must not choose an edge; its session id may still be reused so
    /// that a player that keeps asking with it counts as one session.
    pub fn authentic(&self, token: &str) -> Option<Claims> {
        if token.len() > 200 {
            return None;
        }
        let (body, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let signed_by_one = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(body.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&tag).is_ok()
        });
        if !signed_by_one {
            return None;
        }
        let mut parts = body.split('.');
        let edge = parts.next()?;
        let expiry: u64 = parts.next()?.parse().ok()?;
        let session_hex = parts.next()?;
        if session_hex.len() != 16 {
            return None;
        }
        let session = u64::from_str_radix(session_hex, 16).ok()?;
        let timeline = match parts.next() {
            None => None,
            Some(t) => {
                let mut nums = t.split('_');
                let timeline = Timeline {
                    first: nums.next()?.parse().ok()?,
                    seq: nums.next()?.parse().ok()?,
                    disc: nums.next()?.parse().ok()?,
                };
                if nums.next().is_some() {
                    return None;
                }
                Some(timeline)
            }
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Claims {
            edge: edge.to_string(),
            expiry,
            session,
            timeline,
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn round_trip_and_path_safe() {
        let s = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600));
        let (token, claims) = s.issue("edge-1", now());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
        assert_eq!(s.verify(&token, now()), Some(claims.clone()));
        assert_eq!(claims.expiry, 1_800_003_600);
        // Another instance with the same secret agrees.
        let other = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(60));
        assert_eq!(other.verify(&token, now()), Some(claims));
    }

    #[test]
    fn a_timeline_round_trips_and_is_signed() {
        let s = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600));
        let timeline = Timeline {
            first: 17,
            seq: -9,
            disc: 3,
        };
        let (token, claims) = s.reissue_with(42, "b", Some(timeline), now());
        assert!(token.contains(".17_-9_3."), "{token}");
        assert_eq!(s.verify(&token, now()), Some(claims.clone()));
        assert_eq!(claims.timeline, Some(timeline));
        let shifted = token.replace(".17_-9_3.", ".17_-8_3.");
        assert_eq!(s.verify(&shifted, now()), None, "the timeline is signed");
    }

    #[test]
    fn forged_tampered_expired_and_junk_are_ignored() {
        let s = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600));
        let (token, _) = s.issue("a", now());
        let stranger = Sticky::new(b"another secret entirely", Duration::from_secs(3600));
        assert_eq!(stranger.verify(&token, now()), None);
        let moved = token.replacen("a.", "b.", 1);
        assert_eq!(s.verify(&moved, now()), None);
        let later = token.replace("1800003600", "1900003600");
        assert_eq!(s.verify(&later, now()), None);
        assert_eq!(s.verify(&token, now() + Duration::from_secs(3600)), None);
        for junk in ["", ".", "a.b.c.d", "a.1.zz.AAAA", &"x".repeat(500)] {
            assert_eq!(s.verify(junk, now()), None, "{junk}");
        }
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = Sticky::new(b"old-secret-0123456789", Duration::from_secs(3600));
        let (old_token, claims) = old.issue("a", now());
        let rolling = Sticky::with_secrets(
            &[
                b"new-secret-0123456789".to_vec(),
                b"old-secret-0123456789".to_vec(),
            ],
            Duration::from_secs(3600),
        );
        assert_eq!(rolling.verify(&old_token, now()), Some(claims));
        let (new_token, _) = rolling.issue("a", now());
        assert_eq!(
            old.verify(&new_token, now()),
            None,
            "signed with the new secret"
        );
        assert!(
            Sticky::new(b"new-secret-0123456789", Duration::from_secs(3600))
                .verify(&new_token, now())
                .is_some()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_mutation_of_a_valid_token_is_rejected(pos in 0usize..80, byte in 0u8..128) {
            let s = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600));
            let (token, _) = s.issue("edge-1", now());
            let mut bytes = token.clone().into_bytes();
            let i = pos % bytes.len();
            proptest::prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                // base64url's last character can carry unused bits: a change
                // there may decode to the same MAC; anything else must fail.
                let same_mac = i == token.len() - 1
                    && URL_SAFE_NO_PAD.decode(&mutated[mutated.rfind('.').unwrap_or(0) + 1..]).ok()
                        == URL_SAFE_NO_PAD.decode(&token[token.rfind('.').unwrap_or(0) + 1..]).ok();
                if !same_mac {
                    proptest::prop_assert!(s.verify(&mutated, now()).is_none(), "{} verified", mutated);
                }
            }
        }

        #[test]
        fn arbitrary_strings_never_verify_or_panic(t in ".{0,120}") {
            let s = Sticky::new(b"0123456789abcdef0123", Duration::from_secs(3600));
            proptest::prop_assert!(s.verify(&t, now()).is_none());
        }
    }
}
