//! The retry times a worker scheduled itself: one task and one heap for all of them, each
//! due time a signal to its destination's drain.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dispatcher::Dispatcher;

/// One timer task for all scheduled retries: a heap of (when, destination).
pub(super) async fn run_timers(
    dispatcher: std::sync::Weak<Dispatcher>,
    mut rx: mpsc::UnboundedReceiver<(Instant, Arc<str>)>,
    token: CancellationToken,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, Arc<str>)>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            _ = token.cancelled() => return,
            item = rx.recv() => match item {
                Some(entry) => heap.push(Reverse(entry)),
                None => return,
            },
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(dispatcher) = dispatcher.upgrade() else { return };
                let now = Instant::now();
                while let Some(Reverse((at, _))) = heap.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((_, id))) = heap.pop() else { break };
                    dispatcher.signal(&id);
                }
            }
        }
    }
}
