//! Which broker serves a session: rendezvous (highest random weight) hashing on the user id.
//!
//! Every (user, broker) pair gets a pseudo-random score; the user goes to the live broker with
//! the highest one. So all sessions of a user land on the same broker while the set of brokers
//! is stable (their messages then need no cross-broker hop), every gateway computes the same
//! answer without talking to the others, and when a broker leaves only its own users move
//! (each to its second-best broker), spread evenly over the rest. The hash is fixed (FNV-1a
//! with a 64-bit finaliser), not `RandomState`: placement must agree across processes.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// The score of `broker` (its registry name or address) for `user`.
pub fn score(user: &str, broker: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes().chain([0xff]).chain(broker.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: FNV alone spreads the last bytes poorly.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The name a session is placed by: its user, or for a server API sender (`@alice`, see
/// `Name::server_sender`) the user it speaks for, so that the API's session for alice lands on
/// alice's broker, where all her sessions are (to list or disconnect them).
pub fn placed_as(user: &str) -> &str {
    user.strip_prefix(hermod_core::ids::SERVER_MARK)
        .unwrap_or(user)
}

/// The candidate with the highest score for `user` (ties: the smaller name, so the answer never
/// depends on the candidates' order); `None` when there is no candidate.
pub fn pick<'a, K>(user: &str, candidates: impl IntoIterator<Item = (K, &'a str)>) -> Option<K> {
    candidates
        .into_iter()
        .map(|(key, name)| (score(user, name), name, key))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, _, key)| key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_sender_is_placed_with_its_user() {
        assert_eq!(super::placed_as("@alice"), "alice");
        assert_eq!(super::placed_as("alice"), "alice");
        assert_eq!(super::placed_as("@"), "");
    }

    use super::*;

    const BROKERS: [&str; 3] = [
        "b1@127.0.0.1:7001",
        "b2@127.0.0.1:7002",
        "b3@127.0.0.1:7003",
    ];

    fn place(user: &str, brokers: &[&'static str]) -> Option<&'static str> {
        pick(user, brokers.iter().map(|b| (*b, *b)))
    }

    #[test]
    fn deterministic_and_order_independent() {
        for i in 0..200 {
            let user = format!("user-{i}");
            let a = place(&user, &BROKERS);
            let reversed: Vec<_> = BROKERS.iter().rev().copied().collect();
            assert_eq!(a, place(&user, &reversed));
            assert_eq!(a, place(&user, &BROKERS));
        }
        assert_eq!(place("alice", &[]), None);
        assert_eq!(place("alice", &["only"]), Some("only"));
    }

    #[test]
    fn spreads_users_evenly() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let b = place(&format!("u{i}"), &BROKERS);
            let idx = BROKERS.iter().position(|x| Some(*x) == b);
            counts[idx.unwrap_or(0)] += 1;
        }
        for c in counts {
            assert!((700..=1300).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn only_the_users_of_a_removed_broker_move() {
        let rest = [BROKERS[0], BROKERS[2]];
        for i in 0..1000 {
            let user = format!("u{i}");
            let before = place(&user, &BROKERS);
            let after = place(&user, &rest);
            if before != Some(BROKERS[1]) {
                assert_eq!(before, after, "{user} moved although its broker stayed");
            }
        }
    }

    #[test]
    fn an_added_broker_takes_a_share() {
        let first = [BROKERS[0], BROKERS[1]];
        let moved = (0..1000)
            .map(|i| format!("u{i}"))
            .filter(|u| place(u, &first) != place(u, &BROKERS))
            .inspect(|u| assert_eq!(place(u, &BROKERS), Some(BROKERS[2])))
            .count();
        assert!((200..=460).contains(&moved), "{moved} of 1000 moved");
    }
}
