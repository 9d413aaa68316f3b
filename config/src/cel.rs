//! CEL expressions, as Istio's Telemetry writes access-log filters and metric tag values:
//! parsed when the config compiles (so a bad one is refused with its field), evaluated by the
//! waypoint against a request's attributes (Envoy's names: `request.*`, `response.*`,
//! `source.*`, `destination.*`, `connection.*`, `upstream.*`).

use std::fmt;

/// The longest expression taken, and its deepest nesting (the parser recurses per level).
pub const MAX_LENGTH: usize = 4096;
pub const MAX_NESTING: usize = 32;

/// Envoy attribute roots that do not exist at this waypoint.
const UNAVAILABLE: [(&str, &str); 5] = [
    ("xds", "the waypoint has no xDS"),
    ("metadata", "there is no dynamic metadata"),
    ("filter_state", "there is no filter state"),
    ("node", "there is no Envoy node"),
    ("plugin", "there are no Wasm plugins"),
];

/// A parsed CEL expression.
pub struct Expression {
    source: String,
    program: ::cel::Program,
}

impl Expression {
    /// Parses `source`, refusing what could never be evaluated here.
    pub fn parse(source: &str) -> Result<Expression, String> {
        if source.trim().is_empty() {
            return Err("an empty expression".into());
        }
        if source.len() > MAX_LENGTH {
            return Err(format!("longer than {MAX_LENGTH} bytes"));
        }
        if nesting(source) > MAX_NESTING {
            return Err(format!("nested deeper than {MAX_NESTING} levels"));
        }
        let program = ::cel::Program::compile(source)
            .map_err(|e| format!("not a CEL expression: {}", e.to_string().trim()))?;
        let references = program.references();
        if let Some((root, why)) = UNAVAILABLE.iter().find(|(r, _)| references.has_variable(r)) {
            return Err(format!("{root}.* is not available: {why}"));
        }
        Ok(Expression {
            source: source.to_string(),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn program(&self) -> &::cel::Program {
        &self.program
    }
}

/// The deepest nesting of brackets in `source` (outside string literals, roughly: quotes
/// toggle).
fn nesting(source: &str) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    for c in source.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_and_bad_ones_say_why() {
        let ok = Expression::parse("response.code >= 400 && request.headers['x-a'] == 'b'");
        assert_eq!(
            ok.expect("parses").source(),
            "response.code >= 400 && request.headers['x-a'] == 'b'"
        );
        for (bad, why) in [
            ("", "empty"),
            ("response.code >=", "not a CEL expression"),
            (
                "xds.cluster_name == 'BlackHoleCluster'",
                "xds.* is not available",
            ),
            (
                &format!("{}1{}", "(".repeat(40), ")".repeat(40)),
                "nested deeper",
            ),
            (&"a".repeat(MAX_LENGTH + 1), "longer than"),
        ] {
            let error = Expression::parse(bad).expect_err(bad);
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert_eq!(nesting("f('(((' , [1])"), 2);
    }
}
