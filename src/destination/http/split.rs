//! Splitting a batch into requests that fit a kind's byte limits.

/// A kind's byte limits, measured on the uncompressed JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest request body.
    pub(crate) per_request: usize,
    /// The largest single event (its JSON item in the body).
    pub(crate) per_event: usize,
}

/// A batch split for sending: the requests, each a list of batch indexes in batch order, and
/// the events that fit in no request (each to be failed on its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) requests: Vec<Vec<usize>>,
    pub(crate) oversized: Vec<usize>,
}

/// Packs `items` — `(batch index, encoded size in bytes)`, in batch order — into as few
/// requests as order allows: each request's `overhead` (the envelope around the items) plus
/// its items and one separator byte between two items stays within `limits.per_request`. An
/// item over `limits.per_event`, or too large for a request of its own, is `oversized`.
pub(crate) fn split(
    items: impl IntoIterator<Item = (usize, usize)>,
    overhead: usize,
    limits: Limits,
) -> Split {
    let mut out = Split::default();
    let mut current: Vec<usize> = Vec::new();
    let mut used = overhead;
    for (index, size) in items {
        if size > limits.per_event || overhead.saturating_add(size) > limits.per_request {
            out.oversized.push(index);
            continue;
        }
        let separator = usize::from(!current.is_empty());
        if used + separator + size > limits.per_request {
            out.requests.push(std::mem::take(&mut current));
            used = overhead;
        }
        used += usize::from(!current.is_empty()) + size;
        current.push(index);
    }
    if !current.is_empty() {
        out.requests.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        per_request: 100,
        per_event: 40,
    };

    #[test]
    fn everything_small_is_one_request() {
        let s = split([(0, 10), (1, 10), (2, 10)], 20, LIMITS);
        assert_eq!(s.requests, vec![vec![0, 1, 2]]);
        assert!(s.oversized.is_empty());
    }

    #[test]
    fn requests_are_cut_where_the_next_item_would_not_fit() {
        // 20 + 40 + 1 + 39 = 100 fits exactly; the next one starts a new request.
        let s = split([(0, 40), (1, 39), (2, 1), (3, 5)], 20, LIMITS);
        assert_eq!(s.requests, vec![vec![0, 1], vec![2, 3]]);
        // One byte more does not fit.
        let s = split([(0, 40), (1, 40)], 20, LIMITS);
        assert_eq!(s.requests, vec![vec![0], vec![1]]);
    }

    #[test]
    fn an_oversized_event_is_set_apart_and_the_rest_still_sent() {
        let s = split([(0, 10), (1, 41), (2, 10)], 20, LIMITS);
        assert_eq!(s.requests, vec![vec![0, 2]]);
        assert_eq!(s.oversized, vec![1]);
        // Within the per-event limit but too big for any request.
        let tight = Limits {
            per_request: 50,
            per_event: 40,
        };
        let s = split([(0, 35), (1, 5)], 20, tight);
        assert_eq!(s.requests, vec![vec![1]]);
        assert_eq!(s.oversized, vec![0]);
    }

    #[test]
    fn every_item_is_placed_once_and_every_request_fits() {
        let sizes: Vec<(usize, usize)> = (0..500).map(|i| (i, (i * 37) % 45)).collect();
        let s = split(sizes.iter().copied(), 20, LIMITS);
        let mut seen: Vec<usize> = s.requests.iter().flatten().copied().collect();
        seen.extend(&s.oversized);
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for r in &s.requests {
            let body: usize = 20 + r.iter().map(|i| sizes[*i].1).sum::<usize>() + r.len() - 1;
            assert!(body <= LIMITS.per_request, "{body}");
        }
        assert!(s.oversized.iter().all(|i| sizes[*i].1 > LIMITS.per_event));
    }
}
