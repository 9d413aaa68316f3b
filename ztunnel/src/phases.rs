//! A connection's task in two phases, each boxed: setting up (a handshake, checks, a dial)
//! needs much state briefly; splicing holds what an open connection needs for its whole
//! life. The task itself holds one pointer at a time, so an idle connection costs what its
//! splice holds, and no more (a future's size is that of its largest state, for as long as it
//! lives).

use std::future::Future;
use std::pin::Pin;

/// Runs `set_up`; if it gives a connection, runs `splice` with it.
pub(crate) async fn set_up_then_splice<T, S>(
    set_up: Pin<Box<impl Future<Output = Option<T>>>>,
    splice: impl FnOnce(T) -> S,
) where
    S: Future<Output = ()>,
{
    let Some(connection) = set_up.await else {
        return;
    };
    Box::pin(splice(connection)).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_hbone::HboneStream;
    use tokio::net::TcpStream;

    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }

    /// An idle connection costs what its splice holds (SECURITY.md, BENCHMARKS.md): a splice
    /// that grows past its allocator size class costs every idle connection the next class
    /// (mimalloc's classes here: 640, 1024, 1280 bytes). Sizes are the compiler's; if one is
    /// over, find what grew (`-Zprint-type-sizes`, BENCHMARKS.md) before raising its bound.
    #[test]
    fn idle_connections_hold_no_more_than_their_budget() {
        let socks = future_size(crate::outbound_conn::splice);
        let hbone = future_size(crate::inbound::splice::<HboneStream>);
        let plaintext = future_size(crate::inbound::splice::<TcpStream>);
        assert!(socks <= 640, "the outbound splice is {socks} bytes");
        assert!(hbone <= 1280, "the inbound HBONE splice is {hbone} bytes");
        assert!(
            plaintext <= 1024,
            "the inbound plaintext splice is {plaintext} bytes"
        );
        // The task itself holds one boxed phase at a time.
        let set_up = Box::pin(async { None::<()> });
        let task = set_up_then_splice(set_up, |()| tokio::time::sleep(Duration::ZERO));
        assert!(size_of_val(&task) <= 32, "{} bytes", size_of_val(&task));
    }
}
