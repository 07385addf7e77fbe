//! Hermod's client protocol as the `direct` and `room` scenarios speak it (sans-io): who sends to
//! whom, the frames they write, and the server frames they read.
//!
//! Every message's `data` is `{"r":RUN,"s":SENDER,"q":SEQ,"t":DUE_US,"p":"..."}`: the run's nonce
//! (messages left in an inbox by an earlier run are recognised and ignored), the sending user's
//! index, the sequence number of its sender-to-receiver stream, the due time in microseconds
//! since t0, and padding up to `--size`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// How `direct` senders pick their receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Users 2i and 2i+1 write to each other (an odd last user writes to its predecessor).
    Pairs,
    /// User i writes to user i+1, the last to the first.
    Ring,
    /// Each message goes to a user drawn at random (never the sender, unless alone).
    Random,
}

impl Pattern {
    /// The receiver of a message from `sender` among `users`; `draw` is a random number used
    /// by `Random` only.
    pub fn receiver(self, sender: u32, users: u32, draw: u32) -> u32 {
        if users <= 1 {
            return sender;
        }
        match self {
            Pattern::Pairs if sender ^ 1 < users => sender ^ 1,
            Pattern::Pairs => sender - 1,
            Pattern::Ring => (sender + 1) % users,
            Pattern::Random => {
                let r = draw % (users - 1);
                if r >= sender {
                    r + 1
                } else {
                    r
                }
            }
        }
    }
}

/// The `room` layout: users `r*members .. (r+1)*members` form room `r`; the first `publishers`
/// members of each room publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rooms {
    /// Number of rooms.
    pub rooms: u32,
    /// Members per room (K): every publish is delivered K times.
    pub members: u32,
    /// Publishers per room (P).
    pub publishers: u32,
}

impl Rooms {
    /// The room of `user`.
    pub fn room_of(&self, user: u32) -> u32 {
        user / self.members.max(1)
    }

    /// Whether `user` publishes.
    pub fn is_publisher(&self, user: u32) -> bool {
        user % self.members.max(1) < self.publishers
    }
}

/// The audit fields of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Body {
    /// The run's nonce.
    #[serde(rename = "r")]
    pub run: u32,
    /// The sending user's index.
    #[serde(rename = "s")]
    pub sender: u32,
    /// Sequence number in the sender-to-receiver stream.
    #[serde(rename = "q")]
    pub seq: u64,
    /// Due time (open loop) or send time (closed loop), microseconds since t0.
    #[serde(rename = "t")]
    pub due_us: u64,
}

/// Appends `"data":{...}` padded so the whole frame is about `size` bytes.
fn push_data(out: &mut String, body: &Body, size: usize) {
    let _ = write!(
        out,
        "\"data\":{{\"r\":{},\"s\":{},\"q\":{},\"t\":{},\"p\":\"",
        body.run, body.sender, body.seq, body.due_us
    );
    let pad = size.saturating_sub(out.len() + 3);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}}");
}

/// `{"op":"send","to":TO,"cid":CID,"data":...}`. Names are ours (validated), so not escaped.
pub fn send_frame(to: &str, cid: &str, body: &Body, size: usize) -> String {
    let mut out = String::with_capacity(size.max(96));
    let _ = write!(out, "{{\"op\":\"send\",\"to\":\"{to}\",\"cid\":\"{cid}\",");
    push_data(&mut out, body, size);
    out
}

/// `{"op":"publish","room":ROOM,"cid":CID,"data":...}`.
pub fn publish_frame(room: &str, cid: &str, body: &Body, size: usize) -> String {
    let mut out = String::with_capacity(size.max(96));
    let _ = write!(
        out,
        "{{\"op\":\"publish\",\"room\":\"{room}\",\"cid\":\"{cid}\","
    );
    push_data(&mut out, body, size);
    out
}

/// `{"op":"join","room":ROOM}`.
pub fn join_frame(room: &str) -> String {
    format!("{{\"op\":\"join\",\"room\":\"{room}\"}}")
}

/// A join after a reconnect: with `"since":ID` (the last room message received) when there is
/// one, so the room's history fills the gap. The id comes from the server, so it is escaped.
pub fn rejoin_frame(room: &str, since: Option<&str>) -> String {
    let Some(id) = since.and_then(|id| serde_json::to_string(id).ok()) else {
        return join_frame(room);
    };
    format!("{{\"op\":\"join\",\"room\":\"{room}\",\"since\":{id}}}")
}

/// `{"op":"ack","id":ID}`; the id comes from the server, so it is escaped.
pub fn ack_frame(id: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_string());
    format!("{{\"op\":\"ack\",\"id\":{id}}}")
}

/// The request id of a connection's `n`-th request in run `run`: unique per user and run, so
/// the server's dedupe never merges two of our requests, even across runs.
pub fn cid(run: u32, n: u64) -> String {
    format!("{run:x}-{n}")
}

/// The request number back from a cid of run `run` (`None` for anything else).
pub fn cid_number(run: u32, cid: &str) -> Option<u64> {
    let (r, n) = cid.split_once('-')?;
    (u32::from_str_radix(r, 16).ok()? == run)
        .then(|| n.parse().ok())
        .flatten()
}

/// A server frame, as far as the load generator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A delivered message: its id (to ack), whether it came through a room, and its audit
    /// fields when they parse.
    Msg {
        /// The server's id of the message.
        id: String,
        /// Delivered through a room (not acked: acks move the inbox cursor).
        room: bool,
        /// The audit fields; `None` for data that is not ours.
        body: Option<Body>,
    },
    /// `sent`: the request `cid` was stored.
    Sent {
        /// The request id.
        cid: String,
    },
    /// `error`, with the request id when the error answers a request.
    Error {
        /// The request id, if any.
        cid: Option<String>,
        /// The error code.
        code: String,
    },
    /// `joined`.
    Joined,
    /// Anything else (`welcome`, `left`, ...).
    Other,
}

/// The fields of a server frame the parser looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    /// The frame type.
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    /// Message id.
    id: Option<String>,
    /// Request id.
    cid: Option<String>,
    /// Room of a room message.
    room: Option<String>,
    /// Error code.
    code: Option<String>,
    /// The message's data, parsed separately (it may not be ours).
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Parses one text frame from the server; `None` when it is not JSON of the protocol's shape.
pub fn parse(text: &str) -> Option<Incoming> {
    let f: Frame<'_> = serde_json::from_str(text).ok()?;
    Some(match f.op.as_ref() {
        "msg" => Incoming::Msg {
            id: f.id?,
            room: f.room.is_some(),
            body: f.data.and_then(|d| serde_json::from_str(d.get()).ok()),
        },
        "sent" => Incoming::Sent { cid: f.cid? },
        "error" => Incoming::Error {
            cid: f.cid,
            code: f.code.unwrap_or_default(),
        },
        "joined" => Incoming::Joined,
        _ => Incoming::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_pick_the_expected_receivers() {
        let pairs: Vec<u32> = (0..5).map(|s| Pattern::Pairs.receiver(s, 5, 0)).collect();
        assert_eq!(pairs, [1, 0, 3, 2, 3]);
        let ring: Vec<u32> = (0..4).map(|s| Pattern::Ring.receiver(s, 4, 0)).collect();
        assert_eq!(ring, [1, 2, 3, 0]);
        for draw in 0..100 {
            let r = Pattern::Random.receiver(3, 10, draw);
            assert!(r < 10 && r != 3);
        }
        assert_eq!(Pattern::Random.receiver(0, 1, 7), 0);
    }

    #[test]
    fn rooms_layout() {
        let r = Rooms {
            rooms: 3,
            members: 4,
            publishers: 2,
        };
        assert_eq!(r.room_of(5), 1);
        assert!(r.is_publisher(4) && r.is_publisher(5) && !r.is_publisher(6));
    }

    #[test]
    fn frames_round_trip_and_pad() {
        let body = Body {
            run: 0xabc,
            sender: 7,
            seq: 42,
            due_us: 1_500_000,
        };
        let f = send_frame("u8", &cid(0xabc, 3), &body, 200);
        assert!((200..=202).contains(&f.len()), "{} {f}", f.len());
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["op"], "send");
        assert_eq!(v["to"], "u8");
        assert_eq!(v["data"]["q"], 42);
        let delivered = format!(
            "{{\"op\":\"msg\",\"id\":\"x-1\",\"from\":\"u7\",\"to\":\"u8\",\"data\":{},\"ts\":1}}",
            v["data"]
        );
        assert_eq!(
            parse(&delivered),
            Some(Incoming::Msg {
                id: "x-1".into(),
                room: false,
                body: Some(body)
            })
        );
        let p = publish_frame("room1", "c", &body, 10);
        assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
    }

    #[test]
    fn rejoin_asks_for_history_since_the_last_id() {
        assert_eq!(rejoin_frame("r1", None), join_frame("r1"));
        let f: serde_json::Value =
            serde_json::from_str(&rejoin_frame("r1", Some("12-\"3"))).unwrap();
        assert_eq!(f["op"], "join");
        assert_eq!(f["room"], "r1");
        assert_eq!(f["since"], "12-\"3");
    }

    #[test]
    fn server_frames_parse() {
        assert_eq!(
            parse(r#"{"op":"sent","cid":"abc-7","id":"1"}"#),
            Some(Incoming::Sent {
                cid: "abc-7".into()
            })
        );
        assert_eq!(cid_number(0xabc, "abc-7"), Some(7));
        assert_eq!(cid_number(0xabd, "abc-7"), None);
        assert_eq!(cid_number(1, "nonsense"), None);
        assert_eq!(
            parse(r#"{"op":"error","code":"rate_limited","cid":"1-2","message":"m"}"#),
            Some(Incoming::Error {
                cid: Some("1-2".into()),
                code: "rate_limited".into()
            })
        );
        let foreign = r#"{"op":"msg","id":"9","from":"a","room":"r","data":"hello","ts":1}"#;
        assert_eq!(
            parse(foreign),
            Some(Incoming::Msg {
                id: "9".into(),
                room: true,
                body: None
            })
        );
        assert_eq!(
            parse(r#"{"op":"joined","room":"r","recovered":true}"#),
            Some(Incoming::Joined)
        );
        assert_eq!(
            parse(r#"{"op":"welcome","user":"u"}"#),
            Some(Incoming::Other)
        );
        assert_eq!(parse("not json"), None);
        assert_eq!(ack_frame("a\"b"), r#"{"op":"ack","id":"a\"b"}"#);
    }
}
