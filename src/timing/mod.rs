//! Duration, function and error tracking: how long a call took, whether it succeeded, and what
//! failed, as future combinators, a tower layer and closure wrappers (and, with the `macros`
//! feature, the attributes `#[track_duration]`, `#[track_function]` and `#[track_error]`).
//!
//! | what | futures | closures | routes and services |
//! |---|---|---|---|
//! | `{prefix}.started` / `.completed` / `.failed` / `.cancelled` | [`TrackDurationExt::track_duration`] | [`track_duration`] | [`TrackDurationLayer`] |
//! | one `{name}` event with `duration_ms`, `success` and extra properties | [`TrackDurationExt::track_function`] | [`track_function`] | |
//! | `error.{name}` when it fails | [`TrackDurationExt::track_error`] | [`track_error`] | |
//!
//! The attribute macros `#[track_duration]`, `#[track_function]` and `#[track_error]` (feature
//! `macros`) expand to these, so there is one implementation of the semantics.
//!
//! Whether a call failed is decided by its output's [`Outcome`]: an `Err`, a 5xx
//! [`http::Response`] or [`StatusCode`](http::StatusCode). A panic is a failure too (reported with
//! `panic: true`, then the panic continues). A future dropped before it finished is
//! *cancelled*. Events go through the current handle (the request scope's, else the global one),
//! so they carry the request's context; their properties are built only when some destination
//! keeps them.
//!
//! ```
//! use std::time::Duration;
//! use tower_telemetry::{Context, Telemetry, props, timing::TrackDurationExt};
//!
//! #[derive(Debug)]
//! struct Image;
//! async fn do_generation(prompt: &str) -> Result<Image, std::io::Error> {
//!     # let _ = prompt;
//!     Ok(Image)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let telemetry = Telemetry::builder().memory_destination("memory").build().unwrap();
//! let memory = telemetry.memory("memory").unwrap();
//!
//! telemetry.scope(Context::new().with_user_id("user_123"), async {
//!     // generation.started, then generation.completed { duration_ms }
//!     // (or generation.failed { duration_ms, error, error_type } for an Err)
//!     let image = do_generation("a cat").track_duration("generation").await.unwrap();
//!
//!     // One `generate_image` event { duration_ms, success: true, model: "flux" }.
//!     let _ = do_generation("a dog")
//!         .track_function("generate_image", props! { "model" => "flux" })
//!         .await;
//!
//!     // `error.parse_count` { error, error_type: "ParseIntError" }; the Err passes through.
//!     let parsed = tower_telemetry::timing::track_error("parse_count", || "x".parse::<u32>());
//!     assert!(parsed.is_err());
//! }).await;
//!
//! telemetry.flush(Duration::from_secs(1)).await;
//! let names: Vec<_> = memory.events().iter().map(|e| e.name().to_owned()).collect();
//! assert_eq!(names, ["generation.started", "generation.completed", "generate_image", "error.parse_count"]);
//! # }
//! ```
//!
//! # Properties
//!
//! `duration_ms` is a float: milliseconds with microsecond precision, measured with
//! [`tokio::time::Instant`] (so a paused test clock applies). `error` is the error's
//! `Display` text, `error_type` the short name of its type (`ParseIntError`,
//! `Box<dyn Error + Send + Sync>`), and `status` the HTTP status when the failure is a response.
//! A panic reports the panic message as `error`, `error_type: "panic"` and `panic: true`.
//! `track_error` adds `backtrace` only when backtraces are enabled (`RUST_BACKTRACE` or
//! `RUST_LIB_BACKTRACE`); it is captured where the failure is observed, not where the error was
//! created.

mod future;
mod layer;
#[doc(hidden)]
pub mod macro_support;
mod names;
mod outcome;
mod tracked;

pub use future::{
    TrackDuration, TrackDurationExt, TrackError, TrackFunction, track_duration, track_error,
    track_function,
};
pub use layer::{
    ClassifyStatus, ResponseFuture, ServerErrors, TrackDurationLayer, TrackDurationService,
};
pub use names::{DurationNames, ExtraProperties};
pub use outcome::{Failure, Outcome};
