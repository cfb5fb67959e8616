//! A one-shot answer from the writer thread that callers can block on or `.await`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{AppendError, Receipt};

type Answer = Result<Vec<Receipt>, AppendError>;

#[derive(Default)]
struct State {
    answer: Option<Answer>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    ready: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's half: answers exactly once; dropping it unanswered answers `Closed`.
pub(crate) struct Reply(Arc<Slot>);

impl Reply {
    pub(crate) fn send(self, answer: Answer) {
        self.put(answer);
    }

    fn put(&self, answer: Answer) {
        let waker = {
            let mut s = self.0.lock();
            if s.answer.is_some() {
                return;
            }
            s.answer = Some(answer);
            s.waker.take()
        };
        self.0.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // No-op if already answered.
        self.put(Err(AppendError::Closed));
    }
}

/// An append handed to the writer thread. `wait()` blocks until it is durable (or failed);
/// it is also a `Future` for async callers. Dropping it does not cancel the append.
#[must_use = "the append may not be durable until waited for"]
pub struct PendingAppend(Arc<Slot>);

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAppend")
    }
}

pub(crate) fn pair() -> (Reply, PendingAppend) {
    let slot = Arc::new(Slot::default());
    (Reply(slot.clone()), PendingAppend(slot))
}

impl PendingAppend {
    /// Block until the entries are durable; their receipts, in order.
    pub fn wait(self) -> Result<Vec<Receipt>, AppendError> {
        let mut s = self.0.lock();
        loop {
            if let Some(a) = s.answer.take() {
                return a;
            }
            s = self.0.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Future for PendingAppend {
    type Output = Result<Vec<Receipt>, AppendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock();
        match s.answer.take() {
            Some(a) => Poll::Ready(a),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
