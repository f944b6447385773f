//! Event timestamps: Unix milliseconds and RFC 3339 text.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Milliseconds since the Unix epoch (0 before it).
#[inline]
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    // Not `as_millis`: its u128 arithmetic costs more than the id it is for.
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// Formats a time as RFC 3339 in UTC with milliseconds: `2026-11-25T12:50:35.123Z`.
#[derive(Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl Rfc3339 {
    /// The text as 24 ASCII bytes, for the years 0 to 9999 (else `None`): digits written
    /// straight into an array, without `fmt`, for the destinations that format every event.
    pub(crate) fn ascii(&self) -> Option<[u8; 24]> {
        let [y, mo, d, h, mi, s, ms] = self.fields();
        let y = u64::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, y),
            (5, 2, mo as u64),
            (8, 2, d as u64),
            (11, 2, h as u64),
            (14, 2, mi as u64),
            (17, 2, s as u64),
            (20, 3, ms as u64),
        ] {
            let mut v = value;
            for digit in out[at..at + width].iter_mut().rev() {
                *digit = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Some(out)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ascii() {
            // Digits and separators: always UTF-8.
            Some(text) => f.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => self.write_fields(f),
        }
    }
}

impl Rfc3339 {
    /// Year, month, day, hour, minute, second and millisecond, in UTC.
    fn fields(&self) -> [i64; 7] {
        let ms = unix_millis(self.0);
        let secs = ms / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let rem = rem as i64;
        [
            y,
            m.into(),
            d.into(),
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            (ms % 1000) as i64,
        ]
    }

    /// The text through `fmt`, for any year.
    fn write_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [y, mo, d, h, mi, s, ms] = self.fields();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to a time: what [`Rfc3339`] writes, and the
/// offsets other writers use. `None` for anything else (never a panic: a relay reads it from
/// its stream).
// The event codec (the relay's and the spool's decoder) is its only user.
#[cfg_attr(not(any(feature = "nats", feature = "spool")), allow(dead_code))]
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].bytes().take(9).enumerate() {
            nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_075_035_123);
        assert_eq!(Rfc3339(t).to_string(), "2025-11-25T12:50:35.123Z");
        assert_eq!(Rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(leap).to_string(), "2000-02-29T00:00:00.000Z");
        // Past the year 9999 there is no 24-byte form; `Display` still writes the time.
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800); // 10000-01-01
        assert_eq!(Rfc3339(far).ascii(), None);
        assert_eq!(Rfc3339(far).to_string(), "10000-01-01T00:00:00.000Z");
        let last = far - Duration::from_millis(1);
        assert_eq!(Rfc3339(last).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_digits_agree_with_formatting() {
        // The same time through `fmt`, as years past 9999 are written.
        struct ThroughFmt(Rfc3339);
        impl fmt::Display for ThroughFmt {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_fields(f)
            }
        }
        let formatted = |t: SystemTime| ThroughFmt(Rfc3339(t)).to_string();
        // Every 37 hours, 7 minutes, 13.579 s from 1970 into the year 2400.
        let step = Duration::from_millis(((37 * 60 + 7) * 60 + 13) * 1000 + 579);
        let mut t = UNIX_EPOCH;
        while t < UNIX_EPOCH + Duration::from_secs(13_569_465_600) {
            let ascii = Rfc3339(t).ascii().unwrap();
            assert_eq!(std::str::from_utf8(&ascii).unwrap(), formatted(t));
            t += step;
        }
    }

    #[test]
    fn what_rfc3339_writes_it_reads_back() {
        for ms in [0u64, 951_782_400_000, 1_764_075_035_123, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&Rfc3339(t).to_string()), Some(t), "{ms}");
        }
    }

    #[test]
    fn rfc3339_forms() {
        let ms = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis());
        assert_eq!(ms("2025-11-25T12:50:35.123Z"), Some(1_764_075_035_123));
        assert_eq!(ms("2025-11-25T13:50:35.123+01:00"), Some(1_764_075_035_123));
        assert_eq!(ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ms("2000-02-29T00:00:00.000Z"), Some(951_782_400_000));
        assert_eq!(ms("2025-13-01T00:00:00Z"), None);
        assert_eq!(ms("yesterday"), None);
    }
}
