//! Event names ([`DurationNames`], `error.{name}`) and [`ExtraProperties`].

use std::fmt::{self, Debug};
use std::sync::Arc;

use crate::event::Properties;
use crate::text::Text;

/// The event names of a duration-tracked call: `{prefix}.started`, `{prefix}.completed`,
/// `{prefix}.failed` and `{prefix}.cancelled`.
///
/// Anything that converts into a [`Text`] converts into this, formatting each name when its
/// event is recorded (one small allocation per event). [`DurationNames::new`] formats the four
/// names once, for a prefix used over and over (the layer does this); clones share them.
///
/// ```
/// use tower_telemetry::{timing::{DurationNames, TrackDurationExt}};
///
/// # async fn generate() {}
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let names = DurationNames::new("api.generate");
/// assert_eq!(names.started(), "api.generate.started");
/// generate().track_duration(names.clone()).await;
/// # }
/// ```
#[derive(Clone)]
pub struct DurationNames(NamesRepr);

#[derive(Clone)]
enum NamesRepr {
    Prefix(Text),
    Built(Arc<[Text; 4]>),
    Static(&'static [&'static str; 4]),
}

#[derive(Clone, Copy)]
pub(super) enum Stage {
    Started = 0,
    Completed = 1,
    Failed = 2,
    Cancelled = 3,
}

const SUFFIXES: [&str; 4] = ["started", "completed", "failed", "cancelled"];

impl DurationNames {
    /// The four names for `prefix`, formatted now.
    pub fn new(prefix: impl Into<Text>) -> Self {
        let prefix = prefix.into();
        let name = |s: &str| Text::from(format!("{prefix}.{s}"));
        DurationNames(NamesRepr::Built(Arc::new(SUFFIXES.map(name))))
    }

    /// Names given in full, as literals (what the attribute macros use).
    #[doc(hidden)]
    pub const fn __from_static(names: &'static [&'static str; 4]) -> Self {
        DurationNames(NamesRepr::Static(names))
    }

    pub(super) fn get(&self, stage: Stage) -> Text {
        let i = stage as usize;
        match &self.0 {
            NamesRepr::Prefix(prefix) => Text::from(format!("{prefix}.{}", SUFFIXES[i])),
            NamesRepr::Built(names) => names[i].clone(),
            NamesRepr::Static(names) => Text::from_static(names[i]),
        }
    }

    /// `{prefix}.started`.
    pub fn started(&self) -> Text {
        self.get(Stage::Started)
    }

    /// `{prefix}.completed`.
    pub fn completed(&self) -> Text {
        self.get(Stage::Completed)
    }

    /// `{prefix}.failed`.
    pub fn failed(&self) -> Text {
        self.get(Stage::Failed)
    }

    /// `{prefix}.cancelled`.
    pub fn cancelled(&self) -> Text {
        self.get(Stage::Cancelled)
    }
}

impl Debug for DurationNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DurationNames")
            .field(&self.started())
            .finish()
    }
}

impl<T: Into<Text>> From<T> for DurationNames {
    fn from(prefix: T) -> Self {
        DurationNames(NamesRepr::Prefix(prefix.into()))
    }
}

/// `error.{name}`, formatted only when an error is reported.
#[derive(Clone)]
pub(super) enum ErrorName {
    Base(Text),
    Full(&'static str),
}

impl ErrorName {
    pub(super) fn get(&self) -> Text {
        match self {
            ErrorName::Base(name) => Text::from(format!("error.{name}")),
            ErrorName::Full(name) => Text::from_static(name),
        }
    }
}

// ----- extra properties -------------------------------------------------------------------------

/// The extra properties of a [`track_function`](fn@crate::timing::track_function) event: a ready [`Properties`], or a closure
/// that adds them, called only when the event is recorded (so a call whose event goes nowhere
/// builds nothing).
///
/// ```
/// use tower_telemetry::{props, timing::track_function};
///
/// let model = "flux";
/// let a = track_function("generate_image", props! { "model" => model }, || Ok::<_, std::io::Error>(2));
/// let b = track_function(
///     "generate_image",
///     |p: &mut tower_telemetry::Properties| {
///         p.insert("model", model);
///     },
///     || (),
/// );
/// # let _ = (a, b);
/// ```
pub trait ExtraProperties {
    /// Adds the properties to the event's.
    fn add_to(self, properties: &mut Properties);
}

impl ExtraProperties for Properties {
    fn add_to(self, properties: &mut Properties) {
        if properties.is_empty() {
            *properties = self;
            return;
        }
        for (k, v) in self.iter() {
            properties.insert_value(Text::copy_from(k), v.clone());
        }
    }
}

impl<G: FnOnce(&mut Properties)> ExtraProperties for G {
    fn add_to(self, properties: &mut Properties) {
        self(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let built = DurationNames::new("api.generate");
        let lazy = DurationNames::from("api.generate");
        let fixed =
            DurationNames::__from_static(&["a.started", "a.completed", "a.failed", "a.cancelled"]);
        for stage in [
            Stage::Started,
            Stage::Completed,
            Stage::Failed,
            Stage::Cancelled,
        ] {
            assert_eq!(built.get(stage), lazy.get(stage));
            assert!(fixed.get(stage).starts_with("a."));
        }
        assert_eq!(built.cancelled(), "api.generate.cancelled");
    }
}
