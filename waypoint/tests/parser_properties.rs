//! Property tests (fuzz-style, bounded for CI) of what the waypoint parses from its peers:
//! the `forwarded` header of a tunnel, and the weighted backend choice.

use std::net::{IpAddr, SocketAddr};

use mesh_config::RouteBackend;
use proptest::prelude::*;
use waypoint::ingress::forwarded_for;
use waypoint::route::{BackendChoice, choose_backend};

fn backend(i: usize, weight: u32) -> RouteBackend {
    RouteBackend {
        name: format!("b{i}"),
        namespace: "default".into(),
        port: 80,
        weight,
        service: None,
        filters: mesh_config::Filters::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_forwarded_headers_never_panic(value in ".{0,200}") {
        let _ = forwarded_for(&value);
    }

    #[test]
    fn forwarded_for_finds_the_client(client in (any::<IpAddr>(), any::<u16>()).prop_map(SocketAddr::from), host in "[a-z.]{1,30}") {
        let value = format!("for=\"{client}\";host={host}");
        prop_assert_eq!(forwarded_for(&value), Some(client));
    }

    /// Over one full cycle of the roll space, each backend is chosen exactly `weight` times.
    #[test]
    fn weighted_choice_is_proportional(weights in proptest::collection::vec(0u32..50, 1..6)) {
        let backends: Vec<_> = weights.iter().enumerate().map(|(i, w)| backend(i, *w)).collect();
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut counts = vec![0u32; backends.len()];
        for roll in 0..total.max(1) {
            match choose_backend(&backends, roll) {
                BackendChoice::Chosen(i) => counts[i] += 1,
                BackendChoice::NoWeight => prop_assert_eq!(total, 0),
            }
        }
        if total > 0 {
            prop_assert_eq!(counts, weights);
        }
    }
}
