//! A scriptable destination: answers from a script, records calls, can block or be slow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower_telemetry::{
    Event,
    destination::{BoxFuture, DeliveryError, Destination},
};

/// One scripted answer of a [`Scripted`] destination.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    Fail(DeliveryError),
}

/// A destination that answers from a script (then `Ok`), records every call with its tokio
/// time, and can be made to block until released.
#[derive(Clone, Default)]
pub struct Scripted {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<(Instant, Vec<Arc<Event>>)>>,
    delivered: Mutex<Vec<Arc<Event>>>,
    called: Notify,
    gate: Mutex<Option<Arc<Semaphore>>>,
    delay: Mutex<Option<Duration>>,
}

impl Scripted {
    pub fn new(script: impl IntoIterator<Item = Answer>) -> Self {
        let s = Scripted::default();
        s.inner.script.lock().unwrap().extend(script);
        s
    }

    /// Every call blocks until `release(n)` lets `n` calls through.
    pub fn gated() -> Self {
        let s = Scripted::default();
        *s.inner.gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
        s
    }

    /// Every call takes `d` (tokio time) before answering.
    pub fn slow(d: Duration) -> Self {
        let s = Scripted::default();
        *s.inner.delay.lock().unwrap() = Some(d);
        s
    }

    pub fn release(&self, n: usize) {
        if let Some(g) = &*self.inner.gate.lock().unwrap() {
            g.add_permits(n);
        }
    }

    pub fn calls(&self) -> Vec<(Instant, Vec<Arc<Event>>)> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn delivered(&self) -> Vec<Arc<Event>> {
        self.inner.delivered.lock().unwrap().clone()
    }

    /// Waits until at least `n` calls have started.
    pub async fn wait_calls(&self, n: usize) {
        loop {
            let called = self.inner.called.notified();
            tokio::pin!(called);
            called.as_mut().enable();
            if self.inner.calls.lock().unwrap().len() >= n {
                return;
            }
            called.await;
        }
    }
}

impl Destination for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn send<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.inner
                .calls
                .lock()
                .unwrap()
                .push((Instant::now(), batch.to_vec()));
            self.inner.called.notify_waiters();
            let gate = self.inner.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let delay = *self.inner.delay.lock().unwrap();
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let answer = self
                .inner
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer::Ok);
            match answer {
                Answer::Ok => {
                    self.inner
                        .delivered
                        .lock()
                        .unwrap()
                        .extend(batch.iter().cloned());
                    Ok(())
                }
                Answer::Fail(e) => {
                    // Record what a partial failure delivered.
                    if let Some(items) = e.items() {
                        let failed: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
                        let mut d = self.inner.delivered.lock().unwrap();
                        for (i, ev) in batch.iter().enumerate() {
                            if !failed.contains(&i) {
                                d.push(ev.clone());
                            }
                        }
                    }
                    Err(e)
                }
            }
        })
    }
}
