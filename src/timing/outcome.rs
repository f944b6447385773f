//! [`Outcome`]: whether a finished call succeeded, and the [`Failure`] to report if not.

use std::borrow::Cow;
use std::fmt::{self, Debug, Display};

use http::{Response, StatusCode};

use crate::event::Properties;

/// Why a tracked call counts as failed: the error to report, its type and, for HTTP responses,
/// the status.
///
/// Built by [`Outcome::failure`]; nothing is formatted until an event is actually recorded.
///
/// ```
/// use tower_telemetry::timing::Failure;
///
/// let err = "x".parse::<u32>().unwrap_err();
/// let failure = Failure::new(&err);
/// assert_eq!(failure.to_string(), "invalid digit found in string");
/// assert_eq!(failure.error_type(), "ParseIntError");
/// ```
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    message: Message<'a>,
    error_type: &'static str,
    status: Option<StatusCode>,
}

#[derive(Clone, Copy)]
enum Message<'a> {
    Display(&'a dyn Display),
    Debug(&'a dyn Debug),
    Status(StatusCode),
    TypeName,
}

impl<'a> Failure<'a> {
    /// A failure described by `error`'s `Display` text; its type is `E`.
    pub fn new<E: Display>(error: &'a E) -> Self {
        Failure {
            message: Message::Display(error),
            error_type: std::any::type_name::<E>(),
            status: None,
        }
    }

    /// A failure described by `error`'s `Debug` text, for error types without `Display`.
    pub fn from_debug<E: Debug>(error: &'a E) -> Self {
        Failure {
            message: Message::Debug(error),
            error_type: std::any::type_name::<E>(),
            status: None,
        }
    }

    /// An HTTP response with this status: `error` is e.g. `500 Internal Server Error`,
    /// `error_type` is `StatusCode`, and the event gets a `status` property.
    pub fn status(status: StatusCode) -> Failure<'static> {
        Failure {
            message: Message::Status(status),
            error_type: "StatusCode",
            status: Some(status),
        }
    }

    /// A failure of type `E` that can describe itself by its type name only.
    pub fn of_type<E: ?Sized>() -> Failure<'static> {
        Failure {
            message: Message::TypeName,
            error_type: std::any::type_name::<E>(),
            status: None,
        }
    }

    /// Replaces the reported type name (module paths are stripped when it is reported).
    /// Defaults to the error's type.
    pub fn with_type(mut self, error_type: &'static str) -> Self {
        self.error_type = error_type;
        self
    }

    /// The short type name reported as `error_type`: module paths stripped, generics kept.
    pub fn error_type(&self) -> Cow<'static, str> {
        short_type_name(self.error_type)
    }

    /// The HTTP status, when the failure is a response.
    pub fn http_status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Adds `error`, `error_type` and (for responses) `status`.
    pub(super) fn fill(&self, p: &mut Properties) {
        p.insert("error", self.to_string());
        p.insert("error_type", self.error_type());
        if let Some(status) = self.status {
            p.insert("status", status.as_u16());
        }
    }
}

impl Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message {
            Message::Display(e) => Display::fmt(e, f),
            Message::Debug(e) => Debug::fmt(e, f),
            Message::Status(s) => Display::fmt(&s, f),
            Message::TypeName => f.write_str(&short_type_name(self.error_type)),
        }
    }
}

impl Debug for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("error", &format_args!("{self}"))
            .field("error_type", &self.error_type())
            .field("status", &self.status)
            .finish()
    }
}

/// Whether a finished call succeeded: the output of a function or future tracked with
/// [`track_duration`](fn@crate::timing::track_duration), [`track_function`](fn@crate::timing::track_function)
/// or [`track_error`](fn@crate::timing::track_error) (and their future and attribute
/// forms).
///
/// Implemented for `Result<T, E>` where `E: Display` (an `Err` fails), `()` (always succeeds),
/// and [`http::Response`] and [`StatusCode`] (a 5xx fails). For your own type, return
/// `Some(Failure::...)` when a value means failure:
///
/// ```
/// use tower_telemetry::{timing::{Failure, Outcome}};
///
/// enum Generation { Done(Vec<u8>), Refused(String) }
///
/// impl Outcome for Generation {
///     fn failure(&self) -> Option<Failure<'_>> {
///         match self {
///             Generation::Done(_) => None,
///             Generation::Refused(reason) => Some(Failure::new(reason).with_type("Refused")),
///         }
///     }
/// }
/// assert!(Generation::Refused("nsfw".into()).failure().is_some());
/// ```
///
/// An error type needs only `Display` (any `std::error::Error` has it). The attribute macros
/// are more lenient: there any return type works (a `Result` whose error has only `Debug`, or
/// nothing at all, still fails on `Err`; other types that are not an `Outcome` always succeed).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be classified as a success or a failure",
    label = "not an `Outcome`",
    note = "`Outcome` is implemented for `Result<T, E>` with `E: Display`, `()`, `http::Response<B>` and `http::StatusCode`: implement `Display` for your error type, or `Outcome` for your own type"
)]
pub trait Outcome {
    /// `None` when this value is a success; the failure to report otherwise.
    fn failure(&self) -> Option<Failure<'_>>;
}

impl<T, E: Display> Outcome for Result<T, E> {
    fn failure(&self) -> Option<Failure<'_>> {
        self.as_ref().err().map(Failure::new)
    }
}

impl Outcome for () {
    fn failure(&self) -> Option<Failure<'_>> {
        None
    }
}

impl<B> Outcome for Response<B> {
    fn failure(&self) -> Option<Failure<'_>> {
        let status = self.status();
        status.is_server_error().then(|| Failure::status(status))
    }
}

impl Outcome for StatusCode {
    fn failure(&self) -> Option<Failure<'_>> {
        self.is_server_error().then(|| Failure::status(*self))
    }
}

/// `path::to::Type<other::Arg>` → `Type<Arg>`.
fn short_type_name(full: &'static str) -> Cow<'static, str> {
    if !full.contains("::") {
        return Cow::Borrowed(full);
    }
    let mut out = String::with_capacity(full.len());
    // Where the path being written started: a `::` drops everything since then.
    let mut segment_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment_start);
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            segment_start = out.len();
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names() {
        assert_eq!(
            short_type_name("core::num::error::ParseIntError"),
            "ParseIntError"
        );
        assert_eq!(short_type_name("u32"), "u32");
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error + core::marker::Send>"),
            "Box<dyn Error + Send>"
        );
        assert_eq!(
            short_type_name("std::collections::HashMap<alloc::string::String, (i32, my::Err)>"),
            "HashMap<String, (i32, Err)>"
        );
    }

    #[test]
    fn outcomes() {
        let ok: Result<u8, String> = Ok(1);
        assert!(ok.failure().is_none());
        let err: Result<u8, String> = Err("boom".into());
        let failure = err.failure().unwrap();
        assert_eq!(failure.to_string(), "boom");
        assert_eq!(failure.error_type(), "String");
        assert!(().failure().is_none());
        assert!(StatusCode::NOT_FOUND.failure().is_none());
        let failure = Response::builder()
            .status(503)
            .body(())
            .unwrap()
            .failure()
            .map(|f| (f.to_string(), f.http_status()));
        assert_eq!(
            failure,
            Some((
                "503 Service Unavailable".to_owned(),
                Some(StatusCode::SERVICE_UNAVAILABLE)
            ))
        );
    }
}
