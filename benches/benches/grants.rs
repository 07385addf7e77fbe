//! The permission check every `publish` (and `join`) pays at the gateway: the namespace with the
//! longest prefix of the room, then the token's patterns. Three shapes: no namespaces (the
//! default: a grant for everything), the chat application of deploy/hermod-proxy.toml, and the
//! bounds (256 namespaces, 64 patterns, the match last). The access check of a session adds
//! the `members` lookup, measured with the session's own type.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hermod_core::grants::{JoinPolicy, Namespace, PublishPolicy, RoomPolicy, TokenGrants};
use hermod_core::jwt::Claims;

fn ns(prefix: &str, join: JoinPolicy, publish: PublishPolicy) -> Namespace {
    Namespace {
        prefix: prefix.to_owned(),
        join,
        publish,
    }
}

fn grants(rooms: Vec<String>, publish: Vec<String>) -> TokenGrants {
    let claims = Claims {
        rooms,
        publish,
        ..Claims::new("alice", 0)
    };
    match TokenGrants::from_claims(&claims) {
        Ok(g) => g,
        Err(e) => panic!("fixed patterns are valid: {e}"),
    }
}

fn policy(namespaces: Vec<Namespace>) -> RoomPolicy {
    match RoomPolicy::new(namespaces) {
        Ok(p) => p,
        Err(e) => panic!("fixed namespaces are valid: {e}"),
    }
}

fn publish_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("grants");
    let token = grants(
        vec!["team.42".into(), "team.42.*".into()],
        vec!["team.42.*".into()],
    );
    let default = RoomPolicy::default();
    group.bench_function("publish_check_default", |b| {
        b.iter(|| default.may_publish(black_box("team.42.general"), black_box(&token), false))
    });
    let chat = policy(vec![
        ns("public.", JoinPolicy::Any, PublishPolicy::Members),
        ns("public.announce.", JoinPolicy::Any, PublishPolicy::Server),
        ns("team.", JoinPolicy::Grant, PublishPolicy::Grant),
    ]);
    group.bench_function("publish_check_chat", |b| {
        b.iter(|| chat.may_publish(black_box("team.42.general"), black_box(&token), false))
    });
    let wide = policy(
        (0..256)
            .map(|i| ns(&format!("ns{i:03}."), JoinPolicy::Any, PublishPolicy::Any))
            .collect(),
    );
    let many: Vec<String> = (0..64).map(|i| format!("room.{i:02}.*")).collect();
    let big = grants(many.clone(), many);
    group.bench_function("publish_check_bounds", |b| {
        b.iter(|| wide.may_publish(black_box("room.63.last"), black_box(&big), false))
    });
    group.finish();
}

criterion_group!(benches, publish_check);
criterion_main!(benches);
