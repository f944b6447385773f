//! Trimming an event over `max_event_size` before it is ever rejected.
//!
//! A request's context (its path, headers, free-form fields) is not the application's to
//! size, so it must not get the request's events rejected. An event over the limit whose
//! properties would fit on their own is trimmed, in order, until it fits:
//! 1. the context's free-form fields are left out (a copy of the context: the request's own
//!    is shared with its other events);
//! 2. the largest properties are left out, one by one.
//!
//! An event whose properties alone are over the limit is the application's doing and is
//! rejected as before (counted as oversized and warned about), unless it matches
//! `sampling.always`: such an event is trimmed as above and then, if it comes to that, down to
//! its name, id and timestamp (no properties, empty context). It is never rejected for size.
//!
//! A trimmed event carries the property [`TRIMMED`] (`true`) and is counted as truncated
//! ([`Stats::truncated`](crate::Stats::truncated)).

use std::sync::Arc;

use crate::context::Context;
use crate::event::Properties;
use crate::limits::{OVERHEAD, Outcome, cut, json_len};

/// The property that marks a trimmed event.
pub(crate) const TRIMMED: &str = "_trimmed";

/// Room kept for the [`TRIMMED`] marker (`,"_trimmed":true`).
const MARKER: usize = TRIMMED.len() + 9;

/// Trims an event `outcome` says is oversized so it fits `max` bytes, when it can; `always`:
/// it matches a `sampling.always` glob and must fit. Updates `outcome`: trimmed, it is cut
/// (`cut::SIZE`), not oversized.
#[cold]
#[inline(never)]
pub(super) fn trim(
    name: &str,
    props: &mut Properties,
    ctx: &mut Arc<Context>,
    max: usize,
    always: bool,
    outcome: &mut Outcome,
) {
    let size = |props: &Properties, ctx: &Context| {
        OVERHEAD + name.len() + json_len(props) + json_len(ctx) + MARKER
    };
    let props_len = json_len(props);
    if !always && OVERHEAD + name.len() + props_len + 2 + MARKER > max {
        return;
    }
    let mut now = OVERHEAD + name.len() + props_len + json_len(&**ctx) + MARKER;
    // 1. The context's free-form fields.
    if now > max && !ctx.fields().is_empty() {
        let mut c = (**ctx).clone();
        c.fields_mut().clear();
        *ctx = Arc::new(c);
        now = size(props, ctx);
    }
    // 2. The largest properties.
    if now > max {
        let mut sizes: Vec<(usize, usize)> = props
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (json_len(&k) + 1 + json_len(v) + 1, i))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut drop = vec![false; sizes.len()];
        for (len, i) in sizes {
            if now <= max {
                break;
            }
            drop[i] = true;
            now = now.saturating_sub(len);
        }
        let mut i = 0;
        props.retain(|_, _| {
            i += 1;
            !drop[i - 1]
        });
        now = size(props, ctx);
    }
    // 3. An `always` event: down to its name, id and timestamp.
    if now > max && always {
        props.clear();
        *ctx = Arc::new(Context::new());
        now = 0;
    }
    if now > max {
        outcome.oversized = Some(now - MARKER);
        return;
    }
    props.insert(TRIMMED, true);
    outcome.oversized = None;
    outcome.cut |= cut::SIZE;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props;

    fn oversized() -> Outcome {
        Outcome {
            oversized: Some(usize::MAX),
            ..Outcome::default()
        }
    }

    #[test]
    fn context_fields_go_first_then_the_largest_properties() {
        let mut props =
            props! { "small" => "s", "big" => "b".repeat(3000), "mid" => "m".repeat(500) };
        let mut ctx = Arc::new(
            Context::new()
                .with_request_id("r1")
                .with_user_agent("u".repeat(1000))
                .with_field("blob", "x".repeat(2000)),
        );
        let shared = ctx.clone();
        let mut out = oversized();
        trim("a.b", &mut props, &mut ctx, 4000, false, &mut out);
        assert_eq!(out.oversized, None);
        assert_eq!(out.cut, cut::SIZE);
        assert!(ctx.fields().is_empty());
        assert_eq!(ctx.request_id(), Some("r1"));
        assert_eq!(
            shared.fields().len(),
            1,
            "the request's context is not changed"
        );
        assert!(props.get("big").is_none());
        assert_eq!(props.get("mid").unwrap(), &"m".repeat(500));
        assert_eq!(props.get("small").unwrap(), "s");
        assert_eq!(props.get(TRIMMED).unwrap(), &true);
        assert!(OVERHEAD + 3 + json_len(&props) + json_len(&*ctx) <= 4000);
    }

    #[test]
    fn only_always_events_are_stripped_to_their_name() {
        let path = "/".to_owned() + &"\"".repeat(600);
        let make = || {
            (
                props! { "a" => 1 },
                Arc::new(Context::new().with_path(path.clone())),
            )
        };
        let (mut props, mut ctx) = make();
        let mut out = oversized();
        trim("a.b", &mut props, &mut ctx, 1000, false, &mut out);
        assert!(out.oversized.is_some(), "the path alone is too large");

        // Properties too large on their own: rejected, untouched, unless `always`.
        let mut props = props! { "big" => "b".repeat(2000) };
        let mut ctx = Arc::new(Context::new().with_field("f", 1));
        let mut out = oversized();
        trim("a.b", &mut props, &mut ctx, 1000, false, &mut out);
        assert!(out.oversized.is_some());
        assert_eq!((props.len(), ctx.fields().len()), (1, 1));
        trim("a.b", &mut props, &mut ctx, 1000, true, &mut out);
        assert_eq!(out.oversized, None);
        assert_eq!(props.len(), 1, "only the marker");

        let (mut props, mut ctx) = make();
        let mut out = oversized();
        trim("a.b", &mut props, &mut ctx, 1000, true, &mut out);
        assert_eq!(out.oversized, None);
        assert!(ctx.is_empty());
        assert_eq!(props.len(), 1);
        assert_eq!(props.get(TRIMMED).unwrap(), &true);
    }
}
