//! The spooled events: JSON payloads of 300–600 bytes, shaped like the crate's wire events, each
//! ending in its own sequence number and a CRC-32 of everything before it, so that a reader can
//! tell a record the store garbled from a good one without trusting the store.

/// splitmix64: small, seedable, good enough for payload variety and kill times.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE): detects every single-byte change and every burst up to 32 bits.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// 2026-05-01T00:00:00Z in Unix milliseconds; event `seq` happens 7 ms after event `seq - 1`.
const BASE_MS: u64 = 1_777_593_600_000;

fn push_timestamp(out: &mut Vec<u8>, ms: u64) {
    // Days to civil date (Howard Hinnant's algorithm).
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    );
    out.extend_from_slice(s.as_bytes());
}

fn push_uuid_v7(out: &mut Vec<u8>, ms: u64, rng: &mut Rng) {
    let r = rng.next_u64();
    let r2 = rng.next_u64();
    let hi = (ms << 16) | 0x7000 | (r & 0x0FFF);
    let lo = (r2 & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    );
    out.extend_from_slice(s.as_bytes());
}

const MODELS: [&str; 4] = [
    "gpt-4.1-mini",
    "claude-sonnet-4",
    "llama-3.3-70b",
    "mistral-large",
];
const PATHS: [&str; 3] = [
    "/v1/generate",
    "/v1/chat/completions",
    "/api/images/generate",
];
/// The prompt preview's length bound: sizes spread from about 300 to 600 bytes.
const PREVIEW_MAX: u64 = 232;

const WORDS: [&str; 12] = [
    "a",
    "watercolor",
    "of",
    "the",
    "harbour",
    "at",
    "dawn",
    "with",
    "fishing",
    "boats",
    "and",
    "gulls",
];

/// Writes the payload of event `seq` into `out` (cleared first). Sizes are spread over roughly
/// 300–600 bytes by the length of the prompt preview.
pub fn make_event(seq: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    let ms = BASE_MS + seq * 7;
    out.extend_from_slice(br#"{"v":1,"id":""#);
    push_uuid_v7(out, ms, rng);
    out.extend_from_slice(
        br#"","name":"generation.started","category":"generation","kind":"custom","timestamp":""#,
    );
    push_timestamp(out, ms);
    let model = MODELS[(rng.next_u64() % 4) as usize];
    let tokens = rng.range(10, 4000);
    let preview_len = rng.range(0, PREVIEW_MAX) as usize;
    let mut preview = String::with_capacity(preview_len + 12);
    while preview.len() < preview_len {
        if !preview.is_empty() {
            preview.push(' ');
        }
        preview.push_str(WORDS[(rng.next_u64() % 12) as usize]);
    }
    let props = format!(
        r#"","properties":{{"model":"{model}","prompt_tokens":{tokens},"prompt_preview":"{preview}"}},"context":{{"request_id":"req-{:016x}","path":"{}","ip":"203.0.113.{}"}},"seq":{seq}"#,
        rng.next_u64(),
        PATHS[(rng.next_u64() % 3) as usize],
        rng.range(1, 255),
    );
    out.extend_from_slice(props.as_bytes());
    let sum = crc32(out);
    out.extend_from_slice(format!(r#","sum":"{sum:08x}"}}"#).as_bytes());
}

/// Checks a record read back under key `seq`: its checksum, and that it is event `seq`.
pub fn verify_event(seq: u64, payload: &[u8]) -> Result<(), String> {
    const SUM: &[u8] = br#","sum":""#;
    let n = payload.len();
    if n < SUM.len() + 10 || &payload[n - 2..] != br#""}"# {
        return Err(format!("record {seq}: malformed tail ({n} bytes)"));
    }
    let at = n - 2 - 8 - SUM.len();
    if &payload[at..at + SUM.len()] != SUM {
        return Err(format!("record {seq}: no checksum field"));
    }
    let hex = std::str::from_utf8(&payload[n - 10..n - 2]).map_err(|e| e.to_string())?;
    let want = u32::from_str_radix(hex, 16).map_err(|e| format!("record {seq}: {e}"))?;
    let got = crc32(&payload[..at]);
    if want != got {
        return Err(format!(
            "record {seq}: checksum {got:08x} != stored {want:08x}"
        ));
    }
    let tail = format!(r#","seq":{seq}"#);
    if !payload[..at].ends_with(tail.as_bytes()) {
        return Err(format!("record {seq}: payload is another event's"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_verify_and_sizes_are_in_range() {
        let mut rng = Rng::new(1);
        let mut buf = Vec::new();
        let (mut min, mut max) = (usize::MAX, 0);
        for seq in 0..10_000 {
            make_event(seq, &mut rng, &mut buf);
            min = min.min(buf.len());
            max = max.max(buf.len());
            verify_event(seq, &buf).unwrap();
            assert!(verify_event(seq + 1, &buf).is_err());
        }
        assert!(min >= 300 && max <= 610, "{min}..{max}");
        eprintln!("payload sizes {min}..{max}");
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"id":""#), "{text}");
        assert!(
            text.contains(r#""timestamp":"2026-05-01T00:01:09.993Z""#),
            "{text}"
        );
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(verify_event(9999, &bad).is_err(), "flip at {i} passed");
        }
    }
}
