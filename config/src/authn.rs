//! Compiled RequestAuthentications: which JWTs a waypoint accepts, where in a request it finds
//! them, the keys that sign them, and what it hands on from their claims. Verifying a token is
//! the waypoint's; the key sets (inline, or fetched from a `jwksUri`) are parsed here, once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};

use crate::policy::PolicyScope;

/// One RequestAuthentication.
#[derive(Clone, Debug)]
pub struct RequestAuthentication {
    pub namespace: String,
    pub name: String,
    pub scope: PolicyScope,
    pub rules: Vec<Arc<JwtRule>>,
}

/// One `jwtRules` entry: tokens of one issuer.
#[derive(Clone, Debug)]
pub struct JwtRule {
    pub issuer: String,
    /// Empty: any audience (or none).
    pub audiences: Vec<String>,
    pub keys: Keys,
    /// Where tokens are looked for, in order (Istio's defaults filled in).
    pub locations: Vec<TokenLocation>,
    /// Gets the verified payload, base64url-encoded.
    pub output_payload_to_header: Option<HeaderName>,
    pub output_claim_to_headers: Vec<ClaimHeader>,
    /// Keep the token in the request sent on (else its header is removed).
    pub forward_original_token: bool,
}

/// Where a rule's keys come from.
#[derive(Clone, Debug)]
pub enum Keys {
    /// `jwks`, parsed when the config was compiled.
    Inline(Arc<KeySet>),
    /// `jwksUri`, or found through the issuer's OpenID discovery document: fetched (and
    /// refreshed) by the proxy.
    Remote(JwksUri),
}

/// Where a rule's key set is fetched from, and how long fetching it may take.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JwksUri {
    /// The `jwksUri`; or, for `discovery`, the issuer's OpenID configuration document
    /// (`<issuer>/.well-known/openid-configuration`), whose `jwks_uri` names the key set.
    pub uri: http::Uri,
    pub discovery: bool,
    pub timeout: Duration,
}

/// Where a token may be: a header (with a prefix before the token, such as `Bearer `), a query
/// parameter, or a cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

impl TokenLocation {
    /// Istio's default: `Authorization: Bearer <token>`, or the `access_token` parameter.
    pub fn defaults() -> Vec<Self> {
        vec![
            TokenLocation::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".to_string(),
            },
            TokenLocation::Param("access_token".to_string()),
        ]
    }
}

/// `outputClaimToHeaders`: a claim (a path into nested objects) copied into a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHeader {
    pub header: HeaderName,
    pub claim: Vec<String>,
}

/// Reads a claim path, `a.b` for `b` inside `a` (as `outputClaimToHeaders` names claims);
/// `request.auth.claims[a][b]` paths are split by the policy that reads them.
pub fn claim_path(text: &str) -> Vec<String> {
    text.split('.').map(str::to_string).collect()
}

/// A JSON Web Key Set, its keys ready to verify with.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<JwtKey>,
}

/// One key of a set and the algorithms it may verify: those of its type (and curve), or just
/// the one its `alg` names. Checking this before verifying is what keeps an RSA public key from
/// being used as an HMAC secret.
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.iter().map(|k| (&k.kid, &k.algorithms));
        f.debug_list().entries(keys).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys this mesh cannot verify with (encryption keys, curves or
    /// key types it does not support) are skipped, as Envoy skips them; a set left with no key
    /// is an error, naming what was skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in document.keys.into_iter().enumerate() {
            match serde_json::from_value::<Jwk>(value)
                .map_err(|e| e.to_string())
                .and_then(|jwk| JwtKey::of(&jwk))
            {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if keys.is_empty() {
            let why = match skipped.is_empty() {
                true => "it has none".to_string(),
                false => skipped.join("; "),
            };
            return Err(format!("no key in the JWKS can verify a JWT: {why}"));
        }
        Ok(KeySet { keys })
    }

    /// The keys that may have signed a token with header `kid` and `alg`: the one with that
    /// `kid`, or, when the token names none, every key that takes `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a JwtKey> {
        (self.keys.iter())
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(move |k| k.algorithms.contains(&alg))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl JwtKey {
    fn of(jwk: &Jwk) -> Result<Self, String> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("an encryption key (\"use\": \"enc\")".to_string());
        }
        use Algorithm::*;
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![ES256],
                EllipticCurve::P384 => vec![ES384],
                ref other => return Err(format!("unsupported curve {other:?}")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => vec![EdDSA],
                ref other => return Err(format!("unsupported curve {other:?}")),
            },
            AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
        };
        let algorithms = match jwk.common.key_algorithm {
            None => family,
            Some(named) => {
                let alg = signing_algorithm(named)
                    .filter(|a| family.contains(a))
                    .ok_or_else(|| format!("\"alg\": {named} does not fit the key"))?;
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        Ok(JwtKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        })
    }
}

/// The signing algorithm a JWK's `alg` names, if it names one.
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    alg.to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keys_are_tied_to_the_algorithms_of_their_type() {
        let text = format!(
            r#"{{"keys":[{EC_KEY},{{"kty":"oct","kid":"h","alg":"HS384","k":"c2VjcmV0"}}]}}"#
        );
        let set = KeySet::parse(&text).expect("parses");
        assert_eq!(set.len(), 2);
        let algs = |kid, alg| set.candidates(kid, alg).count();
        assert_eq!(algs(Some("ec"), Algorithm::ES256), 1);
        // An EC key never verifies an HMAC token, whatever the token says.
        assert_eq!(algs(Some("ec"), Algorithm::HS256), 0);
        assert_eq!(algs(Some("h"), Algorithm::HS384), 1);
        assert_eq!(algs(Some("h"), Algorithm::HS256), 0, "alg pins the key");
        assert_eq!(algs(None, Algorithm::ES256), 1);
        assert_eq!(algs(Some("other"), Algorithm::ES256), 0);
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_any_is_refused() {
        let text = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","use":"enc","x":"a","y":"b"}},{EC_KEY}]}}"#
        );
        assert_eq!(KeySet::parse(&text).expect("one usable key").len(), 1);
        let error = KeySet::parse(r#"{"keys":[{"kty":"RSA","use":"enc","n":"AQ","e":"AQAB"}]}"#)
            .expect_err("no usable key");
        assert!(error.contains("keys[0]: an encryption key"), "{error}");
        let error = KeySet::parse(r#"{"keys":[]}"#).expect_err("empty");
        assert!(error.contains("it has none"), "{error}");
        let error = KeySet::parse("<html>").expect_err("garbage");
        assert!(error.starts_with("not a JWKS document"), "{error}");
        let error = KeySet::parse(&format!(
            r#"{{"keys":[{}]}}"#,
            EC_KEY.replace(r#""kid":"ec""#, r#""alg":"RS256""#)
        ))
        .expect_err("alg that does not fit");
        assert!(error.contains("does not fit the key"), "{error}");
    }
}
