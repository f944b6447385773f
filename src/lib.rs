//! Product and analytics event tracking for [tower] and [axum] services.
//!
//! Handlers emit named events (`generation.started`, `checkout.completed`) with properties;
//! each event is stamped with the current request's context (user, session, request id, host,
//! path), sampled, routed by glob patterns to destinations (Umami, the `tracing` log, your own),
//! and delivered in the background — batched, retried, bounded in memory, flushed on shutdown —
//! without ever blocking or failing the request.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{Context, Telemetry, track};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::from_yaml_str(r#"
//! telemetry:
//!   destinations:
//!     logging:
//!       level: INFO
//!       events: [error.*, system.*]
//!     memory:
//!       events: [user.*, generation.*, payment.*]
//! "#).unwrap();
//! telemetry.install_global();
//!
//! track!("generation.started", model = "flux-dev", user_id = "user_123", credits_cost = 10);
//! tower_telemetry::track_event("payment.completed", serde_json::json!({ "amount": 9.99 }));
//!
//! // In a request (the TelemetryLayer does this for you): events carry the request's context.
//! telemetry.scope(Context::new().with_user_id("user_123").with_request_id("req_789"), async {
//!     track!("user.clicked", button = "submit");
//! }).await;
//!
//! let report = telemetry.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(report.destination("memory").unwrap().delivered, 3);
//! # }
//! ```
//!
//! # Where things are
//!
//! Every public item has exactly one path. The crate root holds what code that *tracks* uses:
//! the handle ([`Telemetry`], [`TelemetryBuilder`], [`Tracker`], and what their methods take
//! and return: [`Context`], [`WithContext`], [`Stats`] (and [`PrometheusStats`], the same
//! counters for a `/metrics` route), [`ShutdownReport`], [`DropReport`], ...), the event ([`Event`], [`Properties`], [`PropertyValue`], [`Text`]), the functions
//! [`track()`], [`track_event`], [`set_context`], [`clear_context`], and every macro ([`track!`],
//! [`props!`], and with the `macros` feature `#[track_duration]`, `#[track_function]`,
//! `#[track_error]`). Everything else lives in the one module named after its subject, and
//! nowhere else:
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | [`Config`](config::Config) and every configuration type it is made of, its errors, their `DEFAULT_*` constants, and [`validate_glob`](config::validate_glob) for event globs |
//! | [`destination`] | the [`Destination`](destination::Destination) trait and its companions, the built-in kinds; [`destination::umami`] and `destination::nats` for those kinds' own types |
//! | [`layer`] | [`TelemetryLayer`](layer::TelemetryLayer), the middleware that gives each request its context |
//! | [`timing`] | duration and outcome tracking: the future, closure and `tower` forms |
//! | [`limits`] | [`LimitsConfig`](limits::LimitsConfig) and the limits' constants |
//! | [`identity`] | identify, alias and group: [`Consent`](identity::Consent), [`Identify`](identity::Identify) and the reserved property keys |
//! | `relay` | the NATS-to-destinations relay (`nats` feature) |
//! | `bridge` | `tracing` events as telemetry events (`tracing-bridge` feature) |
//! | `otel` | trace correlation with the current OpenTelemetry span (`opentelemetry` feature) |
//! | `inspector` | the live inspector page, an axum `Router` to mount (`inspector` feature) |
//!
//! Constants live in their module (or, for [`DropReport`], on the type).
//!
//! # Cargo features
//!
//! | feature | default | what it switches on |
//! |---|---|---|
//! | `umami` | yes | the `umami` destination (HTTP with reqwest and rustls) |
//! | `macros` | yes | `#[track_duration]`, `#[track_function]`, `#[track_error]` |
//! | `posthog` | no | the `posthog` destination (PostHog's batch API, gzip bodies) |
//! | `segment` | no | the `segment` destination (Segment's `/v1/batch`: Segment, RudderStack, Jitsu) |
//! | `webhook` | no | the `webhook` destination (signed per Standard Webhooks) |
//! | `otlp` | no | the `otlp` destination (OpenTelemetry logs over OTLP/HTTP, protobuf or JSON: `destination::otlp`) |
//! | `nats` | no | the `nats` destination (NATS JetStream, exactly once per event id) and `relay` |
//! | `spool` | no | a durable spool per destination (`spool:`, on the embedded store redb): queued events survive crashes, restarts and long outages |
//! | `tracing-bridge` | no | `bridge::TracingBridge`: `tracing` events that opt in become telemetry events |
//! | `opentelemetry` | no | events carry the current OpenTelemetry span's `trace_id` and `span_id` |
//! | `inspector` | no | `inspector::Inspector`: a live page of the events as they are tracked, where each went, counters, `explain` and the configuration |
//! | `full` | no | everything |
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's Rust examples, compiled (and run unless marked otherwise) as doc tests, so the
/// README keeps working as written. They use the default features.
#[cfg(all(doctest, feature = "umami", feature = "macros"))]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

#[cfg(feature = "tracing-bridge")]
pub mod bridge;
pub mod config;
mod context;
pub mod destination;
mod diag;
mod dispatch;
mod event;
mod extract;
mod glob;
pub mod identity;
#[cfg(feature = "inspector")]
pub mod inspector;
pub mod layer;
pub mod limits;
#[cfg(feature = "opentelemetry")]
pub mod otel;
mod pipeline;
mod properties;
mod redact;
#[cfg(feature = "nats")]
pub mod relay;
mod routing;
#[cfg(feature = "spool")]
mod spool;
mod telemetry;
mod text;
pub mod timing;
#[cfg(any(
    feature = "umami",
    feature = "nats",
    feature = "posthog",
    feature = "segment",
    feature = "webhook",
    feature = "otlp"
))]
mod tls;
mod value;

pub use context::Context;
pub use dispatch::{DestinationDrops, DestinationStats, DropReport};
pub use event::{Event, EventCategory, EventKind, InvalidName, Properties, Rfc3339, validate_name};
pub use extract::Tracker;
pub use routing::{Explanation, RouteExplanation};
pub use telemetry::{
    PrometheusStats, ShutdownReport, Stats, Telemetry, TelemetryBuilder, WithContext,
    WithContextExt,
};
pub use text::Text;
#[cfg(feature = "macros")]
pub use tower_telemetry_macros::{track_duration, track_error, track_function};
pub use value::PropertyValue;

use serde::Serialize;

/// Tracks `name` with `properties` through the current handle: the request scope's, else the
/// global one. With neither, nothing happens (one warning is logged).
///
/// ```
/// use tower_telemetry::props;
/// tower_telemetry::track("generation.started", props! { "model" => "flux-dev" });
/// ```
pub fn track(name: impl Into<Text>, properties: Properties) {
    telemetry::with_current(|t, scope| {
        t.emit_dynamic(scope, name.into(), move |p| {
            *p = properties;
            Ok(())
        })
    })
}

/// Tracks `name` with the fields of `properties`, which must serialize to a JSON object
/// (a struct, a map, `json!({...})`); anything else is rejected, counted and logged.
///
/// ```
/// tower_telemetry::track_event("button_click", serde_json::json!({ "button": "submit", "page": "/signup" }));
/// ```
pub fn track_event(name: impl Into<Text>, properties: impl Serialize) {
    telemetry::with_current(|t, scope| {
        t.emit_dynamic(scope, name.into(), move |p| {
            telemetry::object_properties(&properties, p)
        })
    })
}

/// [`Telemetry::identify`] on the current handle and request scope.
///
/// ```
/// use tower_telemetry::props;
/// tower_telemetry::identify("user_42", props! { "plan" => "pro" });
/// ```
pub fn identify(user_id: impl Into<Text>, traits: Properties) {
    let op = identity::Identify::new(user_id).set(traits);
    telemetry::with_current(|t, scope| t.identify_in(scope, op))
}

/// [`Telemetry::alias`] on the current handle and request scope.
pub fn alias(previous_id: impl Into<Text>, user_id: impl Into<Text>) {
    let (previous_id, user_id) = (previous_id.into(), user_id.into());
    telemetry::with_current(|t, scope| t.alias_in(scope, previous_id, user_id))
}

/// [`Telemetry::group`] on the current handle and request scope.
pub fn group(group_type: impl Into<Text>, group_key: impl Into<Text>, traits: Properties) {
    let (group_type, group_key) = (group_type.into(), group_key.into());
    telemetry::with_current(|t, scope| t.group_in(scope, group_type, group_key, traits))
}

/// [`Telemetry::set_context`] on the current handle.
pub fn set_context(context: Context) {
    telemetry::with_current(|t, _| t.set_context(context))
}

/// [`Telemetry::clear_context`] on the current handle.
pub fn clear_context() {
    telemetry::with_current(|t, _| t.clear_context())
}

/// Builds [`Properties`] from `key => value` pairs; values are anything `Serialize`.
///
/// ```
/// use tower_telemetry::props;
///
/// let p = props! { "model" => "flux-dev", "credits_cost" => 10, "tags" => ["a", "b"] };
/// assert_eq!(p.len(), 3);
/// ```
#[macro_export]
macro_rules! props {
    () => { $crate::Properties::new() };
    ($($key:expr => $value:expr),+ $(,)?) => {{
        let mut p = $crate::Properties::with_capacity($crate::__count!($($key)+));
        $( p.insert($key, &$value); )+
        p
    }};
}

/// Tracks an event: `track!(name, key = value, ...)`.
///
/// Routing and sampling are decided from the name first (cached per call site), and the
/// property values are evaluated only if some destination will keep the event — so a
/// `track!` that goes nowhere costs a few nanoseconds and allocates nothing.
///
/// Keys are identifiers or string literals; values are anything `Serialize`. Where every value
/// is a literal, a number or a boolean, the call site also remembers that its properties pass
/// the handle's limits, so later events skip that pass (strings and other values are limited
/// on every event). The event goes through the current handle (the request scope's, else the
/// global one), or through the one you name before `=>`: a [`Telemetry`] or a
/// [`Tracker`](crate::Tracker) reference.
///
/// ```
/// use tower_telemetry::{Telemetry, track};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let telemetry = Telemetry::builder().memory_destination("m").build().unwrap();
/// let model = String::from("flux-dev");
/// track!("generation.started", model = model, user_id = "user_123", credits_cost = 10);
/// track!("checkout.completed", "package.id" = "creator", amount = 9.99);
/// track!(&telemetry => "system.boot");
/// let name = format!("user.{}", "signup");
/// track!(&telemetry => name, plan = "pro");
/// # }
/// ```
#[macro_export]
macro_rules! track {
    ($target:expr => $name:literal $(, $($rest:tt)*)?) => {{
        static __CALLSITE: $crate::__private::Callsite = $crate::__private::Callsite::new();
        $crate::__private::Emit::__emit_static(
            $target,
            &__CALLSITE,
            $name,
            $crate::__track_count!($($($rest)*)?),
            |__p: &mut $crate::Properties| -> bool { $crate::__track_props!(__p; $($($rest)*)?) },
        )
    }};
    ($target:expr => $name:expr $(, $($rest:tt)*)?) => {{
        $crate::__private::Emit::__emit_dynamic(
            $target,
            $name,
            |__p: &mut $crate::Properties| { let _ = $crate::__track_props!(__p; $($($rest)*)?); },
        )
    }};
    ($name:literal $(, $($rest:tt)*)?) => {{
        static __CALLSITE: $crate::__private::Callsite = $crate::__private::Callsite::new();
        $crate::__private::emit_static(
            &__CALLSITE,
            $name,
            $crate::__track_count!($($($rest)*)?),
            |__p: &mut $crate::Properties| -> bool { $crate::__track_props!(__p; $($($rest)*)?) },
        )
    }};
    ($name:expr $(, $($rest:tt)*)?) => {{
        $crate::__private::emit_dynamic(
            $name,
            |__p: &mut $crate::Properties| { let _ = $crate::__track_props!(__p; $($($rest)*)?); },
        )
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __track_props {
    ($p:ident;) => { true };
    ($p:ident; $($rest:tt)+) => {{
        // Keys that are distinct literals (checked at compile time) going into empty
        // properties need no search for an earlier value of the same key.
        let __fresh = {
            const DISTINCT: bool = $crate::__private::distinct_keys(&$crate::__track_keys!([] $($rest)+));
            DISTINCT
        } && $p.is_empty();
        // Whether every value is a literal, a number or a boolean (known at compile time once
        // inlined): then the limits treat every event of this call site alike.
        #[allow(unused_mut)]
        let mut __fixed = true;
        $crate::__track_insert!($p, __fresh, __fixed; $($rest)+);
        __fixed
    }};
}

/// The keys of `key = value, ...` as an array of string literals.
#[doc(hidden)]
#[macro_export]
macro_rules! __track_keys {
    ([$($k:expr),*]) => { [$($k),*] };
    ([$($k:expr),*] $key:tt = $value:expr $(, $($rest:tt)*)?) => {
        $crate::__track_keys!([$($k,)* $crate::__key!($key)] $($($rest)*)?)
    };
}

/// One insert per `key = value`: a literal value is converted without `serde` (a string
/// literal is not even copied); anything else goes through its `Serialize`.
#[doc(hidden)]
#[macro_export]
macro_rules! __track_insert {
    ($p:ident, $fresh:ident, $fixed:ident;) => {};
    ($p:ident, $fresh:ident, $fixed:ident; $key:tt = $value:literal $(, $($rest:tt)*)?) => {
        {
            #[allow(unused_imports)]
            use $crate::__private::{ViaInto as _, ViaSerialize as _};
            $p.__insert_value($fresh, $crate::__key!($key), (&$crate::__private::Literal($value)).__value());
        }
        $crate::__track_insert!($p, $fresh, $fixed; $($($rest)*)?);
    };
    ($p:ident, $fresh:ident, $fixed:ident; $key:tt = $value:expr $(, $($rest:tt)*)?) => {
        {
            #[allow(unused_imports)]
            use $crate::__private::{ViaScalar as _, ViaSerializeRef as _};
            let (__value, __bounded) = (&$crate::__private::Expr(&$value)).__value();
            $p.__insert_value($fresh, $crate::__key!($key), __value);
            $fixed &= __bounded;
        }
        $crate::__track_insert!($p, $fresh, $fixed; $($($rest)*)?);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __track_count {
    () => { 0usize };
    ($($key:tt = $value:expr),+ $(,)?) => { $crate::__count!($($key)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __key {
    ($key:ident) => {
        ::core::stringify!($key)
    };
    ($key:literal) => {
        $key
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __count {
    () => { 0usize };
    ($head:tt $($tail:tt)*) => { 1usize + $crate::__count!($($tail)*) };
}

/// Implementation details of the macros. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::routing::Callsite;
    pub use literal::{Expr, Literal, Scalar, ViaInto, ViaScalar, ViaSerialize, ViaSerializeRef};

    mod literal {
        use crate::PropertyValue;

        /// A literal value in `track!`. `(&Literal(v)).__value()` converts a string literal
        /// (stored, not copied: a literal is `'static`), number or boolean directly, and any
        /// other literal (a byte string, a `char`, a `u128`) through its `Serialize`: the first
        /// trait applies by value, the second only after an autoref, so the first wins.
        #[derive(Debug)]
        pub struct Literal<T>(pub T);

        /// The direct conversion.
        pub trait ViaInto {
            /// The literal's value.
            fn __value(&self) -> PropertyValue;
        }

        impl<T: Copy + Into<PropertyValue>> ViaInto for Literal<T> {
            #[inline(always)]
            fn __value(&self) -> PropertyValue {
                self.0.into()
            }
        }

        /// The fallback, through `Serialize`.
        pub trait ViaSerialize {
            /// The literal's value.
            fn __value(&self) -> PropertyValue;
        }

        impl<T: serde::Serialize> ViaSerialize for &Literal<T> {
            #[inline]
            fn __value(&self) -> PropertyValue {
                PropertyValue::from_serialize(&self.0)
            }
        }

        /// Any other value in `track!`, by reference. `(&Expr(&v)).__value()` converts numbers,
        /// booleans and strings directly (a string is copied once, into the value), and
        /// anything else through its `Serialize`, with the same autoref precedence as
        /// [`Literal`]. No lifetime decides which applies, so a borrowed string is fine.
        #[derive(Debug)]
        pub struct Expr<'a, T: ?Sized>(pub &'a T);

        /// Types converted without `serde`.
        pub trait Scalar {
            /// Whether every value of the type has the same size bound and passes the limits
            /// untouched (numbers and booleans; not strings).
            const BOUNDED: bool = false;
            /// The value.
            fn to_property_value(&self) -> PropertyValue;
        }

        macro_rules! scalar {
            ($($t:ty),*) => {$(
                impl Scalar for $t {
                    const BOUNDED: bool = true;
                    #[inline(always)]
                    fn to_property_value(&self) -> PropertyValue {
                        PropertyValue::from(*self)
                    }
                }
            )*};
        }
        scalar!(
            i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64, bool
        );

        impl Scalar for str {
            #[inline]
            fn to_property_value(&self) -> PropertyValue {
                PropertyValue::from(Box::<str>::from(self))
            }
        }

        impl Scalar for String {
            #[inline]
            fn to_property_value(&self) -> PropertyValue {
                self.as_str().to_property_value()
            }
        }

        impl<T: Scalar + ?Sized> Scalar for &T {
            const BOUNDED: bool = T::BOUNDED;
            #[inline(always)]
            fn to_property_value(&self) -> PropertyValue {
                (**self).to_property_value()
            }
        }

        /// The direct conversion.
        pub trait ViaScalar {
            /// The value, and whether its type is [`Scalar::BOUNDED`].
            fn __value(&self) -> (PropertyValue, bool);
        }

        impl<T: Scalar + ?Sized> ViaScalar for Expr<'_, T> {
            #[inline(always)]
            fn __value(&self) -> (PropertyValue, bool) {
                (self.0.to_property_value(), T::BOUNDED)
            }
        }

        /// The fallback, through `Serialize` (its size may differ from value to value).
        pub trait ViaSerializeRef {
            /// The value, and `false`.
            fn __value(&self) -> (PropertyValue, bool);
        }

        impl<T: serde::Serialize + ?Sized> ViaSerializeRef for &Expr<'_, T> {
            #[inline]
            fn __value(&self) -> (PropertyValue, bool) {
                (PropertyValue::from_serialize(self.0), false)
            }
        }
    }

    pub use crate::timing::macro_support as timing;
    pub use serde_json;

    use crate::{Properties, Telemetry, Text, telemetry};

    /// Whether no two of `keys` are equal (evaluated at compile time by `track!`).
    pub const fn distinct_keys(keys: &[&str]) -> bool {
        let mut i = 0;
        while i < keys.len() {
            let mut j = i + 1;
            while j < keys.len() {
                if same(keys[i].as_bytes(), keys[j].as_bytes()) {
                    return false;
                }
                j += 1;
            }
            i += 1;
        }
        true
    }

    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Something `track!(target => ...)` can emit through.
    pub trait Emit {
        /// A literal name, with a call-site route cache.
        fn __emit_static(
            &self,
            callsite: &'static Callsite,
            name: &'static str,
            capacity: usize,
            fill: impl FnOnce(&mut Properties) -> bool,
        );
        /// A name built at run time.
        fn __emit_dynamic(&self, name: impl Into<Text>, fill: impl FnOnce(&mut Properties));
    }

    impl Emit for Telemetry {
        fn __emit_static(
            &self,
            callsite: &'static Callsite,
            name: &'static str,
            capacity: usize,
            fill: impl FnOnce(&mut Properties) -> bool,
        ) {
            // Not routed anywhere: done before looking up (and counting a reference to) the
            // request's scope.
            if !self.may_emit_static(callsite, name) {
                return;
            }
            let scope = crate::telemetry::current_scope();
            self.emit_static(scope.as_deref(), callsite, name, capacity, fill)
        }

        fn __emit_dynamic(&self, name: impl Into<Text>, fill: impl FnOnce(&mut Properties)) {
            let scope = crate::telemetry::current_scope();
            self.emit_dynamic(scope.as_deref(), name.into(), |p| {
                fill(p);
                Ok(())
            })
        }
    }

    impl<T: Emit + ?Sized> Emit for &T {
        fn __emit_static(
            &self,
            callsite: &'static Callsite,
            name: &'static str,
            capacity: usize,
            fill: impl FnOnce(&mut Properties) -> bool,
        ) {
            (**self).__emit_static(callsite, name, capacity, fill)
        }

        fn __emit_dynamic(&self, name: impl Into<Text>, fill: impl FnOnce(&mut Properties)) {
            (**self).__emit_dynamic(name, fill)
        }
    }

    /// `track!("literal", ...)` through the current handle.
    pub fn emit_static(
        callsite: &'static Callsite,
        name: &'static str,
        capacity: usize,
        fill: impl FnOnce(&mut Properties) -> bool,
    ) {
        telemetry::with_current(|t, scope| t.emit_static(scope, callsite, name, capacity, fill))
    }

    /// `track!(expr, ...)` through the current handle.
    pub fn emit_dynamic(name: impl Into<Text>, fill: impl FnOnce(&mut Properties)) {
        let name = name.into();
        telemetry::with_current(|t, scope| {
            t.emit_dynamic(scope, name, |p| {
                fill(p);
                Ok(())
            })
        })
    }
}
