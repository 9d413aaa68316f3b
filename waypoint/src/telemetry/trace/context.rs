//! Trace context as it arrives and as it is sent on, and the sampling decision (all pure).
//!
//! A caller's context is read from W3C `traceparent`/`tracestate` (with the OpenTelemetry
//! SDK's propagator), or else from B3: the single `b3` header or the `x-b3-*` ones. It is sent
//! on as `traceparent`, naming the waypoint's span as the parent; `tracestate` goes on as the
//! caller sent it; B3 headers the caller sent are rewritten in the same form, so an
//! application that reads either sees the same trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub const TRACEPARENT: &str = "traceparent";
pub const B3: &str = "b3";
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";
pub const B3_FLAGS: &str = "x-b3-flags";

/// The B3 form a caller used, so the request goes on in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct B3Form {
    /// `b3: {trace}-{span}-{sampled}`, else the `x-b3-*` headers.
    pub single: bool,
    /// A 64-bit trace id (16 hex digits), written back as one.
    pub short_trace_id: bool,
}

/// What a caller's headers say of the trace it is in.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    /// The caller's span, when it named one.
    pub parent: Option<SpanContext>,
    /// The caller's sampling decision; `None`: left to the waypoint (B3 without one).
    pub sampled: Option<bool>,
    /// Present when the caller sent B3 headers.
    pub b3: Option<B3Form>,
}

impl Incoming {
    /// The caller's context: W3C when it sent a valid `traceparent`, else B3; `None` when it
    /// sent neither (or nothing valid).
    pub fn of(headers: &HeaderMap) -> Option<Incoming> {
        let b3 = b3(headers);
        let w3c = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = w3c.span();
        let context = span.span_context();
        if context.is_valid() {
            return Some(Incoming {
                parent: Some(context.clone()),
                sampled: Some(context.is_sampled()),
                b3: b3.map(|(form, _)| form),
            });
        }
        let (form, read) = b3?;
        Some(Incoming {
            parent: read.parent,
            sampled: read.sampled,
            b3: Some(form),
        })
    }
}

/// Whether a trace is sampled: as the caller decided, else `percent` of traces, chosen by
/// trace id (so every proxy deciding for the same trace decides the same way).
pub fn sampled(caller: Option<bool>, percent: f64, trace_id: TraceId) -> bool {
    if let Some(decided) = caller {
        return decided;
    }
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")) >> 1;
    (low as f64) < percent / 100.0 * (1u64 << 63) as f64
}

/// The headers the request goes on with, for the waypoint's span `span` (a child of
/// `incoming`'s): `traceparent`, and B3 in the caller's form when it used B3.
pub fn outgoing(span: &SpanContext, incoming: Option<&Incoming>) -> Vec<(HeaderName, HeaderValue)> {
    let sampled = span.is_sampled();
    let mut headers = vec![header(
        TRACEPARENT,
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        ),
    )];
    let Some(form) = incoming.and_then(|i| i.b3) else {
        return headers;
    };
    let trace_id = span.trace_id().to_string();
    let trace_id = match form.short_trace_id {
        true => trace_id[16..].to_string(),
        false => trace_id,
    };
    let span_id = span.span_id().to_string();
    let flag = if sampled { "1" } else { "0" };
    if form.single {
        headers.push(header(B3, format!("{trace_id}-{span_id}-{flag}")));
        return headers;
    }
    headers.push(header(B3_TRACE_ID, trace_id));
    headers.push(header(B3_SPAN_ID, span_id));
    headers.push(header(B3_SAMPLED, flag.to_string()));
    if let Some(parent) = incoming.and_then(|i| i.parent.as_ref()) {
        headers.push(header(B3_PARENT_SPAN_ID, parent.span_id().to_string()));
    }
    headers
}

/// The headers [`outgoing`] replaces, removed first so none of the caller's is left beside
/// the waypoint's (`x-b3-flags`: its debug flag became the sampling decision).
pub const REPLACED: [&str; 6] = [
    TRACEPARENT,
    B3,
    B3_TRACE_ID,
    B3_SPAN_ID,
    B3_PARENT_SPAN_ID,
    B3_FLAGS,
];

fn header(name: &'static str, value: String) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&value).expect("hex digits and dashes");
    (HeaderName::from_static(name), value)
}

/// What B3 headers said.
struct B3Read {
    parent: Option<SpanContext>,
    sampled: Option<bool>,
}

fn b3(headers: &HeaderMap) -> Option<(B3Form, B3Read)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(single) = text(B3) {
        return b3_single(single.trim());
    }
    let trace = text(B3_TRACE_ID);
    let span = text(B3_SPAN_ID);
    let debug = text(B3_FLAGS) == Some("1");
    let sampled = match text(B3_SAMPLED) {
        _ if debug => Some(true),
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => None,
    };
    if trace.is_none() && span.is_none() && sampled.is_none() {
        return None;
    }
    let short_trace_id = trace.is_some_and(|t| t.len() == 16);
    let parent = match (trace, span) {
        (Some(trace), Some(span)) => remote(trace, span, sampled),
        _ => None,
    };
    let form = B3Form {
        single: false,
        short_trace_id,
    };
    Some((form, B3Read { parent, sampled }))
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`, or only `{sampled}`.
fn b3_single(text: &str) -> Option<(B3Form, B3Read)> {
    let decision = |flag: &str| match flag {
        "1" | "d" => Some(Some(true)),
        "0" => Some(Some(false)),
        _ => None,
    };
    let mut parts = text.split('-');
    let first = parts.next()?;
    let Some(span) = parts.next() else {
        // Only a sampling decision.
        let sampled = decision(first)?;
        let form = B3Form {
            single: true,
            short_trace_id: false,
        };
        return Some((
            form,
            B3Read {
                parent: None,
                sampled,
            },
        ));
    };
    let sampled = match parts.next() {
        None => None,
        Some(flag) => decision(flag)?,
    };
    let parent = remote(first, span, sampled)?;
    let form = B3Form {
        single: true,
        short_trace_id: first.len() == 16,
    };
    Some((
        form,
        B3Read {
            parent: Some(parent),
            sampled,
        },
    ))
}

/// A remote span context from B3's hex ids (a 64-bit trace id is widened with zeros).
fn remote(trace: &str, span: &str, sampled: Option<bool>) -> Option<SpanContext> {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(trace, 16) || hex(trace, 32)) || !hex(span, 16) {
        return None;
    }
    let trace_id = TraceId::from_hex(&format!("{trace:0>32}")).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = match sampled {
        Some(true) => TraceFlags::SAMPLED,
        _ => TraceFlags::default(),
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_context_is_read_and_wins_over_b3() {
        let incoming = Incoming::of(&headers(&[
            (TRACEPARENT, &format!("00-{TRACE}-{SPAN}-01")),
            ("tracestate", "vendor=a"),
            (B3_TRACE_ID, "0000000000000001"),
            (B3_SPAN_ID, "0000000000000002"),
        ]))
        .expect("context");
        let parent = incoming.parent.expect("parent");
        assert_eq!(parent.trace_id().to_string(), TRACE);
        assert_eq!(parent.span_id().to_string(), SPAN);
        assert!(parent.is_remote());
        assert_eq!(incoming.sampled, Some(true));
        assert_eq!(parent.trace_state().header(), "vendor=a");
        assert_eq!(
            incoming.b3,
            Some(B3Form {
                single: false,
                short_trace_id: true
            })
        );
        let unsampled = Incoming::of(&headers(&[(TRACEPARENT, &format!("00-{TRACE}-{SPAN}-00"))]));
        assert_eq!(unsampled.expect("context").sampled, Some(false));
    }

    #[test]
    fn invalid_or_absent_context_is_none() {
        for bad in [
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("zz-{TRACE}-{SPAN}-01"),
            "garbage".to_string(),
        ] {
            assert_eq!(
                Incoming::of(&headers(&[(TRACEPARENT, &bad)])),
                None,
                "{bad}"
            );
        }
        assert_eq!(Incoming::of(&HeaderMap::new()), None);
        assert_eq!(Incoming::of(&headers(&[(B3, "nonsense-x")])), None);
    }

    #[test]
    fn b3_in_both_forms() {
        let single = Incoming::of(&headers(&[(
            B3,
            &format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90"),
        )]))
        .expect("b3");
        assert_eq!(single.sampled, Some(true));
        assert_eq!(single.parent.expect("parent").trace_id().to_string(), TRACE);
        let deferred =
            Incoming::of(&headers(&[(B3, &format!("{}-{SPAN}", &TRACE[16..]))])).expect("b3");
        assert_eq!(deferred.sampled, None);
        assert_eq!(
            deferred.parent.expect("parent").trace_id().to_string(),
            format!("{}{}", "0".repeat(16), &TRACE[16..])
        );
        assert!(deferred.b3.expect("form").short_trace_id);
        let deny = Incoming::of(&headers(&[(B3, "0")])).expect("b3");
        assert_eq!((deny.parent, deny.sampled), (None, Some(false)));
        let multi = Incoming::of(&headers(&[
            (B3_TRACE_ID, TRACE),
            (B3_SPAN_ID, SPAN),
            (B3_FLAGS, "1"),
        ]))
        .expect("b3");
        assert_eq!(multi.sampled, Some(true), "debug samples");
        assert!(!multi.b3.expect("form").single);
    }

    #[test]
    fn outgoing_names_the_waypoints_span_in_the_callers_forms() {
        let span = SpanContext::new(
            TraceId::from_hex(TRACE).expect("trace"),
            SpanId::from_hex("1111111111111111").expect("span"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let text = |list: &[(HeaderName, HeaderValue)]| -> Vec<String> {
            list.iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().expect("text")))
                .collect()
        };
        assert_eq!(
            text(&outgoing(&span, None)),
            [format!("traceparent: 00-{TRACE}-1111111111111111-01")]
        );
        let multi = Incoming::of(&headers(&[
            (B3_TRACE_ID, &TRACE[16..]),
            (B3_SPAN_ID, SPAN),
            (B3_SAMPLED, "1"),
        ]))
        .expect("b3");
        assert_eq!(
            text(&outgoing(&span, Some(&multi)))[1..],
            [
                format!("x-b3-traceid: {}", &TRACE[16..]),
                "x-b3-spanid: 1111111111111111".to_string(),
                "x-b3-sampled: 1".to_string(),
                format!("x-b3-parentspanid: {SPAN}"),
            ]
        );
        let single = Incoming::of(&headers(&[(B3, &format!("{TRACE}-{SPAN}"))])).expect("b3");
        assert_eq!(
            text(&outgoing(&span, Some(&single)))[1..],
            [format!("b3: {TRACE}-1111111111111111-1")]
        );
    }

    #[test]
    fn sampling_follows_the_caller_else_the_percentage_by_trace_id() {
        let id = |low: u64| {
            TraceId::from_bytes(
                [[0u8; 8], low.to_be_bytes()]
                    .concat()
                    .try_into()
                    .expect("16"),
            )
        };
        assert!(sampled(Some(true), 0.0, id(u64::MAX)));
        assert!(!sampled(Some(false), 100.0, id(0)));
        assert!(sampled(None, 100.0, id(u64::MAX)));
        assert!(!sampled(None, 0.0, id(0)));
        // 10%: the lowest tenth of trace ids.
        assert!(sampled(None, 10.0, id(u64::MAX / 20)));
        assert!(!sampled(None, 10.0, id(u64::MAX / 5)));
        let share = (0..10_000u64)
            .filter(|i| sampled(None, 25.0, id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
            .count();
        assert!((2_200..2_800).contains(&share), "{share} of 10000 at 25%");
    }
}
