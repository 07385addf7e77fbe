//! A slab of connections whose keys carry a generation.
//!
//! A reactor names each registered socket by a [`mio::Token`]. With a plain slab the token is the
//! slot index, so once a connection closes and its slot is reused, an event still queued for the
//! old socket (same poll batch, or a late edge) lands on the new connection. Here every slot keeps
//! a generation counter that survives removal and is bumped each time the slot is vacated: a
//! [`Key`] names one *occupancy* of a slot, and a stale key simply finds nothing.
//!
//! Token layout (64-bit `usize`): the high 32 bits hold the generation, the low 32 bits hold
//! `slot + FIRST_SLOT_TOKEN`. Tokens below [`FIRST_SLOT_TOKEN`] are left to the shell for its own
//! registrations (listener, waker, admin socket...), and [`Key::from_token`] refuses them.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use slab::Slab;

/// The first token value a slot can map to; `Token(0)..Token(FIRST_SLOT_TOKEN)` belong to the
/// reactor shell's own registrations.
pub const FIRST_SLOT_TOKEN: usize = 16;

/// The largest slot index a key can encode: the low half of the token is `slot +
/// FIRST_SLOT_TOKEN`, which must fit in 32 bits (and never be all ones, so no token is
/// `usize::MAX`).
const MAX_SLOT: u32 = u32::MAX - FIRST_SLOT_TOKEN as u32 - 1;

// The token packs a 32-bit generation above a 32-bit slot.
const _: () = assert!(usize::BITS == 64, "hermod's reactor needs a 64-bit usize");

/// Names one occupancy of one slot: the same slot after reuse has a different generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Index in the slab; cheap direct lookup.
    pub slot: u32,
    /// Which occupancy of the slot this key names; guards against stale events after reuse.
    pub generation: u32,
}

impl Key {
    /// The mio token to register the connection's socket with.
    pub fn token(self) -> mio::Token {
        let low = self.slot as usize + FIRST_SLOT_TOKEN;
        mio::Token(((self.generation as usize) << 32) | low)
    }

    /// The key a token names, or `None` for the shell's reserved tokens (and for values no
    /// [`Key::token`] can produce).
    pub fn from_token(token: mio::Token) -> Option<Key> {
        let low = token.0 & 0xFFFF_FFFF;
        if low < FIRST_SLOT_TOKEN {
            return None;
        }
        let slot = u32::try_from(low - FIRST_SLOT_TOKEN).ok()?;
        if slot > MAX_SLOT {
            return None;
        }
        let generation = u32::try_from(token.0 >> 32).ok()?;
        Some(Key { slot, generation })
    }
}

/// A slab of values addressed by generation-tagged [`Key`]s.
#[derive(Debug)]
pub struct Slots<T> {
    /// The live values, indexed by slot.
    entries: Slab<T>,
    /// Generation of each slot's current (or next) occupant. Kept apart from the slab so it
    /// survives removal; bumped on every removal so old keys stop matching.
    generations: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T> Slots<T> {
    /// An empty set with room for `n` values before it reallocates.
    pub fn with_capacity(n: usize) -> Self {
        Slots {
            entries: Slab::with_capacity(n),
            generations: Vec::with_capacity(n),
        }
    }

    /// Stores `value` and returns the key that names it.
    ///
    /// # Panics
    /// If more than about four billion values are live at once (the slot index must fit in the
    /// token); a reactor caps its connections far below that.
    pub fn insert(&mut self, value: T) -> Key {
        let index = self.entries.vacant_key();
        let slot = u32::try_from(index)
            .ok()
            .filter(|slot| *slot <= MAX_SLOT)
            .expect("Slots: more live entries than a token can address");
        if index == self.generations.len() {
            self.generations.push(0);
        }
        let generation = self.generations[index];
        let inserted = self.entries.insert(value);
        debug_assert_eq!(inserted, index);
        Key { slot, generation }
    }

    /// Whether `key` names a live value (same slot, same generation).
    pub fn contains(&self, key: Key) -> bool {
        self.live_index(key).is_some()
    }

    /// The value `key` names, or `None` if it was removed (or the slot now holds another value).
    pub fn get(&self, key: Key) -> Option<&T> {
        let index = self.live_index(key)?;
        self.entries.get(index)
    }

    /// The value `key` names, mutably; `None` if stale.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let index = self.live_index(key)?;
        self.entries.get_mut(index)
    }

    /// Takes the value out; the slot's generation moves on, so `key` (and copies of it, and its
    /// token) go stale.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let index = self.live_index(key)?;
        let value = self.entries.try_remove(index)?;
        self.generations[index] = self.generations[index].wrapping_add(1);
        Some(value)
    }

    /// How many values are live.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every live value with its key, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> + '_ {
        let generations = &self.generations;
        self.entries
            .iter()
            .map(move |(index, value)| (key_at(generations, index), value))
    }

    /// Every live value mutably, with its key, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> + '_ {
        let generations = &self.generations;
        self.entries
            .iter_mut()
            .map(move |(index, value)| (key_at(generations, index), value))
    }

    /// The keys of every live value, in slot order. To remove while sweeping, collect first
    /// (`let keys: Vec<Key> = slots.keys().collect();`) or use [`Slots::drain`].
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.iter().map(|(key, _)| key)
    }

    /// Removes and returns every live value with its (now stale) key; for shutdown sweeps.
    pub fn drain(&mut self) -> Vec<(Key, T)> {
        let keys: Vec<Key> = self.keys().collect();
        keys.into_iter()
            .filter_map(|key| self.remove(key).map(|value| (key, value)))
            .collect()
    }

    /// The slab index `key` names if it is live.
    fn live_index(&self, key: Key) -> Option<usize> {
        let index = key.slot as usize;
        let live =
            self.generations.get(index) == Some(&key.generation) && self.entries.contains(index);
        live.then_some(index)
    }
}

/// The key of the live value at `index` (whose generation is the slot's current one).
fn key_at(generations: &[u32], index: usize) -> Key {
    Key {
        // Inserted indexes were checked to fit in u32 (MAX_SLOT).
        slot: index as u32,
        generation: generations.get(index).copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut slots = Slots::with_capacity(4);
        let a = slots.insert("a");
        let b = slots.insert("b");
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.get(a), Some(&"a"));
        if let Some(v) = slots.get_mut(b) {
            *v = "bb";
        }
        assert_eq!(slots.get(b), Some(&"bb"));
        assert_eq!(slots.remove(a), Some("a"));
        assert_eq!(slots.remove(a), None);
        assert_eq!(slots.get(a), None);
        assert_eq!(slots.len(), 1);
        assert!(!slots.is_empty());
    }

    #[test]
    fn reuse_gets_new_generation_and_stale_keys_miss() {
        let mut slots = Slots::with_capacity(1);
        let old = slots.insert(1);
        slots.remove(old);
        let new = slots.insert(2);
        assert_eq!(new.slot, old.slot);
        assert_ne!(new.generation, old.generation);
        assert_ne!(new.token(), old.token());
        assert_eq!(slots.get(old), None);
        assert_eq!(slots.get_mut(old), None);
        assert_eq!(slots.remove(old), None);
        assert!(!slots.contains(old));
        assert_eq!(slots.get(new), Some(&2));
        let from_old_token = Key::from_token(old.token()).map(|k| slots.get(k));
        assert_eq!(from_old_token, Some(None));
    }

    #[test]
    fn unknown_slot_misses() {
        let slots: Slots<u8> = Slots::default();
        let key = Key {
            slot: 7,
            generation: 0,
        };
        assert_eq!(slots.get(key), None);
    }

    #[test]
    fn tokens_round_trip_and_reserved_are_refused() {
        for (slot, generation) in [(0, 0), (1, 5), (MAX_SLOT, u32::MAX), (12345, 1 << 31)] {
            let key = Key { slot, generation };
            assert!(key.token().0 >= FIRST_SLOT_TOKEN);
            assert_ne!(key.token().0, usize::MAX);
            assert_eq!(Key::from_token(key.token()), Some(key));
        }
        for reserved in 0..FIRST_SLOT_TOKEN {
            assert_eq!(Key::from_token(mio::Token(reserved)), None);
        }
        assert_eq!(Key::from_token(mio::Token(usize::MAX)), None);
    }

    #[test]
    fn iter_keys_and_drain() {
        let mut slots = Slots::with_capacity(8);
        let keys: Vec<Key> = (0..5).map(|i| slots.insert(i)).collect();
        slots.remove(keys[2]);
        let seen: Vec<(Key, i32)> = slots.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(
            seen,
            vec![(keys[0], 0), (keys[1], 1), (keys[3], 3), (keys[4], 4)]
        );
        for (_, v) in slots.iter_mut() {
            *v *= 10;
        }
        assert_eq!(slots.keys().count(), 4);
        let drained = slots.drain();
        assert_eq!(drained.len(), 4);
        assert_eq!(drained[3], (keys[4], 40));
        assert!(slots.is_empty());
        assert!(keys.iter().all(|k| slots.get(*k).is_none()));
    }
}
