//! The NATS link's rules of time, with the clock moved by hand: when a claim is stale, when an
//! idle subject is let go.

use super::*;

const TIMEOUT: Duration = Duration::from_secs(3);
const NOW_MS: u64 = 1_700_000_000_000;

#[test]
fn a_fresh_claim_by_a_live_node_is_kept() {
    assert!(!claim_is_stale(NOW_MS, NOW_MS, true, TIMEOUT));
    assert!(!claim_is_stale(NOW_MS, NOW_MS - 1_000, true, TIMEOUT));
}

#[test]
fn a_live_holder_keeps_its_claim_however_old() {
    assert!(!claim_is_stale(NOW_MS, NOW_MS - 3_000, true, TIMEOUT));
    assert!(!claim_is_stale(NOW_MS, 0, true, TIMEOUT));
}

#[test]
fn a_young_claim_is_kept_while_its_holder_is_not_heard_yet() {
    assert!(!claim_is_stale(NOW_MS, NOW_MS, false, TIMEOUT));
    assert!(!claim_is_stale(NOW_MS, NOW_MS - 2_999, false, TIMEOUT));
}

#[test]
fn a_claim_of_a_silent_node_past_the_bound_is_taken_over() {
    assert!(claim_is_stale(NOW_MS, NOW_MS - 3_001, false, TIMEOUT));
    assert!(claim_is_stale(NOW_MS, NOW_MS - 60_000, false, TIMEOUT));
    assert!(claim_is_stale(NOW_MS, 0, false, TIMEOUT));
}

#[test]
fn a_claim_exactly_at_the_bound_is_stale() {
    assert!(claim_is_stale(NOW_MS, NOW_MS - 3_000, false, TIMEOUT));
    assert!(!claim_is_stale(NOW_MS, NOW_MS - 2_999, false, TIMEOUT));
}

#[test]
fn a_claim_stamped_in_the_future_is_not_stale() {
    // The clock went backwards (here, or the holder's runs ahead): age unknown, kept.
    assert!(!claim_is_stale(NOW_MS, NOW_MS + 1, false, TIMEOUT));
    assert!(!claim_is_stale(NOW_MS, NOW_MS + 60_000, false, TIMEOUT));
    assert!(!claim_is_stale(0, NOW_MS, false, TIMEOUT));
}

#[test]
fn the_bound_is_counted_in_whole_milliseconds() {
    let timeout = Duration::from_micros(2_500);
    assert!(!claim_is_stale(NOW_MS, NOW_MS - 1, false, timeout));
    assert!(claim_is_stale(NOW_MS, NOW_MS - 2, false, timeout));
}

#[test]
fn an_idle_subject_is_let_go_at_the_end_of_the_grace() {
    let t0 = Instant::now();
    let grace = Duration::from_secs(1);
    assert!(subject_kept(None, t0, grace));
    assert!(subject_kept(Some(t0), t0, grace));
    assert!(subject_kept(
        Some(t0),
        t0 + grace - Duration::from_millis(1),
        grace
    ));
    assert!(!subject_kept(Some(t0), t0 + grace, grace));
    // Idle since after the tick read the clock: kept.
    assert!(subject_kept(Some(t0 + grace), t0, grace));
}
