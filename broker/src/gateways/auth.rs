//! The gate in front of a link's commands, sans-io: until a link presented the link secret
//! (`HELLO 3 AUTH hermod <secret>` or `AUTH hermod <secret>`) it may send only `HELLO`, `AUTH`
//! and `PING`; anything else, or a wrong secret, is answered with an error and the link closed.
//! With no secret configured (a loopback-only listener) every link is authenticated from the
//! start and credentials are accepted and ignored, so gateways can be given the secret before
//! their brokers are.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use bytes::Bytes;
use hermod_core::link::{Credentials, LinkCommand, LinkError, LinkSecret};
use hermod_core::resp::Value;

/// Why a link was closed before it authenticated (its index is that of its `reason` label,
/// `crate::metrics::AUTH_REFUSAL_REASONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It presented a wrong secret (or user name).
    WrongSecret = 0,
    /// It sent a command other than HELLO/AUTH/PING first.
    NotAuthenticated = 1,
    /// It did not authenticate within the deadline.
    Deadline = 2,
    /// It sent a frame past the pre-auth bounds (or not RESP at all).
    Frame = 3,
    /// Too many links were waiting to authenticate: the oldest makes room for a new one.
    Evicted = 4,
}

/// What to do with one decoded command.
#[derive(Debug)]
pub enum Gate {
    /// Serve it as usual.
    Serve(Result<LinkCommand, LinkError>),
    /// This command authenticated the link: mark it, then serve it (HELLO answers its map,
    /// AUTH `+OK`).
    Authenticated(LinkCommand),
    /// Answer this error; the link stays (HELLO without AUTH: it may still authenticate).
    Answer(Value),
    /// Answer this error and close the link, counted by reason.
    Refuse(Value, Refusal),
}

/// Passes `cmd` from a link (`authed` or not) through the gate of `secret`.
pub fn gate(
    secret: Option<&LinkSecret>,
    authed: bool,
    cmd: Result<LinkCommand, LinkError>,
) -> Gate {
    let Some(secret) = secret else {
        return Gate::Serve(cmd);
    };
    let presented = match &cmd {
        Ok(LinkCommand::Hello { auth: Some(c), .. }) | Ok(LinkCommand::Auth(c)) => Some(c),
        _ => None,
    };
    if let Some(c) = presented {
        return match (verify(secret, c), cmd) {
            (true, Ok(cmd)) => Gate::Authenticated(cmd),
            _ => Gate::Refuse(wrongpass(), Refusal::WrongSecret),
        };
    }
    if authed {
        return Gate::Serve(cmd);
    }
    match cmd {
        Ok(LinkCommand::Ping { .. }) => Gate::Serve(cmd),
        Ok(LinkCommand::Hello { .. }) => Gate::Answer(Value::Error(Bytes::from_static(
            b"NOAUTH HELLO must be called with AUTH hermod <link secret>",
        ))),
        _ => Gate::Refuse(
            Value::Error(Bytes::from_static(b"NOAUTH Authentication required.")),
            Refusal::NotAuthenticated,
        ),
    }
}

fn verify(secret: &LinkSecret, c: &Credentials) -> bool {
    secret.verify(&c.user, &c.pass)
}

fn wrongpass() -> Value {
    Value::Error(Bytes::from_static(
        b"WRONGPASS invalid username-password pair or user is disabled.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &'static [u8], pass: &'static [u8]) -> Credentials {
        Credentials {
            user: Bytes::from_static(user),
            pass: Bytes::from_static(pass),
        }
    }

    const S: &[u8] = b"0123456789abcdef";

    #[test]
    fn only_hello_auth_ping_before_auth() {
        let secret = LinkSecret::new("0123456789abcdef");
        let s = Some(&secret);
        let ping = || Ok(LinkCommand::Ping { message: None });
        assert!(matches!(gate(s, false, ping()), Gate::Serve(Ok(_))));
        let hello = Ok(LinkCommand::Hello {
            proto: Some(3),
            auth: None,
        });
        assert!(matches!(gate(s, false, hello), Gate::Answer(_)));
        let info = gate(s, false, Ok(LinkCommand::Info));
        assert!(matches!(info, Gate::Refuse(_, Refusal::NotAuthenticated)));
        let bad = gate(s, false, Err(LinkError::NotACommand));
        assert!(matches!(bad, Gate::Refuse(_, Refusal::NotAuthenticated)));
        let good = Ok(LinkCommand::Hello {
            proto: Some(3),
            auth: Some(creds(b"hermod", S)),
        });
        assert!(matches!(gate(s, false, good), Gate::Authenticated(_)));
        let wrong = Ok(LinkCommand::Auth(creds(b"hermod", b"0123456789abcdeX")));
        match gate(s, false, wrong) {
            Gate::Refuse(Value::Error(e), Refusal::WrongSecret) => {
                assert!(e.starts_with(b"WRONGPASS"))
            }
            other => panic!("{other:?}"),
        }
        let user = Ok(LinkCommand::Auth(creds(b"default", S)));
        assert!(matches!(
            gate(s, false, user),
            Gate::Refuse(_, Refusal::WrongSecret)
        ));
        // Once authenticated, everything is served; a wrong re-AUTH still closes.
        assert!(matches!(
            gate(s, true, Ok(LinkCommand::Info)),
            Gate::Serve(Ok(_))
        ));
        let wrong = Ok(LinkCommand::Auth(creds(b"hermod", b"nope")));
        assert!(matches!(gate(s, true, wrong), Gate::Refuse(..)));
    }

    #[test]
    fn without_a_secret_everything_is_served() {
        let any = Ok(LinkCommand::Auth(creds(b"hermod", b"whatever")));
        assert!(matches!(gate(None, true, any), Gate::Serve(Ok(_))));
        assert!(matches!(
            gate(None, true, Ok(LinkCommand::Info)),
            Gate::Serve(Ok(_))
        ));
    }
}
