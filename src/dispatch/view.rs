//! A destination's view of an event: `allow_properties` / `drop_properties`.
//!
//! One `Arc<Event>` is shared by every destination, so a per-destination filter can not change
//! it in place. The worker applies the view to each batch just before `send`: an event none of
//! whose top-level properties are filtered out is passed on as it is (a reference count); only
//! one that loses a property is copied. Destinations without a filter pay nothing.

use std::sync::Arc;

use crate::event::Event;
use crate::glob::Glob;

/// Which top-level properties a destination receives (globs on property names, exact case).
#[derive(Debug)]
pub(crate) struct PropertyView {
    allow: Option<Vec<Glob>>,
    drop: Vec<Glob>,
}

impl PropertyView {
    /// The view of `allow` (`None`: every property) minus `drop`; `None` when it keeps
    /// everything. Errors name the offending pattern: `(which list, index, message)`.
    pub(crate) fn new(
        allow: Option<&[String]>,
        drop: &[String],
    ) -> Result<Option<PropertyView>, (&'static str, usize, String)> {
        let compile = |list: &'static str, globs: &[String]| {
            globs
                .iter()
                .enumerate()
                .map(|(i, g)| Glob::new(g).map_err(|e| (list, i, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = match allow {
            Some(a) => Some(compile("allow_properties", a)?),
            None => None,
        };
        let drop = compile("drop_properties", drop)?;
        if allow.is_none() && drop.is_empty() {
            return Ok(None);
        }
        Ok(Some(PropertyView { allow, drop }))
    }

    fn keeps(&self, key: &str) -> bool {
        let allowed = match &self.allow {
            Some(allow) => allow.iter().any(|g| g.matches(key)),
            None => true,
        };
        allowed && !self.drop.iter().any(|g| g.matches(key))
    }

    /// The batch as this destination sees it.
    pub(crate) fn apply(&self, batch: Vec<Arc<Event>>) -> Vec<Arc<Event>> {
        batch
            .into_iter()
            .map(|e| {
                if e.properties().iter().all(|(k, _)| self.keeps(k)) {
                    e
                } else {
                    let mut copy = (*e).clone();
                    copy.properties.retain(|k, _| self.keeps(k));
                    Arc::new(copy)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props;

    #[test]
    fn allow_then_drop_and_untouched_events_are_shared() {
        let v = PropertyView::new(Some(&["model".into(), "utm_*".into()]), &["utm_id".into()])
            .unwrap()
            .unwrap();
        let keep = Arc::new(Event::new("a", props! { "model" => "m" }));
        let cut = Arc::new(Event::new(
            "b",
            props! { "model" => "m", "utm_source" => "x", "utm_id" => 1, "email" => "e" },
        ));
        let out = v.apply(vec![keep.clone(), cut.clone()]);
        assert!(Arc::ptr_eq(&out[0], &keep));
        let keys: Vec<_> = out[1].properties().iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["model", "utm_source"]);
        assert_eq!(out[1].id(), cut.id());
        assert_eq!(cut.properties().len(), 4, "the shared event is not changed");
    }

    #[test]
    fn no_filter_is_no_view_and_bad_globs_are_errors() {
        assert!(PropertyView::new(None, &[]).unwrap().is_none());
        assert_eq!(
            PropertyView::new(None, &["ok".into(), "bad glob".into()])
                .unwrap_err()
                .1,
            1
        );
    }
}
