//! GCRA (the generic cell rate algorithm) over one number, the *theoretical arrival time*
//! (TAT), so that the whole state of a rate limit fits in one KV value that replicas
//! update with compare-and-set.
//!
//! With emission interval `T = 1 s / rate` and tolerance `τ = (burst - 1) · T`, a request
//! at `t` conforms when `t ≥ TAT - τ`, and then `TAT = max(TAT, t) + T`. This gives at most
//! `burst` requests at once and `rate` per second after that; in any window of length `L`
//! at most `burst + L · rate` requests conform. All times are microseconds since the Unix
//! epoch.

/// A limit as GCRA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`, microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// `τ`, how far ahead of TAT a request may come (the burst).
    pub tolerance_us: u64,
}

impl Gcra {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval_us = (1_000_000.0 / per_second.max(1e-6)).round().max(1.0) as u64;
        Self {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Reserves send times for up to `want` requests from `now`: the first one always
    /// (possibly in the future: the caller waits for it, keeping its place in line), the
    /// others only while they fall within `horizon` of the first. Answers the send times,
    /// in order, and the new TAT.
    pub fn reserve(&self, tat: u64, now: u64, want: u32, horizon: u64) -> (Vec<u64>, u64) {
        let mut tat = tat;
        let mut slots: Vec<u64> = Vec::with_capacity(want.max(1) as usize);
        for i in 0..want.max(1) {
            let at = now.max(tat.saturating_sub(self.tolerance_us));
            if i > 0 && at > slots[0].saturating_add(horizon) {
                break;
            }
            slots.push(at);
            tat = tat.max(at) + self.interval_us;
        }
        (slots, tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_fresh_limit_allows_the_burst_at_once_then_one_per_interval() {
        let g = Gcra::new(20.0, 20);
        let now = 100 * S;
        let (slots, tat) = g.reserve(0, now, 25, S);
        assert_eq!(slots.len(), 25);
        assert!(slots[..20].iter().all(|&s| s == now));
        assert_eq!(slots[20], now + 50_000);
        assert_eq!(slots[24], now + 5 * 50_000);
        assert_eq!(tat, now + 25 * 50_000);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_burst_plus_rate() {
        let g = Gcra::new(20.0, 20);
        let now = 100 * S;
        // Reservations in many small leases, as replicas make them.
        let mut tat = 0;
        let mut all = Vec::new();
        let mut t = now;
        while all.len() < 400 {
            let (slots, next) = g.reserve(tat, t, 3, 200_000);
            tat = next;
            all.extend(slots);
            t += 37_000;
        }
        all.sort_unstable();
        for (i, &start) in all.iter().enumerate() {
            let in_window = all[i..].iter().take_while(|&&s| s <= start + S).count();
            assert!(
                in_window <= 40,
                "{in_window} sends in the second from {start}"
            );
        }
    }

    #[test]
    fn the_horizon_from_the_first_slot_bounds_what_one_lease_takes() {
        let g = Gcra::new(1.0, 1);
        let now = 100 * S;
        let (slots, tat) = g.reserve(now + 10 * S, now, 5, S / 2);
        assert_eq!(slots, vec![now + 10 * S]);
        assert_eq!(tat, now + 11 * S);
    }

    #[test]
    fn an_old_tat_is_the_same_as_none() {
        let g = Gcra::new(10.0, 5);
        let now = 100 * S;
        assert_eq!(g.reserve(3 * S, now, 5, 0), g.reserve(0, now, 5, 0));
    }
}
