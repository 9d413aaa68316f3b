//! One JWT checked against one rule: the key its header names (or every key that takes its
//! algorithm), the signature, the times (with Envoy's 60 s of clock skew), the issuer and the
//! rule's audiences. What it proves comes out as a [`JwtIdentity`]; why it fails, in Envoy's
//! words (what a caller of Istio's waypoint reads in a 401).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use mesh_config::authn::{JwtRule, KeySet};
use serde_json::{Map, Value};

/// Envoy's default `clock_skew_seconds`: how far past `exp` (or before `nbf`) a token holds.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwks remote fetch is failed")]
    KeysUnavailable,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwt verification fails")]
    VerificationFailed,
}

/// What a verified token proves, as policies read it.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtIdentity {
    /// `<iss>/<sub>`: what `requestPrincipals` and `request.auth.principal` match.
    pub principal: String,
    /// `aud`, one or many.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    pub claims: Map<String, Value>,
}

impl JwtIdentity {
    fn of(claims: Map<String, Value>) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let audiences = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let principal = format!(
            "{}/{}",
            text("iss").unwrap_or_default(),
            text("sub").unwrap_or_default()
        );
        JwtIdentity {
            principal,
            audiences,
            presenter: text("azp"),
            claims,
        }
    }

    /// The claim at `path` (each element a level of nesting): a string claim's value, or a list
    /// claim's strings. Anything else (absent, a number, an object) has none.
    pub fn claim_values<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> Vec<&str> {
        match self.claim(path) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The claim at `path`, whatever its type.
    pub fn claim<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> Option<&Value> {
        let mut path = path.into_iter();
        let mut value = self.claims.get(path.next()?)?;
        for name in path {
            value = value.as_object()?.get(name)?;
        }
        Some(value)
    }
}

/// The issuer a token claims, read before it is verified (to choose the rule that verifies it).
pub fn unverified_issuer(token: &str) -> Result<String, JwtError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let bytes =
        (URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))).map_err(|_| JwtError::BadFormat)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::BadFormat)?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err(JwtError::UnknownIssuer),
    }
}

/// The payload of a token (base64url, as it came): what `outputPayloadToHeader` forwards.
pub fn payload_segment(token: &str) -> Option<&str> {
    token.split('.').nth(1)
}

/// Verifies `token` against `rule`, with `keys` (the rule's own set, or the one fetched for
/// its `jwksUri`). The time is the system clock's.
pub fn verify(token: &str, rule: &JwtRule, keys: &KeySet) -> Result<JwtIdentity, JwtError> {
    let header = decode_header(token).map_err(|_| JwtError::BadFormat)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = CLOCK_SKEW_SECONDS;
    validation.required_spec_claims.clear();
    validation.validate_nbf = true;
    validation.set_issuer(&[&rule.issuer]);
    validation.validate_aud = !rule.audiences.is_empty();
    if validation.validate_aud {
        validation.set_audience(&rule.audiences);
        // A token without `aud` is for no one in particular: not for this rule's audiences.
        validation.set_required_spec_claims(&["aud"]);
    }
    let mut why = JwtError::NoMatchingKey;
    for key in keys.candidates(header.kid.as_deref(), header.alg) {
        match decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(JwtIdentity::of(data.claims)),
            // Another key (a token without `kid`) may have signed it.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                why = JwtError::VerificationFailed;
            }
            // The signature held; its claims did not.
            Err(e) => return Err(classify(e.kind())),
        }
    }
    Err(why)
}

fn classify(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        // `aud` is the only claim required (by a rule with audiences).
        ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
            JwtError::AudienceNotAllowed
        }
        ErrorKind::InvalidIssuer => JwtError::UnknownIssuer,
        ErrorKind::InvalidAlgorithm => JwtError::NoMatchingKey,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => JwtError::BadFormat,
        _ => JwtError::VerificationFailed,
    }
}
