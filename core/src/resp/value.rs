//! [`Value`]: one decoded RESP3 reply, owning its bytes (zero-copy slices of the read buffer).

use bytes::Bytes;
use redis_protocol::resp3::types::BytesFrame;

use super::RespError;

/// One RESP3 value. Blob and simple errors both become [`Value::Error`]; RESP3 verbatim strings
/// and big numbers become [`Value::Bulk`] (their text); push frames are delivered apart, as the
/// array of their elements.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `_` (or a RESP2 `$-1` / `*-1`).
    Nil,
    /// `:`
    Int(i64),
    /// `,`
    Double(f64),
    /// `#t` / `#f`
    Bool(bool),
    /// `+`
    Simple(Bytes),
    /// `$`, `=` (verbatim, without its format prefix), `(` (big number, as text).
    Bulk(Bytes),
    /// `-` or `!`: the server's error message, e.g. `ERR unknown command`.
    Error(Bytes),
    /// `*` (and the elements of a `>` push).
    Array(Vec<Value>),
    /// `%`: key/value pairs. The order is not the server's (the decoder hashes the keys).
    Map(Vec<(Value, Value)>),
    /// `~`
    Set(Vec<Value>),
}

impl Value {
    /// The bytes of a bulk or simple string (also of an error).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bulk(b) | Value::Simple(b) | Value::Error(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a bulk or simple string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a string holding a decimal integer (RESP2-style replies).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bulk(_) | Value::Simple(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array or a set.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) | Value::Set(items) => Some(items),
            _ => None,
        }
    }

    /// Consumes the value into the elements of an array or a set.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(items) | Value::Set(items) => Some(items),
            _ => None,
        }
    }

    /// The pairs of a map.
    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(pairs) => Some(pairs),
            _ => None,
        }
    }

    /// Looks a key up in a map by its string form (e.g. a `HELLO` reply's `role`).
    pub fn map_get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Whether this is a nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The error message of an error reply, lossily as text.
    pub fn error_message(&self) -> Option<String> {
        match self {
            Value::Error(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Converts a decoded frame. Attributes are dropped; push frames become arrays (the caller
/// knows they were pushes); `HELLO` and streamed chunks cannot be replies.
pub(crate) fn from_frame(frame: BytesFrame) -> Result<Value, RespError> {
    Ok(match frame {
        BytesFrame::BlobString { data, .. }
        | BytesFrame::BigNumber { data, .. }
        | BytesFrame::VerbatimString { data, .. } => Value::Bulk(data),
        BytesFrame::SimpleString { data, .. } => Value::Simple(data),
        BytesFrame::BlobError { data, .. } => Value::Error(data),
        BytesFrame::SimpleError { data, .. } => Value::Error(data.into_inner()),
        BytesFrame::Boolean { data, .. } => Value::Bool(data),
        BytesFrame::Null => Value::Nil,
        BytesFrame::Number { data, .. } => Value::Int(data),
        BytesFrame::Double { data, .. } => Value::Double(data),
        BytesFrame::Array { data, .. } | BytesFrame::Push { data, .. } => {
            Value::Array(data.into_iter().map(from_frame).collect::<Result<_, _>>()?)
        }
        BytesFrame::Set { data, .. } => {
            Value::Set(data.into_iter().map(from_frame).collect::<Result<_, _>>()?)
        }
        BytesFrame::Map { data, .. } => Value::Map(
            data.into_iter()
                .map(|(k, v)| Ok((from_frame(k)?, from_frame(v)?)))
                .collect::<Result<_, RespError>>()?,
        ),
        BytesFrame::Hello { .. } | BytesFrame::ChunkedString(_) => {
            return Err(RespError::Protocol(
                "unexpected frame type in a reply".into(),
            ))
        }
    })
}
