//! A scripted Redis network for tests (feature `testkit`): it plays the sockets of a
//! [`ClientCore`], and the test plays the servers.
//!
//! [`ScriptedNet::pump`] ends the core's turn ([`ClientCore::flush`]) and carries out its
//! actions: an `Open` waits until the test [`accept`](ScriptedNet::accept)s or
//! [`refuse`](ScriptedNet::refuse)s it; written bytes are decoded into [`Command`]s (with
//! [`crate::resp`]); a `Close` forgets the connection. The test answers each connection's
//! oldest command with any value ([`ScriptedNet::answer`]: replies, errors, nulls; a
//! subscribe-family command is confirmed with a push), in any order across connections, sends
//! pushes, drops connections and owns the clock: nothing here reads one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::client::{Action, ClientCore, Closed, ConnId};
use crate::resp::{encode_push, encode_value, RespLimits, RespReader, Value};

/// A command the core wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// Its connection.
    pub conn: ConnId,
    /// Its arguments (`args[0]` is the command name).
    pub args: Vec<Bytes>,
}

impl Command {
    /// Argument `i` as text (empty if missing or not UTF-8).
    pub fn arg(&self, i: usize) -> &str {
        self.args
            .get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .unwrap_or("")
    }

    /// The command name, upper case.
    pub fn name(&self) -> String {
        self.arg(0).to_ascii_uppercase()
    }

    /// Whether it is `FCALL function ...`.
    pub fn is_fcall(&self, function: &str) -> bool {
        self.name() == "FCALL" && self.arg(1) == function
    }
}

/// One connection of the scripted network.
#[derive(Debug)]
struct Conn {
    /// Where the core connected it.
    addr: String,
    /// Whether the test accepted the connect.
    open: bool,
    /// Decoder of what the core wrote.
    reader: RespReader,
    /// Commands not answered yet, oldest first.
    unanswered: VecDeque<Command>,
}

/// The network of one [`ClientCore`]. See the module docs.
#[derive(Debug, Default)]
pub struct ScriptedNet {
    /// Connections the core opened and did not close.
    conns: BTreeMap<ConnId, Conn>,
}

impl ScriptedNet {
    /// No connection yet.
    pub fn new() -> Self {
        ScriptedNet::default()
    }

    /// Ends the core's turn and carries out its actions (see the module docs).
    pub fn pump(&mut self, core: &mut ClientCore) {
        core.flush();
        while let Some(action) = core.poll_action() {
            match action {
                Action::Open { conn, addr } => {
                    let c = Conn {
                        addr,
                        open: false,
                        reader: RespReader::new(RespLimits::default()),
                        unanswered: VecDeque::new(),
                    };
                    self.conns.insert(conn, c);
                }
                Action::Write { conn } => self.take_output(core, conn),
                Action::Close { conn } => {
                    self.conns.remove(&conn);
                }
            }
        }
    }

    fn take_output(&mut self, core: &mut ClientCore, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| c.open) else {
            return;
        };
        let out = core.output(conn).to_vec();
        core.consume_output(conn, out.len());
        c.reader.feed(&out).expect("the core writes valid RESP");
        while let Some(value) = c.reader.next_value().expect("the core writes valid RESP") {
            let args = value
                .into_array()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| a.as_bytes().cloned())
                .collect();
            c.unanswered.push_back(Command { conn, args });
        }
    }

    /// Connects waiting for an answer: `(conn, addr)`.
    pub fn opening(&self) -> Vec<(ConnId, String)> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.open)
            .map(|(id, c)| (*id, c.addr.clone()))
            .collect()
    }

    /// Open connections to `addr`.
    pub fn open_to(&self, addr: &str) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.open && c.addr == addr)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Where `conn` goes.
    pub fn addr(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.addr.as_str())
    }

    /// Completes the connect of `conn`.
    pub fn accept(&mut self, core: &mut ClientCore, conn: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = true;
            core.handle_connected(conn, now);
            self.pump(core);
        }
    }

    /// Refuses the connect of `conn`.
    pub fn refuse(&mut self, core: &mut ClientCore, conn: ConnId, now: Instant) {
        if self.conns.remove(&conn).is_some() {
            core.handle_closed(conn, Closed::Connect("connection refused".into()), now);
            self.pump(core);
        }
    }

    /// Closes `conn` as a server (or the network) would.
    pub fn drop_conn(&mut self, core: &mut ClientCore, conn: ConnId, now: Instant) {
        if self.conns.remove(&conn).is_some() {
            let why = Closed::Read("connection closed by the server".into());
            core.handle_closed(conn, why, now);
            self.pump(core);
        }
    }

    /// Every unanswered command, connection by connection, oldest first.
    pub fn unanswered(&self) -> Vec<Command> {
        self.conns
            .values()
            .flat_map(|c| c.unanswered.iter().cloned())
            .collect()
    }

    /// The oldest unanswered command of `conn`.
    pub fn next_command(&self, conn: ConnId) -> Option<&Command> {
        self.conns.get(&conn)?.unanswered.front()
    }

    /// Answers the oldest command of `conn` with `value` (a subscribe-family command's
    /// confirmation goes out as a push). Returns the command answered.
    pub fn answer(
        &mut self,
        core: &mut ClientCore,
        conn: ConnId,
        value: &Value,
        now: Instant,
    ) -> Option<Command> {
        let c = self.conns.get_mut(&conn)?;
        let command = c.unanswered.pop_front()?;
        let mut out = BytesMut::new();
        let subscribe = command.name().ends_with("SUBSCRIBE");
        match value.as_array() {
            Some(items) if subscribe => encode_push(&mut out, items),
            _ => encode_value(&mut out, value),
        }
        core.handle_input(conn, &out, now);
        self.pump(core);
        Some(command)
    }

    /// Sends a push frame with `items` on `conn`.
    pub fn push(&mut self, core: &mut ClientCore, conn: ConnId, items: &[Value], now: Instant) {
        if self.conns.contains_key(&conn) {
            let mut out = BytesMut::new();
            encode_push(&mut out, items);
            core.handle_input(conn, &out, now);
            self.pump(core);
        }
    }

    /// Answers, on every connection, the oldest commands for which `server` has an answer,
    /// until it has none; returns how many were answered.
    pub fn serve(
        &mut self,
        core: &mut ClientCore,
        now: Instant,
        mut server: impl FnMut(&Command) -> Option<Value>,
    ) -> usize {
        let mut answered = 0;
        loop {
            let next = self.conns.iter().find_map(|(id, c)| {
                let command = c.unanswered.front()?;
                server(command).map(|v| (*id, v))
            });
            let Some((conn, value)) = next else {
                return answered;
            };
            self.answer(core, conn, &value, now);
            answered += 1;
        }
    }
}

/// A bulk string.
pub fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// `+OK`.
pub fn ok() -> Value {
    Value::Simple(Bytes::from_static(b"OK"))
}

/// An error reply.
pub fn error(message: &str) -> Value {
    Value::Error(Bytes::copy_from_slice(message.as_bytes()))
}

/// What a healthy master answers to the client's handshake (`HELLO`, `SELECT`, `ROLE`), and
/// a sentinel to discovery (`HELLO`, `get-master-addr-by-name` naming `master`, `SUBSCRIBE`);
/// `None` for anything else.
pub fn healthy(command: &Command, master: &str) -> Option<Value> {
    match command.name().as_str() {
        "HELLO" => Some(Value::Map(vec![(bulk("server"), bulk("redis"))])),
        "SELECT" => Some(ok()),
        "ROLE" => Some(Value::Array(vec![bulk("master"), Value::Int(0)])),
        "SENTINEL" => {
            let (host, port) = master.rsplit_once(':')?;
            Some(Value::Array(vec![bulk(host), bulk(port)]))
        }
        "SUBSCRIBE" => Some(Value::Array(vec![
            bulk("subscribe"),
            bulk(command.arg(1)),
            Value::Int(1),
        ])),
        _ => None,
    }
}
