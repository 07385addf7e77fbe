//! [`PendingPublishes`]: a session's `publish`es awaiting `sent`, kept only while webhooks
//! report `publish` events (`--webhook-events ...,publish`), so that the event can carry the
//! room and the data once the broker has stored the message and named its id.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;

use hermod_core::ids::{Cid, Name};
use serde_json::value::RawValue;

use super::MAX_IN_FLIGHT;

/// Most publishes remembered: every request in flight and every late one. Entries whose answer
/// never comes (dropped from `late`) are the oldest, and go first when it is full.
const MAX_PENDING: usize = 2 * MAX_IN_FLIGHT;

/// Publishes awaiting `sent`, oldest first: (cid, room, data).
#[derive(Debug, Default)]
pub struct PendingPublishes {
    entries: VecDeque<(Cid, Name, Box<RawValue>)>,
}

impl PendingPublishes {
    /// A publish went to the broker.
    pub fn remember(&mut self, cid: Cid, room: Name, data: Box<RawValue>) {
        if self.entries.len() >= MAX_PENDING {
            self.entries.pop_front();
        }
        self.entries.push_back((cid, room, data));
    }

    /// The broker answered `cid` (`sent` or `error`): its room and data, if it was a publish.
    pub fn take(&mut self, cid: &Cid) -> Option<(Name, Box<RawValue>)> {
        let pos = self.entries.iter().position(|(c, _, _)| c == cid)?;
        self.entries.remove(pos).map(|(_, room, data)| (room, data))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: usize) -> Cid {
        Cid::parse(&format!("c{i}")).expect("valid")
    }

    #[test]
    fn publishes_are_taken_by_cid_and_bounded() {
        let room = Name::parse("room", "lobby").expect("valid");
        let data = || RawValue::from_string("{\"a\":1}".to_owned()).expect("json");
        let mut p = PendingPublishes::default();
        for i in 0..MAX_PENDING + 10 {
            p.remember(cid(i), room.clone(), data());
        }
        assert_eq!(p.len(), MAX_PENDING);
        // The oldest went first.
        assert!(p.take(&cid(0)).is_none());
        let (r, d) = p.take(&cid(10)).expect("remembered");
        assert_eq!((r.as_str(), d.get()), ("lobby", "{\"a\":1}"));
        assert!(p.take(&cid(10)).is_none(), "taken once");
        assert_eq!(p.len(), MAX_PENDING - 1);
    }
}
