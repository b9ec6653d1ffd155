//! A point in time in 8 bytes, for the deadlines every open connection keeps (`Instant` takes
//! 16). Not a clock: stamps are made from the `Instant`s their callers pass in, and turn back
//! into the same `Instant`s.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since the process's origin, plus one: never zero, so an `Option<Stamp>` is 8
/// bytes too. 584 years of nanoseconds fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroU64);

/// Where stamps count from: half a year before the first instant stamped, so the instants
/// callers already hold (a test's `t0`, a connection's accept time) come after it.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Stamp {
    /// The stamp of `at`; an instant before the origin reads as the origin.
    pub fn of(at: Instant) -> Stamp {
        let origin =
            ORIGIN.get_or_init(|| at.checked_sub(Duration::from_secs(1 << 24)).unwrap_or(at));
        let nanos = u64::try_from(at.saturating_duration_since(*origin).as_nanos());
        Stamp(NonZeroU64::MIN.saturating_add(nanos.unwrap_or(u64::MAX)))
    }

    /// The instant this stamp was made of.
    pub fn instant(self) -> Instant {
        // Set: this stamp was made by `of`.
        let origin = ORIGIN.get_or_init(Instant::now);
        *origin + Duration::from_nanos(self.0.get() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_turns_back_into_its_instant_and_keeps_order() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400 * 365),
        ] {
            assert_eq!(Stamp::of(at).instant(), at);
        }
        let earlier = now - Duration::from_millis(5);
        assert_eq!(Stamp::of(earlier).instant(), earlier);
        assert!(Stamp::of(earlier) < Stamp::of(now));
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}
