//! Glob routing and sampling, compiled once per handle.
//!
//! A route is decided per event *name* (cached: per `track!` call site, and per thread for
//! names built at run time) and packed into a `u32`: one bit per destination, plus a bit for
//! "matches a `sampling.always` glob" and one for "the name is invalid". Sampling is decided per
//! event from a 64-bit hash (of the request id, the user id, or a random number) compared with
//! a threshold, so `track!` knows whether anything will be kept before it builds anything.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::HashKey;
use crate::config::SampleKey;
use crate::event::{EventCategory, validate_name};
use crate::glob::Glob;
// Re-exported for the modules that still name it through routing.
use crate::text::Text;

/// The most destinations one handle routes to (one bit each in a route).
pub const MAX_DESTINATIONS: usize = 30;

pub(crate) const ALWAYS_BIT: u32 = 1 << 30;
pub(crate) const INVALID_BIT: u32 = 1 << 31;
pub(crate) const DEST_MASK: u32 = (1 << MAX_DESTINATIONS) - 1;

/// Includes and excludes of one destination.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    include: Option<Vec<Glob>>,
    exclude: Vec<Glob>,
}

impl Filter {
    pub(crate) fn new(globs: Option<&[String]>) -> Result<Filter, (usize, String)> {
        let Some(globs) = globs else {
            return Ok(Filter {
                include: None,
                exclude: Vec::new(),
            });
        };
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for (i, g) in globs.iter().enumerate() {
            let glob = Glob::new(g).map_err(|e| (i, e))?;
            match g.strip_prefix('!') {
                Some(rest) => exclude.push(Glob::compile(rest)),
                None => include.push(glob),
            }
        }
        // Only exclusions: everything else is included.
        let include = if include.is_empty() && !exclude.is_empty() {
            None
        } else {
            Some(include)
        };
        Ok(Filter { include, exclude })
    }

    fn decide(&self, name: &str) -> Decision {
        if let Some(ex) = self.exclude.iter().find(|g| g.matches(name)) {
            return Decision::Excluded(ex.as_str().to_owned());
        }
        match &self.include {
            None => Decision::All,
            Some(inc) => match inc.iter().find(|g| g.matches(name)) {
                Some(g) => Decision::Matched(g.as_str().to_owned()),
                None => Decision::NoMatch,
            },
        }
    }
}

enum Decision {
    All,
    Matched(String),
    Excluded(String),
    NoMatch,
}

/// One destination as the router sees it.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    pub(crate) name: String,
    pub(crate) filter: Filter,
    /// Keep threshold for the destination's own sample rate; `None` keeps everything.
    pub(crate) threshold: Option<u64>,
    pub(crate) sample_rate: f64,
}

/// Routing and sampling of one handle.
#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) targets: Vec<RouteTarget>,
    always: Vec<Glob>,
    global_threshold: Option<u64>,
    global_rate: Option<f64>,
    pub(crate) key: SampleKey,
    /// Whether any sampling can drop anything (else the hash is never computed).
    pub(crate) samples: bool,
    /// The secret key of the request- and user-id hashes (random per process unless
    /// configured).
    pub(crate) hash_key: HashKey,
}

/// `rate` as a threshold on a uniform `u64`: keep when `hash < threshold`. `None` for 1.0.
pub(crate) fn threshold(rate: f64) -> Option<u64> {
    if rate >= 1.0 {
        None
    } else if rate <= 0.0 {
        Some(0)
    } else {
        Some((rate * u64::MAX as f64) as u64)
    }
}

impl Router {
    pub(crate) fn new(
        targets: Vec<RouteTarget>,
        always: Vec<Glob>,
        global_rate: Option<f64>,
        key: SampleKey,
    ) -> Router {
        let global_threshold = global_rate.and_then(threshold);
        let samples = global_threshold.is_some() || targets.iter().any(|t| t.threshold.is_some());
        Router {
            targets,
            always,
            global_threshold,
            global_rate,
            key,
            samples,
            hash_key: HashKey::process(),
        }
    }

    /// A router for `targets` with the configuration's global sampling; a bad `always` glob is
    /// added to `errors` (and left out).
    pub(crate) fn configured(
        targets: Vec<RouteTarget>,
        sampling: &crate::config::SamplingConfig,
        errors: &mut Vec<crate::config::ConfigError>,
    ) -> Router {
        let mut always = Vec::new();
        for (i, g) in sampling.always.iter().enumerate() {
            match Glob::new(g) {
                Ok(g) => always.push(g),
                Err(msg) => errors.push(crate::config::ConfigError::new(
                    format!("telemetry.sampling.always[{i}]"),
                    None,
                    msg,
                )),
            }
        }
        let mut router = Router::new(
            targets,
            always,
            sampling.enabled.then_some(sampling.rate),
            sampling.key,
        );
        if let Some(key) = sampling.hash_key {
            router.hash_key = key;
        }
        router
    }

    /// The sampling hash of a request or user id: keyed (SipHash-1-3), so a client cannot
    /// choose an id whose events are always kept or always dropped.
    #[inline]
    pub(crate) fn key_hash(&self, id: &str) -> u64 {
        self.hash_key.hash(id)
    }

    /// The packed route of a name (not cached).
    pub(crate) fn compute(&self, name: &str) -> u32 {
        if validate_name(name).is_err() {
            return INVALID_BIT;
        }
        let mut route = 0u32;
        for (i, t) in self.targets.iter().enumerate() {
            if matches!(t.filter.decide(name), Decision::All | Decision::Matched(_)) {
                route |= 1 << i;
            }
        }
        if route != 0 && self.always.iter().any(|g| g.matches(name)) {
            route |= ALWAYS_BIT;
        }
        route
    }

    /// Which of `route`'s destinations keep an event whose sampling hash is `hash`.
    pub(crate) fn sample(&self, route: u32, hash: u64) -> u32 {
        let dests = route & DEST_MASK;
        if route & ALWAYS_BIT != 0 {
            return dests;
        }
        if let Some(t) = self.global_threshold {
            if hash >= t {
                return 0;
            }
        }
        let mut kept = dests;
        let mut bits = dests;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(t) = self.targets[i].threshold {
                if mix(hash, i as u64) >= t {
                    kept &= !(1 << i);
                }
            }
        }
        kept
    }

    pub(crate) fn explain(&self, name: &str) -> Explanation {
        let invalid = validate_name(name).err().map(|e| e.to_string());
        let always = self
            .always
            .iter()
            .find(|g| g.matches(name))
            .map(|g| g.as_str().to_owned());
        let destinations = self
            .targets
            .iter()
            .map(|t| {
                let (routed, reason) = if let Some(why) = &invalid {
                    (false, format!("rejected: {why}"))
                } else {
                    match t.filter.decide(name) {
                        Decision::All => (true, "no `events` filter: receives every event".into()),
                        Decision::Matched(g) => (true, format!("matches `{g}`")),
                        Decision::Excluded(g) => (false, format!("excluded by `!{g}`")),
                        Decision::NoMatch => {
                            (false, "matches none of its `events` patterns".into())
                        }
                    }
                };
                let sample_rate = if !routed || always.is_some() {
                    1.0
                } else {
                    self.global_rate.unwrap_or(1.0) * t.sample_rate
                };
                RouteExplanation {
                    destination: t.name.clone(),
                    routed,
                    reason,
                    sample_rate,
                }
            })
            .collect();
        Explanation {
            name: name.to_owned(),
            always_kept_by: always,
            destinations,
        }
    }
}

/// A second, independent uniform value from `hash` for destination `i` (splitmix64 finaliser).
fn mix(hash: u64, i: u64) -> u64 {
    let mut z = hash ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Why an event would or would not reach each destination: [`Telemetry::explain`](crate::Telemetry::explain).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The event name explained.
    pub name: String,
    /// The `sampling.always` glob that exempts it from sampling, if any.
    pub always_kept_by: Option<String>,
    /// One entry per destination, in configuration order.
    pub destinations: Vec<RouteExplanation>,
}

impl Explanation {
    /// The names of the destinations the event is routed to (before sampling).
    pub fn routed_to(&self) -> Vec<&str> {
        self.destinations
            .iter()
            .filter(|d| d.routed)
            .map(|d| d.destination.as_str())
            .collect()
    }
}

/// One destination's part of an [`Explanation`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouteExplanation {
    /// The destination's name.
    pub destination: String,
    /// Whether the event is routed there.
    pub routed: bool,
    /// Why, in words: the glob that matched or excluded it.
    pub reason: String,
    /// The fraction of such events kept after sampling (1.0 when not routed).
    pub sample_rate: f64,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        for d in &self.destinations {
            let verdict = if d.routed { "->" } else { "x " };
            write!(f, "\n  {verdict} {}: {}", d.destination, d.reason)?;
            if d.routed && d.sample_rate < 1.0 {
                write!(f, " (sampled at {})", d.sample_rate)?;
            }
        }
        if let Some(g) = &self.always_kept_by {
            write!(f, "\n  never sampled out (matches always glob `{g}`)")?;
        }
        Ok(())
    }
}

/// What a `track!` call site with a literal name caches: its route (per handle), its
/// category, and whether its (literal) property keys pass the redaction and length checks (per
/// redaction policy), so none of that is recomputed per event. When the call site's values are
/// literals, numbers or booleans, it also caches that the properties pass the limits untouched
/// and how large they can be, so the limits never walk them again.
#[derive(Debug)]
pub struct Callsite {
    /// The handle id in the high half, the route in the low half.
    route: AtomicU64,
    /// 0: not known; else the category's code plus one, and for a category of the name's own
    /// the length of its first segment above bit 8.
    category: AtomicU32,
    /// 0: not checked; else the policy id the keys were checked against (low 62 bits, never
    /// reused: see `redact::next_policy_id`), `KEYS_CLEAN` if none of them is too long or
    /// redacted, and `FIXED` if the properties passed the limits untouched.
    props: AtomicU64,
    /// With `FIXED`: the properties' size bound plus one (0: not known).
    fixed: AtomicU64,
}

const POLICY_MASK: u64 = crate::redact::MAX_POLICY_ID;
const KEYS_CLEAN: u64 = 1 << 62;
const FIXED: u64 = 1 << 63;

impl Callsite {
    /// An empty cache.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Callsite {
            route: AtomicU64::new(0),
            category: AtomicU32::new(0),
            props: AtomicU64::new(0),
            fixed: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, handle: u32) -> Option<u32> {
        let v = self.route.load(Ordering::Relaxed);
        ((v >> 32) as u32 == handle).then_some(v as u32)
    }

    pub(crate) fn set(&self, handle: u32, route: u32) {
        self.route.store(
            (u64::from(handle) << 32) | u64::from(route),
            Ordering::Relaxed,
        );
    }

    /// The category of `name`, this call site's literal name.
    #[inline]
    pub(crate) fn category(&self, name: &'static str) -> EventCategory {
        let v = self.category.load(Ordering::Relaxed);
        if v != 0 {
            if let Some(c) = EventCategory::from_code((v & 0xff) as u8 - 1) {
                return c;
            }
            let end = (v >> 8) as usize;
            if let Some(segment) = name.get(..end) {
                return EventCategory::Custom(Text::from_static(segment));
            }
        }
        let c = EventCategory::of_text(&Text::from_static(name));
        let end = match &c {
            EventCategory::Custom(s) => s.len(),
            _ => 0,
        };
        if let Ok(end) = u32::try_from(end) {
            if end < 1 << 24 {
                self.category
                    .store((u32::from(c.code()) + 1) | (end << 8), Ordering::Relaxed);
            }
        }
        c
    }

    /// Whether this call site's keys pass the checks of `policy`, from the cache, else from
    /// `check` (remembered until another policy asks).
    #[inline]
    pub(crate) fn keys_clean(&self, policy: u64, check: impl FnOnce() -> bool) -> bool {
        let v = self.props.load(Ordering::Relaxed);
        if v & POLICY_MASK == policy && policy != 0 {
            return v & KEYS_CLEAN != 0;
        }
        let clean = check();
        let flag = if clean { KEYS_CLEAN } else { 0 };
        self.props.store(policy | flag, Ordering::Relaxed);
        clean
    }

    /// The size bound of this call site's properties if `policy` let them pass untouched
    /// before and they cannot differ from event to event ([`Callsite::set_fixed`]).
    #[inline]
    pub(crate) fn fixed_bound(&self, policy: u64) -> Option<usize> {
        let v = self.props.load(Ordering::Relaxed);
        if v & POLICY_MASK != policy || policy == 0 || v & FIXED == 0 {
            return None;
        }
        // The bound depends on the literals alone (the properties passed untouched), so one
        // stored for another policy is as good.
        match self.fixed.load(Ordering::Relaxed) {
            0 => None,
            b => Some((b - 1) as usize),
        }
    }

    /// Remembers that `policy` let this call site's properties pass untouched, with an upper
    /// bound of `bound` bytes. Only for a call site whose values are literals, numbers or
    /// booleans: its next events' properties will pass the same way, within the same bound.
    pub(crate) fn set_fixed(&self, policy: u64, bound: usize) {
        if let Ok(bound) = u32::try_from(bound) {
            self.fixed.store(u64::from(bound) + 1, Ordering::Relaxed);
            self.props
                .store(policy | KEYS_CLEAN | FIXED, Ordering::Relaxed);
        }
    }
}

const THREAD_CACHE_NAMES: usize = 1024;
const THREAD_CACHE_HANDLES: usize = 8;

thread_local! {
    /// Routes of names built at run time, per handle id; bounded so hostile names cannot grow it.
    static NAME_CACHE: RefCell<HashMap<u32, HashMap<Box<str>, u32>>> = RefCell::new(HashMap::new());
}

/// The cached route of `name` for handle `id`, computing it with `compute` on a miss.
pub(crate) fn cached_route(id: u32, name: &str, compute: impl FnOnce() -> u32) -> u32 {
    let hit = NAME_CACHE
        .try_with(|c| c.borrow().get(&id).and_then(|m| m.get(name).copied()))
        .ok()
        .flatten();
    if let Some(route) = hit {
        return route;
    }
    let route = compute();
    let _ = NAME_CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= THREAD_CACHE_HANDLES && !c.contains_key(&id) {
            c.clear();
        }
        let names = c.entry(id).or_default();
        if names.len() >= THREAD_CACHE_NAMES {
            names.clear();
        }
        names.insert(name.into(), route);
    });
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_caches_the_category_of_its_name() {
        for name in [
            "generation.started",
            "checkout.done",
            "plain",
            "system.boot",
            "a.b.c",
        ] {
            let site = Callsite::new();
            let expected = EventCategory::of(name);
            // Computed, then taken from the cache.
            assert_eq!(site.category(name), expected, "{name}");
            assert_ne!(site.category.load(Ordering::Relaxed), 0);
            assert_eq!(site.category(name), expected, "{name}");
        }
        assert_eq!(
            Callsite::new().category("checkout.done").as_str(),
            "checkout"
        );
    }

    #[test]
    fn a_call_site_keeps_one_key_verdict_per_policy() {
        let site = Callsite::new();
        let checks = &std::cell::Cell::new(0);
        let check = |clean| {
            move || {
                checks.set(checks.get() + 1);
                clean
            }
        };
        assert!(site.keys_clean(1, check(true)));
        assert_eq!(checks.get(), 1);
        assert!(
            site.keys_clean(1, check(false)),
            "remembered, not checked again"
        );
        assert_eq!(checks.get(), 1);
        assert!(
            !site.keys_clean(2, check(false)),
            "another policy checks again"
        );
        assert_eq!(checks.get(), 2);
        assert!(!site.keys_clean(2, check(true)));
        assert_eq!(checks.get(), 2);
        assert!(site.keys_clean(1, check(true)), "policy 1 checks again");
        assert_eq!(checks.get(), 3);
    }

    #[test]
    fn a_call_site_keeps_its_properties_size_for_one_policy_at_a_time() {
        let site = Callsite::new();
        assert_eq!(site.fixed_bound(1), None);
        assert!(site.keys_clean(1, || true));
        assert_eq!(site.fixed_bound(1), None, "clean keys alone are not enough");
        site.set_fixed(1, 77);
        assert_eq!(site.fixed_bound(1), Some(77));
        assert_eq!(site.fixed_bound(2), None);
        assert!(site.keys_clean(1, || unreachable!("known clean")));
        assert!(!site.keys_clean(2, || false));
        assert_eq!(
            site.fixed_bound(1),
            None,
            "forgotten when another policy checks"
        );
        site.set_fixed(2, 1 << 40);
        assert_eq!(site.fixed_bound(2), None, "a bound too large is not kept");
    }

    #[test]
    fn filters() {
        let f = Filter::new(Some(&["user.*".into(), "!user.debug.*".into()])).unwrap();
        assert!(matches!(f.decide("user.signup"), Decision::Matched(_)));
        assert!(matches!(f.decide("user.debug.x"), Decision::Excluded(_)));
        assert!(matches!(f.decide("error.x"), Decision::NoMatch));
        let only_ex = Filter::new(Some(&["!system.*".into()])).unwrap();
        assert!(matches!(only_ex.decide("user.x"), Decision::All));
        assert!(matches!(only_ex.decide("system.x"), Decision::Excluded(_)));
        assert_eq!(
            Filter::new(Some(&["ok".into(), "a b".into()]))
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(1.0), None);
        assert_eq!(threshold(0.0), Some(0));
        let half = threshold(0.5).unwrap();
        assert!(half > u64::MAX / 2 - 2 && half < u64::MAX / 2 + 2048);
    }

    #[test]
    fn callsite_cache_is_per_handle() {
        let c = Callsite::new();
        assert_eq!(c.get(1), None);
        c.set(1, 5);
        assert_eq!(c.get(1), Some(5));
        assert_eq!(c.get(2), None);
    }

    #[test]
    fn thread_cache_is_bounded() {
        for i in 0..(THREAD_CACHE_NAMES * 3) {
            cached_route(u32::MAX, &format!("n{i}"), || 1);
        }
        let len = NAME_CACHE.with(|c| c.borrow().get(&u32::MAX).map_or(0, |m| m.len()));
        assert!(len <= THREAD_CACHE_NAMES);
    }
}
