//! The `direct` and `room` scenarios' script: Hermod users sending each other direct messages, or
//! publishing to rooms, each receiver auditing every sender-to-receiver stream and acking its
//! inbox; plus the preparation before t0 (read the welcome, join the rooms).
//!
//! Loss needs both sides: senders count the copies the server confirmed storing (`sent` times
//! the number of receivers), receivers count the distinct copies they got; `lost` is the
//! difference once everything is merged. Refused requests (`error`) are errors, not losses.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tungstenite::Message;

use crate::audit::{AuditSummary, Receipt, StreamAudit};
use crate::conn::{self, Ws};
use crate::driver::Script;
use crate::outcome::Outcome;
use crate::report::{new_histogram, record_ns};
use crate::schedule::Nanos;
use crate::wire::{self, Body, Incoming, Pattern, Rooms};

/// Without exact counters (several processes), the drain ends after this long without a delivery.
const QUIET: Nanos = 500_000_000;
/// Requests one connection keeps waiting for `sent`; beyond it, the oldest is forgotten (and its
/// copies are not expected), which bounds memory against a server that never answers.
const MAX_PENDING: usize = 1 << 16;

/// Who talks to whom.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Direct messages among `users`.
    Direct {
        /// Receiver choice.
        pattern: Pattern,
        /// Users in the run.
        users: u32,
    },
    /// Rooms.
    Room(Rooms),
}

/// Names of users and rooms.
#[derive(Debug, Clone)]
pub struct Names {
    /// User `i` is `{user_prefix}{i}`.
    pub user_prefix: String,
    /// Room `r` is `{room_prefix}{r}`.
    pub room_prefix: String,
}

impl Names {
    /// The name of user `i`.
    pub fn user(&self, i: u32) -> String {
        format!("{}{i}", self.user_prefix)
    }

    /// The name of room `r`.
    pub fn room(&self, r: u32) -> String {
        format!("{}{r}", self.room_prefix)
    }
}

/// Process-wide counters that tell every thread when nothing is in flight any more.
#[derive(Debug, Default)]
pub struct DrainCounters {
    /// Whether these counters see the whole run (one process); else the quiet rule applies.
    pub exact: bool,
    /// Requests sent and not answered yet.
    pub unanswered: AtomicU64,
    /// Copies the server confirmed storing (warmup included).
    pub expected: AtomicU64,
    /// Distinct copies received (warmup included).
    pub received: AtomicU64,
}

/// A request waiting for its `sent`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The connection's request number (in the cid).
    n: u64,
    /// Sent inside the measured window.
    measured: bool,
    /// Copies it will be delivered as.
    copies: u64,
}

/// Fixed settings of a chat script.
#[derive(Debug, Clone)]
pub struct ChatSetup {
    /// Who talks to whom.
    pub layout: Layout,
    /// Naming.
    pub names: Names,
    /// The run's nonce.
    pub run: u32,
    /// Frame size.
    pub size: usize,
    /// Measured window start and end, nanoseconds since t0.
    pub window: (Nanos, Nanos),
}

/// One worker's chat bookkeeping.
pub struct ChatScript {
    /// Settings.
    setup: ChatSetup,
    /// Global user index of each local connection.
    users: Vec<u32>,
    /// Per connection: its next request number.
    next_n: Vec<u64>,
    /// Per connection: next sequence number per receiver (direct) or for its room (key 0).
    seqs: Vec<HashMap<u32, u64>>,
    /// Per connection: requests waiting for `sent`, oldest first.
    pending: Vec<VecDeque<Pending>>,
    /// Per connection: the last inbox message id to ack.
    to_ack: Vec<Option<String>>,
    /// Per connection: the id of the last room message received, the `since` of a rejoin.
    last_room_id: Vec<Option<String>>,
    /// Receiver-side audit.
    audit: StreamAudit,
    /// Measured requests sent, and copies confirmed stored.
    sender: AuditSummary,
    /// Latency of measured copies, from the due time.
    latency: Histogram<u64>,
    /// Refused requests, unparseable frames.
    errors: u64,
    /// Messages of earlier runs seen (ignored).
    stale: u64,
    /// Receiver choice for `Random`.
    rng: StdRng,
    /// Shared drain counters.
    drain: Arc<DrainCounters>,
    /// Time of the last delivery (quiet rule).
    last_delivery: Nanos,
    /// Requests whose answer went with a closed session: their copies may arrive though not
    /// expected, so `received >= expected` no longer proves the drain done (quiet rule too).
    unconfirmed: u64,
}

impl ChatScript {
    /// A script for local connections of users `users`.
    pub fn new(setup: ChatSetup, users: Vec<u32>, drain: Arc<DrainCounters>) -> Self {
        let n = users.len();
        let seed = users.first().copied().unwrap_or(0);
        ChatScript {
            setup,
            next_n: vec![0; n],
            seqs: vec![HashMap::new(); n],
            pending: vec![VecDeque::new(); n],
            to_ack: vec![None; n],
            last_room_id: vec![None; n],
            users,
            audit: StreamAudit::new(),
            sender: AuditSummary::default(),
            latency: new_histogram(),
            errors: 0,
            stale: 0,
            rng: StdRng::seed_from_u64(u64::from(seed) ^ 0x9e37_79b9),
            drain,
            last_delivery: 0,
            unconfirmed: 0,
        }
    }

    /// A delivered message on connection `k`.
    fn on_msg(&mut self, k: usize, id: String, room: bool, body: Option<Body>, now: Nanos) {
        if room {
            self.last_room_id[k] = Some(id);
        } else {
            self.to_ack[k] = Some(id);
        }
        let Some(body) = body.filter(|b| b.run == self.setup.run) else {
            self.stale += 1;
            return;
        };
        let receiver = self.users.get(k).copied().unwrap_or(u32::MAX);
        let due = body.due_us.saturating_mul(1_000);
        let (warmup, end) = self.setup.window;
        let measured = due >= warmup && due < end;
        match self
            .audit
            .on_received(body.sender, receiver, body.seq, measured)
        {
            Receipt::First { measured } => {
                self.drain.received.fetch_add(1, Relaxed);
                self.last_delivery = now;
                if measured {
                    record_ns(&mut self.latency, now.saturating_sub(due));
                }
            }
            Receipt::Duplicate | Receipt::Unknown => {}
        }
    }

    /// The answer to request `cid` on connection `k`: `stored` for `sent`, else refused.
    fn on_answer(&mut self, k: usize, cid: Option<&str>, stored: bool) -> u32 {
        let Some(n) = cid.and_then(|c| wire::cid_number(self.setup.run, c)) else {
            self.errors += u64::from(!stored);
            return 0;
        };
        let queue = &mut self.pending[k];
        let Some(pos) = queue.iter().position(|p| p.n == n) else {
            return 0;
        };
        let Some(p) = queue.remove(pos) else {
            return 0;
        };
        self.drain.unanswered.fetch_sub(1, Relaxed);
        if stored {
            self.drain.expected.fetch_add(p.copies, Relaxed);
            if p.measured {
                self.sender.expected += p.copies;
            }
        } else {
            self.errors += 1;
        }
        1
    }
}

impl Script for ChatScript {
    fn frame(&mut self, k: usize, stamp: Nanos, measured: bool) -> Message {
        let sender = self.users.get(k).copied().unwrap_or(0);
        let n = self.next_n[k];
        self.next_n[k] += 1;
        let cid = wire::cid(self.setup.run, n);
        let (key, copies) = match &self.setup.layout {
            Layout::Direct { pattern, users } => {
                (pattern.receiver(sender, *users, self.rng.gen()), 1)
            }
            Layout::Room(r) => (0, u64::from(r.members)),
        };
        let seq_slot = self.seqs[k].entry(key).or_insert(0);
        let body = Body {
            run: self.setup.run,
            sender,
            seq: *seq_slot,
            due_us: stamp / 1_000,
        };
        *seq_slot += 1;
        let text = match &self.setup.layout {
            Layout::Direct { .. } => {
                wire::send_frame(&self.setup.names.user(key), &cid, &body, self.setup.size)
            }
            Layout::Room(r) => {
                let room = self.setup.names.room(r.room_of(sender));
                wire::publish_frame(&room, &cid, &body, self.setup.size)
            }
        };
        if self.pending[k].len() >= MAX_PENDING {
            self.pending[k].pop_front();
            self.drain.unanswered.fetch_sub(1, Relaxed);
            self.errors += 1;
        }
        self.pending[k].push_back(Pending {
            n,
            measured,
            copies,
        });
        self.drain.unanswered.fetch_add(1, Relaxed);
        self.sender.sent += u64::from(measured);
        Message::Text(text.into())
    }

    fn on_message(&mut self, k: usize, msg: Message, now: Nanos) -> u32 {
        let Message::Text(text) = msg else {
            self.errors += 1;
            return 0;
        };
        match wire::parse(text.as_str()) {
            Some(Incoming::Msg { id, room, body }) => {
                self.on_msg(k, id, room, body, now);
                0
            }
            Some(Incoming::Sent { cid }) => self.on_answer(k, Some(&cid), true),
            Some(Incoming::Error { cid, .. }) => self.on_answer(k, cid.as_deref(), false),
            Some(Incoming::Joined | Incoming::Other) => 0,
            None => {
                self.audit.on_unknown();
                0
            }
        }
    }

    fn pending(&mut self, k: usize) -> Option<Message> {
        let id = self.to_ack.get_mut(k)?.take()?;
        Some(Message::Text(wire::ack_frame(&id).into()))
    }

    fn drained(&self, now: Nanos) -> bool {
        let d = &self.drain;
        if d.unanswered.load(Relaxed) > 0 {
            return false;
        }
        let quiet = now.saturating_sub(self.last_delivery.max(self.setup.window.1)) >= QUIET;
        if d.exact {
            d.received.load(Relaxed) >= d.expected.load(Relaxed) && (self.unconfirmed == 0 || quiet)
        } else {
            quiet
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.audit.received_all(),
            self.errors + self.audit.summary().unknown,
        )
    }

    fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    fn on_ended(&mut self, k: usize) {
        // The answers to these requests went with the session: whether they were stored is
        // unknown, so their copies are not expected (a copy that arrives anyway still counts
        // as received). They count as errors, and no longer hold the drain.
        if let Some(queue) = self.pending.get_mut(k) {
            let n = queue.len() as u64;
            for p in queue.drain(..).filter(|p| p.measured) {
                self.sender.unconfirmed += p.copies;
            }
            self.drain.unanswered.fetch_sub(n, Relaxed);
            self.errors += n;
            self.unconfirmed += n;
        }
        if let Some(ack) = self.to_ack.get_mut(k) {
            *ack = None;
        }
    }

    fn on_reopened(&mut self, k: usize) -> Vec<Message> {
        let (Layout::Room(r), Some(&user)) = (&self.setup.layout, self.users.get(k)) else {
            return Vec::new();
        };
        let room = self.setup.names.room(r.room_of(user));
        let since = self.last_room_id.get(k).and_then(|id| id.as_deref());
        vec![Message::Text(wire::rejoin_frame(&room, since).into())]
    }

    fn finish(self) -> Outcome {
        if self.stale > 0 {
            eprintln!(
                "hermod-loadgen: ignored {} messages left by earlier runs",
                self.stale
            );
        }
        let mut audit = self.audit.summary();
        audit.sent = self.sender.sent;
        audit.expected = self.sender.expected;
        audit.unconfirmed = self.sender.unconfirmed;
        Outcome {
            errors: self.errors + audit.unknown,
            received_all: self.audit.received_all(),
            audit,
            latency: self.latency,
            ..Outcome::default()
        }
    }
}

/// Before t0: every room member joins its room; waits (up to `timeout`) for every `joined`,
/// reading and acking whatever else arrives (the welcome, messages left by earlier runs).
/// Returns how many joins were not confirmed.
pub fn prepare(
    poll: &mut Poll,
    conns: &mut [Ws],
    users: &[u32],
    layout: &Layout,
    names: &Names,
    timeout: Duration,
) -> io::Result<u64> {
    let mut waiting = vec![false; conns.len()];
    for (k, ws) in conns.iter_mut().enumerate() {
        if let Layout::Room(r) = layout {
            let room = names.room(r.room_of(users[k]));
            let _ = ws.write(Message::Text(wire::join_frame(&room).into()));
            waiting[k] = true;
        }
        let _ = conn::flush(ws);
    }
    let started = Instant::now();
    let mut events = Events::with_capacity(1024);
    while waiting.iter().any(|w| *w) && started.elapsed() < timeout {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let k = event.token().0;
            if let Some(ws) = conns.get_mut(k) {
                ws.get_mut().on_readable();
                if read_preparing(ws) {
                    waiting[k] = false;
                }
            }
        }
    }
    Ok(waiting.iter().filter(|w| **w).count() as u64)
}

/// Reads a preparing connection until WouldBlock, acking inbox messages; true on `joined`.
fn read_preparing(ws: &mut Ws) -> bool {
    let mut joined = false;
    let mut ack = None;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => match wire::parse(t.as_str()) {
                Some(Incoming::Joined) => joined = true,
                Some(Incoming::Msg {
                    id, room: false, ..
                }) => ack = Some(id),
                _ => {}
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Some(id) = ack {
        let _ = ws.write(Message::Text(wire::ack_frame(&id).into()));
    }
    let _ = conn::flush(ws);
    joined
}
