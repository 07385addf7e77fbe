//! A batch's JSON body and its signature (docs/api.md, "Webhooks"):
//!
//! ```text
//! {"events":[{"type":"connect","seq":1,"user":"alice","device":"phone","session":"0-5-1","ts":1765000000}, ...]}
//! X-Hermod-Timestamp: 1765000003
//! X-Hermod-Signature: sha256=<hex HMAC-SHA256 of "1765000003." followed by the body>
//! ```
//!
//! `seq` numbers the events this gateway process took from its queue, from 1, with no gap: a
//! receiver that sees one twice got a retried batch (delivery is at-least-once).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use super::{HookEvent, What};

/// One event on the wire.
#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    user: &'a str,
    device: &'a str,
    session: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    ts: u64,
}

#[derive(Serialize)]
struct WireBatch<'a> {
    events: Vec<WireEvent<'a>>,
}

/// The body of a POST of `events`, numbered from `first_seq`.
pub fn encode_batch(events: &[HookEvent], first_seq: u64) -> Vec<u8> {
    let events = events
        .iter()
        .zip(first_seq..)
        .map(|(e, seq)| {
            let (mut room, mut code, mut id, mut data) = (None, None, None, None);
            match &e.what {
                What::Join { room: r } | What::Leave { room: r } => room = Some(r.as_str()),
                What::Disconnect { code: c } => code = Some(*c),
                What::Publish(p) => {
                    room = Some(p.room.as_str());
                    id = Some(p.id.as_str());
                    data = Some(&*p.data);
                }
                What::Connect => {}
            }
            WireEvent {
                kind: e.what.kind().as_str(),
                seq,
                user: e.user.as_str(),
                device: e.device.as_str(),
                session: e.session.to_string(),
                room,
                code,
                id,
                data,
                ts: e.ts,
            }
        })
        .collect();
    // Strings, integers and a derived struct: serializing cannot fail.
    serde_json::to_vec(&WireBatch { events }).unwrap_or_default()
}

/// The `X-Hermod-Signature` value of `body` sent at unix second `ts`: `sha256=` and the hex
/// HMAC-SHA256, under `secret`, of `"{ts}.{body}"`.
pub fn signature(secret: &[u8], ts: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::Published;
    use hermod_core::bus::SessionKey;
    use hermod_core::ids::{MsgId, Name};

    fn event(what: What) -> HookEvent {
        let n = |s| Name::parse("user", s).expect("valid");
        HookEvent {
            what,
            user: n("alice"),
            device: n("phone"),
            session: SessionKey {
                worker: 0,
                slot: 5,
                generation: 1,
            },
            ts: 1_765_000_000,
        }
    }

    #[test]
    fn a_batch_is_the_documented_json() {
        let room = Name::parse("room", "lobby").expect("valid");
        let body = encode_batch(
            &[
                event(What::Connect),
                event(What::Join { room }),
                event(What::Disconnect { code: 1000 }),
                event(What::Publish(Box::new(Published {
                    room: Name::parse("room", "lobby").expect("valid"),
                    id: MsgId::new("7-0"),
                    data: RawValue::from_string(r#"{"n": [1]}"#.to_owned()).expect("json"),
                }))),
            ],
            7,
        );
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            concat!(
                r#"{"events":["#,
                r#"{"type":"connect","seq":7,"user":"alice","device":"phone","session":"0-5-1","ts":1765000000},"#,
                r#"{"type":"join","seq":8,"user":"alice","device":"phone","session":"0-5-1","room":"lobby","ts":1765000000},"#,
                r#"{"type":"disconnect","seq":9,"user":"alice","device":"phone","session":"0-5-1","code":1000,"ts":1765000000},"#,
                r#"{"type":"publish","seq":10,"user":"alice","device":"phone","session":"0-5-1","room":"lobby","id":"7-0","data":{"n": [1]},"ts":1765000000}"#,
                r#"]}"#
            )
        );
    }

    /// The value Python's `hmac.new(b"Jefe", b"0.what do ya want for nothing?", "sha256")`
    /// gives: what a receiver computes.
    #[test]
    fn the_signature_is_hmac_sha256_of_ts_dot_body() {
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        let python = "37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc";
        assert_eq!(sig, format!("sha256={python}"));
        assert_ne!(sig, signature(b"Jefe", 1, b"what do ya want for nothing?"));
        assert_eq!(sig.len(), 7 + 64);
    }
}
