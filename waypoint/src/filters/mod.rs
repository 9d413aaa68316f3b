//! Route filters applied to requests and responses. Config compiles each filter once (header
//! names and values parsed); here they are only carried out: header modifiers on request and
//! response heads alike through [`HeaderEdit`], rewrites and redirects in [`rewrite`], CORS in
//! [`cors`]. The pipeline decides what applies to a request; these carry it out.

pub mod cors;
pub mod rewrite;

use mesh_config::{Filters, HeaderModifier};
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

/// Applies the header modifiers of `filters` (the rule's, then the chosen backend's) for
/// `phase` to `head`.
pub fn apply<'f>(
    filters: impl IntoIterator<Item = &'f Filters>,
    phase: Phase,
    head: &mut impl HeaderEdit,
) -> Result<()> {
    for f in filters {
        let modifier = match phase {
            Phase::Request => &f.request_headers,
            Phase::Response => &f.response_headers,
        };
        if let Some(m) = modifier {
            modify(m, head)?;
        }
    }
    Ok(())
}

/// Adds headers a filter decided on for this request (CORS): `Vary` joins the response's own,
/// the others replace any the response has.
pub fn add_decided(
    headers: &[(http::HeaderName, http::HeaderValue)],
    head: &mut impl HeaderEdit,
) -> Result<()> {
    for (name, value) in headers {
        match *name == http::header::VARY {
            true => head.add(name, value)?,
            false => head.set(name, value)?,
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
        let rule = Filters {
            request_headers: Some(modifier),
            response_headers: Some(HeaderModifier {
                set: vec![pair("x-response-only", "1")],
                ..HeaderModifier::default()
            }),
            ..Filters::default()
        };
        let backend = Filters {
            request_headers: Some(HeaderModifier {
                add: vec![pair("x-add", "3")],
                ..HeaderModifier::default()
            }),
            ..Filters::default()
        };
        let mut head = RequestHeader::build("GET", b"/", None).expect("head");
        for (name, value) in [("x-set", "old"), ("x-add", "1"), ("x-gone", "1")] {
            head.append_header(name, value).expect("header");
        }
        apply([&rule, &backend], Phase::Request, &mut head).expect("applies");
        assert_eq!(values(&head, "x-set"), ["new"]);
        assert_eq!(
            values(&head, "x-add"),
            ["1", "2", "3"],
            "the backend's after the rule's"
        );
        assert!(values(&head, "x-gone").is_empty());
        assert!(values(&head, "x-response-only").is_empty());
    }

    #[test]
    fn response_filters_touch_only_responses() {
        let rule = Filters {
            response_headers: Some(HeaderModifier {
                set: vec![pair("x-served-by", "waypoint")],
                ..HeaderModifier::default()
            }),
            ..Filters::default()
        };
        let mut head = ResponseHeader::build(200, None).expect("head");
        apply([&rule], Phase::Response, &mut head).expect("applies");
        assert_eq!(
            head.headers
                .get("x-served-by")
                .and_then(|v| v.to_str().ok()),
            Some("waypoint")
        );
        let mut untouched = ResponseHeader::build(200, None).expect("head");
        apply([], Phase::Response, &mut untouched).expect("no rule");
        assert!(untouched.headers.is_empty());
    }
}
