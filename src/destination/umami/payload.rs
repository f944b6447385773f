//! Mapping an [`Event`] to an Umami send body: `{"type": "event", "payload": {...}}`, or
//! `{"type": "identify", ...}` for an identify (see Umami 3.1's `src/app/api/send/route.ts`).
//!
//! Every limit Umami enforces is applied here, so the server never rejects an event for its
//! size: the name and string values are truncated (and counted), over-long optional fields are
//! left out (and counted). Lengths are JavaScript string lengths (UTF-16 units), as the
//! server's validation counts them.

use std::time::UNIX_EPOCH;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::config::{DistinctId, Forward, is_known_context_field};
use crate::event::{Event, EventKind};
use crate::identity::{self, GROUPS_FIELD, SET_ONCE};

/// Umami's limit on `name`, enforced with a 400.
pub(crate) const MAX_NAME: usize = 50;
/// The database's limit on a string value in `data` (a 500 otherwise).
pub(crate) const MAX_STRING: usize = 500;
/// Umami's limit on `hostname`.
pub(crate) const MAX_HOSTNAME: usize = 100;
/// Umami's limit on `language`.
pub(crate) const MAX_LANGUAGE: usize = 35;
/// The database's limit on `id` (a 500 otherwise).
pub(crate) const MAX_ID: usize = 50;

/// What the mapping needs from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    pub(crate) website: Uuid,
    pub(crate) hostname: Option<String>,
    pub(crate) forward: Forward,
    pub(crate) distinct_id: DistinctId,
    pub(crate) include_query: bool,
    pub(crate) context_data: Vec<String>,
}

/// What the mapping of one event had to change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// The name was cut to 50 characters.
    pub(crate) name_truncated: bool,
    /// String values in `data` cut to 500 characters.
    pub(crate) values_truncated: u32,
    /// Optional fields left out for being too long or malformed (hostname, language, id, ip).
    pub(crate) fields_omitted: u32,
}

/// Whether Umami has a counterpart for events of `kind`: events, page views and identify do;
/// alias and group do not (Umami has no call for them), nor any kind added later until it is
/// mapped here.
pub(crate) fn has_counterpart(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Custom | EventKind::PageView | EventKind::Identify
    )
}

/// The length of `s` as JavaScript counts it (UTF-16 code units).
pub(crate) fn js_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The longest prefix of `s` of at most `max` UTF-16 units, cut at a character boundary.
/// Deterministic: the same input always gives the same output.
pub(crate) fn truncate_js(s: &str, max: usize) -> Option<&str> {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return Some(&s[..i]);
        }
    }
    None
}

impl Mapping {
    /// The send body of `event`, and what had to change to fit Umami's limits.
    pub(crate) fn body(&self, event: &Event) -> (Value, Changes) {
        let mut changes = Changes::default();
        let ctx = event.context();
        let mut p = Map::new();
        p.insert("website".into(), Value::String(self.website.to_string()));

        let kind = event.kind();
        if kind == EventKind::Identify {
            let traits = traits(event, &mut changes);
            // No `data`, nothing stored: Umami saves session data only when there is some.
            if !traits.is_empty() {
                p.insert("data".into(), Value::Object(traits));
            }
        } else if kind != EventKind::PageView {
            let name = match truncate_js(event.name(), MAX_NAME) {
                Some(cut) => {
                    changes.name_truncated = true;
                    cut
                }
                None => event.name(),
            };
            p.insert("name".into(), Value::String(name.to_owned()));
            let mut data = Map::with_capacity(event.properties().len() + self.context_data.len());
            for (k, v) in event.properties().iter() {
                data.insert(k.to_owned(), fit_value(v.to_json(), &mut changes));
            }
            for field in &self.context_data {
                if data.contains_key(field) {
                    continue;
                }
                let value = if is_known_context_field(field) {
                    ctx.known_fields()
                        .find(|(k, _)| k == field)
                        .map(|(_, v)| Value::String(v.to_owned()))
                } else {
                    ctx.field(field).map(crate::PropertyValue::to_json)
                };
                if let Some(v) = value {
                    data.insert(field.clone(), fit_value(v, &mut changes));
                }
            }
            groups(ctx, &mut data, &mut changes);
            if !data.is_empty() {
                p.insert("data".into(), Value::Object(data));
            }
        }

        let mut url = ctx
            .path()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_owned();
        if self.include_query {
            if let Some(q) = ctx.query().filter(|q| !q.is_empty()) {
                url.push('?');
                url.push_str(q);
            }
        }
        p.insert("url".into(), Value::String(url));

        let hostname = self.hostname.as_deref().or(ctx.hostname());
        if let Some(h) = hostname {
            optional(&mut p, "hostname", h, MAX_HOSTNAME, &mut changes);
        }
        if self.forward.language {
            if let Some(lang) = ctx.language().and_then(first_language) {
                optional(&mut p, "language", lang, MAX_LANGUAGE, &mut changes);
            }
        }
        // Umami reads the referrer of events only; an identify goes without it.
        if self.forward.referrer && kind != EventKind::Identify {
            if let Some(r) = ctx.referrer().filter(|r| !r.is_empty()) {
                // Like the page's own URL: without its query (and fragment), which carry reset
                // tokens and OAuth codes, unless `include_query` (the crate redacted the
                // sensitive parameters already).
                let r = if self.include_query {
                    r
                } else {
                    r.split(['?', '#']).next().unwrap_or(r)
                };
                // Umami truncates it to 500 itself; cutting here only saves bytes.
                let r = truncate_js(r, MAX_STRING).unwrap_or(r);
                p.insert("referrer".into(), Value::String(r.to_owned()));
            }
        }
        if self.distinct_id == DistinctId::UserId {
            if let Some(id) = ctx.user_id().filter(|id| !id.is_empty()) {
                optional(&mut p, "id", id, MAX_ID, &mut changes);
            }
        }
        if self.forward.user_agent {
            if let Some(ua) = ctx.user_agent().filter(|ua| !ua.is_empty()) {
                p.insert("userAgent".into(), Value::String(ua.to_owned()));
            }
        }
        if self.forward.ip {
            if let Some(ip) = ctx.client_ip() {
                match ip.trim().parse::<std::net::IpAddr>() {
                    Ok(ip) => {
                        p.insert("ip".into(), Value::String(ip.to_string()));
                    }
                    Err(_) => changes.fields_omitted += 1,
                }
            }
        }
        let secs = event
            .timestamp()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        p.insert("timestamp".into(), Value::from(secs));

        let mut body = Map::with_capacity(2);
        let collection = if kind == EventKind::Identify {
            "identify"
        } else {
            "event"
        };
        body.insert("type".into(), Value::String(collection.into()));
        body.insert("payload".into(), Value::Object(p));
        (Value::Object(body), changes)
    }
}

/// An identify's `data`: the `$set_once` traits, then the traits (a trait of both names takes
/// the latter's value). Umami has no set-once: its session data keeps the last value of a key.
/// The reserved keys (the anonymous id) are not traits and stay out.
fn traits(event: &Event, changes: &mut Changes) -> Map<String, Value> {
    let props = event.properties();
    let mut data = match props.get(SET_ONCE).map(crate::PropertyValue::to_json) {
        Some(Value::Object(once)) => once,
        _ => Map::with_capacity(props.len()),
    };
    for (k, v) in props.iter().filter(|(k, _)| !identity::is_reserved(k)) {
        data.insert(k.to_owned(), v.to_json());
    }
    // Fitted once merged, so a value replaced by a trait is not counted as truncated.
    data.into_iter()
        .map(|(k, v)| (k, fit_value(v, changes)))
        .collect()
}

/// Adds the context's groups as `$groups: {type: key}` (Umami stores `$groups.company`),
/// leaving out what the event's own data already says: a `$groups` key hides them all, a
/// `$groups.<type>` key that group.
fn groups(ctx: &crate::context::Context, data: &mut Map<String, Value>, changes: &mut Changes) {
    if data.contains_key(GROUPS_FIELD) {
        return;
    }
    let mut groups = Map::new();
    for (group_type, key) in ctx.groups() {
        if !data.contains_key(&format!("{GROUPS_FIELD}.{group_type}")) {
            let key = fit_string(key.to_owned(), changes);
            groups.insert(group_type.to_owned(), Value::String(key));
        }
    }
    if !groups.is_empty() {
        data.insert(GROUPS_FIELD.to_owned(), Value::Object(groups));
    }
}

/// The User-Agent Umami's bot check will see for this body: the forwarded one, else ours.
pub(crate) fn effective_user_agent<'a>(body: &'a Value, header: &'a str) -> &'a str {
    body["payload"]["userAgent"].as_str().unwrap_or(header)
}

/// Inserts an optional string field, or leaves it out (counted) when it is over `max`.
fn optional(p: &mut Map<String, Value>, key: &str, value: &str, max: usize, changes: &mut Changes) {
    if value.is_empty() {
        return;
    }
    if js_len(value) > max {
        changes.fields_omitted += 1;
        return;
    }
    p.insert(key.to_owned(), Value::String(value.to_owned()));
}

/// `en-US` from `en-US,en;q=0.9`: what a browser's `navigator.language` would say.
fn first_language(accept_language: &str) -> Option<&str> {
    let first = accept_language.split(',').next()?.split(';').next()?.trim();
    (!first.is_empty() && first != "*").then_some(first)
}

/// Makes a data value storable: long strings truncated, dates given milliseconds, arrays
/// whose JSON text (Umami stores arrays as text) is too long turned into truncated text.
fn fit_value(v: Value, changes: &mut Changes) -> Value {
    match v {
        Value::String(s) => Value::String(fit_string(s, changes)),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, fit_value(v, changes)))
                .collect(),
        ),
        Value::Array(items) => {
            let text = Value::Array(items).to_string();
            if js_len(&text) > MAX_STRING {
                Value::String(fit_string(text, changes))
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
        }
        other => other,
    }
}

fn fit_string(s: String, changes: &mut Changes) -> String {
    if let Some(cut) = truncate_js(&s, MAX_STRING) {
        changes.values_truncated += 1;
        return cut.to_owned();
    }
    with_milliseconds(&s).unwrap_or(s)
}

/// An RFC 3339 date-time with other than three fractional digits, rewritten with exactly
/// three (`2025-01-02T03:04:05Z` → `2025-01-02T03:04:05.000Z`), the form Umami types as a date.
/// `None` when `s` is not such a date-time or already has that form.
pub(crate) fn with_milliseconds(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|x| x.iter().all(u8::is_ascii_digit))
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let rest = &s[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            (&r[..n], &r[n..])
        }
        None => ("", rest),
    };
    let zone_ok = matches!(zone, "Z" | "z")
        || (zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':'
            && zone
                .bytes()
                .enumerate()
                .all(|(i, c)| matches!(i, 0 | 3) || c.is_ascii_digit()));
    if !zone_ok || (frac.len() == 3 && zone != "z") {
        return None;
    }
    let mut ms = String::with_capacity(3);
    ms.push_str(&frac[..frac.len().min(3)]);
    while ms.len() < 3 {
        ms.push('0');
    }
    let zone = if zone == "z" { "Z" } else { zone };
    Some(format!("{}.{ms}{zone}", &s[..19]))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::context::Context;
    use crate::event::Properties;
    use crate::props;

    fn mapping() -> Mapping {
        Mapping {
            website: Uuid::nil(),
            hostname: None,
            forward: Forward::default(),
            distinct_id: DistinctId::UserId,
            include_query: true,
            context_data: vec!["request_id".into(), "tenant".into()],
        }
    }

    #[test]
    fn truncation_is_by_utf16_units_at_char_boundaries() {
        assert_eq!(truncate_js("abc", 3), None);
        assert_eq!(truncate_js("abcd", 3), Some("abc"));
        // An emoji is two UTF-16 units: it does not fit in the last unit.
        assert_eq!(truncate_js("ab😀", 3), Some("ab"));
        assert_eq!(js_len("é😀"), 3);
    }

    #[test]
    fn dates_get_milliseconds() {
        assert_eq!(
            with_milliseconds("2025-01-02T03:04:05Z").unwrap(),
            "2025-01-02T03:04:05.000Z"
        );
        assert_eq!(
            with_milliseconds("2025-01-02T03:04:05.123456Z").unwrap(),
            "2025-01-02T03:04:05.123Z"
        );
        assert_eq!(
            with_milliseconds("2025-01-02T03:04:05.5+02:00").unwrap(),
            "2025-01-02T03:04:05.500+02:00"
        );
        assert_eq!(with_milliseconds("2025-01-02T03:04:05.123Z"), None);
        assert_eq!(with_milliseconds("2025-01-02 03:04:05Z"), None);
        assert_eq!(with_milliseconds("not a date at all, really"), None);
    }

    #[test]
    fn maps_a_custom_event() {
        let ctx = Context::new()
            .with_user_id("user_1")
            .with_path("/api/generate")
            .with_query("a=1")
            .with_hostname("app.example.com")
            .with_language("en-US,en;q=0.9")
            .with_user_agent("Mozilla/5.0 (X11)")
            .with_client_ip("203.0.113.9")
            .with_request_id("req_1")
            .with_field("tenant", "acme");
        let long = "x".repeat(600);
        let event = Event::new(
            "generation.started",
            props! { "model" => "flux", "n" => 3, "long" => long, "nested" => json!({"a": {"b": true}}), "at" => "2025-01-02T03:04:05Z" },
        )
        .with_context(ctx)
        .with_timestamp(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999));
        let (body, changes) = mapping().body(&event);
        let p = &body["payload"];
        assert_eq!(body["type"], "event");
        assert_eq!(p["name"], "generation.started");
        assert_eq!(p["url"], "/api/generate?a=1");
        assert_eq!(p["hostname"], "app.example.com");
        assert_eq!(p["language"], "en-US");
        assert_eq!(p["id"], "user_1");
        assert_eq!(p["userAgent"], "Mozilla/5.0 (X11)");
        assert!(p.get("ip").is_none(), "IP forwarding is off by default");
        assert_eq!(p["timestamp"], 1_700_000_000);
        assert_eq!(p["data"]["n"], 3);
        assert_eq!(p["data"]["nested"]["a"]["b"], true);
        assert_eq!(p["data"]["long"].as_str().unwrap().len(), 500);
        assert_eq!(p["data"]["at"], "2025-01-02T03:04:05.000Z");
        assert_eq!(p["data"]["request_id"], "req_1");
        assert_eq!(p["data"]["tenant"], "acme");
        assert_eq!(changes.values_truncated, 1);
        assert!(!changes.name_truncated);
    }

    #[test]
    fn page_views_have_no_name_and_long_fields_are_left_out() {
        let ctx = Context::new()
            .with_hostname("h".repeat(101))
            .with_user_id("u".repeat(51));
        let event = Event::new("http.request", Properties::new())
            .with_kind(EventKind::PageView)
            .with_context(ctx);
        let (body, changes) = mapping().body(&event);
        let p = &body["payload"];
        assert!(p.get("name").is_none());
        assert!(p.get("hostname").is_none());
        assert!(p.get("id").is_none());
        assert_eq!(p["url"], "/");
        assert_eq!(changes.fields_omitted, 2);
    }

    #[test]
    fn long_names_are_cut_deterministically() {
        let name = format!("user.{}", "é".repeat(60));
        let (a, changes) = mapping().body(&Event::new(name.clone(), Properties::new()));
        let (b, _) = mapping().body(&Event::new(name, Properties::new()));
        assert!(changes.name_truncated);
        assert_eq!(js_len(a["payload"]["name"].as_str().unwrap()), 50);
        assert_eq!(a["payload"]["name"], b["payload"]["name"]);
    }

    fn identify(user: &str, props: Properties) -> Event {
        Event::new(identity::IDENTIFY, props)
            .with_kind(EventKind::Identify)
            .with_context(
                Context::new()
                    .with_user_id(user.to_owned())
                    .with_path("/login")
                    .with_hostname("app.example.com")
                    .with_language("de-DE,de;q=0.9")
                    .with_referrer("https://search.example/")
                    .with_user_agent("Mozilla/5.0 (X11)")
                    .with_client_ip("203.0.113.9")
                    .with_request_id("req_1")
                    .with_group("company", "acme"),
            )
            .with_timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn an_identify_is_an_identify_item_with_the_traits_as_data() {
        let event = identify(
            "user_1",
            props! {
                "plan" => "pro",
                "seats" => 3,
                "$set_once" => json!({"first_plan": "free", "plan": "trial", "since": "2025-01-02T03:04:05Z"}),
                "$anon_distinct_id" => "sess_1",
            },
        );
        let m = Mapping {
            forward: Forward::default().with_ip(true),
            ..mapping()
        };
        let (body, changes) = m.body(&event);
        assert_eq!(body["type"], "identify");
        let p = &body["payload"];
        assert_eq!(
            p["data"],
            json!({"first_plan": "free", "plan": "pro", "since": "2025-01-02T03:04:05.000Z", "seats": 3}),
            "set-once traits first, the traits win; no reserved keys, context data or groups"
        );
        assert!(p.get("name").is_none());
        assert_eq!(p["website"], Uuid::nil().to_string());
        assert_eq!(p["id"], "user_1");
        assert_eq!(p["url"], "/login");
        assert_eq!(p["hostname"], "app.example.com");
        assert_eq!(p["language"], "de-DE");
        assert_eq!(p["userAgent"], "Mozilla/5.0 (X11)");
        assert_eq!(p["ip"], "203.0.113.9");
        assert_eq!(p["timestamp"], 1_700_000_000);
        assert!(
            p.get("referrer").is_none(),
            "Umami ignores it in an identify"
        );
        assert_eq!(changes, Changes::default());
    }

    #[test]
    fn an_identify_follows_the_events_id_rules() {
        let (body, changes) = mapping().body(&identify(&"u".repeat(51), Properties::new()));
        let p = &body["payload"];
        assert!(p.get("id").is_none());
        assert!(p.get("data").is_none(), "no traits, no data");
        assert_eq!(changes.fields_omitted, 1);

        let none = Mapping {
            distinct_id: DistinctId::None,
            ..mapping()
        };
        let event = identify("user_1", props! { "plan" => "pro" });
        let (identify_body, _) = none.body(&event);
        let (event_body, _) = none
            .body(&Event::new("user.x", Properties::new()).with_context(event.context().clone()));
        assert!(identify_body["payload"].get("id").is_none());
        assert!(event_body["payload"].get("id").is_none());
        // The same session inputs as the user's events: the same session.
        for key in ["userAgent", "hostname", "language"] {
            assert_eq!(
                identify_body["payload"][key], event_body["payload"][key],
                "{key}"
            );
        }

        let long = identify(
            "user_1",
            props! { "bio" => "b".repeat(600), "$set_once" => json!({"bio": "c".repeat(600), "motto": "m".repeat(600)}) },
        );
        let (body, changes) = mapping().body(&long);
        assert_eq!(
            body["payload"]["data"]["bio"].as_str().unwrap(),
            "b".repeat(500)
        );
        assert_eq!(
            body["payload"]["data"]["motto"].as_str().unwrap().len(),
            500
        );
        assert_eq!(
            changes.values_truncated, 2,
            "the replaced set-once bio is not counted"
        );
    }

    #[test]
    fn groups_go_into_an_events_data_and_its_properties_win() {
        let ctx = Context::new()
            .with_group("company", "acme")
            .with_group("team", "ml");
        let event =
            Event::new("user.upgraded", props! { "plan" => "pro" }).with_context(ctx.clone());
        let (body, _) = mapping().body(&event);
        assert_eq!(
            body["payload"]["data"],
            json!({"plan": "pro", "$groups": {"company": "acme", "team": "ml"}})
        );

        let clash = Event::new("user.upgraded", props! { "$groups.team" => "own" })
            .with_context(ctx.clone());
        let (body, _) = mapping().body(&clash);
        assert_eq!(
            body["payload"]["data"],
            json!({"$groups.team": "own", "$groups": {"company": "acme"}})
        );
        let whole =
            Event::new("user.upgraded", props! { "$groups" => "mine" }).with_context(ctx.clone());
        let (body, _) = mapping().body(&whole);
        assert_eq!(body["payload"]["data"], json!({"$groups": "mine"}));

        // Page views carry no data, groups included.
        let view = Event::new("http.request", Properties::new())
            .with_kind(EventKind::PageView)
            .with_context(ctx);
        assert!(mapping().body(&view).0["payload"].get("data").is_none());
    }

    #[test]
    fn only_events_page_views_and_identify_have_a_counterpart() {
        assert!(has_counterpart(EventKind::Custom));
        assert!(has_counterpart(EventKind::PageView));
        assert!(has_counterpart(EventKind::Identify));
        assert!(!has_counterpart(EventKind::Alias));
        assert!(!has_counterpart(EventKind::Group));
    }

    #[test]
    fn the_referrer_goes_without_its_query_unless_include_query() {
        let ctx = Context::new()
            .with_path("/welcome")
            .with_referrer("https://app.example/reset?token=t0k&lang=de#id_token=jwt");
        let event = Event::new("http.request", Properties::new())
            .with_kind(EventKind::PageView)
            .with_context(ctx);
        let without = Mapping {
            include_query: false,
            ..mapping()
        };
        let (body, _) = without.body(&event);
        assert_eq!(body["payload"]["referrer"], "https://app.example/reset");
        let (body, _) = mapping().body(&event);
        assert_eq!(
            body["payload"]["referrer"],
            "https://app.example/reset?token=t0k&lang=de#id_token=jwt"
        );
    }
}
