//! The textual forms of sizes and durations.

use std::time::Duration;

/// `8192`, `8 KiB`, `64KB`, `1MiB`, `2GiB` (KB, MB and GB are powers of 10, KiB, MiB and GiB
/// of 2).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `250ms`, `1s`, `1.5s`, `2m`, `1h`, or a number of seconds: the core's delivery settings.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    parse(s, false)
}

/// [`parse_duration`]'s forms plus days (`7d`), which retention and dedupe windows need.
pub(crate) fn parse_long_duration(s: &str) -> Option<Duration> {
    parse(s, true)
}

/// The one duration parser: exact for whole numbers, `f64` only for fractions.
fn parse(s: &str, days: bool) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = (s[..split].trim_end(), &s[split..]);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" if days => 86_400_000_000_000,
        _ => return None,
    };
    if let Ok(n) = number.parse::<u64>() {
        let nanos = u128::from(n) * u128::from(nanos_per_unit);
        let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
        return Some(Duration::new(secs, (nanos % 1_000_000_000) as u32));
    }
    let n: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(n * nanos_per_unit as f64 / 1e9).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2 m "), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [
            "",
            "ms",
            "1 2s",
            "1S",
            "1.2.3s",
            "-1s",
            "1e3s",
            "1d",
            "99999999999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_durations_add_days() {
        assert_eq!(
            parse_long_duration("7d"),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_long_duration("1.5d"),
            Some(Duration::from_secs(129_600))
        );
        assert_eq!(
            parse_long_duration("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_long_duration("1w"), None);
    }
}
