//! [`Appender`]: the events stream thread's decisions, without a clock or a socket. One batch
//! at a time, in order, each event one `XADD`, the batch's commands pipelined, re-sent until
//! Redis has answered every one with an entry id:
//!
//! ```text
//!         handle_events (up to BATCH)            start (the shell sends them)
//!   Idle ─────────────────────────────► Due ──────────────────────────────► Sent
//!    ▲                                   ▲                                   │ handle_reply ...
//!    │ every XADD answered with an id    │ backoff elapsed                   │ (one per command)
//!    └───────────────────────────────────┼───────────────────────────────────┤
//!                                        │                                   │ one failed (error reply,
//!                                 Backing off ◄──────────────────────────────┘ timeout, connection lost)
//! ```
//!
//! A retry re-sends from the first entry that was not answered with an id, so entries Redis
//! already took before it are not sent twice; an entry answered with an error whose successors
//! were appended (or one whose reply was lost) is appended again, with the same `seq`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Instant;

use super::delivery::Backoff;
use super::{HookEvent, What};

/// Events per batch (one pipelined round of `XADD`s), at most.
pub const BATCH: usize = 100;

/// One `XADD`'s arguments.
pub type Command = Vec<Vec<u8>>;

/// The `XADD` of `event`, numbered `seq`, to `key`, trimming to about `maxlen` entries:
/// `XADD key MAXLEN ~ maxlen * type T user U device D session S ts TS [room R] [code C]
/// [id I data J] seq Q`.
pub fn xadd(key: &str, maxlen: &str, event: &HookEvent, seq: u64) -> Command {
    let mut args: Command = Vec::with_capacity(22);
    let mut push = |a: &[u8]| args.push(a.to_vec());
    push(b"XADD");
    push(key.as_bytes());
    push(b"MAXLEN");
    push(b"~");
    push(maxlen.as_bytes());
    push(b"*");
    push(b"type");
    push(event.what.kind().as_str().as_bytes());
    push(b"user");
    push(event.user.as_str().as_bytes());
    push(b"device");
    push(event.device.as_str().as_bytes());
    push(b"session");
    push(event.session.to_string().as_bytes());
    push(b"ts");
    push(event.ts.to_string().as_bytes());
    match &event.what {
        What::Connect => {}
        What::Disconnect { code } => {
            push(b"code");
            push(code.to_string().as_bytes());
        }
        What::Join { room } | What::Leave { room } => {
            push(b"room");
            push(room.as_str().as_bytes());
        }
        What::Publish(p) => {
            push(b"room");
            push(p.room.as_str().as_bytes());
            push(b"id");
            push(p.id.as_str().as_bytes());
            push(b"data");
            push(p.data.get().as_bytes());
        }
    }
    push(b"seq");
    push(seq.to_string().as_bytes());
    args
}

/// What the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No batch: take up to [`BATCH`] events from the queue and [`Appender::handle_events`].
    Take,
    /// Send the commands [`Appender::start`] gives, once Redis is up.
    Send,
    /// The batch's commands are out: wait for their replies.
    Await,
    /// Backing off: nothing to do before this instant.
    Wait(Instant),
}

/// What a reply changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More replies are due.
    Pending,
    /// Every entry of the batch is appended: this many events.
    Appended(usize),
    /// The attempt failed; the batch is due again after the backoff.
    Failed,
}

/// The attempt in flight: commands `from..from + results.len()`, tagged `first_tag + i`.
#[derive(Debug)]
struct Attempt {
    first_tag: u64,
    from: usize,
    /// Per command sent: `None` until answered, then whether Redis appended it.
    results: Vec<Option<bool>>,
}

/// The batch being appended.
#[derive(Debug)]
struct Batch {
    commands: Vec<Command>,
    /// Entries `..done` are appended.
    done: usize,
    failures: u32,
    due: Instant,
    attempt: Option<Attempt>,
}

/// The stream thread's state: the batch in flight, the next `seq` and command tag.
#[derive(Debug)]
pub struct Appender {
    backoff: Backoff,
    key: String,
    maxlen: String,
    batch: Option<Batch>,
    next_seq: u64,
    next_tag: u64,
}

impl Appender {
    pub fn new(key: &str, maxlen: usize, backoff: Backoff) -> Self {
        Appender {
            backoff,
            key: key.to_owned(),
            maxlen: maxlen.to_string(),
            batch: None,
            next_seq: 1,
            next_tag: 1,
        }
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Step {
        match &self.batch {
            None => Step::Take,
            Some(b) if b.attempt.is_some() => Step::Await,
            Some(b) if now >= b.due => Step::Send,
            Some(b) => Step::Wait(b.due),
        }
    }

    /// The events taken from the queue become the next batch, due at once. Only when
    /// [`Step::Take`]; no events, no batch.
    pub fn handle_events(&mut self, events: &[HookEvent], now: Instant) {
        if self.batch.is_some() || events.is_empty() {
            return;
        }
        let commands = events
            .iter()
            .zip(self.next_seq..)
            .map(|(e, seq)| xadd(&self.key, &self.maxlen, e, seq))
            .collect();
        self.next_seq += events.len() as u64;
        self.batch = Some(Batch {
            commands,
            done: 0,
            failures: 0,
            due: now,
            attempt: None,
        });
    }

    /// Starts an attempt (only when [`Step::Send`]): the tag of the first command and the
    /// commands to send, in order, the i-th tagged `tag + i`. Then [`Appender::handle_unsent`]
    /// if not all of them could be sent.
    pub fn start(&mut self) -> Option<(u64, &[Command])> {
        let batch = self.batch.as_mut()?;
        if batch.attempt.is_some() || batch.done >= batch.commands.len() {
            return None;
        }
        let first_tag = self.next_tag;
        let pending = &batch.commands[batch.done..];
        self.next_tag += pending.len() as u64;
        batch.attempt = Some(Attempt {
            first_tag,
            from: batch.done,
            results: vec![None; pending.len()],
        });
        Some((first_tag, pending))
    }

    /// Only the first `sent` commands of the attempt went out (the client refused the next).
    pub fn handle_unsent(&mut self, sent: usize, now: Instant, jitter: f64) -> Progress {
        let Some(attempt) = self.batch.as_mut().and_then(|b| b.attempt.as_mut()) else {
            return Progress::Pending;
        };
        // A command never sent counts as failed; the attempt ends once the sent ones answer.
        for r in attempt.results.iter_mut().skip(sent) {
            *r = Some(false);
        }
        self.settle(now, jitter)
    }

    /// Redis answered the command tagged `tag`: `appended` if with an entry id, not if with an
    /// error (or it timed out, or the connection was lost). Tags of no attempt are ignored.
    pub fn handle_reply(
        &mut self,
        tag: u64,
        appended: bool,
        now: Instant,
        jitter: f64,
    ) -> Progress {
        let Some(attempt) = self.batch.as_mut().and_then(|b| b.attempt.as_mut()) else {
            return Progress::Pending;
        };
        let Some(i) = tag.checked_sub(attempt.first_tag) else {
            return Progress::Pending;
        };
        match usize::try_from(i)
            .ok()
            .and_then(|i| attempt.results.get_mut(i))
        {
            Some(slot @ None) => *slot = Some(appended),
            _ => return Progress::Pending,
        }
        self.settle(now, jitter)
    }

    /// Ends the attempt once every command has its answer.
    fn settle(&mut self, now: Instant, jitter: f64) -> Progress {
        let Some(batch) = self.batch.as_mut() else {
            return Progress::Pending;
        };
        let Some(attempt) = &batch.attempt else {
            return Progress::Pending;
        };
        if attempt.results.iter().any(Option::is_none) {
            return Progress::Pending;
        }
        let appended = attempt
            .results
            .iter()
            .take_while(|r| **r == Some(true))
            .count();
        batch.done = attempt.from + appended;
        batch.attempt = None;
        if batch.done >= batch.commands.len() {
            let events = batch.commands.len();
            self.batch = None;
            return Progress::Appended(events);
        }
        batch.failures = batch.failures.saturating_add(1);
        batch.due = now + self.backoff.wait(batch.failures, jitter);
        Progress::Failed
    }

    /// Events held here (the batch not yet appended), for the queue gauge.
    pub fn held(&self) -> usize {
        self.batch
            .as_ref()
            .map_or(0, |b| b.commands.len().saturating_sub(b.done))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

    use std::time::Duration;

    use super::*;
    use crate::webhooks::Published;
    use hermod_core::bus::SessionKey;
    use hermod_core::ids::{MsgId, Name};
    use serde_json::value::RawValue;

    fn event(what: What, slot: u32) -> HookEvent {
        let name = |s: &str| Name::parse("user", s).expect("valid");
        HookEvent {
            what,
            user: name("alice"),
            device: name("phone"),
            session: SessionKey {
                worker: 0,
                slot,
                generation: 1,
            },
            ts: 1_765_000_000,
        }
    }

    fn connects(n: u32) -> Vec<HookEvent> {
        (0..n).map(|i| event(What::Connect, i)).collect()
    }

    fn text(c: &Command) -> Vec<String> {
        c.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn each_kind_has_its_fields() {
        let head = "XADD hermod:events MAXLEN ~ 1000 * type";
        let tail = "user alice device phone session 0-7-1 ts 1765000000";
        let line = |what, seq| text(&xadd("hermod:events", "1000", &event(what, 7), seq)).join(" ");
        assert_eq!(
            line(What::Connect, 1),
            format!("{head} connect {tail} seq 1")
        );
        assert_eq!(
            line(What::Disconnect { code: 1006 }, 2),
            format!("{head} disconnect {tail} code 1006 seq 2")
        );
        let lobby = Name::parse("room", "lobby").expect("valid");
        assert_eq!(
            line(
                What::Leave {
                    room: lobby.clone()
                },
                3
            ),
            format!("{head} leave {tail} room lobby seq 3")
        );
        let data = RawValue::from_string(r#"{"a b":[1]}"#.to_owned()).expect("json");
        let published = Published {
            room: lobby,
            id: MsgId::parse("1.1765000000000-0").expect("valid"),
            data,
        };
        let c = xadd("k", "5", &event(What::Publish(Box::new(published)), 9), 4);
        let t = text(&c);
        // `data` stays one argument, spaces and all.
        assert_eq!(
            t[t.len() - 8..],
            [
                "room",
                "lobby",
                "id",
                "1.1765000000000-0",
                "data",
                r#"{"a b":[1]}"#,
                "seq",
                "4"
            ]
        );
    }

    #[test]
    fn a_batch_is_appended_when_every_xadd_answered() {
        let t0 = Instant::now();
        let mut a = Appender::new("k", 10, Backoff::DEFAULT);
        assert_eq!(a.poll(t0), Step::Take);
        a.handle_events(&[], t0);
        assert_eq!(a.poll(t0), Step::Take, "no events, no batch");
        a.handle_events(&connects(3), t0);
        assert_eq!((a.poll(t0), a.held()), (Step::Send, 3));
        let (tag, commands) = a.start().expect("an attempt");
        assert_eq!(commands.len(), 3);
        assert_eq!(text(&commands[2]).last().map(String::as_str), Some("3"));
        assert_eq!(a.poll(t0), Step::Await);
        assert!(a.start().is_none(), "one attempt at a time");
        assert_eq!(a.handle_reply(tag + 7, true, t0, 0.0), Progress::Pending);
        // Replies may come in any order; a repeated one changes nothing.
        assert_eq!(a.handle_reply(tag + 2, true, t0, 0.0), Progress::Pending);
        assert_eq!(a.handle_reply(tag, true, t0, 0.0), Progress::Pending);
        assert_eq!(a.handle_reply(tag, false, t0, 0.0), Progress::Pending);
        assert_eq!(
            a.handle_reply(tag + 1, true, t0, 0.0),
            Progress::Appended(3)
        );
        assert_eq!((a.poll(t0), a.held()), (Step::Take, 0));
        // Numbering goes on.
        a.handle_events(&connects(1), t0);
        let (_, commands) = a.start().expect("an attempt");
        assert_eq!(text(&commands[0]).last().map(String::as_str), Some("4"));
    }

    #[test]
    fn a_retry_resends_from_the_first_entry_not_appended() {
        let t0 = Instant::now();
        let mut a = Appender::new("k", 10, Backoff::DEFAULT);
        a.handle_events(&connects(4), t0);
        let (tag, _) = a.start().expect("an attempt");
        // The connection dropped after the first two were appended.
        a.handle_reply(tag, true, t0, 0.0);
        a.handle_reply(tag + 1, true, t0, 0.0);
        a.handle_reply(tag + 2, false, t0, 0.0);
        assert_eq!(a.handle_reply(tag + 3, false, t0, 0.0), Progress::Failed);
        let due = t0 + Duration::from_millis(500);
        assert_eq!((a.poll(t0), a.held()), (Step::Wait(due), 2));
        assert_eq!(a.poll(due), Step::Send);
        let (_, commands) = a.start().expect("an attempt");
        let seqs: Vec<String> = commands
            .iter()
            .filter_map(|c| text(c).last().cloned())
            .collect();
        assert_eq!(seqs, ["3", "4"]);
    }

    #[test]
    fn failures_back_off_and_the_same_seqs_go_again() {
        let t0 = Instant::now();
        let mut a = Appender::new("k", 10, Backoff::DEFAULT);
        a.handle_events(&connects(3), t0);
        let (tag, _) = a.start().expect("an attempt");
        // An error in the middle: what follows it is sent again too (at-least-once).
        a.handle_reply(tag, true, t0, 0.0);
        a.handle_reply(tag + 1, false, t0, 0.0);
        assert_eq!(a.handle_reply(tag + 2, true, t0, 0.0), Progress::Failed);
        let due = t0 + Duration::from_millis(500);
        assert_eq!(a.poll(t0), Step::Wait(due));
        assert_eq!(a.poll(due), Step::Send);
        let (tag, commands) = a.start().expect("an attempt");
        let seqs: Vec<String> = commands
            .iter()
            .filter_map(|c| text(c).last().cloned())
            .collect();
        assert_eq!(seqs, ["2", "3"]);
        // The client took only one of them: the attempt fails once that one is answered.
        assert_eq!(a.handle_unsent(1, due, 0.0), Progress::Pending);
        assert_eq!(a.handle_reply(tag, true, due, 0.0), Progress::Failed);
        assert_eq!(a.held(), 1);
        assert_eq!(a.poll(due), Step::Wait(due + Duration::from_secs(1)));
        // Nothing sent at all fails at once; then the last one is appended.
        let later = due + Duration::from_secs(1);
        let (tag, _) = a.start().expect("an attempt");
        assert_eq!(a.handle_unsent(0, later, 0.0), Progress::Failed);
        let last = later + Duration::from_secs(2);
        assert_eq!(a.poll(later), Step::Wait(last));
        let (next, commands) = a.start().expect("an attempt");
        assert!(next > tag && commands.len() == 1);
        assert_eq!(a.handle_reply(next, true, last, 0.0), Progress::Appended(3));
    }
}
