//! Route filters applied to requests and responses. Config compiles each filter once (header
//! names and values parsed); here they are only carried out, on request and response heads
//! alike through [`HeaderEdit`].

use mesh_config::{HeaderModifier, RouteFilter, RouteRule};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// A message head whose headers a filter can edit: Pingora's request and response heads.
pub trait HeaderEdit {
    fn set(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()>;
    fn add(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()>;
    fn remove(&mut self, name: &http::HeaderName);
}

macro_rules! header_edit {
    ($head:ty) => {
        impl HeaderEdit for $head {
            fn set(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()> {
                self.insert_header(name, value.clone())
            }
            fn add(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()> {
                self.append_header(name, value.clone()).map(|_| ())
            }
            fn remove(&mut self, name: &http::HeaderName) {
                self.remove_header(name);
            }
        }
    };
}
header_edit!(RequestHeader);
header_edit!(ResponseHeader);

/// Which head a filter edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

/// Applies the chosen rule's filters for `phase` to `head`, in manifest order.
pub fn apply(rule: Option<&RouteRule>, phase: Phase, head: &mut impl HeaderEdit) -> Result<()> {
    for filter in rule.into_iter().flat_map(|r| r.filters.iter()) {
        match (filter, phase) {
            (RouteFilter::RequestHeaderModifier(m), Phase::Request)
            | (RouteFilter::ResponseHeaderModifier(m), Phase::Response) => modify(m, head)?,
            _ => {}
        }
    }
    Ok(())
}

/// Gateway API order: set, then add, then remove.
fn modify(m: &HeaderModifier, head: &mut impl HeaderEdit) -> Result<()> {
    for (name, value) in &m.set {
        head.set(name, value)?;
    }
    for (name, value) in &m.add {
        head.add(name, value)?;
    }
    for name in &m.remove {
        head.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use mesh_config::ObjectRef;

    fn rule(filters: Vec<RouteFilter>) -> RouteRule {
        RouteRule {
            route: ObjectRef::new("default", "r"),
            rule_index: 0,
            matches: Vec::new(),
            filters,
            backends: Vec::new(),
            request_timeout: None,
            backend_request_timeout: None,
            retry: None,
        }
    }

    fn pair(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    }

    fn values(head: &RequestHeader, name: &str) -> Vec<String> {
        head.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn request_filters_set_add_and_remove_in_order() {
        let modifier = HeaderModifier {
            set: vec![pair("x-set", "new")],
            add: vec![pair("x-add", "2")],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        let r = rule(vec![
            RouteFilter::RequestHeaderModifier(modifier),
            RouteFilter::ResponseHeaderModifier(HeaderModifier {
                set: vec![pair("x-response-only", "1")],
                ..HeaderModifier::default()
            }),
        ]);
        let mut head = RequestHeader::build("GET", b"/", None).expect("head");
        for (name, value) in [("x-set", "old"), ("x-add", "1"), ("x-gone", "1")] {
            head.append_header(name, value).expect("header");
        }
        apply(Some(&r), Phase::Request, &mut head).expect("applies");
        assert_eq!(values(&head, "x-set"), ["new"]);
        assert_eq!(values(&head, "x-add"), ["1", "2"]);
        assert!(values(&head, "x-gone").is_empty());
        assert!(values(&head, "x-response-only").is_empty());
    }

    #[test]
    fn response_filters_touch_only_responses() {
        let r = rule(vec![RouteFilter::ResponseHeaderModifier(HeaderModifier {
            set: vec![pair("x-served-by", "waypoint")],
            ..HeaderModifier::default()
        })]);
        let mut head = ResponseHeader::build(200, None).expect("head");
        apply(Some(&r), Phase::Response, &mut head).expect("applies");
        assert_eq!(
            head.headers
                .get("x-served-by")
                .and_then(|v| v.to_str().ok()),
            Some("waypoint")
        );
        let mut untouched = ResponseHeader::build(200, None).expect("head");
        apply(None, Phase::Response, &mut untouched).expect("no rule");
        assert!(untouched.headers.is_empty());
    }
}
