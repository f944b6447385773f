//! A bridge from `tracing`: `tracing` events that opt in become telemetry events.
//!
//! Many services already say what happened with `tracing`. Add the bridge's layer to your
//! subscriber and mark the events that are analytics events with a `telemetry.event` field
//! (the event's name), or name a target whose events all are; their other fields become typed
//! properties, the current request's context is attached, and they are routed, sampled and
//! delivered like any [`track!`](macro@crate::track):
//!
//! ```
//! use tower_telemetry::{Telemetry, bridge::TracingBridge};
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let subscriber = tracing_subscriber::registry()
//!     .with(TracingBridge::new(telemetry.clone()).target("analytics").into_layer());
//! let _guard = tracing::subscriber::set_default(subscriber);
//!
//! tracing::info!(telemetry.event = "user.signup", plan = "pro", seats = 3);
//! tracing::info!(target: "analytics", "user.invited");     // the message is the name
//! tracing::info!(plan = "pro", "not an analytics event");   // ignored: costs nothing here
//!
//! telemetry.flush(std::time::Duration::from_secs(1)).await;
//! let events = telemetry.memory("memory").unwrap().events();
//! assert_eq!(events[0].name(), "user.signup");
//! assert_eq!(events[0].properties().get("seats").unwrap().as_i64(), Some(3));
//! assert_eq!(events[1].name(), "user.invited");
//! assert_eq!(events.len(), 2);
//! # }
//! ```
//!
//! Events that do not opt in cost what any per-layer filter costs `tracing`: the decision is
//! made once per call site ([`Interest`]) and cached, so the bridge never looks at them. The
//! crate's own records (target `tower_telemetry…`) never opt in, so nothing the crate logs
//! comes back as an event. (A warning the crate makes *while* it takes a bridged record — a
//! rejected name, say — is dropped by `tracing`, which ignores records made during a dispatch;
//! it is still counted in [`Stats`](crate::Stats).)
//!
//! | `tracing` | telemetry event |
//! |---|---|
//! | field `telemetry.event` | the name (else, for a configured target, the message) |
//! | `&str`, `i64`, `u64`, `f64`, `bool` fields | properties of those types |
//! | `i128`/`u128` fields | numbers when they fit in 64 bits, else strings |
//! | `?debug` and `%display` fields, errors | string properties |
//! | the message (when the name came from `telemetry.event`) | property `message` |
//! | level, target, module, span | not carried (the request's context is) |

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event as TracingEvent, Metadata, Subscriber};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context as LayerContext, Filter, Layer};

use crate::event::Properties;
use crate::telemetry::{Telemetry, current_scope};
use crate::text::Text;

/// The field that marks a `tracing` event as a telemetry event, and names it.
pub const EVENT_FIELD: &str = "telemetry.event";

/// Turns `tracing` events that opt in into telemetry events: see the [module docs](self).
#[derive(Clone)]
pub struct TracingBridge {
    telemetry: Telemetry,
    targets: Vec<String>,
}

impl fmt::Debug for TracingBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingBridge")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl TracingBridge {
    /// A bridge into `telemetry`: events with a [`EVENT_FIELD`] field opt in.
    pub fn new(telemetry: Telemetry) -> Self {
        TracingBridge {
            telemetry,
            targets: Vec::new(),
        }
    }

    /// Every event of `target` (or of a module under it: `analytics` covers
    /// `analytics::billing`) opts in too; without a `telemetry.event` field its message is
    /// its name. The crate's own target, `tower_telemetry`, is never taken.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.targets.push(target.into());
        self
    }

    /// The `tracing_subscriber` layer, with its own per-layer filter: other layers of the
    /// subscriber see every event as before.
    pub fn into_layer<S>(self) -> Filtered<BridgeLayer, OptIn, S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let filter = OptIn {
            targets: self.targets.clone(),
            verdicts: std::array::from_fn(|_| AtomicUsize::new(0)),
        };
        BridgeLayer { bridge: self }.with_filter(filter)
    }
}

/// The layer of a [`TracingBridge`] (use it through [`TracingBridge::into_layer`]).
#[derive(Debug)]
pub struct BridgeLayer {
    bridge: TracingBridge,
}

/// The per-layer filter of a [`TracingBridge`]: which call sites opt in.
#[derive(Debug)]
pub struct OptIn {
    targets: Vec<String>,
    /// The verdicts of recent call sites, by the address of their (static) metadata: a
    /// direct-mapped cache, so the per-event check `tracing` makes of a per-layer filter is
    /// a load and a compare, not a look through the field names.
    verdicts: [AtomicUsize; VERDICTS],
}

/// Slots in [`OptIn`]'s verdict cache.
const VERDICTS: usize = 64;

impl OptIn {
    fn by_target(&self, target: &str) -> bool {
        self.targets.iter().any(|t| {
            target == t
                || target
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    }

    fn opts_in(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event()
            && !is_own(meta.target())
            && (meta.fields().field(EVENT_FIELD).is_some() || self.by_target(meta.target()))
    }

    /// [`opts_in`](Self::opts_in), from the cache when the call site's verdict is there.
    /// Metadata is at least 8-byte aligned, so the low bit of its address holds the verdict.
    #[inline]
    fn cached(&self, meta: &Metadata<'_>) -> bool {
        let addr = std::ptr::from_ref(meta).addr();
        let slot = &self.verdicts[(addr >> 4) % VERDICTS];
        let seen = slot.load(Ordering::Relaxed);
        if seen & !1 == addr {
            return seen & 1 == 1;
        }
        let verdict = self.opts_in(meta);
        slot.store(addr | usize::from(verdict), Ordering::Relaxed);
        verdict
    }
}

/// The crate's own records: never taken, so nothing it logs comes back.
fn is_own(target: &str) -> bool {
    target == "tower_telemetry" || target.starts_with("tower_telemetry::")
}

impl<S: Subscriber> Filter<S> for OptIn {
    fn enabled(&self, meta: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        self.cached(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.opts_in(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

impl<S: Subscriber> Layer<S> for BridgeLayer {
    fn on_event(&self, event: &TracingEvent<'_>, _: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = match (fields.name.take(), fields.message.take()) {
            (Some(name), message) => {
                if let Some(message) = message.filter(|m| !m.is_empty()) {
                    fields.properties.insert_value("message", message);
                }
                name
            }
            (None, Some(message)) => message,
            // A configured target's event with neither: nothing to name it by.
            (None, None) => return,
        };
        let scope = current_scope();
        let properties = fields.properties;
        self.bridge
            .telemetry
            .emit_dynamic(scope.as_deref(), Text::from(name), move |p| {
                *p = properties;
                Ok(())
            });
    }
}

/// The fields of one event, typed.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    message: Option<String>,
    properties: Properties,
}

impl Fields {
    fn put(&mut self, field: &Field, value: impl Into<crate::PropertyValue>) {
        self.properties
            .insert_value(Text::from_static(field.name()), value);
    }

    fn text(&mut self, field: &Field, value: String) {
        match field.name() {
            EVENT_FIELD => self.name = Some(value),
            "message" => self.message = Some(value),
            _ => self.put(field, value),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.put(field, v),
            Err(_) => self.put(field, value.to_string()),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.put(field, v),
            Err(_) => self.put(field, value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value);
    }
}
