//! Login throttling (SPEC §11): failed logins counted in memory, over 15 minutes
//! from each key's first failure, so guessing slows down and then stops, without
//! letting an attacker lock the real user out. A source is an IPv4 address or an
//! IPv6 /64 (one host usually holds a whole /64), as for the connection caps.
//!
//! An attempt is *reserved* before its password is checked and counts as a failure
//! until it succeeds, so fifty guesses sent at once are fifty counted attempts, not
//! fifty evaluations against a count read before any of them finished.
//!
//! Three counts, each over [`WINDOW_MS`]:
//! - per (user, source): slows down after [`SLOW_AFTER`] failures and refuses after
//!   [`PAIR_LIMIT`]: the lock an attacker at one address earns;
//! - per source, across users: refuses after [`SOURCE_LIMIT`] (one address trying
//!   one password on many users);
//! - per user, across sources: a guess from many addresses slows every attempt on
//!   that user and, past [`USER_LIMIT`], refuses them — except from an address the
//!   user logged in from successfully before (a *known-good* source), so the real
//!   user keeps access from where they usually log in.
//!
//! The trade-off: known-good sources are remembered in memory only (a restart
//! forgets them), and an attacker sharing the user's own address (a NAT) shares
//! that address's (user, source) lock.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The window failures are counted over.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures of one user from one source before each attempt is slowed…
pub const SLOW_AFTER: u32 = 3;
/// …and before that pair is refused until the window passes.
pub const PAIR_LIMIT: u32 = 10;
/// Failures from one source, across all users, before it is refused.
pub const SOURCE_LIMIT: u32 = 30;
/// Failures on one user, across all sources, before attempts from sources that are
/// not known-good are refused.
pub const USER_LIMIT: u32 = 100;
/// Entries kept per map; past it, expired ones are dropped, and if none are, new
/// pairs are refused (the flood is the attacker's; known-good sources still pass).
const CAPACITY: usize = 100_000;

/// What a login attempt may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password, after waiting this long.
    Go(Duration),
    /// Refuse with 429; try again after this many seconds.
    Refuse(u64),
}

#[derive(Clone, Copy)]
struct Window {
    start: i64,
    count: u32,
}

impl Window {
    fn current(&self, now: i64) -> u32 {
        if now - self.start < WINDOW_MS {
            self.count
        } else {
            0
        }
    }

    fn retry_after_s(&self, now: i64) -> u64 {
        ((self.start + WINDOW_MS - now).max(1000) / 1000) as u64
    }
}

#[derive(Default)]
struct Counts {
    pairs: HashMap<(String, IpAddr), Window>,
    sources: HashMap<IpAddr, Window>,
    users: HashMap<String, Window>,
    known_good: HashSet<(String, IpAddr)>,
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, key: K, now: i64) -> bool {
    if map.len() >= CAPACITY {
        map.retain(|_, w| now - w.start < WINDOW_MS);
    }
    if map.len() >= CAPACITY && !map.contains_key(&key) {
        return false;
    }
    let w = map.entry(key).or_insert(Window {
        start: now,
        count: 0,
    });
    if now - w.start >= WINDOW_MS {
        *w = Window {
            start: now,
            count: 0,
        };
    }
    w.count += 1;
    true
}

/// Take back one count; an entry left at zero is dropped, so attempts that were
/// released or succeeded leave nothing behind.
fn unbump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, key: &K) {
    if let Some(w) = map.get_mut(key) {
        w.count = w.count.saturating_sub(1);
        if w.count == 0 {
            map.remove(key);
        }
    }
}

/// Recent login attempts; see the module docs for the rules.
#[derive(Default)]
pub struct LoginThrottle {
    counts: Mutex<Counts>,
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve one attempt for `user` from `source`, counted as a failure until
    /// [`succeeded`](Self::succeeded) or [`release`](Self::release) says otherwise.
    pub fn reserve(&self, user: &str, source: IpAddr, now: i64) -> Verdict {
        let source = crate::rules::source_bucket(source);
        let mut c = self.lock();
        let pair_key = (user.to_owned(), source);
        let known_good = c.known_good.contains(&pair_key);
        if let Some(w) = c
            .pairs
            .get(&pair_key)
            .filter(|w| w.current(now) >= PAIR_LIMIT)
        {
            return Verdict::Refuse(w.retry_after_s(now));
        }
        if let Some(w) = c
            .sources
            .get(&source)
            .filter(|w| w.current(now) >= SOURCE_LIMIT)
            && !known_good
        {
            return Verdict::Refuse(w.retry_after_s(now));
        }
        let user_failures = c.users.get(user).map_or(0, |w| w.current(now));
        if user_failures >= USER_LIMIT
            && !known_good
            && let Some(w) = c.users.get(user)
        {
            return Verdict::Refuse(w.retry_after_s(now));
        }
        let pair_failures = c.pairs.get(&pair_key).map_or(0, |w| w.current(now));
        if !bump(&mut c.pairs, pair_key, now) && !known_good {
            return Verdict::Refuse(60);
        }
        bump(&mut c.sources, source, now);
        bump(&mut c.users, user.to_owned(), now);
        // Slow down on this pair's failures, and (for unknown sources) on the
        // user's failures from everywhere: a spread-out guess slows too.
        let mut slow = pair_failures.saturating_sub(SLOW_AFTER - 1);
        if !known_good {
            slow = slow.max(user_failures.saturating_sub(PAIR_LIMIT) / PAIR_LIMIT);
        }
        Verdict::Go(Duration::from_millis(250 * u64::from(slow.min(8))))
    }

    /// The reserved attempt logged in: it was no failure, this pair starts afresh,
    /// and the source is known-good for this user from now on.
    pub fn succeeded(&self, user: &str, source: IpAddr) {
        let source = crate::rules::source_bucket(source);
        let mut c = self.lock();
        let pair_key = (user.to_owned(), source);
        c.pairs.remove(&pair_key);
        unbump(&mut c.sources, &source);
        unbump(&mut c.users, &user.to_owned());
        if c.known_good.len() < CAPACITY {
            c.known_good.insert(pair_key);
        }
    }

    /// The reserved attempt was never judged (the hub was too busy to check it):
    /// it counts for nothing.
    pub fn release(&self, user: &str, source: IpAddr) {
        let source = crate::rules::source_bucket(source);
        let mut c = self.lock();
        unbump(&mut c.pairs, &(user.to_owned(), source));
        unbump(&mut c.sources, &source);
        unbump(&mut c.users, &user.to_owned());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn concurrent_reservations_count_before_any_finishes() {
        let t = LoginThrottle::default();
        let go = (0..50)
            .filter(|_| matches!(t.reserve("root", ip(1), 0), Verdict::Go(_)))
            .count();
        assert_eq!(go as u32, PAIR_LIMIT);
    }

    #[test]
    fn a_locked_pair_does_not_lock_the_user_elsewhere() {
        let t = LoginThrottle::default();
        for _ in 0..PAIR_LIMIT {
            assert!(matches!(t.reserve("root", ip(66), 0), Verdict::Go(_)));
        }
        assert!(matches!(t.reserve("root", ip(66), 0), Verdict::Refuse(_)));
        assert_eq!(t.reserve("root", ip(1), 0), Verdict::Go(Duration::ZERO));
    }

    #[test]
    fn a_spread_out_guess_cannot_lock_out_a_known_good_source() {
        let t = LoginThrottle::default();
        assert!(matches!(t.reserve("root", ip(1), 0), Verdict::Go(_)));
        t.succeeded("root", ip(1));
        for attacker in 100..=120u8 {
            for _ in 0..PAIR_LIMIT {
                let _ = t.reserve("root", ip(attacker), 0);
            }
        }
        // A fresh address is refused for this user; the known-good one is not.
        assert!(matches!(t.reserve("root", ip(200), 0), Verdict::Refuse(_)));
        assert_eq!(t.reserve("root", ip(1), 0), Verdict::Go(Duration::ZERO));
        // The window passes.
        assert!(matches!(
            t.reserve("root", ip(200), WINDOW_MS + 1),
            Verdict::Go(_)
        ));
    }

    #[test]
    fn an_ipv6_host_cannot_rotate_past_its_limit_within_its_64() {
        let t = LoginThrottle::default();
        for i in 0..u16::try_from(PAIR_LIMIT).unwrap() {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]);
            assert!(matches!(t.reserve("root", ip, 0), Verdict::Go(_)));
        }
        let next = IpAddr::from([0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 99]);
        assert!(matches!(t.reserve("root", next, 0), Verdict::Refuse(_)));
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(matches!(t.reserve("root", elsewhere, 0), Verdict::Go(_)));
    }

    #[test]
    fn a_released_attempt_counts_for_nothing() {
        let t = LoginThrottle::default();
        for _ in 0..(PAIR_LIMIT * 3) {
            assert!(matches!(t.reserve("root", ip(1), 0), Verdict::Go(_)));
            t.release("root", ip(1));
        }
        // Nothing is left behind to fill memory with.
        let c = t.lock();
        assert!(c.pairs.is_empty() && c.sources.is_empty() && c.users.is_empty());
    }
}
