//! Event ids: UUIDv7 drawn per thread, and their hyphenated text.

use std::time::SystemTime;

use uuid::Uuid;

use super::time::unix_millis;

/// A fresh UUIDv7: the current millisecond and 74 bits that are random at each new millisecond
/// and then count up by a random step (RFC 9562, §6.2 method 2, "monotonic random").
///
/// Not `Uuid::now_v7()`: that keeps its counter behind one process-wide mutex, a contended lock
/// when every worker thread tracks events. Here each thread keeps its own: at the first id of a
/// millisecond it draws 73 bits from the thread-local CSPRNG (the top bit of the 74 stays clear,
/// room to count), and each further id in that millisecond adds a step of 1 to 2^24 from a
/// splitmix64 sequence seeded from the same draw. Ids one thread draws are strictly increasing
/// while the millisecond does not go back (a worker drawing ids for its events' own
/// timestamps, which may go back, starts afresh then); ids from different threads in one
/// millisecond start 73 random bits apart, so they collide with negligible probability. One
/// CSPRNG draw per thread and millisecond instead of one per id.
pub(crate) fn new_event_id() -> Uuid {
    new_event_id_at(SystemTime::now())
}

/// `id` as a lowercase hyphenated string (`8-4-4-4-12` hex digits), as
/// `id.hyphenated().encode_lower(..)` writes it, eight digits at a time: uuid's encoder goes a
/// byte at a time through a table and then validates its output as UTF-8, three times the
/// instructions for the one id every request and every logged event gets.
#[inline]
pub(crate) fn hyphenated(id: Uuid) -> [u8; 36] {
    let v = id.as_u128();
    let a = hex8((v >> 96) as u32);
    let b = hex8((v >> 64) as u32);
    let c = hex8((v >> 32) as u32);
    let d = hex8(v as u32);
    let mut out = [b'-'; 36];
    out[0..8].copy_from_slice(&a);
    out[9..13].copy_from_slice(&b[..4]);
    out[14..18].copy_from_slice(&b[4..]);
    out[19..23].copy_from_slice(&c[..4]);
    out[24..28].copy_from_slice(&c[4..]);
    out[28..36].copy_from_slice(&d);
    out
}

/// The eight lowercase hex digits of `x`, most significant first.
#[inline]
fn hex8(x: u32) -> [u8; 8] {
    // Spread the nibbles into bytes: 0xabcdef12 -> 0x0a0b0c0d0e0f0102.
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 0-9 -> '0'-'9', 10-15 -> 'a'-'f' ('a' is 39 after '0' + 10); no byte carries into the next.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// The 74 bits below the timestamp and version that a UUIDv7 leaves to the generator.
const COUNTER_BITS: u32 = 74;

/// Per-thread state of [`new_event_id_at`]: the millisecond of the last id, its 74-bit
/// counter and the step generator's state.
#[derive(Clone, Copy)]
struct IdState {
    ms: u64,
    counter: u128,
    step: u64,
}

thread_local! {
    static IDS: std::cell::Cell<IdState> = const {
        std::cell::Cell::new(IdState { ms: u64::MAX, counter: 0, step: 0 })
    };
}

/// [`new_event_id`] for a time already read.
pub(crate) fn new_event_id_at(now: SystemTime) -> Uuid {
    let ms = unix_millis(now) & ((1 << 48) - 1);
    let counter = IDS
        .try_with(|cell| {
            let mut s = cell.get();
            s.counter = if s.ms == ms {
                next_counter(s.counter, &mut s.step)
            } else {
                None
            }
            .unwrap_or_else(|| fresh_counter(&mut s.step));
            s.ms = ms;
            cell.set(s);
            s.counter
        })
        // The thread is exiting (thread-locals torn down): a one-off random id.
        .unwrap_or_else(|_| fresh_counter(&mut 0));
    Uuid::from_u128(compose_v7(ms, counter))
}

/// A counter for a new millisecond: 73 random bits (the top one of 74 clear), and a new seed.
fn fresh_counter(step: &mut u64) -> u128 {
    let r: u128 = rand::random();
    *step = (r >> COUNTER_BITS) as u64;
    r & ((1 << (COUNTER_BITS - 1)) - 1)
}

/// The next counter in the same millisecond, or `None` if it would overflow its 74 bits.
fn next_counter(counter: u128, step: &mut u64) -> Option<u128> {
    *step = step.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *step;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let next = counter + u128::from(z >> 40) + 1;
    (next >> COUNTER_BITS == 0).then_some(next)
}

/// A UUIDv7 from a 48-bit millisecond and a 74-bit counter: `ms | 7 | 12 bits | 0b10 | 62 bits`.
fn compose_v7(ms: u64, counter: u128) -> u128 {
    (u128::from(ms) << 80)
        | (0x7 << 76)
        | ((counter >> 62) << 64)
        | (0b10 << 62)
        | (counter & ((1 << 62) - 1))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn hyphenated_ids_match_uuids_own_encoding() {
        let fixed = [
            0u128,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            0xa0a0_a0a0_0909_9a9a_f0f0_0f0f_1234_5678,
        ];
        let drawn = (0..2000).map(|_| new_event_id().as_u128());
        let bits = (0..128).map(|i| 1u128 << i);
        for v in fixed.into_iter().chain(drawn).chain(bits) {
            let id = Uuid::from_u128(v);
            assert_eq!(
                std::str::from_utf8(&hyphenated(id)).unwrap(),
                id.hyphenated().to_string(),
                "{v:#x}"
            );
        }
    }

    #[test]
    fn event_ids_are_v7_unique_and_time_ordered() {
        let ids: Vec<Uuid> = (0..10_000).map(|_| new_event_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            ids.len()
        );
        let ms = |id: &Uuid| id.get_timestamp().unwrap().to_unix();
        assert!(ms(&ids[0]) <= ms(&ids[ids.len() - 1]));
    }

    #[test]
    fn ids_of_one_millisecond_count_up_by_random_steps() {
        let now = UNIX_EPOCH + Duration::from_millis(1_764_075_035_123);
        let ids: Vec<Uuid> = (0..10_000).map(|_| new_event_id_at(now)).collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((secs, nanos), (1_764_075_035, 123_000_000));
        }
        // Strictly increasing within the millisecond (method 2), by steps that vary.
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let steps: std::collections::HashSet<u128> = ids
            .windows(2)
            .map(|w| w[1].as_u128() - w[0].as_u128())
            .collect();
        assert!(steps.len() > 9_000, "steps repeat: {}", steps.len());
        // A new millisecond starts from fresh random bits, not from the old counter.
        let later = new_event_id_at(now + Duration::from_millis(1));
        let again = new_event_id_at(now + Duration::from_millis(2));
        let low = |id: Uuid| id.as_u128() & ((1 << 76) - 1);
        assert_ne!(low(later), low(again));
        assert!(later > ids[ids.len() - 1] && again > later);
    }

    #[test]
    fn a_counter_about_to_overflow_starts_afresh() {
        let mut step = 1;
        let top = (1u128 << COUNTER_BITS) - 1;
        assert_eq!(next_counter(top, &mut step), None);
        assert!(next_counter(0, &mut step).is_some_and(|c| (1..=1 << 24).contains(&c)));
        let fresh = fresh_counter(&mut step);
        assert_eq!(fresh >> (COUNTER_BITS - 1), 0, "room left to count");
    }

    #[test]
    fn ids_from_many_threads_never_collide() {
        let now = SystemTime::now();
        let per_thread: Vec<Vec<Uuid>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..20_000).map(|_| new_event_id_at(now)).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<Uuid> = per_thread.iter().flatten().copied().collect();
        assert_eq!(all.len(), 80_000);
    }
}
