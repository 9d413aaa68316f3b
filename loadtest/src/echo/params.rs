//! Parsing fortio's echo query parameters into a decision for one request (pure).

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

/// Longest `delay=` honoured; longer requests are capped.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Largest `size=` accepted (the body streams, so this bounds time, not memory).
pub const MAX_SIZE: u64 = 1 << 30;

/// What one echo request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoParams {
    /// `Some(n)`: reply with exactly n bytes; `None`: echo the request body.
    pub size: Option<u64>,
    pub status: StatusCode,
    pub delay: Duration,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub close: bool,
}

impl Default for EchoParams {
    fn default() -> Self {
        Self {
            size: None,
            status: StatusCode::OK,
            delay: Duration::ZERO,
            headers: Vec::new(),
            close: false,
        }
    }
}

/// A query parameter whose value cannot be used; rendered as a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad query parameter {name}={value:?}: {reason}")]
pub struct ParamError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Parses a raw (still percent-encoded) query string. `roll` returns a number in [0, 100) and is
/// called only for fortio's probabilistic forms (`size=1024:20,512:30`, `status=503:10`, ...).
pub fn parse_query(query: &str, roll: &mut dyn FnMut() -> f64) -> Result<EchoParams, ParamError> {
    let mut params = EchoParams::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "size" => params.size = pick("size", &value, roll, parse_size)?,
            "status" => {
                let status = pick("status", &value, roll, parse_status)?;
                params.status = status.unwrap_or(StatusCode::OK);
            }
            "delay" => {
                let delay = pick("delay", &value, roll, parse_delay)?;
                params.delay = delay.unwrap_or(Duration::ZERO).min(MAX_DELAY);
            }
            "header" => params.headers.extend(parse_header(&value)?),
            "close" => params.close = parse_probability("close", &value, roll)?,
            _ => {}
        }
    }
    Ok(params)
}

/// fortio's value forms: `V` (always V) or `V1:P1,V2:P2,...` (V1 with P1 %, ...; the remainder
/// of 100 % means "default", returned as `None`).
fn pick<T>(
    name: &'static str,
    raw: &str,
    roll: &mut dyn FnMut() -> f64,
    parse_value: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ParamError> {
    let error = |reason: String| ParamError {
        name,
        value: raw.to_owned(),
        reason,
    };
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.contains(':') && !raw.contains(',') {
        return parse_value(raw).map(Some).map_err(error);
    }
    let mut table = Vec::new();
    let mut cumulative = 0.0;
    for entry in raw.split(',') {
        let (value, percent) = entry
            .split_once(':')
            .ok_or_else(|| error(format!("entry {entry:?} is not value:percent")))?;
        let percent = parse_percent(percent).map_err(error)?;
        cumulative += percent;
        if cumulative > 100.0 + 1e-9 {
            return Err(error("percentages add up to more than 100".to_owned()));
        }
        table.push((parse_value(value).map_err(error)?, cumulative));
    }
    let rolled = roll();
    Ok(table
        .into_iter()
        .find(|(_, upto)| rolled < *upto)
        .map(|(value, _)| value))
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let text = text.strip_suffix('%').unwrap_or(text);
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage in [0, 100]")),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let size: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count"))?;
    if size > MAX_SIZE {
        return Err(format!("{size} is larger than the maximum {MAX_SIZE}"));
    }
    Ok(size)
}

fn parse_status(text: &str) -> Result<StatusCode, String> {
    let code: u16 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a status code"))?;
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| format!("{code} is not a final status code (200..=999)"))
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    crate::godur::parse(text).map_err(|e| e.to_string())
}

fn parse_header(raw: &str) -> Result<Option<(HeaderName, HeaderValue)>, ParamError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let error = |reason: &str| ParamError {
        name: "header",
        value: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| error("expected Name:Value"))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| error("invalid header name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| error("invalid header value"))?;
    Ok(Some((name, value)))
}

/// `close=true|false|<percent>`.
fn parse_probability(
    name: &'static str,
    raw: &str,
    roll: &mut dyn FnMut() -> f64,
) -> Result<bool, ParamError> {
    match raw {
        "" | "false" => Ok(false),
        "true" => Ok(true),
        _ => {
            let percent = parse_percent(raw).map_err(|reason| ParamError {
                name,
                value: raw.to_owned(),
                reason,
            })?;
            Ok(roll() < percent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<EchoParams, ParamError> {
        parse_query(query, &mut || panic!("no roll expected for {query}"))
    }

    fn parse_rolled(query: &str, rolled: f64) -> EchoParams {
        parse_query(query, &mut || rolled).expect("valid query")
    }

    #[test]
    fn empty_query_echoes_with_200() {
        assert_eq!(parse(""), Ok(EchoParams::default()));
        assert_eq!(parse("unrelated=1"), Ok(EchoParams::default()));
    }

    #[test]
    fn plain_values() {
        let p = parse("size=1024&status=503&delay=10ms&close=true").expect("valid");
        assert_eq!(p.size, Some(1024));
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.delay, Duration::from_millis(10));
        assert!(p.close);
        assert_eq!(parse("size=0").expect("valid").size, Some(0));
    }

    #[test]
    fn delay_is_capped() {
        assert_eq!(parse("delay=1h").expect("valid").delay, MAX_DELAY);
    }

    #[test]
    fn headers_repeat_and_are_percent_decoded() {
        let p = parse("header=X-A:1&header=x-b%3A%20two%20words").expect("valid");
        assert_eq!(p.headers.len(), 2);
        assert_eq!(p.headers[0].0.as_str(), "x-a");
        assert_eq!(p.headers[0].1, "1");
        assert_eq!(p.headers[1].1, "two words");
    }

    #[test]
    fn probabilistic_forms_follow_the_roll() {
        let q = "size=100:20,200:30";
        assert_eq!(parse_rolled(q, 10.0).size, Some(100));
        assert_eq!(parse_rolled(q, 25.0).size, Some(200));
        assert_eq!(parse_rolled(q, 60.0).size, None, "remainder echoes");
        assert_eq!(parse_rolled("status=503:50", 49.0).status, 503);
        assert_eq!(parse_rolled("status=503:50", 51.0).status, 200);
        assert_eq!(parse_rolled("delay=5ms:100%", 99.0).delay.as_millis(), 5);
        assert!(parse_rolled("close=30", 29.0).close);
        assert!(!parse_rolled("close=30", 31.0).close);
    }

    #[test]
    fn bad_values_are_errors_naming_the_parameter() {
        for (query, name) in [
            ("size=abc", "size"),
            ("size=-1", "size"),
            ("size=99999999999", "size"),
            ("status=abc", "status"),
            ("status=99", "status"),
            ("status=1000", "status"),
            ("delay=soon", "delay"),
            ("header=novalue", "header"),
            ("header=bad%20name:1", "header"),
            ("close=maybe", "close"),
            ("size=10:60,20:60", "size"),
            ("status=200:x", "status"),
            ("size=10:50,20", "size"),
        ] {
            let error = parse_query(query, &mut || 0.0).expect_err(query);
            assert_eq!(error.name, name, "{query}");
        }
    }
}
