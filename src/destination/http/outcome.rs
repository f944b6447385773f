//! What became of each event of a batch, and the [`DeliveryError`] that tells the worker.

use crate::destination::DeliveryError;

enum Outcome {
    Pending,
    Delivered,
    Failed(DeliveryError),
}

/// Per-event verdicts of one delivery attempt. Events never given one are reported as
/// retryable ("not attempted").
pub(crate) struct Outcomes {
    items: Vec<Outcome>,
}

impl Outcomes {
    /// `n` events, none settled yet.
    pub(crate) fn new(n: usize) -> Outcomes {
        Outcomes {
            items: (0..n).map(|_| Outcome::Pending).collect(),
        }
    }

    /// Whether event `i` has no verdict yet.
    #[cfg_attr(not(feature = "umami"), allow(dead_code))]
    pub(crate) fn is_pending(&self, i: usize) -> bool {
        matches!(self.items[i], Outcome::Pending)
    }

    /// Event `i` was delivered.
    pub(crate) fn delivered(&mut self, i: usize) {
        self.items[i] = Outcome::Delivered;
    }

    /// Event `i` was not delivered, for `error`.
    pub(crate) fn failed(&mut self, i: usize, error: DeliveryError) {
        self.items[i] = Outcome::Failed(error);
    }

    #[cfg_attr(not(feature = "umami"), allow(dead_code))]
    /// Whether event `i` is settled for good: delivered, or failed without a retry.
    pub(crate) fn is_settled(&self, i: usize) -> bool {
        match &self.items[i] {
            Outcome::Delivered => true,
            Outcome::Failed(e) => !e.is_retryable(),
            Outcome::Pending => false,
        }
    }

    /// `Ok` when all were delivered; the one shared error when all failed alike; else the
    /// failures per item.
    pub(crate) fn into_result(self) -> Result<(), DeliveryError> {
        let n = self.items.len();
        let failed: Vec<(usize, DeliveryError)> = self
            .items
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Failed(e) => Some((i, e)),
                Outcome::Delivered => None,
                Outcome::Pending => Some((i, DeliveryError::retryable("not attempted"))),
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let first = &failed[0].1;
        let alike = failed
            .iter()
            .all(|(_, e)| e.kind() == first.kind() && e.message() == first.message());
        if failed.len() == n && alike {
            let retry_after = failed.iter().filter_map(|(_, e)| e.retry_after()).max();
            let mut e = failed
                .into_iter()
                .next()
                .map(|(_, e)| e)
                .unwrap_or_else(|| DeliveryError::retryable("?"));
            if let Some(after) = retry_after {
                e = e.with_retry_after(after);
            }
            return Err(e);
        }
        Err(DeliveryError::partial(failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_become_one_error_or_per_item_ones() {
        assert!(Outcomes::new(0).into_result().is_ok());
        let mut o = Outcomes::new(2);
        o.delivered(0);
        o.delivered(1);
        assert!(o.into_result().is_ok());

        let mut o = Outcomes::new(2);
        o.failed(0, DeliveryError::retryable("503"));
        o.failed(1, DeliveryError::retryable("503"));
        let e = o.into_result().unwrap_err();
        assert!(e.items().is_none() && e.is_retryable());

        let mut o = Outcomes::new(3);
        o.delivered(0);
        o.failed(1, DeliveryError::permanent("too large"));
        assert!(o.is_settled(1) && !o.is_settled(2) && o.is_pending(2));
        let e = o.into_result().unwrap_err();
        let items = e.items().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, 1);
        assert!(!items[0].1.is_retryable());
        assert_eq!(items[1].0, 2, "an event never tried is retried");
        assert!(items[1].1.is_retryable());
    }
}
