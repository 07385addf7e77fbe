//! Sentinel discovery and failover against real sentinels on ephemeral loopback ports.

mod common;

use std::time::{Duration, Instant};

use common::{config, Driver};
use hermod_core::redis::{ClientEvent, Target};
use hermod_core::testkit::{free_port, SentinelSet};

#[test]
fn follows_a_failover_after_the_master_is_killed() {
    let mut set = SentinelSet::start("m", 1, 3).expect("topology");
    set.wait_ready(Duration::from_secs(30))
        .expect("sentinels ready");
    let old = set.master.addr();
    let replica = set.replicas[0].addr();
    let mut d = Driver::new(config(Target::Sentinel {
        sentinels: set.sentinel_addrs(),
        master: set.name().to_owned(),
    }));
    assert_eq!(d.up(Duration::from_secs(10)), old);
    // Let the sentinel watch subscribe before the failover.
    d.run_for(Duration::from_millis(300));

    let killed = Instant::now();
    set.kill_master();
    let changed = d.until(Duration::from_secs(25), |e| {
        matches!(e, ClientEvent::MasterChanged { .. })
    });
    assert_eq!(
        changed,
        ClientEvent::MasterChanged {
            from: old.clone(),
            to: replica.clone()
        }
    );
    assert_eq!(d.up(Duration::from_secs(10)), replica);
    eprintln!("failover followed in {:?}", killed.elapsed());
    assert_eq!(d.client.stats().failovers_seen, 1);
    assert!(d.seen.iter().any(|e| matches!(e, ClientEvent::Down { .. })));
    let ok = d.call(1, &["SET", "after", "failover"], 1);
    assert!(
        matches!(ok, ClientEvent::Reply { result: Ok(_), .. }),
        "{ok:?}"
    );
}

#[test]
fn unknown_master_name_is_its_own_error() {
    let set = SentinelSet::start("m", 0, 1).expect("topology");
    let mut d = Driver::new(config(Target::Sentinel {
        sentinels: set.sentinel_addrs(),
        master: "nope".into(),
    }));
    let down = d.until(Duration::from_secs(10), |e| {
        matches!(e, ClientEvent::Down { .. })
    });
    let ClientEvent::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("unknown master name `nope`"), "{reason}");
}

#[test]
fn no_sentinel_reachable_is_its_own_error() {
    let sentinels = vec![
        format!("127.0.0.1:{}", free_port().expect("port")),
        format!("127.0.0.1:{}", free_port().expect("port")),
    ];
    let mut d = Driver::new(config(Target::Sentinel {
        sentinels,
        master: "m".into(),
    }));
    let down = d.until(Duration::from_secs(10), |e| {
        matches!(e, ClientEvent::Down { .. })
    });
    let ClientEvent::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("no sentinel reachable"), "{reason}");
    d.run_for(Duration::from_millis(800));
    assert!(!d.client.is_up());
    assert!(d.client.stats().reconnects <= 10, "backoff between rounds");
}
