//! Whether a text is one JSON value (RFC 8259), for JSON column values that are emitted
//! inline in events: they must be valid JSON, or the event's line would not be.
//!
//! [`is_valid`] first runs a scanner of the grammar (no allocation but a small stack of open
//! containers, no depth limit) and, only when the scanner rejects, asks serde_json. serde_json
//! stays the authority for every rejection, so the scanner can only make acceptance faster:
//! what matters is that it never accepts what serde_json rejects (the property test below
//! compares the two). MariaDB's JSON columns are text checked per row: serde_json's
//! `IgnoredAny` was a quarter of the binlog reader's time on JSON-heavy rows.

use crate::value::needs_escape;

/// Whether `s` is exactly one JSON value, with optional whitespace around it.
pub fn is_valid(s: &str) -> bool {
    scan(s.as_bytes()) || serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// The grammar, iteratively: `stack` holds the open containers (`{` or `[`).
fn scan(b: &[u8]) -> bool {
    let mut stack: Vec<u8> = Vec::new();
    let mut i = 0;
    'value: loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'{') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(b'{');
                    match member_key(b, i) {
                        Some(j) => i = j,
                        None => return false,
                    }
                    continue 'value;
                }
            }
            Some(b'[') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(b'[');
                    continue 'value;
                }
            }
            Some(b'"') => match string(b, i) {
                Some(j) => i = j,
                None => return false,
            },
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            Some(b'-' | b'0'..=b'9') => match number(b, i) {
                Some(j) => i = j,
                None => return false,
            },
            _ => return false,
        }
        // A value ended: close containers until one takes another value.
        loop {
            i = skip_ws(b, i);
            match (stack.last(), b.get(i)) {
                (None, _) => return i == b.len(),
                (Some(b'{'), Some(b',')) => {
                    match member_key(b, skip_ws(b, i + 1)) {
                        Some(j) => i = j,
                        None => return false,
                    }
                    continue 'value;
                }
                (Some(b'['), Some(b',')) => {
                    i += 1;
                    continue 'value;
                }
                (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']')) => {
                    stack.pop();
                    i += 1;
                }
                _ => return false,
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// A member's key and its colon, from `i` (at the key's quote): the index after the colon.
fn member_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let j = skip_ws(b, string(b, i)?);
    (b.get(j) == Some(&b':')).then_some(j + 1)
}

/// A string from its opening quote at `i`: the index after its closing quote.
fn string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        // Blocks without a quote, a backslash or a control character.
        while let Some(block) = b.get(j..j + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(block);
            if needs_escape(u64::from_le_bytes(w)) {
                break;
            }
            j += 8;
        }
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => match *b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let hex = b.get(j + 2..j + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    j += 6;
                }
                _ => return None,
            },
            0x00..=0x1f => return None,
            _ => j += 1,
        }
    }
}

/// A number from `i`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; the index
/// after it.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| -> Option<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_ok(s: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
    }

    #[test]
    fn the_scanner_agrees_with_serde_json_on_the_edges() {
        let cases = [
            "",
            " ",
            "null",
            " true ",
            "false",
            "nul",
            "truex",
            "0",
            "-0",
            "01",
            "-",
            "1.",
            "1.5",
            ".5",
            "1e5",
            "1E+5",
            "1e-5",
            "1e",
            "1e+",
            "-1.5e10",
            "1.5.5",
            "[]",
            "[ ]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1,2]",
            "{}",
            "{ }",
            "{\"a\":1}",
            "{\"a\" : 1 , \"b\":[]}",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "{,}",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"\\u00g9\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\/\"",
            "\"tab\there\"",
            "\"nl\nhere\"",
            "\"unterminated",
            "\"é😀\"",
            "[[[[]]]]",
            "[[[[]]]",
            "[]]",
            "{}{}",
            "1 2",
            "{\"a\":{\"b\":{\"c\":[1,{\"d\":null}]}}}",
            "\u{feff}1",
            "[1]\n",
            "\t{}\r\n",
        ];
        for c in cases {
            assert_eq!(scan(c.as_bytes()), serde_ok(c), "{c:?}");
            assert_eq!(is_valid(c), serde_ok(c), "{c:?}");
        }
    }

    #[test]
    fn depth_has_no_limit() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(scan(deep.as_bytes()));
        assert!(!scan(
            format!("{}1{}", "[".repeat(10_000), "]".repeat(9_999)).as_bytes()
        ));
    }

    /// Valid JSON documents, as serde_json writes them (compact or pretty).
    fn document() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            // Short numbers: one edit makes `01`, `[1,]`, `-` of them.
            (-10i64..10).prop_map(|n| serde_json::json!(n)),
            Just(serde_json::json!(0.5)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::json!(f)),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        (value, any::<bool>()).prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                v.to_string()
            }
        })
    }

    /// A valid document with one edit: a character inserted, removed or replaced, from
    /// the characters that matter to the grammar.
    fn edited() -> impl Strategy<Value = String> {
        const CHARS: &[char] = &[
            '{', '}', '[', ']', ',', ':', '"', '\\', ' ', '0', '1', '9', '.', 'e', 'E', '+', '-',
            't', 'f', 'n', 'u', 'l', 'x', '/', '\n', '\t', '\u{1}', '\u{1f}', 'é',
        ];
        (
            document(),
            any::<proptest::sample::Index>(),
            0u8..3,
            proptest::sample::select(CHARS),
        )
            .prop_map(|(d, at, edit, c)| {
                let bounds: Vec<usize> =
                    d.char_indices().map(|(i, _)| i).chain([d.len()]).collect();
                let i = bounds[at.index(bounds.len())];
                let next = d[i..].chars().next().map_or(i, |ch| i + ch.len_utf8());
                let c = c.to_string();
                match edit {
                    0 => format!("{}{c}{}", &d[..i], &d[i..]),
                    1 => format!("{}{}", &d[..i], &d[next..]),
                    _ => format!("{}{c}{}", &d[..i], &d[next..]),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_scanner_accepts_exactly_what_serde_json_accepts(s in edited()) {
            prop_assert_eq!(scan(s.as_bytes()), serde_ok(&s), "{:?}", s);
        }

        #[test]
        fn every_document_is_accepted_and_no_cut_of_one_is_wrongly(d in document(), cut in 0usize..64) {
            prop_assert!(scan(d.as_bytes()), "{:?}", d);
            // Cutting a document short (at a character boundary) must agree too.
            let at = d.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(d.len());
            let part = &d[..at];
            prop_assert_eq!(scan(part.as_bytes()), serde_ok(part), "{:?}", part);
        }
    }
}
