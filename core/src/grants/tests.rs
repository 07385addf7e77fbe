//! Unit and property tests of grant patterns and the namespace policy.

use super::*;
use proptest::prelude::*;

fn grants(patterns: &[&str]) -> Grants {
    let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Grants::parse("rooms", &owned).expect("valid patterns")
}

fn token(rooms: &[&str], publish: &[&str]) -> TokenGrants {
    TokenGrants {
        join: grants(rooms),
        publish: grants(publish),
        send: Grants::default(),
    }
}

fn ns(prefix: &str, join: JoinPolicy, publish: PublishPolicy) -> Namespace {
    Namespace {
        prefix: prefix.into(),
        join,
        publish,
    }
}

#[test]
fn exact_and_prefix_patterns() {
    let g = grants(&["team.42", "team.42.*"]);
    assert!(g.allows("team.42"));
    assert!(g.allows("team.42.general"));
    assert!(g.allows("team.42."));
    assert!(!g.allows("team.420"));
    assert!(!g.allows("team.4"));
    assert!(!g.allows("team.43.general"));
    assert!(grants(&["*"]).allows("anything"));
    assert!(!Grants::default().allows("lobby"));
    // `*` only counts at the end: elsewhere it is outside the name alphabet.
    let bad = |p: &str| Grants::parse("rooms", &[p.to_string()]).unwrap_err();
    assert_eq!(bad("a*b"), GrantError::Charset { claim: "rooms" });
    assert_eq!(bad("**"), GrantError::Charset { claim: "rooms" });
    assert_eq!(bad("team 1"), GrantError::Charset { claim: "rooms" });
    assert_eq!(bad(""), GrantError::Length { claim: "rooms" });
    assert_eq!(bad(&"a".repeat(129)), GrantError::Length { claim: "rooms" });
    assert!(Grants::parse("rooms", &[format!("{}*", "a".repeat(128))]).is_ok());
    let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("r{i}")).collect();
    assert_eq!(
        Grants::parse("publish", &many),
        Err(GrantError::TooMany { claim: "publish" })
    );
}

#[test]
fn a_bad_pattern_in_any_claim_refuses_the_token() {
    let mut claims = Claims::new("alice", 10);
    claims.rooms = vec!["ok".into()];
    claims.send = vec!["bad pattern".into()];
    assert_eq!(
        TokenGrants::from_claims(&claims),
        Err(GrantError::Charset { claim: "send" })
    );
    claims.send = vec!["support.*".into()];
    let t = TokenGrants::from_claims(&claims).expect("valid");
    assert!(t.join.allows("ok") && t.send.allows("support.1") && !t.publish.allows("ok"));
}

#[test]
fn unnamed_rooms_need_a_grant() {
    let policy = RoomPolicy::default();
    let none = token(&[], &[]);
    let some = token(&["team.*"], &["team.1"]);
    assert!(!policy.may_join("team.1", &none));
    assert!(!policy.may_publish("team.1", &none, true));
    assert!(policy.may_join("team.1", &some));
    assert!(policy.may_publish("team.1", &some, false));
    assert!(!policy.may_publish("team.2", &some, true));
}

#[test]
fn the_longest_prefix_decides() {
    let policy = RoomPolicy::new(vec![
        ns("public.", JoinPolicy::Any, PublishPolicy::Members),
        ns("public.announce.", JoinPolicy::Any, PublishPolicy::Server),
        ns("chat.", JoinPolicy::Grant, PublishPolicy::Any),
        ns("ops.", JoinPolicy::Server, PublishPolicy::Server),
    ])
    .expect("valid");
    let none = token(&[], &[]);
    let all = token(&["*"], &["*"]);
    assert!(policy.may_join("public.lobby", &none));
    assert!(policy.may_publish("public.lobby", &none, true));
    assert!(
        !policy.may_publish("public.lobby", &all, false),
        "members only"
    );
    assert!(policy.may_join("public.announce.news", &none));
    assert!(!policy.may_publish("public.announce.news", &all, true));
    assert!(!policy.may_join("chat.1", &none));
    assert!(policy.may_join("chat.1", &all));
    assert!(policy.may_publish("chat.1", &none, false));
    assert!(
        !policy.may_join("ops.x", &all),
        "no grant opens a server namespace"
    );
    assert_eq!(policy.namespace("other").join, JoinPolicy::Grant);
}

#[test]
fn namespaces_are_checked() {
    let any = |p: &str| ns(p, JoinPolicy::Any, PublishPolicy::Any);
    assert_eq!(
        RoomPolicy::new(vec![any("a."), any("a.")]),
        Err(GrantError::Duplicate("a.".into()))
    );
    assert_eq!(
        RoomPolicy::new(vec![any("a b")]),
        Err(GrantError::Prefix("a b".into()))
    );
    let many = (0..=MAX_NAMESPACES)
        .map(|i| any(&format!("n{i}.")))
        .collect();
    assert_eq!(RoomPolicy::new(many), Err(GrantError::TooManyNamespaces));
    // An empty prefix is the operator's own default for unnamed rooms.
    let open = RoomPolicy::new(vec![any("")]).expect("valid");
    assert!(open.may_join("x", &TokenGrants::default()));
}

#[test]
fn direct_message_policy() {
    let mut t = TokenGrants::default();
    assert!(DirectMessages::Any.may_send("bob", &t));
    assert!(!DirectMessages::Grant.may_send("bob", &t));
    t.send = grants(&["support.*"]);
    assert!(DirectMessages::Grant.may_send("support.7", &t));
    assert!(!DirectMessages::Grant.may_send("bob", &t));
}

/// A name of the alphabet, short enough that prefixes of each other come up often.
fn name() -> impl Strategy<Value = String> {
    "[a-c.]{1,6}"
}

proptest! {
    /// A pattern matches exactly what its definition says: equality, or `starts_with` for `*`.
    #[test]
    fn pattern_matching_follows_its_definition(pattern in name(), star: bool, room in name()) {
        let text = if star { format!("{pattern}*") } else { pattern.clone() };
        let g = Grants::parse("rooms", &[text]).expect("valid");
        let expected = if star { room.starts_with(&pattern) } else { room == pattern };
        prop_assert_eq!(g.allows(&room), expected);
    }

    /// Whatever order namespaces are given in, a room gets the longest prefix's policy.
    #[test]
    fn longest_prefix_wins_in_any_order(
        prefixes in proptest::collection::btree_set(name(), 1..24),
        room in name(),
        seed: u64,
    ) {
        let mut list: Vec<Namespace> = prefixes
            .iter()
            .map(|p| {
                let join = if p.len() % 2 == 0 { JoinPolicy::Any } else { JoinPolicy::Server };
                ns(p, join, PublishPolicy::Any)
            })
            .collect();
        let len = list.len();
        list.rotate_left((seed % len as u64) as usize);
        let policy = RoomPolicy::new(list).expect("distinct prefixes");
        let longest = prefixes.iter().filter(|p| room.starts_with(p.as_str())).max_by_key(|p| p.len());
        let expected = match longest {
            Some(p) => p.len() % 2 == 0,
            None => false,
        };
        prop_assert_eq!(policy.may_join(&room, &TokenGrants::default()), expected);
    }
}
