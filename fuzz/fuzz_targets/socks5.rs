//! The ztunnel's SOCKS5 handshake against any client bytes followed by EOF: it ends (a target
//! or an error), never panics, never waits for bytes that cannot come.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
}

fuzz_target!(|bytes: &[u8]| {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(bytes.len() + 64);
            client.write_all(bytes).await.expect("write");
            client.shutdown().await.expect("eof");
            let ended = tokio::time::timeout(
                Duration::from_secs(1),
                ztunnel::socks5::handshake(&mut server),
            )
            .await;
            assert!(
                ended.is_ok(),
                "the handshake waited past the end of its input"
            );
        })
    });
});
