//! Attribute macros for [`tower-telemetry`](https://docs.rs/tower-telemetry):
//! `#[track_duration]`, `#[track_function]` and `#[track_error]` track a function's duration,
//! its calls, and its errors.
//!
//! Use them through `tower_telemetry` (feature `macros`, on by default), which documents what
//! each one emits. They keep the function's signature — an annotated axum handler is still a
//! `Handler` — and expand to `tower_telemetry`'s combinators, so the semantics are the same as
//! `fut.track_duration(..)`, `tower_telemetry::timing::track_function(..)` and
//! `tower_telemetry::timing::track_error(..)`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{ToTokens, format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, ItemFn, LitStr, ReturnType, Token, Type};

/// Tracks a function's duration: `#[track_duration(prefix)]`.
///
/// | event | when | properties |
/// |---|---|---|
/// | `{prefix}.started` | the call starts (an `async fn`: its future is first polled) | — |
/// | `{prefix}.completed` | it returned a success | `duration_ms` |
/// | `{prefix}.failed` | it returned a failure (`Err`, a 5xx response) | `duration_ms`, `error`, `error_type` (`status` for a response) |
/// | `{prefix}.failed` | it panicked (the panic then continues) | `duration_ms`, `error`, `error_type: "panic"`, `panic: true` |
/// | `{prefix}.cancelled` | an `async fn`'s future was dropped before it finished | `duration_ms` |
///
/// Works on `fn` and `async fn`, free functions and methods (with any `self`), generic
/// functions and functions with `impl Trait` arguments or return types. The signature is kept
/// as written, so an annotated axum handler is still a `Handler`. `?` and `return` work as
/// before. Events carry the context of the request scope they are emitted in.
///
/// ```
/// use tower_telemetry::{Context, Telemetry, track_duration};
///
/// #[track_duration("config.parse")]
/// fn parse_port(s: &str) -> Result<u16, std::num::ParseIntError> {
///     let port = s.parse()?;
///     Ok(port)
/// }
///
/// #[track_duration("api.generate")]
/// async fn generate(prompt: String) -> Result<String, std::io::Error> {
///     Ok(prompt.to_uppercase())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::builder().memory_destination("m").build().unwrap();
/// telemetry.scope(Context::new().with_user_id("u1"), async {
///     assert!(parse_port("http").is_err());        // config.parse.started, config.parse.failed
///     generate("a cat".into()).await.unwrap();      // api.generate.started, api.generate.completed
/// }).await;
/// telemetry.flush(std::time::Duration::from_secs(1)).await;
/// let failed = &telemetry.memory("m").unwrap().named("config.parse.failed")[0];
/// assert_eq!(failed.properties().get("error_type").unwrap(), "ParseIntError");
/// # }
/// ```
///
/// Which outputs are failures: an `Err` of any `Result` (its error's `Display` text, else its
/// `Debug` text, else its type name, is reported as `error`), and anything implementing
/// `tower_telemetry::timing::Outcome` that says so (e.g. a 5xx `http::Response`). Other return types
/// always complete. For a function that *returns* a future without being `async`, only the
/// creation of the future is timed: write it as an `async fn`.
#[proc_macro_attribute]
pub fn track_duration(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Duration, args.into(), item.into())
}

/// Emits one event per call: `#[track_function(name, key = value, ...)]`.
///
/// `#[track_function("generate_image", model = "flux", "gpu.kind" = GPU)]` emits
/// `generate_image` when the call finishes with:
///
/// | property | value |
/// |---|---|
/// | `duration_ms` | the call's duration in milliseconds (a float, microsecond precision) |
/// | `success` | `false` when it returned a failure, panicked or (async) was cancelled |
/// | the extra properties | each `key = value`: `key` an identifier or a string literal, `value` any `Serialize` expression |
/// | `error`, `error_type` | on failure (and `panic: true` for a panic, which then continues) |
/// | `cancelled: true` | when an `async fn`'s future was dropped before it finished |
///
/// The extra values are evaluated only when the event is recorded (after the call, and only if
/// some destination keeps it), so they cannot use the function's arguments: record per-call
/// values with `track!` inside the function.
///
/// ```
/// use tower_telemetry::{Telemetry, track_function};
///
/// const MODEL: &str = "flux";
///
/// #[track_function("generate_image", model = MODEL, steps = 2 * 2)]
/// fn generate(prompt: &str) -> Result<Vec<u8>, String> {
///     if prompt.is_empty() { return Err("empty prompt".into()); }
///     Ok(prompt.as_bytes().to_vec())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::builder().memory_destination("m").build().unwrap();
/// telemetry.scope_sync(Default::default(), || {
///     generate("a cat").unwrap();
///     generate("").unwrap_err();
/// });
/// telemetry.flush(std::time::Duration::from_secs(1)).await;
/// let events = telemetry.memory("m").unwrap().named("generate_image");
/// assert_eq!(events[0].properties().get("model").unwrap(), "flux");
/// assert_eq!(events[1].properties().get("success").unwrap(), false);
/// assert_eq!(events[1].properties().get("error").unwrap(), "empty prompt");
/// # }
/// ```
#[proc_macro_attribute]
pub fn track_function(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Function, args.into(), item.into())
}

/// Reports a function's errors: `#[track_error(name)]`.
///
/// `#[track_error("critical_function")]` on a function returning a `Result` (any type whose
/// name ends in `Result`: `io::Result<T>`, `anyhow::Result<T>`, ...) emits
/// `error.critical_function` when it returns `Err` or panics, with:
///
/// | property | value |
/// |---|---|
/// | `error` | the error's `Display` text (else its `Debug` text, else its type name); a panic's message |
/// | `error_type` | the error's short type name (`ParseIntError`), or `panic` |
/// | `panic` | `true` for a panic (the panic then continues) |
/// | `backtrace` | only when backtraces are enabled (`RUST_BACKTRACE` / `RUST_LIB_BACKTRACE`) |
///
/// The result passes through unchanged; a success emits nothing. On a function that does not
/// return a `Result`, it is a compile error.
///
/// ```
/// use tower_telemetry::{Telemetry, track_error};
///
/// #[track_error("critical_function")]
/// fn might_fail(input: &str) -> Result<i64, std::num::ParseIntError> {
///     input.parse()
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::builder().memory_destination("m").build().unwrap();
/// telemetry.scope_sync(Default::default(), || {
///     assert_eq!(might_fail("42"), Ok(42));
///     assert!(might_fail("forty-two").is_err());
/// });
/// telemetry.flush(std::time::Duration::from_secs(1)).await;
/// let errors = telemetry.memory("m").unwrap().named("error.critical_function");
/// assert_eq!(errors.len(), 1);
/// assert_eq!(errors[0].properties().get("error_type").unwrap(), "ParseIntError");
/// # }
/// ```
#[proc_macro_attribute]
pub fn track_error(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Error, args.into(), item.into())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Duration,
    Function,
    Error,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Duration => "#[track_duration]",
            Kind::Function => "#[track_function]",
            Kind::Error => "#[track_error]",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Kind::Duration => "#[track_duration(\"api.generate\")]",
            Kind::Function => "#[track_function(\"generate_image\", model = \"flux\")]",
            Kind::Error => "#[track_error(\"critical_function\")]",
        }
    }
}

fn run(kind: Kind, args: TokenStream2, item: TokenStream2) -> TokenStream {
    match expand(kind, args, item.clone()) {
        Ok(tokens) => tokens.into(),
        // Keep the item as written so that one mistake in the attribute does not turn into
        // "cannot find function" errors everywhere it is used.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#error #item).into()
        }
    }
}

/// The attribute's arguments: the event name, then `key = value` pairs (`track_function` only).
struct Args {
    name: LitStr,
    extra: Vec<(LitStr, Expr)>,
}

struct ExtraArg {
    key: LitStr,
    value: Expr,
}

impl Parse for ExtraArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(LitStr) {
            input.parse::<LitStr>()?
        } else if input.peek(Ident::peek_any) {
            let ident = input.call(Ident::parse_any)?;
            let text = ident.to_string();
            LitStr::new(text.strip_prefix("r#").unwrap_or(&text), ident.span())
        } else {
            return Err(input.error("expected a property name: `key = value` or `\"key\" = value`"));
        };
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "expected `{} = value`: extra properties are `key = value` pairs",
                    key.value()
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse::<Expr>()?;
        Ok(ExtraArg { key, value })
    }
}

fn parse_args(kind: Kind, args: TokenStream2) -> syn::Result<Args> {
    let what = if kind == Kind::Duration {
        "an event prefix"
    } else {
        "an event name"
    };
    if args.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "{} needs {what} as a string literal, e.g. `{}`",
                kind.attr(),
                kind.example()
            ),
        ));
    }
    let parser = move |input: ParseStream<'_>| -> syn::Result<Args> {
        let name: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected {what} as a string literal, e.g. `{}`",
                    kind.example()
                ),
            )
        })?;
        let mut extra = Vec::new();
        if input.is_empty() {
            return Ok(Args { name, extra });
        }
        input.parse::<Token![,]>()?;
        if kind != Kind::Function {
            if input.is_empty() {
                return Ok(Args { name, extra });
            }
            let rest: TokenStream2 = input.parse()?;
            return Err(syn::Error::new_spanned(
                rest,
                format!(
                    "{} takes only {what}; extra properties go on `#[track_function(\"name\", key = value)]`, or in a `track!` inside the function",
                    kind.attr()
                ),
            ));
        }
        let pairs = Punctuated::<ExtraArg, Token![,]>::parse_terminated(input)?;
        for pair in pairs {
            if extra
                .iter()
                .any(|(k, _): &(LitStr, Expr)| k.value() == pair.key.value())
            {
                return Err(syn::Error::new(
                    pair.key.span(),
                    format!("property `{}` is given twice", pair.key.value()),
                ));
            }
            if RESERVED.contains(&pair.key.value().as_str()) {
                return Err(syn::Error::new(
                    pair.key.span(),
                    format!(
                        "property `{}` is set by #[track_function] itself; choose another name",
                        pair.key.value()
                    ),
                ));
            }
            extra.push((pair.key, pair.value));
        }
        Ok(Args { name, extra })
    };
    syn::parse::Parser::parse2(parser, args)
}

/// Properties `track_function` sets itself.
const RESERVED: &[&str] = &[
    "duration_ms",
    "success",
    "error",
    "error_type",
    "panic",
    "cancelled",
];

/// The same checks as `tower_telemetry::validate_name`, at compile time.
fn check_name(lit: &LitStr, full: &str) -> syn::Result<()> {
    let problem = if lit.value().is_empty() {
        Some("the event name is empty".to_owned())
    } else if full.len() > 200 {
        Some(format!(
            "the event name `{full}` is {} bytes long; the limit is 200",
            full.len()
        ))
    } else if full.chars().any(char::is_control) {
        Some("the event name contains a control character".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => Err(syn::Error::new(lit.span(), p)),
        None => Ok(()),
    }
}

fn expand(kind: Kind, args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let function = parse_item(kind, item)?;
    let args = parse_args(kind, args)?;
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            format!("{} cannot be used on a `const fn`", kind.attr()),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{} cannot be used on a variadic function", kind.attr()),
        ));
    }
    if kind == Kind::Error {
        check_returns_result(sig)?;
    }

    let private = quote!(::tower_telemetry::__private::timing);
    let prefix = args.name.value();
    let is_async = sig.asyncness.is_some();

    let (checked_name, tracker) = match kind {
        Kind::Duration => {
            let names =
                ["started", "completed", "failed", "cancelled"].map(|s| format!("{prefix}.{s}"));
            let longest = names[3].clone();
            let names = names.map(|n| LitStr::new(&n, args.name.span()));
            let make = if is_async {
                format_ident!("duration_future")
            } else {
                format_ident!("duration_sync")
            };
            let names =
                quote!(::tower_telemetry::timing::DurationNames::__from_static(&[#(#names),*]));
            let call = if is_async {
                quote!(#private::#make(__tower_telemetry_body, #names, __tower_telemetry_classify))
            } else {
                quote!(#private::#make(#names, __tower_telemetry_classify, __tower_telemetry_body))
            };
            (longest, call)
        }
        Kind::Function => {
            let name = &args.name;
            let extra = if args.extra.is_empty() {
                quote!(::tower_telemetry::Properties::new())
            } else {
                let inserts = args.extra.iter().map(|(key, value)| {
                    quote!(#private::insert(__tower_telemetry_properties, #key, &(#value));)
                });
                quote! {
                    |__tower_telemetry_properties: &mut ::tower_telemetry::Properties| { #(#inserts)* }
                }
            };
            let call = if is_async {
                quote!(#private::function_future(__tower_telemetry_body, #name, #extra, __tower_telemetry_classify))
            } else {
                quote!(#private::function_sync(#name, #extra, __tower_telemetry_classify, __tower_telemetry_body))
            };
            (prefix.clone(), call)
        }
        Kind::Error => {
            let full = format!("error.{prefix}");
            let lit = LitStr::new(&full, args.name.span());
            let event = quote!(#private::ErrorEvent::new(#lit));
            let call = if is_async {
                quote!(#private::error_future(__tower_telemetry_body, #event, __tower_telemetry_classify))
            } else {
                quote!(#private::error_sync(#event, __tower_telemetry_classify, __tower_telemetry_body))
            };
            (full, call)
        }
    };
    check_name(&args.name, &checked_name)?;

    let block = &function.block;
    // With the return type written out, `?` and `return` in the body infer exactly as they
    // did; `impl Trait` cannot be written there, and is left to inference.
    let nameable = match &sig.output {
        ReturnType::Default => Some(quote!(())),
        ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => {
            Some(ty.to_token_stream())
        }
        ReturnType::Type(..) => None,
    };
    let (body, probe) = if is_async {
        let body = match &nameable {
            // The `let` is a coercion site, as a function's body is (an `async` block's tail is
            // not: `&String` would not become `&str`); `typed_future` gives `?` its error type.
            Some(ty) => quote! {
                #private::typed_future::<#ty, _>(async move {
                    let __tower_telemetry_output: #ty = #block;
                    #[allow(unreachable_code)]
                    return __tower_telemetry_output;
                })
            },
            None => quote!(async move #block),
        };
        (
            body,
            quote!(#private::probe_future(&__tower_telemetry_body)),
        )
    } else {
        let body = match &nameable {
            Some(ty) => quote!(move || -> #ty #block),
            None => quote!(move || #block),
        };
        (body, quote!(#private::probe_fn(&__tower_telemetry_body)))
    };
    let run = quote! {
        {
            #[allow(unused_imports)]
            use #private::{ViaAny as _, ViaDebug as _, ViaOutcome as _, ViaResult as _};
            let __tower_telemetry_classify = (&&&#probe).__classifier();
            #tracker
        }
    };
    let run = if is_async { quote!(#run.await) } else { run };

    let attrs = &function.attrs;
    let vis = &function.vis;
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            let __tower_telemetry_body = #body;
            #run
        }
    })
}

fn parse_item(kind: Kind, item: TokenStream2) -> syn::Result<ItemFn> {
    match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(function)) => Ok(function),
        Ok(other) => Err(syn::Error::new(
            first_token_span(other.to_token_stream()),
            format!(
                "{} can only be applied to functions and methods that have a body",
                kind.attr()
            ),
        )),
        Err(_) => Err(syn::Error::new(
            first_token_span(item),
            format!(
                "{} can only be applied to functions and methods that have a body",
                kind.attr()
            ),
        )),
    }
}

fn first_token_span(tokens: TokenStream2) -> Span {
    tokens
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// Tokens as a person would write them: `impl std :: fmt :: Display` → `impl std::fmt::Display`.
fn pretty(tokens: &TokenStream2) -> String {
    let mut s = tokens.to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
    ] {
        s = s.replace(from, to);
    }
    s
}

fn mentions_impl(tokens: TokenStream2) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "impl",
        TokenTree::Group(g) => mentions_impl(g.stream()),
        _ => false,
    })
}

fn check_returns_result(sig: &syn::Signature) -> syn::Result<()> {
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "#[track_error] needs a function that returns a `Result`; `{}` returns `()`",
                    sig.ident
                ),
            ));
        }
    };
    let mut inner: &Type = ty;
    loop {
        inner = match inner {
            Type::Paren(p) => &p.elem,
            Type::Group(g) => &g.elem,
            _ => break,
        };
    }
    let is_result = matches!(inner, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Result"));
    if is_result {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            ty,
            format!(
                "#[track_error] needs a function that returns a `Result`, not `{}`",
                pretty(&ty.to_token_stream())
            ),
        ))
    }
}
