//! A rough local copy of Umami's bot check, used only to pick the endpoint.
//!
//! Umami answers a bot with `200 {"beep":"boop"}` and stores nothing. Through `/api/send` that
//! answer is visible and counted as a discard; inside `/api/batch` it is not (a beep/boop item
//! is "ok"). So events whose User-Agent *might* be a bot go through `/api/send`, where the
//! server's own verdict decides. A miss here only means a discard counted as delivered.

/// Whether Umami's bot check (the `isbot` library) would likely call `ua` a bot. An empty
/// agent is not a bot.
pub(crate) fn looks_like_bot(ua: &str) -> bool {
    let ua = ua.trim();
    if ua.is_empty() {
        return false;
    }
    let lower = ua.to_ascii_lowercase();
    const MARKERS: &[&str] = &[
        "bot",
        "crawl",
        "spider",
        "slurp",
        "curl/",
        "wget/",
        "reqwest/",
        "hyper/",
        "http",
        "python",
        "java/",
        "go-http",
        "okhttp",
        "headless",
        "lighthouse",
        "scan",
        "fetch",
        "monitor",
        "check",
    ];
    if MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    // A bare `name/version` (or `name/version (comment)` without a browser engine) is a library.
    !lower.starts_with("mozilla/") && !lower.starts_with("opera/")
}

#[cfg(test)]
mod tests {
    use super::looks_like_bot;

    #[test]
    fn verdicts() {
        for bot in [
            "curl/8.5.0",
            "reqwest/0.13",
            "hyper/1.0",
            "okhttp/4.12.0",
            "my-service/1.0",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0)",
            "Mozilla/5.0 AhrefsBot crawler",
        ] {
            assert!(looks_like_bot(bot), "{bot}");
        }
        for human in [
            "",
            "Mozilla/5.0 (X11; Linux x86_64) tower-telemetry/0.1.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        ] {
            assert!(!looks_like_bot(human), "{human}");
        }
    }
}
