//! Cross-broker live fan-out on Redis pub/sub (with `RedisEngineConfig::publish`).
//!
//! `hermod_append` PUBLISHes every message it stores on its channel's pub/sub name
//! (`{u:alice}:pub`, `{r:lobby}:pub`: under the channel's hash tag) as
//! `<id>\n<from>\n<ts>\n<data>`. The engine SUBSCRIBEs, on a lane of its own, to the channels the
//! broker watches ([`Engine::watch`](crate::Engine::watch)) and reports each message as
//! [`Live::Message`], rebuilt into the same frame a replay would give. The broker's own appends
//! come back the same way (their completion carries no `fresh` message), so a channel's live
//! messages reach the broker in one stream, in the order Redis stored them.
//!
//! ```text
//!  watch ──> Idle ──(client up)── SUBSCRIBE ──> Subscribing{tag} ──confirmed──> Subscribed
//!             ^                                      │ failed                     │
//!             └──────────────────────────────────────┴──────── Down ──────────────┘
//!  (Down marks the channel `lost`: once subscribed again, Live::Resumed)
//! ```
//!
//! - A read of a watched channel does not run before its subscription is confirmed: it is
//!   parked (it passed its gate already) and sent on confirmation, failed `Unavailable` if the
//!   subscription fails. So every message stored after the read is reported live. A SUBSCRIBE
//!   the client refuses (its lane full) or Redis fails is retried shortly; parked reads keep
//!   their deadline.
//! - After a loss (the client went down: every lane reconnects), messages stored meanwhile were
//!   not published to us. Once subscribed again the engine reports [`Live::Resumed`] with the
//!   channel's `mark`, and the broker re-reads each live session from its last id.
//! - `mark`: the newest id the engine knows in the channel, for sessions that delivered nothing
//!   yet (a room joined without `since`). A room's tip is read (`hermod_tip`) each time it is
//!   subscribed, and every message reported moves the mark; an empty room's mark is `0.0-0`,
//!   an id of no epoch: reading from it reads the whole (new) history.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hermod_core::ids::{MsgId, Name};
use hermod_core::redis::ClientConfig;
use hermod_core::resp::Value;
use serde_json::value::RawValue;

use super::gate::{Class, Queued};
use super::ids::ClientId;
use super::{ops, RedisEngine, RedisEngineConfig, Sent, READ_LANE};
use crate::engine::{Channel, EngineError, Live, Stored};

/// The mark of a room that did not exist when subscribed: before every id of any epoch.
const EMPTY_MARK: &str = "0.0-0";

/// Where one channel's subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not subscribed: the client is down, or the SUBSCRIBE failed (sent again when up or at
    /// the channel's next read).
    Idle,
    /// SUBSCRIBE sent under this tag.
    Subscribing { tag: u64 },
    /// Confirmed: messages flow.
    Subscribed,
}

/// One watched channel.
#[derive(Debug)]
struct Watched {
    /// The subscription.
    state: State,
    /// The subscription was lost (client down) since the broker watched it: once subscribed
    /// again, report `Live::Resumed`.
    lost: bool,
    /// Reads of the channel waiting for the subscription (already through their gate).
    parked: Vec<Queued>,
    /// The newest id known in the channel (see the module doc).
    mark: Option<MsgId>,
}

/// Pause before subscribing again after a SUBSCRIBE the client refused (its lane full).
const RETRY_SUBSCRIBE: Duration = Duration::from_millis(50);

/// The engine's pub/sub side.
#[derive(Debug, Default)]
pub struct Subs {
    /// The lane subscriptions and messages go on (its own connection).
    pub lane: usize,
    /// The channels the broker watches.
    watched: HashMap<Channel, Watched>,
    /// Reports not yet pulled by the broker.
    live: VecDeque<Live>,
    /// Set when a SUBSCRIBE could not be sent (the lane had `max_in_flight` commands, e.g. a
    /// gateway re-homing thousands of sessions at once): idle channels are subscribed again
    /// then, and their parked reads past their deadline fail.
    retry_at: Option<Instant>,
    /// No parked read has a deadline before this (a lower bound: reads may have left since).
    parked_deadline: Option<Instant>,
}

impl Subs {
    /// Reads parked behind a subscription.
    pub fn parked(&self) -> usize {
        self.watched.values().map(|w| w.parked.len()).sum()
    }

    /// The next report.
    pub fn poll(&mut self) -> Option<Live> {
        self.live.pop_front()
    }

    /// When idle subscriptions are retried, or a parked read may be due, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retry_at, self.parked_deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The client's settings with one more lane, for subscriptions, when publishing (pushes never
/// queue behind replies or a WAIT); `subs.lane` becomes that lane.
pub fn client_config(config: &RedisEngineConfig, subs: &mut Subs) -> ClientConfig {
    let mut client = config.client.clone();
    if config.publish {
        subs.lane = client.connections.clamp(1, 15);
        client.connections = subs.lane + 1;
    }
    client
}

/// The pub/sub name of a channel, under its hash tag.
pub fn pubsub_name(channel: &Channel) -> String {
    let (kind, name) = ops::tag(channel);
    format!("{{{kind}:{name}}}:pub")
}

/// The channel a pub/sub name stands for (`None` for anything [`pubsub_name`] does not make).
fn channel_of(name: &[u8]) -> Option<Channel> {
    let name = std::str::from_utf8(name).ok()?;
    let inner = name.strip_prefix('{')?.strip_suffix("}:pub")?;
    let (kind, name) = inner.split_once(':')?;
    let name = Name::parse("channel", name).ok()?;
    match kind {
        "u" => Some(Channel::Inbox(name)),
        "r" => Some(Channel::Room(name)),
        _ => None,
    }
}

/// A published `<id>\n<from>\n<ts>\n<data>` rebuilt into the stored message.
fn stored_of(channel: &Channel, payload: &[u8]) -> Option<Stored> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, '\n');
    let id = MsgId::parse(parts.next()?).ok()?;
    ClientId::parse(&id)?;
    let from = Name::parse("from", parts.next()?).ok()?;
    let ts: u64 = parts.next()?.parse().ok()?;
    let data = RawValue::from_string(parts.next()?.to_owned()).ok()?;
    let frame = ops::frame(channel, &id, &from, &data, ts);
    Some(Stored { id, frame })
}

/// Whether `id` comes after `mark` in their channel: a later epoch is after; ids that do not
/// parse count as after (delivered rather than lost).
pub fn is_after(id: &MsgId, mark: &MsgId) -> bool {
    match (ClientId::parse(id), ClientId::parse(mark)) {
        (Some(a), Some(b)) => (a.epoch, a.stream) > (b.epoch, b.stream),
        _ => true,
    }
}

/// `mark` moved to `id` if that is after it.
fn advance(mark: &mut Option<MsgId>, id: MsgId) {
    if mark.as_ref().is_none_or(|m| is_after(&id, m)) {
        *mark = Some(id);
    }
}

impl RedisEngine {
    /// The broker watches `channel` now: subscribe (now if the client is up, else once up).
    pub(super) fn watch_channel(&mut self, channel: &Channel) {
        if !self.config.publish || self.subs.watched.contains_key(channel) {
            return;
        }
        let watched = Watched {
            state: State::Idle,
            lost: false,
            parked: Vec::new(),
            mark: None,
        };
        self.subs.watched.insert(channel.clone(), watched);
        self.subscribe(channel, self.now);
    }

    /// The broker's last session on `channel` left: unsubscribe, and send its parked reads
    /// (nobody needs them ordered any more; their completions are stale for the broker).
    pub(super) fn unwatch_channel(&mut self, channel: &Channel) {
        let Some(watched) = self.subs.watched.remove(channel) else {
            return;
        };
        let now = self.now;
        if watched.state != State::Idle {
            self.args
                .clear()
                .arg("UNSUBSCRIBE")
                .arg(pubsub_name(channel));
            self.send(self.subs.lane, Sent::Unsubscribe, now);
        }
        self.work.extend(watched.parked);
        self.dispatch(now);
    }

    /// Sends SUBSCRIBE for an idle watched channel, if the client is up.
    fn subscribe(&mut self, channel: &Channel, now: Instant) {
        let up = self.client.is_up();
        let idle = self
            .subs
            .watched
            .get(channel)
            .is_some_and(|w| w.state == State::Idle);
        if !up || !idle {
            return;
        }
        self.args.clear().arg("SUBSCRIBE").arg(pubsub_name(channel));
        if self.send(self.subs.lane, Sent::Subscribe(channel.clone()), now) {
            if let Some(w) = self.subs.watched.get_mut(channel) {
                w.state = State::Subscribing { tag: self.next_tag };
            }
        } else {
            self.subs.retry_at.get_or_insert(now + RETRY_SUBSCRIBE);
        }
    }

    /// Once per loop turn: if a SUBSCRIBE was refused, subscribe the idle channels again and
    /// fail the parked reads whose deadline passed.
    pub(super) fn retry_subscriptions(&mut self, now: Instant) {
        if self.subs.retry_at.is_none_or(|at| at > now) {
            return;
        }
        self.subs.retry_at = None;
        let mut expired = Vec::new();
        let mut idle = Vec::new();
        for (channel, w) in &mut self.subs.watched {
            if w.state == State::Idle {
                idle.push(channel.clone());
                let (late, waiting) = w.parked.drain(..).partition(|q| q.deadline <= now);
                w.parked = waiting;
                expired.extend::<Vec<Queued>>(late);
            }
        }
        self.fail_parked(expired);
        for channel in idle {
            self.subscribe(&channel, now);
        }
    }

    /// Whether a read of `q`'s channel must wait for its subscription: then it is parked (and
    /// the subscription sent if idle) and `None` returned.
    pub(super) fn park_read(&mut self, q: Queued, now: Instant) -> Option<Queued> {
        if q.class() != Class::Read {
            return Some(q);
        }
        let channel = q.channel();
        let Some(watched) = self.subs.watched.get_mut(&channel) else {
            return Some(q);
        };
        if watched.state == State::Subscribed {
            return Some(q);
        }
        let due = self
            .subs
            .parked_deadline
            .map_or(q.deadline, |d| d.min(q.deadline));
        self.subs.parked_deadline = Some(due);
        watched.parked.push(q);
        self.subscribe(&channel, now);
        None
    }

    /// Fails the parked reads whose deadline passed (a subscription slow to be confirmed must
    /// not make a read late).
    pub(super) fn expire_parked_reads(&mut self, now: Instant) {
        if self.subs.parked_deadline.is_none_or(|d| d > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for w in self.subs.watched.values_mut() {
            let (late, waiting): (Vec<Queued>, Vec<Queued>) =
                w.parked.drain(..).partition(|q| q.deadline <= now);
            w.parked = waiting;
            expired.extend(late);
            for q in &w.parked {
                next = Some(next.map_or(q.deadline, |d| d.min(q.deadline)));
            }
        }
        self.subs.parked_deadline = next;
        self.fail_parked(expired);
    }

    /// The client is up again: subscribe to every watched channel.
    pub(super) fn resubscribe(&mut self, now: Instant) {
        let channels: Vec<Channel> = self.subs.watched.keys().cloned().collect();
        for channel in channels {
            self.subscribe(&channel, now);
        }
    }

    /// The client went down: every subscription is lost, parked reads fail (subscribed again
    /// on `Up`).
    pub(super) fn subscriptions_lost(&mut self) {
        self.subs.retry_at = None;
        let mut failed = Vec::new();
        for w in self.subs.watched.values_mut() {
            w.state = State::Idle;
            w.lost = true;
            failed.append(&mut w.parked);
        }
        self.fail_parked(failed);
    }

    fn fail_parked(&mut self, parked: Vec<Queued>) {
        for q in parked {
            let err = EngineError::Unavailable("redis subscription not in place".into());
            self.finish_gated(q.token, &q.channel(), Class::Read, Err(err));
        }
    }

    /// A SUBSCRIBE's reply: confirmed (parked reads go, a lost channel is reported resumed, a
    /// room's tip is read) or failed (parked reads fail; subscribed again at the next read).
    pub(super) fn subscribe_reply(&mut self, tag: u64, channel: Channel, ok: bool, now: Instant) {
        let Some(w) = self.subs.watched.get_mut(&channel) else {
            return;
        };
        if w.state != (State::Subscribing { tag }) {
            return; // an older subscription's answer
        }
        let parked = std::mem::take(&mut w.parked);
        if !ok {
            w.state = State::Idle;
            self.subs.retry_at.get_or_insert(now + RETRY_SUBSCRIBE);
            return self.fail_parked(parked);
        }
        w.state = State::Subscribed;
        if std::mem::take(&mut w.lost) {
            let since = w.mark.clone();
            tracing::info!(?channel, "redis subscription back: catching up");
            let live = Live::Resumed {
                channel: channel.clone(),
                since,
            };
            self.subs.live.push_back(live);
        }
        if let Channel::Room(_) = channel {
            ops::fcall(&mut self.args, "hermod_tip", &channel, 0);
            self.send(READ_LANE, Sent::Tip(channel), now);
        }
        self.work.extend(parked);
    }

    /// `hermod_tip`'s `{epoch, stream id}` (or `{}`: no such channel) moves the channel's mark.
    pub(super) fn tip_reply(&mut self, channel: &Channel, value: &Value) {
        let tip = match value.as_array() {
            Some([epoch, sid]) => epoch
                .as_str()
                .zip(sid.as_str())
                .map(|(e, s)| MsgId::new(format!("{e}.{s}"))),
            Some([]) => Some(MsgId::new(EMPTY_MARK)),
            _ => None,
        };
        match (tip, self.subs.watched.get_mut(channel)) {
            (Some(tip), Some(w)) => advance(&mut w.mark, tip),
            (None, _) => tracing::warn!(?channel, ?value, "unreadable tip"),
            (Some(_), None) => {}
        }
    }

    /// A push on the pub/sub lane: a message of a watched channel becomes a `Live::Message`.
    pub(super) fn on_push(&mut self, lane: usize, value: &Value) {
        if lane != self.subs.lane {
            return;
        }
        let Some([kind, name, payload]) = value.as_array() else {
            return;
        };
        if kind
            .as_bytes()
            .is_none_or(|k| !k.eq_ignore_ascii_case(b"message"))
        {
            return;
        }
        let Some(channel) = name.as_bytes().and_then(|n| channel_of(n)) else {
            return;
        };
        let Some(w) = self.subs.watched.get_mut(&channel) else {
            return; // unwatched since; its UNSUBSCRIBE is on the way
        };
        let Some(msg) = payload.as_bytes().and_then(|p| stored_of(&channel, p)) else {
            tracing::warn!(?channel, "unreadable published message dropped");
            return;
        };
        advance(&mut w.mark, msg.id.clone());
        self.subs.live.push_back(Live::Message { channel, msg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_names_round_trip() {
        for channel in [
            Channel::Inbox(Name::parse("u", "al:ice@x.y").unwrap()),
            Channel::Room(Name::parse("r", "lob-by_1").unwrap()),
        ] {
            let name = pubsub_name(&channel);
            assert_eq!(channel_of(name.as_bytes()), Some(channel));
        }
        for bad in [
            "{x:a}:pub",
            "{u:a}:s",
            "u:a}:pub",
            "{u:}:pub",
            "{u:a b}:pub",
        ] {
            assert_eq!(channel_of(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn published_messages_rebuild_the_replay_frame() {
        let room = Channel::Room(Name::parse("r", "lobby").unwrap());
        let msg = stored_of(&room, b"17.100-2\nalice\n100\n{\"a\":\n1}").unwrap();
        let from = Name::parse("f", "alice").unwrap();
        let data = RawValue::from_string("{\"a\":\n1}".into()).unwrap();
        let id = MsgId::new("17.100-2");
        assert_eq!(msg.frame, ops::frame(&room, &id, &from, &data, 100));
        assert_eq!(msg.id, id);
        for bad in [
            &b"x\nalice\n1\n1"[..],
            b"1.1-1\nal ice\n1\n1",
            b"1.1-1\na\nx\n1",
            b"1.1-1\na\n1",
        ] {
            assert!(stored_of(&room, bad).is_none());
        }
    }

    #[test]
    fn ids_order_within_and_across_epochs() {
        let id = |s: &str| MsgId::new(s);
        assert!(is_after(&id("5.10-1"), &id("5.9-7")));
        assert!(!is_after(&id("5.9-7"), &id("5.9-7")));
        assert!(is_after(&id("6.1-0"), &id("5.9-7")));
        assert!(!is_after(&id("4.99-0"), &id("5.9-7")));
        assert!(is_after(&id("1.1-1"), &id(EMPTY_MARK)));
        let mut mark = None;
        advance(&mut mark, id("5.2-0"));
        advance(&mut mark, id("5.1-0"));
        assert_eq!(mark, Some(id("5.2-0")));
    }
}
