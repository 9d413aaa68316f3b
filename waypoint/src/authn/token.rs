//! Where a request's JWT is: the locations a rule names (a header after its prefix, a query
//! parameter, a cookie), read from the request as it arrived.

use mesh_config::authn::TokenLocation;

use crate::request::RequestAttrs;

/// The token at `location` in `request`, if there is one.
pub fn find<'a>(request: &RequestAttrs<'a>, location: &TokenLocation) -> Option<&'a str> {
    let token = match location {
        TokenLocation::Header { name, prefix } => {
            let value = request.headers.get(name)?.to_str().ok()?;
            strip_prefix_ignore_case(value, prefix)?
        }
        TokenLocation::Param(name) => query_param(request.query?, name)?,
        TokenLocation::Cookie(name) => (request.headers.get_all(http::header::COOKIE).iter())
            .filter_map(|v| v.to_str().ok())
            .find_map(|cookies| cookie(cookies, name))?,
    };
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// `value` after `prefix`, which matches ignoring ASCII case (`bearer ` as `Bearer `).
fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The value of parameter `name` in a query string. A JWT is base64url with dots, so it is
/// never percent-encoded; a value that is is taken as written, and fails verification.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    (query.split('&'))
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'c>(cookies: &'c str, name: &str) -> Option<&'c str> {
    (cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then(|| value.trim_matches('"')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn header(name: &str, prefix: &str) -> TokenLocation {
        TokenLocation::Header {
            name: HeaderName::from_bytes(name.as_bytes()).expect("name"),
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn tokens_are_found_where_the_rule_says() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("bearer a.b.c"));
        headers.insert("x-jwt", HeaderValue::from_static("Token: d.e.f"));
        headers.append("cookie", HeaderValue::from_static("theme=dark"));
        headers.append("cookie", HeaderValue::from_static("a=1; session=\"g.h.i\""));
        let request = RequestAttrs::new("GET", "/p?x=1&access_token=j.k.l", "h", &headers);
        let [bearer, custom, param, cookie_at] = [
            header("authorization", "Bearer "),
            header("x-jwt", "Token: "),
            TokenLocation::Param("access_token".into()),
            TokenLocation::Cookie("session".into()),
        ];
        assert_eq!(find(&request, &bearer), Some("a.b.c"));
        assert_eq!(find(&request, &custom), Some("d.e.f"));
        assert_eq!(find(&request, &param), Some("j.k.l"));
        assert_eq!(find(&request, &cookie_at), Some("g.h.i"));
        // Absent, or without the prefix: not there.
        assert_eq!(find(&request, &header("x-jwt", "Bearer ")), None);
        assert_eq!(find(&request, &header("x-none", "")), None);
        assert_eq!(find(&request, &TokenLocation::Param("token".into())), None);
        assert_eq!(
            find(&request, &TokenLocation::Cookie("theme2".into())),
            None
        );
        let empty = HeaderMap::new();
        let bare = RequestAttrs::new("GET", "/p", "h", &empty);
        assert_eq!(find(&bare, &param), None);
    }
}
