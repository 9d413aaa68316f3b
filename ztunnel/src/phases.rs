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
