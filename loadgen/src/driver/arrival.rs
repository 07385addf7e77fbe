//! A reply's arrival time: the kernel's receive timestamp of the bytes that completed it (see
//! [`crate::sock`]), moved onto the run's monotonic clock, so that the loop's own wake-up delay
//! is not counted as the server's latency.

use crate::schedule::Nanos;

/// Farthest a kernel receive timestamp may lie from the clock pair it is converted with and
/// still be believed: farther means the realtime clock was stepped in between, and the read
/// time is used instead.
const MAX_STAMP_AGE: u64 = 10_000_000_000;

/// When a reply arrived, in run nanoseconds: the kernel's receive stamp `stamp` (realtime)
/// moved onto the run's monotonic clock through the pair (`now`, `real_now`) read together (a
/// stamp after the pair: bytes that arrived while the loop was reading), or `now` when there
/// is no believable stamp.
// On the per-message path: `#[inline]` keeps it inlinable into the driver's read loop, which
// may sit in another codegen unit.
#[inline]
pub(super) fn arrival(now: Nanos, real_now: u64, stamp: Option<u64>) -> Nanos {
    match stamp {
        Some(s) if s.abs_diff(real_now) > MAX_STAMP_AGE => now,
        Some(s) if s <= real_now => now.saturating_sub(real_now - s),
        Some(s) => now + (s - real_now),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::arrival;

    #[test]
    fn a_stamp_moves_the_arrival_back_by_its_age() {
        assert_eq!(arrival(5_000, 1_000_000, Some(999_000)), 4_000);
        assert_eq!(arrival(500, 1_000_000, Some(999_000)), 0);
    }

    #[test]
    fn bytes_that_arrived_during_the_read_are_dated_after_the_clock_pair() {
        assert_eq!(arrival(5_000, 1_000_000, Some(1_000_700)), 5_700);
    }

    #[test]
    fn missing_or_implausible_stamps_fall_back_to_the_read_time() {
        assert_eq!(arrival(5_000, 1_000_000, None), 5_000);
        assert_eq!(arrival(5_000, 20_000_000_000, Some(1)), 5_000);
        assert_eq!(arrival(5_000, 1, Some(20_000_000_000)), 5_000);
    }
}
