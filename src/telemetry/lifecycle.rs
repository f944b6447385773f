//! Flushing, shutting down, the drop monitor, and what happens when the last handle goes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::stats::{ShutdownReport, Stats};
use super::{Inner, Telemetry};
use crate::dispatch::{DROPPED_EVENT, DropSignal};
use crate::event::Event;
use crate::text::Text;

impl Telemetry {
    /// Waits until every event queued before this call has been delivered, failed for good or
    /// been discarded — at most `timeout`. Cuts batching delays short. Returns whether
    /// everything settled in time. Safe to call concurrently and from any runtime flavour.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.inner.dispatch.flush(timeout).await
    }

    /// Stops accepting events, delivers everything queued (retrying as configured) and stops
    /// the workers — within `timeout`. What is still undelivered then is abandoned and
    /// reported. Events tracked afterwards are counted in [`Stats::after_shutdown`], not
    /// queued. Calling it again (or concurrently) is safe and reports the same end state.
    ///
    /// Drops not yet reported are reported at once (see [`DropReport`](crate::DropReport)):
    /// first those before shutdown (also as a [`DropReport::EVENT_NAME`](crate::DropReport::EVENT_NAME) event,
    /// to healthy destinations, before their queues close), then those during the drain
    /// (warning and `on_drop` callback only).
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::Relaxed);
        if !inner.shutdown_started.swap(true, Ordering::AcqRel) {
            inner.report_drops(true, true);
        }
        inner.monitor_stop.notify_one();
        inner
            .dispatch
            .close_by(tokio::time::Instant::now() + timeout);
        let finished = inner.dispatch.wait_finished(timeout).await;
        if !finished {
            // Set before aborting: a concurrent shutdown that sees the workers end because of
            // this abort must report the timeout too.
            inner.aborted.store(true, Ordering::SeqCst);
            inner.dispatch.abort().await;
        }
        inner.report_drops(true, false);
        ShutdownReport {
            stats: self.stats(),
            // Whichever call hit the deadline, every call reports the same end state.
            timed_out: !finished || inner.aborted.load(Ordering::SeqCst),
        }
    }

    /// Live counters, per destination and overall.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        Stats {
            destinations: inner.dispatch.stats(),
            rejected: inner.rejected.load(Ordering::Relaxed),
            after_shutdown: inner.after_shutdown.load(Ordering::Relaxed),
            truncated: inner.truncated.load(Ordering::Relaxed),
            oversized: inner.oversized.load(Ordering::Relaxed),
            redacted: inner.redacted.load(Ordering::Relaxed),
            consent_denied: inner.consent_denied.load(Ordering::Relaxed),
        }
    }
}

/// The drop monitor: reports drops off the tracking path. Sleeps until a drop is counted (no
/// timer while nothing is dropped), then waits until a report is due. Holds the handle weakly,
/// so it never keeps the queues open; ends with the handle or at shutdown.
pub(super) async fn drop_monitor(inner: Weak<Inner>, stop: Arc<Notify>, signal: Arc<DropSignal>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.notified() => return,
            _ = signal.raised() => {}
        }
        // The handle is not held across the wait.
        let Some(due) = inner
            .upgrade()
            .map(|inner| inner.dispatch.next_drop_report())
        else {
            return;
        };
        if let Some(due) = due {
            tokio::select! {
                biased;
                _ = stop.notified() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.shutdown_started.load(Ordering::Relaxed) {
            return;
        }
        signal.lower();
        inner.report_drops(false, true);
    }
}

impl Inner {
    /// Reports the drops not reported yet, if a report is due (always when `force`): a
    /// warning, the `on_drop` callback, and when `emit`, a [`DROPPED_EVENT`] to healthy
    /// destinations that route it. Drops of reports themselves are never reported.
    fn report_drops(&self, force: bool, emit: bool) {
        let Some((report, dropping)) = self.dispatch.take_drops(force) else {
            return;
        };
        tracing::warn!(target: "tower_telemetry", dropped = report.total(), "{report}");
        if let Some(callback) = &self.on_drop {
            let called =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&report)));
            if called.is_err() {
                tracing::error!(target: "tower_telemetry", "the on_drop callback panicked");
            }
        }
        if !emit {
            return;
        }
        self.dispatch
            .push_report(self.report_route & !dropping, || {
                let base = self.base.read().unwrap_or_else(|e| e.into_inner()).clone();
                let mut e = Event::new(Text::from_static(DROPPED_EVENT), report.to_properties());
                e.context = base;
                Arc::new(e)
            });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.monitor_stop.notify_one();
        // The queues close with this handle: each worker delivers what is queued now, without
        // lingering for fuller batches, then ends (as in `shutdown`, without the wait).
        self.dispatch.close();
        if self.shutdown_started.load(Ordering::Relaxed) {
            return;
        }
        self.report_drops(true, false);
        let pending = self.dispatch.undelivered();
        if pending > 0 {
            tracing::warn!(
                target: "tower_telemetry",
                undelivered = pending,
                "last telemetry handle dropped without shutdown(): {pending} event(s) not yet delivered may be lost"
            );
        }
    }
}
