//! The in-memory engine's storage budget: how many bytes the store holds in total and per sender,
//! and whether one more write fits (docs/operations.md, "Storage budget").
//!
//! Every byte the engine keeps is charged here when it is stored and refunded when it goes: a
//! message's frame (its allocation, not only its length) plus a fixed overhead for its entry, a
//! channel's name and bookkeeping, a dedupe entry, an inbox cursor. The overheads are upper
//! estimates of the structs, hash-map slots and deque slots involved, so the total is a real bound
//! on what the store's data structures hold, within a small factor of the allocator's slack.
//!
//! Writes past the total or past the sender's quota are refused; nothing stored is evicted to make
//! room (dedupe entries aside: they are not messages, and the engine drops the oldest first before
//! refusing). Reads and acks are never refused: they may create an empty room history or a cursor,
//! which are counted, so later writes stop sooner.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;

use hermod_core::ids::Name;

/// Bytes charged per stored message on top of its frame: the entry in the channel's deque (with
/// room for the deque's doubling), its id, the sender's name handle and its slot in the
/// per-sender table.
pub const ENTRY_OVERHEAD: u64 = 192;
/// Bytes charged per inbox or room on top of its name: the hash-map slot, the history and the
/// inbox's cursor table.
pub const CHANNEL_OVERHEAD: u64 = 256;
/// Bytes charged per dedupe entry on top of its cid and id: the map slot and the order-queue slot.
pub const DEDUPE_OVERHEAD: u64 = 160;
/// Bytes charged per inbox cursor on top of the device name.
pub const CURSOR_OVERHEAD: u64 = 64;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The store as a whole is at `--memory-budget`.
    Budget,
    /// The sender already holds `--memory-per-user` bytes of stored messages.
    SenderQuota,
}

/// The budget's figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Bytes held now.
    pub used: u64,
    /// The total budget.
    pub limit: u64,
    /// Writes refused because the store was full.
    pub refused_budget: u64,
    /// Writes refused because the sender was over its quota.
    pub refused_quota: u64,
}

/// The accounting.
#[derive(Debug)]
pub struct Budget {
    /// Most bytes in total.
    limit: u64,
    /// Most bytes of stored messages (and channels they created) per sender.
    per_sender: u64,
    /// Bytes held now.
    used: u64,
    /// Sender -> bytes of messages and channels charged to it; no entry at zero.
    by_sender: HashMap<Name, u64>,
    refused_budget: u64,
    refused_quota: u64,
}

impl Budget {
    pub fn new(limit: u64, per_sender: u64) -> Self {
        Budget {
            limit,
            per_sender,
            used: 0,
            by_sender: HashMap::new(),
            refused_budget: 0,
            refused_quota: 0,
        }
    }

    /// Bytes charged to `sender` now.
    pub fn sender_used(&self, sender: &Name) -> u64 {
        self.by_sender.get(sender).copied().unwrap_or(0)
    }

    /// Whether `cost` more bytes in total fit.
    pub fn fits(&self, cost: u64) -> bool {
        self.used.saturating_add(cost) <= self.limit
    }

    /// Whether `sender` may store `cost` more bytes while `elsewhere` bytes (held outside this
    /// accounting, or about to be) count against the total: `Err` (counted) when not.
    pub fn admit(&mut self, sender: &Name, cost: u64, elsewhere: u64) -> Result<(), Refusal> {
        if self.sender_used(sender).saturating_add(cost) > self.per_sender {
            self.refused_quota += 1;
            return Err(Refusal::SenderQuota);
        }
        if !self.fits(cost.saturating_add(elsewhere)) {
            self.refused_budget += 1;
            return Err(Refusal::Budget);
        }
        Ok(())
    }

    /// Records `cost` bytes held for `sender`.
    pub fn charge(&mut self, sender: &Name, cost: u64) {
        self.used = self.used.saturating_add(cost);
        match self.by_sender.get_mut(sender) {
            Some(v) => *v = v.saturating_add(cost),
            None => {
                self.by_sender.insert(sender.clone(), cost);
            }
        }
    }

    /// Releases `cost` bytes charged to `sender`.
    pub fn refund(&mut self, sender: &Name, cost: u64) {
        self.used = self.used.saturating_sub(cost);
        if let Some(v) = self.by_sender.get_mut(sender) {
            *v = v.saturating_sub(cost);
            if *v == 0 {
                self.by_sender.remove(sender);
            }
        }
    }

    /// Records `cost` bytes held for no sender (empty room histories, cursors, dedupe).
    pub fn charge_shared(&mut self, cost: u64) {
        self.used = self.used.saturating_add(cost);
    }

    /// Releases `cost` bytes charged with [`Budget::charge_shared`].
    pub fn refund_shared(&mut self, cost: u64) {
        self.used = self.used.saturating_sub(cost);
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            used: self.used,
            limit: self.limit,
            refused_budget: self.refused_budget,
            refused_quota: self.refused_quota,
        }
    }
}

/// What a message costs: its frame's allocation, its id and the fixed overhead.
pub fn entry_cost(frame_capacity: usize, id_len: usize) -> u64 {
    ENTRY_OVERHEAD + frame_capacity as u64 + id_len as u64
}

/// What a channel costs.
pub fn channel_cost(name: &Name) -> u64 {
    CHANNEL_OVERHEAD + name.as_str().len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Name {
        Name::parse("user", s).unwrap()
    }

    #[test]
    fn quota_is_checked_before_the_total_and_refunds_free_both() {
        let mut b = Budget::new(1000, 600);
        let (a, c) = (user("a"), user("c"));
        assert_eq!(b.admit(&a, 500, 0), Ok(()));
        b.charge(&a, 500);
        assert_eq!(b.admit(&a, 200, 0), Err(Refusal::SenderQuota));
        assert_eq!(b.admit(&c, 500, 0), Ok(()));
        b.charge(&c, 500);
        assert_eq!(b.admit(&c, 1, 0), Err(Refusal::Budget));
        b.refund(&a, 500);
        assert_eq!(b.sender_used(&a), 0);
        assert_eq!(b.admit(&c, 100, 0), Ok(()));
        let s = b.stats();
        assert_eq!((s.used, s.refused_quota, s.refused_budget), (500, 1, 1));
    }

    #[test]
    fn shared_bytes_count_against_the_total_only() {
        let mut b = Budget::new(100, 100);
        b.charge_shared(90);
        assert_eq!(b.admit(&user("a"), 20, 0), Err(Refusal::Budget));
        b.refund_shared(90);
        assert_eq!(b.stats().used, 0);
        assert!(b.fits(100));
    }
}
