//! RequestAuthentication at the waypoint: find a request's JWTs where the rules in force look
//! for them, verify each against the rule of its issuer, and hand on what they prove (to
//! policies, and to the backend as headers the rules ask for). As Istio's waypoint does:
//! a request without a token passes (a policy may still demand a request principal); a token
//! that fails is refused with 401, whichever rule it fails.
//!
//! - [`token`]: where a token is (a header after its prefix, a query parameter, a cookie);
//! - [`verify`]: one token against one rule;
//! - [`jwks`]: the key sets of `jwksUri`s, fetched and refreshed, the last good one kept.
//!
//! Pure but for the clock: the rules, the request and the fetched key sets come in.

pub mod cache;
pub mod jwks;
pub mod token;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use mesh_config::authn::{JwtRule, KeySet, Keys, RequestAuthentication, TokenLocation};
use serde_json::Value;

pub use cache::VerifiedTokens;
pub use verify::{JwtError, JwtIdentity};

use crate::request::{RequestAttrs, RequestEdits};

/// The key sets fetched for `jwksUri`s, by URI.
pub type FetchedKeys = HashMap<http::Uri, Arc<KeySet>>;

/// What the request's tokens proved, and what that changes in the request sent on.
#[derive(Clone, Debug, Default)]
pub struct Authenticated {
    /// The first verified token's (none without a token).
    pub identity: Option<Arc<JwtIdentity>>,
    pub edits: RequestEdits,
}

/// Finds and verifies `request`'s tokens under `authentications` (those in force for its
/// destination), with the key sets `fetched` so far; a token `verified` before under the same
/// rule and keys is not verified again (its times are).
pub fn authenticate(
    authentications: &[Arc<RequestAuthentication>],
    request: &RequestAttrs<'_>,
    fetched: &FetchedKeys,
    verified: &VerifiedTokens,
) -> Result<Authenticated, JwtError> {
    let rules = || authentications.iter().flat_map(|a| a.rules.iter());
    let mut out = Authenticated::default();
    // What the rules write is theirs alone: a caller's own `x-jwt-sub`, say, never reaches
    // the backend as if a token had proved it.
    for rule in rules() {
        let written = (rule.output_payload_to_header.iter())
            .chain(rule.output_claim_to_headers.iter().map(|c| &c.header));
        for name in written {
            if !out.edits.remove.contains(name) {
                out.edits.remove.push(name.clone());
            }
        }
    }
    let mut checked: Vec<&str> = Vec::new();
    for location in rules().flat_map(|rule| rule.locations.iter()) {
        let Some(token) = token::find(request, location) else {
            continue;
        };
        if checked.contains(&token) {
            continue;
        }
        checked.push(token);
        // The rule for the token's issuer that looks where it was found verifies it.
        let issuer = verify::unverified_issuer(token)?;
        let rule = rules()
            .find(|r| r.issuer == issuer && r.locations.contains(location))
            .ok_or(JwtError::UnknownIssuer)?;
        let keys = match &rule.keys {
            Keys::Inline(set) => set,
            Keys::Remote(jwks) => fetched.get(&jwks.uri).ok_or(JwtError::KeysUnavailable)?,
        };
        let now = jsonwebtoken::get_current_timestamp();
        let identity = match verified.get(rule, keys, token, now) {
            Some(kept) => kept?,
            None => {
                let identity = Arc::new(verify::verify(token, rule, keys)?);
                verified.put(rule, keys, token, identity.clone());
                identity
            }
        };
        edits(rule, location, token, &identity, &mut out.edits);
        out.identity.get_or_insert(identity);
    }
    Ok(out)
}

/// What a verified token changes in the request: its header dropped (unless
/// `forwardOriginalToken`), its payload and claims copied into headers (set after the
/// removals, so a verified value replaces a caller's).
fn edits(
    rule: &JwtRule,
    location: &TokenLocation,
    token: &str,
    identity: &JwtIdentity,
    out: &mut RequestEdits,
) {
    if let (false, TokenLocation::Header { name, .. }) = (rule.forward_original_token, location)
        && !out.remove.contains(name)
    {
        out.remove.push(name.clone());
    }
    if let Some(name) = &rule.output_payload_to_header
        && let Some(payload) = verify::payload_segment(token)
        && let Ok(value) = HeaderValue::from_str(payload)
    {
        out.set.push((name.clone(), value));
    }
    for claim in &rule.output_claim_to_headers {
        let text = match identity.claim(claim.claim.iter().map(String::as_str)) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_str(&text) {
            out.set.push((claim.header.clone(), value));
        }
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Real keys and signed tokens for the tests.

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::{Value, json};

    /// A generated key pair and the JWKS entry of its public half.
    pub struct TestKey {
        pub alg: Algorithm,
        pub kid: &'static str,
        encoding: EncodingKey,
        pub jwk: Value,
    }

    impl TestKey {
        pub fn es256(kid: &'static str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let public = pair.public_key_raw();
            let (x, y) = public[1..].split_at(32);
            TestKey {
                alg: Algorithm::ES256,
                kid,
                encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
                jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
            }
        }

        pub fn eddsa(kid: &'static str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
            TestKey {
                alg: Algorithm::EdDSA,
                kid,
                encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())}),
            }
        }

        /// The tests' RSA key (`tests/data`), signing with `alg` (RS* or PS*).
        pub fn rsa(alg: Algorithm) -> Self {
            let der = include_bytes!("../../tests/data/jwt-rsa.der");
            let jwk = include_str!("../../tests/data/jwt-rsa.jwk.json");
            TestKey {
                alg,
                kid: "rsa-1",
                encoding: EncodingKey::from_rsa_der(der),
                jwk: serde_json::from_str(jwk).expect("jwk"),
            }
        }

        pub fn hs256(kid: &'static str, secret: &[u8]) -> Self {
            TestKey {
                alg: Algorithm::HS256,
                kid,
                encoding: EncodingKey::from_secret(secret),
                jwk: json!({"kty": "oct", "kid": kid, "k": URL_SAFE_NO_PAD.encode(secret)}),
            }
        }

        /// A token with `claims`, signed by this key, its header naming the key.
        pub fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(self.alg);
            header.kid = Some(self.kid.to_string());
            encode(&header, claims, &self.encoding).expect("signs")
        }

        /// As [`TestKey::sign`], with no `kid` in the header.
        pub fn sign_without_kid(&self, claims: &Value) -> String {
            encode(&Header::new(self.alg), claims, &self.encoding).expect("signs")
        }
    }

    /// A JWKS document of `keys`' public halves.
    pub fn jwks(keys: &[&TestKey]) -> String {
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    /// Now, in seconds since the epoch.
    pub fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::{TestKey, jwks, now};
    use super::*;
    use http::{HeaderMap, HeaderName};
    use jsonwebtoken::Algorithm;
    use mesh_config::authn::{ClaimHeader, JwksUri};
    use mesh_config::policy::PolicyScope;
    use serde_json::json;

    const ISSUER: &str = "https://issuer.example";

    fn rule(issuer: &str, audiences: &[&str], keys: Keys) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            keys,
            locations: TokenLocation::defaults(),
            output_payload_to_header: None,
            output_claim_to_headers: Vec::new(),
            forward_original_token: false,
        }
    }

    fn inline(keys: &[&TestKey]) -> Keys {
        Keys::Inline(Arc::new(KeySet::parse(&jwks(keys)).expect("jwks")))
    }

    fn authentication(rules: Vec<JwtRule>) -> Vec<Arc<RequestAuthentication>> {
        vec![Arc::new(RequestAuthentication {
            namespace: "default".into(),
            name: "jwt".into(),
            scope: PolicyScope::TargetRefs(Vec::new()),
            rules: rules.into_iter().map(Arc::new).collect(),
        })]
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {token}");
        headers.insert(
            "authorization",
            HeaderValue::from_str(&value).expect("value"),
        );
        headers
    }

    fn run(
        auths: &[Arc<RequestAuthentication>],
        headers: &HeaderMap,
    ) -> Result<Authenticated, JwtError> {
        let request = RequestAttrs::new("GET", "/", "reviews", headers);
        authenticate(
            auths,
            &request,
            &FetchedKeys::new(),
            &VerifiedTokens::default(),
        )
    }

    fn claims(extra: Value) -> Value {
        let mut base = json!({"iss": ISSUER, "sub": "alice", "exp": now() + 600});
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        base
    }

    #[test]
    fn every_supported_algorithm_verifies_and_proves_iss_slash_sub() {
        let keys = [
            TestKey::es256("ec"),
            TestKey::eddsa("ed"),
            TestKey::rsa(Algorithm::RS256),
            TestKey::hs256("hs", b"a secret of at least 32 bytes!!!"),
        ];
        let ps256 = TestKey::rsa(Algorithm::PS256);
        let auths = authentication(vec![rule(
            ISSUER,
            &[],
            inline(&keys.iter().collect::<Vec<_>>()),
        )]);
        for key in keys.iter().chain([&ps256]) {
            let token = key.sign(&claims(json!({"aud": ["a", "b"], "azp": "web"})));
            let done =
                run(&auths, &bearer(&token)).unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
            let identity = done.identity.expect("identity");
            assert_eq!(identity.principal, format!("{ISSUER}/alice"));
            assert_eq!(identity.audiences, ["a", "b"]);
            assert_eq!(identity.presenter.as_deref(), Some("web"));
            // The token is not forwarded by default.
            assert_eq!(done.edits.remove, [http::header::AUTHORIZATION]);
        }
    }

    #[test]
    fn bad_tokens_are_refused_in_envoys_words() {
        let key = TestKey::es256("ec");
        let other = TestKey::es256("ec");
        let auths = authentication(vec![rule(ISSUER, &["api"], inline(&[&key]))]);
        let cases = [
            (
                key.sign(&claims(json!({"aud": "api", "exp": now() - 120}))),
                JwtError::Expired,
            ),
            (
                key.sign(&claims(json!({"aud": "api", "nbf": now() + 120}))),
                JwtError::NotYetValid,
            ),
            (
                key.sign(&claims(json!({"aud": "web"}))),
                JwtError::AudienceNotAllowed,
            ),
            (key.sign(&claims(json!({}))), JwtError::AudienceNotAllowed),
            (
                key.sign(&json!({"iss": "https://other", "aud": "api"})),
                JwtError::UnknownIssuer,
            ),
            (
                other.sign(&claims(json!({"aud": "api"}))),
                JwtError::VerificationFailed,
            ),
            (
                TestKey::es256("new").sign(&claims(json!({"aud": "api"}))),
                JwtError::NoMatchingKey,
            ),
            ("not-a-jwt".to_string(), JwtError::BadFormat),
            ("a.b.c".to_string(), JwtError::BadFormat),
        ];
        for (token, expected) in cases {
            let refused = run(&auths, &bearer(&token)).expect_err(&token);
            assert_eq!(refused, expected, "{token}");
        }
        // Within the clock skew, an expired token still holds.
        let lately = key.sign(&claims(json!({"aud": "api", "exp": now() - 30})));
        assert!(run(&auths, &bearer(&lately)).is_ok());
        // A token without `kid` is tried with every key of its algorithm.
        let unnamed = key.sign_without_kid(&claims(json!({"aud": "api"})));
        assert!(run(&auths, &bearer(&unnamed)).is_ok());
    }

    #[test]
    fn no_token_passes_without_identity_and_the_issuer_picks_the_rule() {
        let a = TestKey::es256("a");
        let b = TestKey::eddsa("b");
        let auths = authentication(vec![
            rule(ISSUER, &[], inline(&[&a])),
            rule("https://b.example", &[], inline(&[&b])),
        ]);
        let none = run(&auths, &HeaderMap::new()).expect("no token");
        assert!(none.identity.is_none() && none.edits == RequestEdits::default());
        let from_b = b.sign(&json!({"iss": "https://b.example", "sub": "bob"}));
        let identity = run(&auths, &bearer(&from_b))
            .expect("b")
            .identity
            .expect("id");
        assert_eq!(identity.principal, "https://b.example/bob");
        // Signed by a, claiming b's issuer: b's keys do not verify it.
        let forged = a.sign(&json!({"iss": "https://b.example", "sub": "bob"}));
        assert_eq!(
            run(&auths, &bearer(&forged)).expect_err("forged"),
            JwtError::NoMatchingKey
        );
    }

    #[test]
    fn a_token_seen_again_is_taken_from_the_cache() {
        let key = TestKey::es256("ec");
        let auths = authentication(vec![rule(ISSUER, &[], inline(&[&key]))]);
        let headers = bearer(&key.sign(&claims(json!({}))));
        let request = RequestAttrs::new("GET", "/", "reviews", &headers);
        let verified = VerifiedTokens::default();
        let fetched = FetchedKeys::new();
        let first = authenticate(&auths, &request, &fetched, &verified).expect("valid");
        assert_eq!(verified.len(), 1);
        let again = authenticate(&auths, &request, &fetched, &verified).expect("kept");
        let (first, again) = (first.identity.expect("id"), again.identity.expect("id"));
        assert!(
            Arc::ptr_eq(&first, &again),
            "the kept identity, not a new verification"
        );
    }

    #[test]
    fn a_jwks_uri_not_fetched_yet_refuses_its_tokens() {
        let key = TestKey::es256("ec");
        let uri: http::Uri = "http://jwks.auth:8000/keys".parse().expect("uri");
        let remote = Keys::Remote(JwksUri {
            uri: uri.clone(),
            discovery: false,
            timeout: std::time::Duration::from_secs(1),
        });
        let auths = authentication(vec![rule(ISSUER, &[], remote)]);
        let token = key.sign(&claims(json!({})));
        let request_headers = bearer(&token);
        let request = RequestAttrs::new("GET", "/", "reviews", &request_headers);
        let refused = authenticate(
            &auths,
            &request,
            &FetchedKeys::new(),
            &VerifiedTokens::default(),
        );
        assert_eq!(refused.expect_err("no keys"), JwtError::KeysUnavailable);
        let fetched =
            FetchedKeys::from([(uri, Arc::new(KeySet::parse(&jwks(&[&key])).expect("set")))]);
        assert!(authenticate(&auths, &request, &fetched, &VerifiedTokens::default()).is_ok());
    }

    #[test]
    fn outputs_copy_the_payload_and_claims_and_may_keep_the_token() {
        let key = TestKey::es256("ec");
        let mut r = rule(ISSUER, &[], inline(&[&key]));
        r.locations = vec![TokenLocation::Header {
            name: HeaderName::from_static("x-jwt"),
            prefix: String::new(),
        }];
        r.forward_original_token = true;
        r.output_payload_to_header = Some(HeaderName::from_static("x-jwt-payload"));
        let claim = |header: &'static str, path: &[&str]| ClaimHeader {
            header: HeaderName::from_static(header),
            claim: path.iter().map(|p| p.to_string()).collect(),
        };
        r.output_claim_to_headers = vec![
            claim("x-sub", &["sub"]),
            claim("x-tier", &["org", "tier"]),
            claim("x-admin", &["admin"]),
            claim("x-missing", &["nope"]),
        ];
        let auths = authentication(vec![r]);
        let token = key.sign(&claims(json!({"org": {"tier": "gold"}, "admin": true})));
        let mut headers = HeaderMap::new();
        headers.insert("x-jwt", HeaderValue::from_str(&token).expect("value"));
        let done = run(&auths, &headers).expect("valid");
        // The token's header stays (forwardOriginalToken); the output headers are the
        // rule's alone: whatever the caller sent under those names goes.
        let removed: Vec<&str> = done.edits.remove.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            removed,
            ["x-jwt-payload", "x-sub", "x-tier", "x-admin", "x-missing"]
        );
        let set: Vec<(&str, &str)> = (done.edits.set.iter())
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        let payload = token.split('.').nth(1).expect("payload");
        assert_eq!(
            set,
            [
                ("x-jwt-payload", payload),
                ("x-sub", "alice"),
                ("x-tier", "gold"),
                ("x-admin", "true"),
            ]
        );
        // The default header is not looked at by this rule; with no token, the output headers
        // are still taken out.
        let unproved = run(&auths, &bearer(&token)).expect("ignored");
        assert!(unproved.identity.is_none() && unproved.edits.set.is_empty());
        assert_eq!(unproved.edits.remove.len(), 5);
    }
}
