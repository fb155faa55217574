//! Recent failed logins, counted in memory per key (an address, a user name) over a
//! sliding window, so guessing slows down and then stops.

use std::collections::HashMap;
use std::sync::Mutex;

const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures (per address or per user name, within the window) before slowing down…
pub const SLOW_AFTER: u32 = 3;
/// …and before refusing with 429.
pub const REFUSE_AFTER: u32 = 10;

/// Recent login failures by address and by user name.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (i64, u32)>>,
}

impl Throttle {
    pub fn count(&self, key: &str, now: i64) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(start, _)| now - start < WINDOW_MS)
            .map_or(0, |(_, n)| *n)
    }

    pub fn fail(&self, key: &str, now: i64) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= WINDOW_MS {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
