//! Room presence across a broker tier, sans-io. A room's members are spread over the brokers
//! (sessions are placed by user), and each broker knows only its own. So the pool keeps one
//! *probe* session attached on every connected link (user `@`, device `presence`, on a worker
//! id no worker has), sends a `presence` request to every link through its probe, and merges
//! the answers: counts add up, members are listed once each up to the limit. A link that goes
//! down is no longer waited for.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, HashSet};

use hermod_core::bus::{Event, Presence, Request, SessionKey};
use hermod_core::ids::{Cid, Name};

use super::super::rehome::LinkId;

/// The `worker` of probe sessions' keys: no worker has it, so nothing for a probe ever leaves
/// the pool.
pub const PROBE_WORKER: u16 = u16::MAX;

/// The probe session of `link`.
pub fn probe(link: LinkId) -> SessionKey {
    SessionKey {
        worker: PROBE_WORKER,
        slot: link.0,
        generation: 0,
    }
}

/// The request that attaches `link`'s probe.
pub fn attach_probe(link: LinkId) -> Request {
    Request::Attach {
        session: probe(link),
        user: Name::server_sender(None),
        device: Name::parse("device", "presence").expect("a valid name"),
    }
}

/// One presence request waiting for its links.
#[derive(Debug)]
struct Gather {
    /// Who asked, and the cid to answer with.
    asker: (SessionKey, Cid),
    room: Name,
    /// Links that have not answered.
    pending: Vec<LinkId>,
    count: u64,
    members: Vec<(Name, Name)>,
    listed: HashSet<(Name, Name)>,
    limit: usize,
}

impl Gather {
    fn answer(self) -> (SessionKey, Event) {
        let (session, cid) = self.asker;
        let event = Event::Presence(Box::new(Presence {
            cid,
            room: self.room,
            count: self.count,
            members: self.members,
        }));
        (session, event)
    }
}

/// The presence requests in flight, by the cid their probes carry.
#[derive(Debug, Default)]
pub struct Gathers {
    open: HashMap<Cid, Gather>,
    next: u64,
}

impl Gathers {
    /// Starts gathering the presence of `room` for `asker` over `links`: returns the commands,
    /// one per link (none when there is no link: the caller answers).
    pub fn start(
        &mut self,
        asker: (SessionKey, Cid),
        room: Name,
        limit: u16,
        links: Vec<LinkId>,
    ) -> Vec<(LinkId, Request)> {
        if links.is_empty() {
            return Vec::new();
        }
        self.next += 1;
        let cid = Cid::parse(&format!("gather-{}", self.next)).expect("a short cid");
        let commands = links
            .iter()
            .map(|link| {
                let request = Request::Presence {
                    session: probe(*link),
                    cid: cid.clone(),
                    room: room.clone(),
                    limit,
                };
                (*link, request)
            })
            .collect();
        let gather = Gather {
            asker,
            room,
            pending: links,
            count: 0,
            members: Vec::new(),
            listed: HashSet::new(),
            limit: usize::from(limit),
        };
        self.open.insert(cid, gather);
        commands
    }

    /// A probe's answer from `link`; the merged answer once every link answered.
    pub fn answer(
        &mut self,
        link: LinkId,
        cid: &Cid,
        count: u64,
        members: Vec<(Name, Name)>,
    ) -> Option<(SessionKey, Event)> {
        let gather = self.open.get_mut(cid)?;
        let before = gather.pending.len();
        gather.pending.retain(|l| *l != link);
        if gather.pending.len() == before {
            return None; // not asked, or answered already
        }
        gather.count += count;
        for pair in members {
            if gather.members.len() < gather.limit && gather.listed.insert(pair.clone()) {
                gather.members.push(pair);
            }
        }
        if !gather.pending.is_empty() {
            return None;
        }
        self.open.remove(cid).map(Gather::answer)
    }

    /// `link` is gone: no answer will come from it. Returns the gathers that are now complete.
    pub fn link_gone(&mut self, link: LinkId) -> Vec<(SessionKey, Event)> {
        let mut done = Vec::new();
        let complete: Vec<Cid> = self
            .open
            .iter_mut()
            .filter_map(|(cid, g)| {
                let before = g.pending.len();
                g.pending.retain(|l| *l != link);
                (before != g.pending.len() && g.pending.is_empty()).then(|| cid.clone())
            })
            .collect();
        for cid in complete {
            done.extend(self.open.remove(&cid).map(Gather::answer));
        }
        done
    }

    /// Gathers waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse("x", s).expect("a name")
    }

    fn asker() -> (SessionKey, Cid) {
        let key = SessionKey {
            worker: 0,
            slot: 7,
            generation: 1,
        };
        (key, Cid::parse("c1").expect("a cid"))
    }

    fn cid_of(commands: &[(LinkId, Request)]) -> Cid {
        match &commands[0].1 {
            Request::Presence { cid, .. } => cid.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_from_every_link_are_merged() {
        let mut g = Gathers::default();
        let commands = g.start(asker(), n("hall"), 2, vec![LinkId(0), LinkId(1)]);
        assert_eq!(commands.len(), 2);
        assert!(
            matches!(&commands[1].1, Request::Presence { session, .. } if *session == probe(LinkId(1)))
        );
        let cid = cid_of(&commands);
        let a = vec![(n("alice"), n("phone"))];
        assert!(g.answer(LinkId(0), &cid, 1, a.clone()).is_none());
        assert!(
            g.answer(LinkId(0), &cid, 1, a.clone()).is_none(),
            "a repeat is ignored"
        );
        let b = vec![
            (n("alice"), n("phone")),
            (n("bob"), n("tab")),
            (n("carol"), n("x")),
        ];
        let (session, event) = g.answer(LinkId(1), &cid, 3, b).expect("complete");
        assert_eq!(session, asker().0);
        match event {
            Event::Presence(p) => {
                let Presence {
                    cid,
                    count,
                    members,
                    room,
                } = *p;
                assert_eq!((cid.as_str(), room.as_str(), count), ("c1", "hall", 4));
                assert_eq!(
                    members,
                    vec![(n("alice"), n("phone")), (n("bob"), n("tab"))]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn a_link_that_goes_away_is_not_waited_for() {
        let mut g = Gathers::default();
        let commands = g.start(asker(), n("hall"), 10, vec![LinkId(0), LinkId(1)]);
        let cid = cid_of(&commands);
        assert!(g.answer(LinkId(1), &cid, 2, Vec::new()).is_none());
        let done = g.link_gone(LinkId(0));
        assert_eq!(done.len(), 1);
        assert!(matches!(&done[0].1, Event::Presence(p) if p.count == 2));
        assert!(g.start(asker(), n("hall"), 10, Vec::new()).is_empty());
    }
}
