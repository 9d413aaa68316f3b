//! Tokens verified lately. Checking a signature costs 20–60 µs (RS256, ES256 on this
//! project's hosts), more than the rest of a request's work at the waypoint, and callers send
//! the same token many times; so a token verified under a rule and a key set is not verified
//! again while both stand, only its times are checked again. Bounded: tokens over 8 KiB are
//! not kept, and the whole cache (at most 4 MiB of tokens) is emptied when full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use mesh_config::authn::{JwtRule, KeySet};

use super::verify::{CLOCK_SKEW_SECONDS, JwtError, JwtIdentity};

const MAX_TOKEN_BYTES: usize = 8 << 10;
const MAX_BYTES: usize = 4 << 20;

/// Which rule and key set verified a token: a snapshot change (a new rule) or a key rotation
/// (a new set) makes its entries miss.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    rule: usize,
    keys: usize,
    token: Box<str>,
}

/// A kept token's identity, and the rule and key set that verified it: held, so that their
/// addresses (the key) cannot be taken by another rule or set while the entry lives.
struct Entry {
    identity: Arc<JwtIdentity>,
    _rule: Arc<JwtRule>,
    _keys: Arc<KeySet>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
}

/// Verified tokens, shared by a waypoint's requests.
#[derive(Default)]
pub struct VerifiedTokens(Mutex<Entries>);

impl VerifiedTokens {
    /// `token`'s identity if `rule` verified it with `keys` before, its `exp` and `nbf` checked
    /// again against `now` (seconds since the epoch).
    pub fn get(
        &self,
        rule: &Arc<JwtRule>,
        keys: &Arc<KeySet>,
        token: &str,
        now: u64,
    ) -> Option<Result<Arc<JwtIdentity>, JwtError>> {
        let key = key(rule, keys, token);
        let found = self.lock().map.get(&key).map(|e| e.identity.clone())?;
        Some(still_valid(&found, now).map(|()| found))
    }

    /// Keeps `identity` as what `rule` and `keys` make of `token`.
    pub fn put(
        &self,
        rule: &Arc<JwtRule>,
        keys: &Arc<KeySet>,
        token: &str,
        identity: Arc<JwtIdentity>,
    ) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let mut entries = self.lock();
        if entries.bytes + token.len() > MAX_BYTES {
            *entries = Entries::default();
        }
        let entry = Entry {
            identity,
            _rule: rule.clone(),
            _keys: keys.clone(),
        };
        if entries.map.insert(key(rule, keys, token), entry).is_none() {
            entries.bytes += token.len();
        }
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(rule: &Arc<JwtRule>, keys: &Arc<KeySet>, token: &str) -> Key {
    Key {
        rule: Arc::as_ptr(rule) as usize,
        keys: Arc::as_ptr(keys) as usize,
        token: token.into(),
    }
}

/// A kept token's times, as verification checks them (with the same skew).
fn still_valid(identity: &JwtIdentity, now: u64) -> Result<(), JwtError> {
    let time = |name: &str| {
        identity
            .claims
            .get(name)
            .and_then(serde_json::Value::as_u64)
    };
    if time("exp").is_some_and(|exp| exp + CLOCK_SKEW_SECONDS < now) {
        return Err(JwtError::Expired);
    }
    if time("nbf").is_some_and(|nbf| nbf > now + CLOCK_SKEW_SECONDS) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::test_keys::{TestKey, jwks, now};
    use mesh_config::authn::{Keys, TokenLocation};
    use serde_json::json;

    fn rule(keys: &Arc<KeySet>) -> Arc<JwtRule> {
        Arc::new(JwtRule {
            issuer: "https://issuer.example".into(),
            audiences: Vec::new(),
            keys: Keys::Inline(keys.clone()),
            locations: TokenLocation::defaults(),
            output_payload_to_header: None,
            output_claim_to_headers: Vec::new(),
            forward_original_token: false,
        })
    }

    #[test]
    fn a_kept_token_holds_for_its_rule_and_keys_and_its_times_are_checked_again() {
        let key = TestKey::es256("ec");
        let keys = Arc::new(KeySet::parse(&jwks(&[&key])).expect("jwks"));
        let r = rule(&keys);
        let exp = now() + 30;
        let claims = json!({"iss": "https://issuer.example", "sub": "a", "exp": exp});
        let token = key.sign(&claims);
        let identity = Arc::new(crate::authn::verify::verify(&token, &r, &keys).expect("valid"));
        let cache = VerifiedTokens::default();
        assert!(cache.get(&r, &keys, &token, now() as u64).is_none());
        cache.put(&r, &keys, &token, identity.clone());
        let kept = cache.get(&r, &keys, &token, now() as u64).expect("kept");
        assert_eq!(kept.expect("valid").principal, identity.principal);
        // Past `exp` (and the skew), the kept token is refused as verification would.
        let later = (exp + 61) as u64;
        assert_eq!(
            cache.get(&r, &keys, &token, later),
            Some(Err(JwtError::Expired))
        );
        // Rotated keys, or a rule from a new snapshot: not the same verification.
        let rotated = Arc::new(KeySet::parse(&jwks(&[&key])).expect("jwks"));
        assert!(cache.get(&r, &rotated, &token, now() as u64).is_none());
        assert!(
            cache
                .get(&rule(&keys), &keys, &token, now() as u64)
                .is_none()
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let key = TestKey::es256("ec");
        let keys = Arc::new(KeySet::parse(&jwks(&[&key])).expect("jwks"));
        let r = rule(&keys);
        let identity = Arc::new(JwtIdentity {
            principal: "p".into(),
            audiences: Vec::new(),
            presenter: None,
            claims: serde_json::Map::new(),
        });
        let cache = VerifiedTokens::default();
        cache.put(
            &r,
            &keys,
            &"x".repeat(MAX_TOKEN_BYTES + 1),
            identity.clone(),
        );
        assert!(cache.is_empty(), "a token over 8 KiB is not kept");
        let token = |i: usize| format!("{i:08}{}", "t".repeat(MAX_TOKEN_BYTES - 8));
        let fits = MAX_BYTES / MAX_TOKEN_BYTES;
        for i in 0..fits {
            cache.put(&r, &keys, &token(i), identity.clone());
        }
        assert_eq!(cache.len(), fits);
        cache.put(&r, &keys, &token(fits), identity);
        assert_eq!(cache.len(), 1, "full: emptied, then the new one kept");
    }
}
