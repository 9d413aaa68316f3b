//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// A workload's SPIFFE identity as Istio encodes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a SPIFFE identity of the form `spiffe://td/ns/NS/sa/SA`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid SPIFFE identity {input:?}: {reason}")]
pub struct IdentityError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Identity {
    pub fn new(td: impl Into<String>, ns: impl Into<String>, sa: impl Into<String>) -> Self {
        Identity {
            trust_domain: td.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    /// The identity without `spiffe://`, as Istio principals are written
    /// (`cluster.local/ns/default/sa/bookinfo`).
    pub fn without_scheme(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.without_scheme())
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| IdentityError {
            input: input.to_string(),
            reason,
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| fail("missing spiffe:// scheme"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts.as_slice() else {
            return Err(fail(
                "expected <trust-domain>/ns/<namespace>/sa/<service-account>",
            ));
        };
        if [td, ns, sa].iter().any(|part| part.is_empty()) {
            return Err(fail("empty trust domain, namespace or service account"));
        }
        if [td, ns, sa]
            .iter()
            .any(|part| part.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(fail("whitespace or control character"));
        }
        Ok(Identity::new(*td, *ns, *sa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = Identity::new("cluster.local", "default", "bookinfo");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo"
        );
        assert_eq!(id.without_scheme(), "cluster.local/ns/default/sa/bookinfo");
        let parsed: Identity = id.to_string().parse().expect("parses");
        assert_eq!(parsed, id);
    }

    #[test]
    fn rejects_malformed_identities() {
        for bad in [
            "cluster.local/ns/default/sa/x",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe:///ns/default/sa/x",
            "spiffe://cluster.local/namespace/default/sa/x",
            "spiffe://cluster.local/ns/default/sa/x/extra",
            "spiffe://cluster.local/ns/de fault/sa/x",
            "https://cluster.local/ns/default/sa/x",
        ] {
            let err = bad.parse::<Identity>().expect_err(bad);
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn orders_by_trust_domain_then_namespace() {
        let mut ids = [
            Identity::new("b", "a", "a"),
            Identity::new("a", "b", "a"),
            Identity::new("a", "a", "b"),
        ];
        ids.sort();
        assert_eq!(ids[0], Identity::new("a", "a", "b"));
        assert_eq!(ids[2], Identity::new("b", "a", "a"));
    }
}
