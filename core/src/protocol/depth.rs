//! How deeply a JSON value nests, by one scan of its bytes: no parse, no allocation, no
//! recursion. Used on `data` (already validated JSON: serde_json checked it while reading the
//! frame), so the scan only has to tell brackets inside strings from structure.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Deepest nesting of `data` a client may send: `[[...]]` with 64 brackets is accepted, 65 is
/// `bad_request`. Common JSON parsers stop at 128 (serde_json) or about 1,000 (Python): a value a
/// recipient cannot parse could never be acked.
pub const MAX_DATA_DEPTH: usize = 64;

/// Whether the valid JSON text `json` nests more than `max` arrays/objects deep.
///
/// A value with fewer than `2 * (max + 1)` bytes cannot (each level takes an opening and a
/// closing byte), so short payloads cost one comparison. Otherwise one pass: a `"` outside a
/// string opens one, inside a string a `\` skips the byte after it and a `"` closes it; outside
/// strings `[`/`{` go one level down and `]`/`}` one up. Stops at the first level past `max`.
pub fn nests_deeper_than(json: &str, max: usize) -> bool {
    let bytes = json.as_bytes();
    if bytes.len() < 2 * (max + 1) {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// The reference: depth of a parsed value (recursion is fine for test-sized values).
    fn depth_of(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert!(!nests_deeper_than(&nested(64), 64));
        assert!(nests_deeper_than(&nested(65), 64));
        assert!(nests_deeper_than(&nested(30_000), 64));
        assert!(!nests_deeper_than("1", 0));
        assert!(nests_deeper_than("[]", 0));
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let s = format!(
            r#"["{}", "\"[[[[", "\\", {{"k\"[": "]]]\\"}}]"#,
            "[".repeat(200)
        );
        assert!(!nests_deeper_than(&s, 2));
        assert!(nests_deeper_than(&s, 1));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            // Strings full of the characters the scan must not be fooled by.
            "[\\[\\]{}\"\\\\a\\u{e9}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[\\[\\]{}\"\\\\k]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_parser(v in arb_json(), max in 0usize..14, pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            prop_assert_eq!(nests_deeper_than(&text, max), depth_of(&v) > max, "{}", text);
        }
    }
}
