//! Remembers `(user, cid) -> id` for the dedupe window, so a retried `send`/`publish` is stored
//! once and answered with the same id.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};

use hermod_core::ids::{Cid, MsgId, Name};

/// Entries kept at most, across all users. Clients choose cids freely, so without a cap a busy
/// sender could grow the map for a whole window; past the cap the oldest entries go first (a retry
/// of those would be stored twice, which at-least-once delivery already allows).
pub const MAX_DEDUPE_ENTRIES: usize = 1 << 20;

type Key = (Name, Cid);

/// The dedupe table of one engine.
#[derive(Debug)]
pub struct Dedupe {
    /// How long an entry counts, in milliseconds.
    window_ms: u64,
    /// Most entries kept (normally [`MAX_DEDUPE_ENTRIES`]; smaller in tests).
    cap: usize,
    /// Key -> (id stored first, expiry in unix ms).
    map: HashMap<Key, (MsgId, u64)>,
    /// Keys in insertion order with their expiry. The window is constant, so this is also expiry
    /// order: sweeping and evicting pop from the front. A key re-inserted after expiring has two
    /// entries here; the stale one is recognised by its expiry not matching the map's. The last
    /// field is what the entry is charged to the storage budget.
    order: VecDeque<(u64, Key, u64)>,
    /// Bytes charged for the entries in `order` (see [`entry_cost`]).
    bytes: u64,
}

/// What one dedupe entry is charged to the storage budget: the overhead, the names and the id.
pub fn entry_cost(user: &Name, cid: &Cid, id: &MsgId) -> u64 {
    crate::budget::DEDUPE_OVERHEAD
        + (user.as_str().len() + cid.as_str().len() + id.as_str().len()) as u64
}

impl Dedupe {
    pub fn new(window_ms: u64, cap: usize) -> Self {
        Dedupe {
            window_ms,
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The id stored for `(user, cid)` if it is still inside the window at `now_ms`.
    pub fn get(&self, user: &Name, cid: &Cid, now_ms: u64) -> Option<&MsgId> {
        let key = (user.clone(), cid.clone());
        match self.map.get(&key) {
            Some((id, expires)) if *expires > now_ms => Some(id),
            _ => None,
        }
    }

    /// Records `(user, cid) -> id` from `now_ms` for one window.
    pub fn insert(&mut self, user: Name, cid: Cid, id: MsgId, now_ms: u64) {
        while self.order.len() >= self.cap {
            self.pop_front();
        }
        let expires = now_ms.saturating_add(self.window_ms);
        let cost = entry_cost(&user, &cid, &id);
        let key = (user, cid);
        self.map.insert(key.clone(), (id, expires));
        self.order.push_back((expires, key, cost));
        self.bytes += cost;
    }

    /// Bytes charged for the entries held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Forgets the oldest entry (to make room under the storage budget); false when empty.
    pub fn evict_oldest(&mut self) -> bool {
        let any = !self.order.is_empty();
        self.pop_front();
        any
    }

    /// Forgets every entry whose window has passed at `now_ms`.
    pub fn sweep(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(exp, _, _)| *exp <= now_ms) {
            self.pop_front();
        }
    }

    /// Number of live entries (tests and metrics).
    pub fn entry_count(&self) -> usize {
        self.map.len()
    }

    fn pop_front(&mut self) {
        if let Some((expires, key, cost)) = self.order.pop_front() {
            self.bytes = self.bytes.saturating_sub(cost);
            if self.map.get(&key).is_some_and(|(_, e)| *e == expires) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Name {
        Name::parse("user", s).unwrap()
    }
    fn cid(s: &str) -> Cid {
        Cid::parse(s).unwrap()
    }

    #[test]
    fn remembers_within_the_window_only() {
        let mut d = Dedupe::new(1000, 16);
        d.insert(user("a"), cid("1"), MsgId::new("x-1"), 0);
        assert_eq!(d.get(&user("a"), &cid("1"), 999), Some(&MsgId::new("x-1")));
        assert_eq!(d.get(&user("b"), &cid("1"), 10), None);
        assert_eq!(d.get(&user("a"), &cid("1"), 1000), None);
        assert!(d.bytes() > crate::budget::DEDUPE_OVERHEAD);
        d.sweep(1000);
        assert_eq!(d.entry_count(), 0);
        assert_eq!(d.bytes(), 0);
    }

    #[test]
    fn reinserted_key_survives_sweep_of_its_stale_entry() {
        let mut d = Dedupe::new(1000, 16);
        d.insert(user("a"), cid("1"), MsgId::new("x-1"), 0);
        d.insert(user("a"), cid("1"), MsgId::new("x-2"), 1500);
        d.sweep(1200);
        assert_eq!(d.get(&user("a"), &cid("1"), 1600), Some(&MsgId::new("x-2")));
    }

    #[test]
    fn cap_evicts_oldest() {
        let mut d = Dedupe::new(1000, 2);
        d.insert(user("a"), cid("1"), MsgId::new("x-1"), 0);
        d.insert(user("a"), cid("2"), MsgId::new("x-2"), 1);
        d.insert(user("a"), cid("3"), MsgId::new("x-3"), 2);
        assert_eq!(d.entry_count(), 2);
        assert_eq!(d.get(&user("a"), &cid("1"), 3), None);
        assert!(d.get(&user("a"), &cid("3"), 3).is_some());
    }
}
