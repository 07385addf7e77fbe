//! Sentinel discovery, sans-io: which sentinel to ask, what to send it, what its answers mean.
//!
//! The machine drives one sentinel connection that the shell opens, writes and closes on its
//! behalf ([`Action`]); the shell feeds back what happened (`handle_*`). A resolution round asks
//! the sentinels in turn, starting from the one that answered last, with
//! `SENTINEL get-master-addr-by-name NAME`:
//!
//! ```text
//!  Idle --resolve--> Connecting(i) --connected--> Querying(i): HELLO 3, get-master-addr
//!   ^                   | failed/closed/error/nil: next sentinel (round over: Failed)
//!   |                Querying --addr--> Resolved; SUBSCRIBE +switch-master --> Watching(i)
//!   +-- round failed      Watching --resolve--> Querying(i) on the same connection
//!                         Watching --push +switch-master NAME ...--> SwitchMaster
//! ```
//!
//! A round where every sentinel failed is [`SentinelError::NoSentinelReachable`]; one where at
//! least one sentinel answered nil (it does not monitor that name) and none gave an address is
//! [`SentinelError::UnknownMaster`]. Verifying the master with `ROLE` is the lanes' job.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;

use super::Secret;
use crate::resp::Value;

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close any current sentinel connection and open one to `addr`.
    Connect { addr: String },
    /// Queue this command on the sentinel connection (one reply expected).
    Send(Vec<Vec<u8>>),
    /// Close the sentinel connection.
    Close,
    /// The sentinels say the master is `master` (`host:port`); verify it with ROLE.
    Resolved { master: String },
    /// The round failed.
    Failed(SentinelError),
    /// A sentinel announced a failover of our master.
    SwitchMaster { from: String, to: String },
}

/// Why a round failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SentinelError {
    /// No sentinel could be reached or answered (each one's failure, in order).
    #[error("no sentinel reachable ({})", .0.join("; "))]
    NoSentinelReachable(Vec<String>),
    /// The sentinels that answered do not know a master by this name.
    #[error("unknown master name `{0}` (sentinels answered nil)")]
    UnknownMaster(String),
}

/// Where the machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No sentinel connection.
    Idle,
    /// Waiting for the connection to sentinel `i`.
    Connecting(usize),
    /// HELLO (when `hello`) and the query sent to sentinel `i`, replies due.
    Querying { index: usize, hello: bool },
    /// The master is known; SUBSCRIBE sent, its confirmation due.
    Subscribing(usize),
    /// Subscribed to `+switch-master` on sentinel `i`; the connection stays open.
    Watching(usize),
}

/// The discovery state machine. See the module docs.
#[derive(Debug)]
pub struct Discovery {
    /// The sentinels' `host:port`s, in configured order.
    sentinels: Vec<String>,
    /// The master's name in the sentinels' config.
    name: String,
    /// Password for the sentinels (`HELLO 3 AUTH default pw`).
    password: Option<Secret>,
    /// Current state.
    state: State,
    /// Sentinels tried in the current round (a round ends after all of them).
    tried: usize,
    /// Whether a sentinel in this round answered nil.
    saw_nil: bool,
    /// Each failed sentinel's reason in this round.
    errors: Vec<String>,
    /// Actions not yet pulled.
    actions: VecDeque<Action>,
}

impl Discovery {
    /// A machine for master `name` behind `sentinels`.
    pub fn new(sentinels: Vec<String>, name: String, password: Option<Secret>) -> Self {
        Discovery {
            sentinels,
            name,
            password,
            state: State::Idle,
            tried: 0,
            saw_nil: false,
            errors: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// Starts a resolution round (no-op if one is running). Reuses a watching connection.
    pub fn resolve(&mut self) {
        match self.state {
            State::Watching(index) => {
                self.begin_round();
                self.state = State::Querying {
                    index,
                    hello: false,
                };
                self.actions.push_back(Action::Send(self.query()));
            }
            State::Idle => {
                self.begin_round();
                if self.sentinels.is_empty() {
                    self.finish_round_failed();
                } else {
                    self.connect(0);
                }
            }
            State::Connecting(_) | State::Querying { .. } | State::Subscribing(_) => {}
        }
    }

    /// Whether a round is running (an answer is awaited).
    pub fn is_resolving(&self) -> bool {
        matches!(self.state, State::Connecting(_) | State::Querying { .. })
    }

    /// Whether a sentinel connection is subscribed to `+switch-master`.
    pub fn is_watching(&self) -> bool {
        matches!(self.state, State::Watching(_))
    }

    /// The shell's connection to the sentinel is established.
    pub fn handle_connected(&mut self) {
        if let State::Connecting(index) = self.state {
            self.state = State::Querying { index, hello: true };
            let mut hello: Vec<Vec<u8>> = vec![b"HELLO".to_vec(), b"3".to_vec()];
            if let Some(pw) = &self.password {
                hello.extend([
                    b"AUTH".to_vec(),
                    b"default".to_vec(),
                    pw.expose().as_bytes().to_vec(),
                ]);
            }
            self.actions.push_back(Action::Send(hello));
            self.actions.push_back(Action::Send(self.query()));
        }
    }

    /// The connection failed, was lost, or timed out.
    pub fn handle_closed(&mut self, reason: &str) {
        match self.state {
            State::Idle => {}
            State::Connecting(i) | State::Querying { index: i, .. } => {
                self.next_sentinel(i, reason)
            }
            // The watch is lost: a new round finds a sentinel to watch (and re-checks the master).
            State::Subscribing(i) | State::Watching(i) => {
                self.begin_round();
                self.next_sentinel(i, reason);
            }
        }
    }

    /// A reply on the sentinel connection.
    pub fn handle_reply(&mut self, value: Value) {
        match self.state {
            State::Querying { index, hello: true } => {
                if let Some(msg) = value.error_message() {
                    self.fail_sentinel(index, &format!("HELLO: {msg}"));
                } else {
                    self.state = State::Querying {
                        index,
                        hello: false,
                    };
                }
            }
            State::Querying {
                index,
                hello: false,
            } => self.handle_answer(index, value),
            State::Subscribing(index) => match value.error_message() {
                Some(msg) => {
                    self.begin_round();
                    self.fail_sentinel(index, &format!("SUBSCRIBE: {msg}"));
                }
                None => self.state = State::Watching(index),
            },
            State::Idle | State::Connecting(_) | State::Watching(_) => {}
        }
    }

    /// A push on the sentinel connection: `["message", "+switch-master", "NAME oldip oldport
    /// newip newport"]`.
    pub fn handle_push(&mut self, value: Value) {
        let Some([kind, channel, payload]) = value.as_array() else {
            return;
        };
        if kind.as_str() != Some("message") || channel.as_str() != Some("+switch-master") {
            return;
        }
        let Some(text) = payload.as_str() else {
            return;
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        if let [name, old_ip, old_port, new_ip, new_port] = words[..] {
            if name == self.name {
                self.actions.push_back(Action::SwitchMaster {
                    from: join_host_port(old_ip, old_port),
                    to: join_host_port(new_ip, new_port),
                });
            }
        }
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The answer to `get-master-addr-by-name`.
    fn handle_answer(&mut self, index: usize, value: Value) {
        if value.is_nil() {
            self.saw_nil = true;
            self.fail_sentinel(index, "does not know the master");
            return;
        }
        if let Some(msg) = value.error_message() {
            self.fail_sentinel(index, &msg);
            return;
        }
        let addr = match value.as_array() {
            Some([host, port]) => host.as_str().zip(port.as_str()),
            _ => None,
        };
        let Some((host, port)) = addr else {
            self.fail_sentinel(index, "malformed get-master-addr-by-name reply");
            return;
        };
        let master = join_host_port(host, port);
        self.state = State::Subscribing(index);
        self.actions.push_back(Action::Resolved { master });
        self.actions.push_back(Action::Send(vec![
            b"SUBSCRIBE".to_vec(),
            b"+switch-master".to_vec(),
        ]));
    }

    fn query(&self) -> Vec<Vec<u8>> {
        vec![
            b"SENTINEL".to_vec(),
            b"get-master-addr-by-name".to_vec(),
            self.name.as_bytes().to_vec(),
        ]
    }

    fn begin_round(&mut self) {
        self.tried = 0;
        self.saw_nil = false;
        self.errors.clear();
    }

    /// Sentinel `index` cannot help: drop its connection and try the next one.
    fn fail_sentinel(&mut self, index: usize, reason: &str) {
        self.actions.push_back(Action::Close);
        self.next_sentinel(index, reason);
    }

    fn next_sentinel(&mut self, index: usize, reason: &str) {
        let addr = self.sentinels.get(index).map_or("?", String::as_str);
        self.errors.push(format!("{addr}: {reason}"));
        self.tried += 1;
        if self.tried >= self.sentinels.len() {
            self.finish_round_failed();
        } else {
            self.connect((index + 1) % self.sentinels.len());
        }
    }

    fn connect(&mut self, index: usize) {
        if let Some(addr) = self.sentinels.get(index) {
            self.state = State::Connecting(index);
            self.actions
                .push_back(Action::Connect { addr: addr.clone() });
        }
    }

    fn finish_round_failed(&mut self) {
        self.state = State::Idle;
        let error = if self.saw_nil {
            SentinelError::UnknownMaster(self.name.clone())
        } else {
            SentinelError::NoSentinelReachable(std::mem::take(&mut self.errors))
        };
        self.actions.push_back(Action::Failed(error));
    }
}

/// `host:port`, bracketing IPv6 hosts.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
