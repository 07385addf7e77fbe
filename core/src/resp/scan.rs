//! A cheap structural pre-scan of one RESP3 frame, run before the real decoder.
//!
//! It answers "is a whole frame buffered, and how long is it?" while enforcing [`RespLimits`]
//! (bulk size, nesting depth, aggregate length, line length) *before* redis-protocol's recursive
//! decoder sees the bytes, so hostile input can neither overflow the stack nor make the decoder
//! allocate for a billion elements. It is iterative (an explicit stack of remaining counts) and
//! skips bulk payloads by their length, and it reports how many bytes are needed before another
//! scan can make progress, so a large bulk arriving in small reads is not rescanned per read.

use super::{RespError, RespLimits};

/// The outcome of scanning the front of the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A whole frame of this many bytes is buffered.
    Complete(usize),
    /// Not yet; rescanning is pointless until the buffer holds at least this many bytes.
    Incomplete(usize),
}

/// Scans the frame at the front of `buf`.
pub(crate) fn scan_frame(buf: &[u8], limits: &RespLimits) -> Result<Scan, RespError> {
    // Remaining children of each open aggregate, innermost last.
    let mut open: Vec<usize> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(Scan::Incomplete(pos + 1));
        };
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > limits.max_line {
                return Err(RespError::TooLarge("line"));
            }
            return Ok(Scan::Incomplete(buf.len() + 1));
        };
        if line_end - pos > limits.max_line {
            return Err(RespError::TooLarge("line"));
        }
        let line = &buf[pos + 1..line_end];
        pos = line_end + 2;
        let children = match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => 0,
            b'$' | b'!' | b'=' => {
                match parse_len(line, kind == b'$')? {
                    None => {} // RESP2 null bulk
                    Some(len) => {
                        if len > limits.max_bulk {
                            return Err(RespError::TooLarge("bulk string"));
                        }
                        let end = pos + len + 2;
                        if buf.len() < end {
                            return Ok(Scan::Incomplete(end));
                        }
                        if &buf[pos + len..end] != b"\r\n" {
                            return Err(RespError::Protocol(
                                "bulk string not ended by CRLF".into(),
                            ));
                        }
                        pos = end;
                    }
                }
                0
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = parse_len(line, kind == b'*')?.unwrap_or(0);
                if n > limits.max_array_len {
                    return Err(RespError::TooLarge("aggregate"));
                }
                match kind {
                    b'%' => n * 2,
                    // An attribute map is followed by the frame it annotates.
                    b'|' => n * 2 + 1,
                    _ => n,
                }
            }
            other => {
                return Err(RespError::Protocol(format!(
                    "unexpected type byte 0x{other:02x}"
                )))
            }
        };
        if children > 0 {
            if open.len() >= limits.max_depth {
                return Err(RespError::TooLarge("nesting depth"));
            }
            open.push(children);
            continue;
        }
        // One element is complete: count it against its parents, closing finished aggregates.
        loop {
            let Some(remaining) = open.last_mut() else {
                return Ok(Scan::Complete(pos));
            };
            *remaining -= 1;
            if *remaining > 0 {
                break;
            }
            open.pop();
        }
    }
}

/// The index of the next `\r\n` at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

/// Parses a length line: decimal digits, or `-1` (a RESP2 null) where `allow_null`.
fn parse_len(line: &[u8], allow_null: bool) -> Result<Option<usize>, RespError> {
    if allow_null && line == b"-1" {
        return Ok(None);
    }
    if line.is_empty() || line.len() > 18 || !line.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Protocol("bad length".into()));
    }
    let text = std::str::from_utf8(line).map_err(|_| RespError::Protocol("bad length".into()))?;
    text.parse()
        .map(Some)
        .map_err(|_| RespError::Protocol("bad length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(buf: &[u8]) -> Result<Scan, RespError> {
        scan_frame(buf, &RespLimits::default())
    }

    #[test]
    fn complete_and_incomplete() {
        assert_eq!(scan(b"+OK\r\n"), Ok(Scan::Complete(5)));
        assert_eq!(scan(b"+OK\r"), Ok(Scan::Incomplete(5)));
        assert_eq!(scan(b""), Ok(Scan::Incomplete(1)));
        assert_eq!(scan(b"$5\r\nhel"), Ok(Scan::Incomplete(11)));
        assert_eq!(scan(b"$5\r\nhello\r\n+x"), Ok(Scan::Complete(11)));
        assert_eq!(scan(b"*2\r\n:1\r\n*1\r\n_\r\n"), Ok(Scan::Complete(15)));
        assert_eq!(scan(b"*2\r\n:1\r\n"), Ok(Scan::Incomplete(9)));
        assert_eq!(scan(b"%1\r\n+a\r\n:1\r\n"), Ok(Scan::Complete(12)));
        assert_eq!(scan(b"*0\r\n"), Ok(Scan::Complete(4)));
        assert_eq!(scan(b"$-1\r\n"), Ok(Scan::Complete(5)));
    }

    #[test]
    fn limits_and_garbage() {
        let limits = RespLimits {
            max_bulk: 4,
            max_depth: 2,
            max_array_len: 3,
            max_line: 16,
            ..RespLimits::default()
        };
        let scan = |b: &[u8]| scan_frame(b, &limits);
        assert_eq!(scan(b"$5\r\n"), Err(RespError::TooLarge("bulk string")));
        assert_eq!(scan(b"*4\r\n"), Err(RespError::TooLarge("aggregate")));
        assert_eq!(
            scan(b"*1\r\n*1\r\n*1\r\n"),
            Err(RespError::TooLarge("nesting depth"))
        );
        assert_eq!(scan(&[b'+'; 40]), Err(RespError::TooLarge("line")));
        assert!(matches!(scan(b"?x\r\n"), Err(RespError::Protocol(_))));
        assert!(matches!(scan(b"*?\r\n"), Err(RespError::Protocol(_))));
        assert!(matches!(scan(b"$2\r\nabcd"), Err(RespError::Protocol(_))));
        assert!(matches!(scan(b"%-1\r\n"), Err(RespError::Protocol(_))));
    }
}
