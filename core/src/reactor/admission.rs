//! Admission limits shared by every worker, touched only when a connection opens or closes
//! (never per message): concurrent connections and new connections per second per client
//! address ([`AddressTable`]), and sessions per user ([`UserSessions`]).
//!
//! Plain data behind small sharded mutexes, the time passed in: a permit is taken at accept (or
//! at the handshake, for a user) and given back when it is dropped, so no path that ends a
//! connection can forget to count it out.
//!
//! Addresses are counted as an attacker would have to vary them: an IPv4 address as itself
//! (IPv4-mapped IPv6 too), an IPv6 address by its /64, the block one host usually gets.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::ids::Name;

/// Shards of each table: contention is a handful of workers at accept time.
const SHARDS: usize = 16;
/// Entries a shard holds before it drops, at most once a second, those that hold nothing (no
/// connection, a full bucket): a scan over many addresses leaves at most a second's worth of
/// entries behind, at an O(entries) cost once a second, not per accept.
const PRUNE_AT: usize = if cfg!(test) { 64 } else { 4096 };

/// One per-address limit: `max` (0 = off), and whether it applies to loopback addresses
/// (a limit left at its default does not: tests and benchmarks connect thousands of times from
/// 127.0.0.1; one set explicitly does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLimit {
    pub max: u32,
    pub loopback: bool,
}

impl AddressLimit {
    /// Off.
    pub const OFF: AddressLimit = AddressLimit {
        max: 0,
        loopback: false,
    };

    /// The limit for `ip`, or `None` when it does not apply.
    fn for_addr(self, ip: IpAddr) -> Option<u32> {
        (self.max > 0 && (self.loopback || !canonical(ip).is_loopback())).then_some(self.max)
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    /// The address holds its maximum of concurrent connections.
    Connections,
    /// The address opened connections faster than its rate allows.
    Rate,
}

/// What is counted for one address (or IPv6 /64).
#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    /// Tokens in thousandths; a new connection costs 1000.
    milli_tokens: u64,
    refilled: Instant,
}

/// Concurrent connections and connection rate per client address.
#[derive(Debug)]
pub struct AddressTable {
    concurrent: AddressLimit,
    /// New connections per second, with a burst of one second's worth.
    rate: AddressLimit,
    shards: Vec<Mutex<AddressShard>>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct AddressShard {
    map: HashMap<IpAddr, Entry>,
    pruned: Option<Instant>,
}

/// One connection counted against its address; counted out when dropped.
#[derive(Debug)]
pub struct AddressPermit {
    table: Arc<AddressTable>,
    key: IpAddr,
}

impl AddressTable {
    pub fn new(concurrent: AddressLimit, rate: AddressLimit) -> Self {
        AddressTable {
            concurrent,
            rate,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Whether either limit is on (when not, accept skips the table entirely).
    pub fn is_on(&self) -> bool {
        self.concurrent.max > 0 || self.rate.max > 0
    }

    /// Counts a new connection from `ip` at `now`, or says which limit refuses it. `None` when
    /// no limit applies to `ip` (nothing to give back).
    pub fn try_open(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<AddressPermit>, AddressRefusal> {
        let (max_open, rate) = (self.concurrent.for_addr(ip), self.rate.for_addr(ip));
        if max_open.is_none() && rate.is_none() {
            return Ok(None);
        }
        let key = key_of(ip);
        let mut guard = self.shard(&key).lock();
        let shard = &mut *guard;
        let due = shard
            .pruned
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if shard.map.len() >= PRUNE_AT && due {
            shard.pruned = Some(now);
            let rate = self.rate.max;
            shard
                .map
                .retain(|_, e| e.open > 0 || !bucket_full(e, rate, now));
        }
        let entry = shard.map.entry(key).or_insert(Entry {
            open: 0,
            milli_tokens: u64::from(rate.unwrap_or(0)) * 1000,
            refilled: now,
        });
        if max_open.is_some_and(|max| entry.open >= max) {
            return Err(AddressRefusal::Connections);
        }
        if let Some(rate) = rate {
            refill(entry, rate, now);
            if entry.milli_tokens < 1000 {
                return Err(AddressRefusal::Rate);
            }
            entry.milli_tokens -= 1000;
        }
        entry.open += 1;
        Ok(Some(AddressPermit {
            table: Arc::clone(self),
            key,
        }))
    }

    /// Connections counted for `ip` now (tests and diagnostics).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let key = key_of(ip);
        self.shard(&key).lock().map.get(&key).map_or(0, |e| e.open)
    }

    fn shard<K: Hash>(&self, key: &K) -> &Mutex<AddressShard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn close(&self, key: IpAddr) {
        let mut shard = self.shard(&key).lock();
        if let Some(e) = shard.map.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
            // The entry stays while its bucket refills (else closing would reset the rate);
            // the next prune takes it.
            if e.open == 0 && self.rate.max == 0 {
                shard.map.remove(&key);
            }
        }
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        self.table.close(self.key);
    }
}

/// Adds the tokens earned since the last refill, capped at one second's worth.
fn refill(e: &mut Entry, rate: u32, now: Instant) {
    let ms = now.saturating_duration_since(e.refilled).as_millis();
    let earned = u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(rate));
    e.milli_tokens = e
        .milli_tokens
        .saturating_add(earned)
        .min(u64::from(rate) * 1000);
    e.refilled = now;
}

fn bucket_full(e: &Entry, rate: u32, now: Instant) -> bool {
    let mut e = *e;
    refill(&mut e, rate, now);
    e.milli_tokens >= u64::from(rate) * 1000
}

/// IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What an address is counted under: IPv4 as is, IPv6 by its /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Sessions per user, across every worker (0 = off).
#[derive(Debug)]
pub struct UserSessions {
    max: u32,
    /// Keyed by the session's own `Name` (shared, not copied).
    shards: Vec<Mutex<HashMap<Name, u32>>>,
    hasher: RandomState,
}

/// The user already has the maximum of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCapReached;

/// One session counted against its user; counted out when dropped.
#[derive(Debug)]
pub struct UserPermit {
    table: Arc<UserSessions>,
    user: Name,
}

impl UserSessions {
    pub fn new(max: u32) -> Self {
        UserSessions {
            max,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Counts one more session of `user`, or refuses when it already has the maximum.
    /// `Ok(None)` when the cap is off.
    /// The map and the permit share `user`'s text: a session costs no copy of its name here.
    pub fn try_take(self: &Arc<Self>, user: &Name) -> Result<Option<UserPermit>, UserCapReached> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut shard = self.shard(user.as_str()).lock();
        let count = shard.entry(user.clone()).or_insert(0);
        if *count >= self.max {
            return Err(UserCapReached);
        }
        *count += 1;
        Ok(Some(UserPermit {
            table: Arc::clone(self),
            user: user.clone(),
        }))
    }

    /// Sessions counted for `user` now.
    pub fn count(&self, user: &str) -> u32 {
        self.shard(user).lock().get(user).copied().unwrap_or(0)
    }

    fn shard(&self, user: &str) -> &Mutex<HashMap<Name, u32>> {
        &self.shards[self.hasher.hash_one(user) as usize % SHARDS]
    }
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        let user = self.user.as_str();
        let mut shard = self.table.shard(user).lock();
        if let Some(count) = shard.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn on(max: u32) -> AddressLimit {
        AddressLimit {
            max,
            loopback: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t0() -> Instant {
        // A fixed origin handed in like any `now` (the tests read no clock but this one).
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn concurrent_connections_per_address_are_capped_and_given_back() {
        let table = Arc::new(AddressTable::new(on(2), AddressLimit::OFF));
        let now = t0();
        let a = table.try_open(ip("10.0.0.1"), now).unwrap();
        let b = table.try_open(ip("10.0.0.1"), now).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(
            table.try_open(ip("10.0.0.1"), now).unwrap_err(),
            AddressRefusal::Connections
        );
        // Another address is unaffected.
        let other = table.try_open(ip("10.0.0.2"), now).unwrap();
        assert!(other.is_some());
        drop(a);
        assert_eq!(table.open(ip("10.0.0.1")), 1);
        assert!(table.try_open(ip("10.0.0.1"), now).unwrap().is_some());
    }

    #[test]
    fn loopback_is_exempt_unless_the_limit_says_so() {
        let table = Arc::new(AddressTable::new(on(1), on(1)));
        let now = t0();
        let held: Vec<_> = (0..10)
            .map(|_| table.try_open(ip("127.0.0.1"), now).unwrap())
            .collect();
        assert!(held.iter().all(Option::is_none));
        assert!(table
            .try_open(ip("::ffff:127.0.0.2"), now)
            .unwrap()
            .is_none());
        let explicit = AddressLimit {
            max: 1,
            loopback: true,
        };
        let table = Arc::new(AddressTable::new(explicit, AddressLimit::OFF));
        let _one = table.try_open(ip("127.0.0.1"), now).unwrap();
        assert!(table.try_open(ip("127.0.0.1"), now).is_err());
        assert!(table.try_open(ip("127.0.0.2"), now).unwrap().is_some());
    }

    #[test]
    fn the_rate_refills_with_time_and_a_close_does_not_reset_it() {
        let table = Arc::new(AddressTable::new(AddressLimit::OFF, on(5)));
        let now = t0();
        for _ in 0..5 {
            drop(table.try_open(ip("10.0.0.1"), now).unwrap());
        }
        assert_eq!(
            table.try_open(ip("10.0.0.1"), now).unwrap_err(),
            AddressRefusal::Rate
        );
        // 200 ms later: one more token.
        let later = now + Duration::from_millis(200);
        assert!(table.try_open(ip("10.0.0.1"), later).is_ok());
        assert!(table.try_open(ip("10.0.0.1"), later).is_err());
        // A full second refills the burst, no more.
        let much_later = later + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(table.try_open(ip("10.0.0.1"), much_later).is_ok());
        }
        assert!(table.try_open(ip("10.0.0.1"), much_later).is_err());
    }

    #[test]
    fn ipv6_counts_by_64_and_the_table_prunes_idle_entries() {
        let table = Arc::new(AddressTable::new(on(1), on(100)));
        let now = t0();
        let _a = table.try_open(ip("2001:db8::1"), now).unwrap();
        assert!(table.try_open(ip("2001:db8::ffff:1"), now).is_err());
        assert!(table.try_open(ip("2001:db8:0:1::1"), now).is_ok());
        // A scan of many addresses, each closed at once: a second later, the next accepts
        // prune it away.
        let later = now + Duration::from_secs(2);
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            drop(table.try_open(ip, later).unwrap());
        }
        let far = later + Duration::from_secs(2);
        for i in 0..2_000u32 {
            let ip = IpAddr::V6(Ipv6Addr::from(0x2001_0db9_u128 << 96 | u128::from(i) << 64));
            drop(table.try_open(ip, far).unwrap());
        }
        let held: usize = table.shards.iter().map(|s| s.lock().map.len()).sum();
        assert!(held <= 2_000 + SHARDS * PRUNE_AT, "{held}");
    }

    #[test]
    fn sessions_per_user_are_capped_and_given_back() {
        let name = |s| Name::parse("user", s).unwrap();
        let (alice, bob) = (name("alice"), name("bob"));
        let users = Arc::new(UserSessions::new(2));
        let a = users.try_take(&alice).unwrap();
        let _b = users.try_take(&alice).unwrap();
        assert!(users.try_take(&alice).is_err());
        assert!(users.try_take(&bob).unwrap().is_some());
        drop(a);
        assert_eq!(users.count("alice"), 1);
        assert!(users.try_take(&name("alice")).unwrap().is_some());
        let off = Arc::new(UserSessions::new(0));
        assert!(off.try_take(&alice).unwrap().is_none());
    }
}
