//! Property tests of the SOCKS5 handshake parser (fuzz-style, bounded for CI): arbitrary client
//! bytes end in a target or an error, never a panic or a hang; well-formed requests parse.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use ztunnel::socks5::{Target, handshake};

/// Runs the handshake against `input` followed by EOF.
fn run(input: Vec<u8>) -> Option<Target> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&input).await.expect("write");
        client.shutdown().await.expect("eof");
        let parsed = tokio::time::timeout(Duration::from_secs(5), handshake(&mut server))
            .await
            .expect("the handshake ends once the input does");
        parsed.ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_or_hang(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = run(bytes);
    }

    #[test]
    fn well_formed_connects_parse(addr in (any::<IpAddr>(), any::<u16>()).prop_map(SocketAddr::from), domain in "[a-z][a-z0-9.-]{0,40}", port in any::<u16>()) {
        let mut by_addr = vec![5, 1, 0, 5, 1, 0];
        match addr {
            SocketAddr::V4(v4) => { by_addr.push(1); by_addr.extend(v4.ip().octets()); }
            SocketAddr::V6(v6) => { by_addr.push(4); by_addr.extend(v6.ip().octets()); }
        }
        by_addr.extend(addr.port().to_be_bytes());
        prop_assert!(matches!(run(by_addr), Some(Target::Addr(a)) if a == addr));
        let mut by_name = vec![5, 1, 0, 5, 1, 0, 3, domain.len() as u8];
        by_name.extend(domain.as_bytes());
        by_name.extend(port.to_be_bytes());
        let parsed = run(by_name);
        prop_assert!(matches!(parsed, Some(Target::Host(h, p)) if h == domain && p == port));
    }
}
