//! MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`): the diff vector a
//! PARTIAL_UPDATE_ROWS_EVENT carries in place of a JSON column's new document, and its
//! application to the old document.
//!
//! Owns the diff-vector layout, the path subset MySQL writes and the apply rules; not the
//! rows event around it (`rows.rs`) nor binary JSON itself (`jsonb.rs`).
//!
//! Layout (MySQL `sql/json_diff.cc`, `Json_diff_vector::write_binary`): a 4-byte
//! little-endian length of what follows, then diffs until it is used up. Each diff: an
//! operation byte (0 REPLACE, 1 INSERT, 2 REMOVE), the path as a packed length
//! (`net_field_length`) and its text (`$.a[1]."b c"`), and for REPLACE and INSERT a packed
//! length and a binary JSON value.
//!
//! Apply rules (MySQL `apply_json_diffs`, without auto-wrapping): the path must have a leg
//! (the root is never a diff); REPLACE needs the path to exist; INSERT needs its parent to
//! exist and either a member name not yet in the object (added in MySQL's key order:
//! shorter keys first, then bytewise) or an array position (inserted there, past the end
//! appended); REMOVE needs the member or element to exist. Anything else is a typed
//! error: the replica would reject the event too.

use super::jsonb::{self, Doc, JsonbError};
use super::sql::lenenc;
use std::cmp::Ordering;
use std::fmt;

/// A diff vector that cannot be read or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("malformed JSON diff: {0}")]
    Malformed(String),
    #[error("JSON diff path {path:?}: {why}")]
    Path { path: String, why: String },
    #[error("JSON diff {op} {path}: {why}")]
    NotApplicable {
        op: Operation,
        path: String,
        why: &'static str,
    },
    #[error("JSON diff value at {path}: {source}")]
    Value {
        path: String,
        #[source]
        source: JsonbError,
    },
}

/// What a diff does at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Replace,
    Insert,
    Remove,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Replace => "REPLACE",
            Operation::Insert => "INSERT",
            Operation::Remove => "REMOVE",
        })
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leg {
    /// `.key` or `."quoted key"`.
    Member(String),
    /// `[n]`.
    Index(u64),
    /// `[last]` (0) or `[last-n]` (n).
    FromEnd(u64),
}

/// One diff of a vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub op: Operation,
    /// The path as written (for messages).
    pub path: String,
    pub legs: Vec<Leg>,
    /// The new value (REPLACE, INSERT).
    pub value: Option<Doc>,
}

fn path_err<T>(path: &str, why: impl Into<String>) -> Result<T, DiffError> {
    Err(DiffError::Path {
        path: path.to_owned(),
        why: why.into(),
    })
}

/// Parses a path MySQL writes in diffs: `$` followed by `.key`, `."quoted key"` (a JSON
/// string), `[n]`, `[last]` or `[last-n]`; whitespace between legs is allowed. Wildcards
/// and ranges (never written in diffs) are errors.
pub fn parse_path(text: &str) -> Result<Vec<Leg>, DiffError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'$') {
        return path_err(text, "does not start with $");
    }
    i += 1;
    let mut legs = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None => return Ok(legs),
            Some(b'.') => {
                i = skip_ws(b, i + 1);
                let (key, next) = member(text, i)?;
                legs.push(Leg::Member(key));
                i = next;
            }
            Some(b'[') => {
                let close = match b.get(i..).and_then(|r| r.iter().position(|&c| c == b']')) {
                    Some(n) => i + n,
                    None => return path_err(text, "unclosed ["),
                };
                let inner = text.get(i + 1..close).unwrap_or_default().trim();
                legs.push(cell(text, inner)?);
                i = close + 1;
            }
            Some(&c) => {
                return path_err(text, format!("unexpected {:?} at byte {i}", char::from(c)))
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// A member name at `text[i..]`: quoted (a JSON string) or bare (up to the next `.`, `[`
/// or whitespace); the name and the index after it.
fn member(text: &str, i: usize) -> Result<(String, usize), DiffError> {
    let b = text.as_bytes();
    if b.get(i) == Some(&b'"') {
        let mut j = i + 1;
        loop {
            match b.get(j) {
                None => return path_err(text, "unterminated quoted member name"),
                Some(b'\\') => j += 2,
                Some(b'"') => break,
                Some(_) => j += 1,
            }
        }
        let quoted = text.get(i..=j).unwrap_or_default();
        return match serde_json::from_str::<String>(quoted) {
            Ok(k) => Ok((k, j + 1)),
            Err(e) => path_err(text, format!("bad quoted member name {quoted}: {e}")),
        };
    }
    let end = b
        .get(i..)
        .and_then(|r| {
            r.iter()
                .position(|&c| c == b'.' || c == b'[' || c.is_ascii_whitespace())
        })
        .map_or(b.len(), |n| i + n);
    let key = text.get(i..end).unwrap_or_default();
    if key.is_empty() {
        return path_err(text, format!("empty member name at byte {i}"));
    }
    if key.contains(['*', '"', ']']) {
        return path_err(text, format!("member name {key:?} is not a plain name"));
    }
    Ok((key.to_owned(), end))
}

fn cell(text: &str, inner: &str) -> Result<Leg, DiffError> {
    if let Some(rest) = inner.strip_prefix("last") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(Leg::FromEnd(0));
        }
        if let Some(n) = rest.strip_prefix('-') {
            if let Ok(n) = n.trim().parse::<u64>() {
                return Ok(Leg::FromEnd(n));
            }
        }
    } else if !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(n) = inner.parse::<u64>() {
            return Ok(Leg::Index(n));
        }
    }
    path_err(text, format!("array index [{inner}] is not a position"))
}

fn malformed<T>(m: impl Into<String>) -> Result<T, DiffError> {
    Err(DiffError::Malformed(m.into()))
}

/// Reads a diff vector at the start of `buf`; the diffs and the bytes it took (its 4-byte
/// length included).
pub fn read_vector(buf: &[u8]) -> Result<(Vec<Diff>, usize), DiffError> {
    let Some(l) = buf.get(..4) else {
        return malformed("truncated length of the diff vector");
    };
    let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
    let Some(body) = 4usize.checked_add(len).and_then(|end| buf.get(4..end)) else {
        return malformed(format!(
            "diff vector of {len} bytes, {} present",
            buf.len().saturating_sub(4)
        ));
    };
    let mut pos = 0;
    let mut diffs = Vec::new();
    while pos < body.len() {
        let op = match body[pos] {
            0 => Operation::Replace,
            1 => Operation::Insert,
            2 => Operation::Remove,
            x => return malformed(format!("unknown operation {x} at byte {pos}")),
        };
        pos += 1;
        let Some(path) = packed(body, &mut pos) else {
            return malformed(format!("truncated path of diff {}", diffs.len() + 1));
        };
        let Ok(path) = std::str::from_utf8(path) else {
            return malformed(format!("path of diff {} is not utf8", diffs.len() + 1));
        };
        let legs = parse_path(path)?;
        let value = if op == Operation::Remove {
            None
        } else {
            let Some(v) = packed(body, &mut pos) else {
                return malformed(format!("truncated value of diff {}", diffs.len() + 1));
            };
            Some(jsonb::to_doc(v).map_err(|source| DiffError::Value {
                path: path.to_owned(),
                source,
            })?)
        };
        diffs.push(Diff {
            op,
            path: path.to_owned(),
            legs,
            value,
        });
    }
    Ok((diffs, 4 + len))
}

/// A packed length and that many bytes.
fn packed<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(lenenc(b, pos)?).ok()?;
    let s = b.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

/// Applies `diffs` in order to `doc`. On error `doc` may hold the diffs before the failing
/// one.
pub fn apply(doc: &mut Doc, diffs: &[Diff]) -> Result<(), DiffError> {
    for d in diffs {
        apply_one(doc, d)?;
    }
    Ok(())
}

fn apply_one(doc: &mut Doc, d: &Diff) -> Result<(), DiffError> {
    let fail = |why: &'static str| {
        Err(DiffError::NotApplicable {
            op: d.op,
            path: d.path.clone(),
            why,
        })
    };
    let Some((last, parents)) = d.legs.split_last() else {
        return fail("the root is never changed by a diff");
    };
    let Some(parent) = seek(doc, parents) else {
        return fail("the parent of the path does not exist");
    };
    match (d.op, parent, last) {
        (Operation::Remove, Doc::Object(members), Leg::Member(k)) => {
            match members.iter().position(|(m, _)| m == k) {
                Some(i) => {
                    members.remove(i);
                    Ok(())
                }
                None => fail("no such member"),
            }
        }
        (Operation::Remove, Doc::Array(items), leg) => match position(leg, items.len()) {
            Some(i) if i < items.len() => {
                items.remove(i);
                Ok(())
            }
            _ => fail("no such element"),
        },
        (Operation::Replace, Doc::Object(members), Leg::Member(k)) => {
            match members.iter_mut().find(|(m, _)| m == k) {
                Some((_, v)) => {
                    *v = new_value(d)?;
                    Ok(())
                }
                None => fail("no such member"),
            }
        }
        (Operation::Replace, Doc::Array(items), leg) => {
            let at = position(leg, items.len()).filter(|&i| i < items.len());
            match at.and_then(|i| items.get_mut(i)) {
                Some(v) => {
                    *v = new_value(d)?;
                    Ok(())
                }
                None => fail("no such element"),
            }
        }
        (Operation::Insert, Doc::Object(members), Leg::Member(k)) => {
            if members.iter().any(|(m, _)| m == k) {
                return fail("the member exists already");
            }
            let at = members
                .iter()
                .position(|(m, _)| key_order(m, k) == Ordering::Greater)
                .unwrap_or(members.len());
            members.insert(at, (k.clone(), new_value(d)?));
            Ok(())
        }
        (Operation::Insert, Doc::Array(items), leg @ (Leg::Index(_) | Leg::FromEnd(_))) => {
            let at = position(leg, items.len()).unwrap_or(0).min(items.len());
            items.insert(at, new_value(d)?);
            Ok(())
        }
        (_, Doc::Scalar(_), _) => fail("the parent is a scalar"),
        (_, Doc::Object(_), _) => fail("an array position in an object"),
        (_, Doc::Array(_), _) => fail("a member name in an array"),
    }
}

fn new_value(d: &Diff) -> Result<Doc, DiffError> {
    d.value.clone().ok_or_else(|| DiffError::NotApplicable {
        op: d.op,
        path: d.path.clone(),
        why: "the diff has no value",
    })
}

/// The element `leg` names in an array of `len`; `None` for a member name or a
/// `[last-n]` before the start.
fn position(leg: &Leg, len: usize) -> Option<usize> {
    match leg {
        Leg::Index(n) => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
        Leg::FromEnd(n) => len
            .checked_sub(1)
            .and_then(|l| l.checked_sub(usize::try_from(*n).ok()?)),
        Leg::Member(_) => None,
    }
}

/// The container at `legs` (exactly, no auto-wrapping).
fn seek<'d>(doc: &'d mut Doc, legs: &[Leg]) -> Option<&'d mut Doc> {
    let mut at = doc;
    for leg in legs {
        at = match (at, leg) {
            (Doc::Object(members), Leg::Member(k)) => {
                members.iter_mut().find(|(m, _)| m == k).map(|(_, v)| v)?
            }
            (Doc::Array(items), leg) => {
                let i = position(leg, items.len())?;
                items.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// MySQL's order of object keys: shorter first, then bytewise.
fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Doc {
        Doc::Scalar(t.into())
    }

    /// `{"a": 1, "bb": [10, 20, 30], "key with space": {"x": true}}`
    fn sample() -> Doc {
        Doc::Object(vec![
            ("a".into(), s("1")),
            ("bb".into(), Doc::Array(vec![s("10"), s("20"), s("30")])),
            (
                "key with space".into(),
                Doc::Object(vec![("x".into(), s("true"))]),
            ),
        ])
    }

    fn diff(op: Operation, path: &str, value: Option<&str>) -> Diff {
        Diff {
            op,
            path: path.into(),
            legs: parse_path(path).expect("path"),
            value: value.map(s),
        }
    }

    #[test]
    fn paths() {
        use Leg::*;
        let cases: &[(&str, Option<Vec<Leg>>)] = &[
            ("$", Some(vec![])),
            ("$.age", Some(vec![Member("age".into())])),
            ("$.a[1]", Some(vec![Member("a".into()), Index(1)])),
            (
                r#"$."key with space".x"#,
                Some(vec![Member("key with space".into()), Member("x".into())]),
            ),
            (
                r#"$."q\"uote\u00e9""#,
                Some(vec![Member("q\"uoteé".into())]),
            ),
            ("$[0][12]", Some(vec![Index(0), Index(12)])),
            ("$[last]", Some(vec![FromEnd(0)])),
            ("$[last-2]", Some(vec![FromEnd(2)])),
            (" $ . a [ 3 ] ", Some(vec![Member("a".into()), Index(3)])),
            ("$.é", Some(vec![Member("é".into())])),
            ("", None),
            ("a.b", None),
            ("$.", None),
            ("$..a", None),
            ("$.*", None),
            ("$[*]", None),
            ("$**.a", None),
            ("$[", None),
            ("$[1", None),
            ("$[]", None),
            ("$[-1]", None),
            ("$[1 to 3]", None),
            ("$[last+1]", None),
            ("$[99999999999999999999999]", None),
            (r#"$."unterminated"#, None),
            (r#"$."bad \q escape""#, None),
            ("$a", None),
        ];
        for (text, want) in cases {
            let got = parse_path(text);
            match want {
                Some(legs) => assert_eq!(got.as_ref(), Ok(legs), "{text:?}"),
                None => assert!(
                    matches!(got, Err(DiffError::Path { .. })),
                    "{text:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn apply_rules() {
        use Operation::*;
        let ok: &[(Diff, &str)] = &[
            (
                diff(Replace, "$.a", Some("2")),
                r#"{"a": 2, "bb": [10, 20, 30], "key with space": {"x": true}}"#,
            ),
            (
                diff(Replace, "$.bb[last]", Some("\"z\"")),
                r#"{"a": 1, "bb": [10, 20, "z"], "key with space": {"x": true}}"#,
            ),
            (
                diff(Replace, r#"$."key with space".x"#, Some("null")),
                r#"{"a": 1, "bb": [10, 20, 30], "key with space": {"x": null}}"#,
            ),
            // Inserted members take MySQL's key order: by length, then bytewise.
            (
                diff(Insert, "$.c", Some("3")),
                r#"{"a": 1, "c": 3, "bb": [10, 20, 30], "key with space": {"x": true}}"#,
            ),
            (
                diff(Insert, "$.zzz", Some("3")),
                r#"{"a": 1, "bb": [10, 20, 30], "zzz": 3, "key with space": {"x": true}}"#,
            ),
            (
                diff(Insert, "$.bb[1]", Some("15")),
                r#"{"a": 1, "bb": [10, 15, 20, 30], "key with space": {"x": true}}"#,
            ),
            // Past the end: appended (JSON_ARRAY_INSERT).
            (
                diff(Insert, "$.bb[9]", Some("40")),
                r#"{"a": 1, "bb": [10, 20, 30, 40], "key with space": {"x": true}}"#,
            ),
            (
                diff(Insert, "$.bb[0]", Some("0")),
                r#"{"a": 1, "bb": [0, 10, 20, 30], "key with space": {"x": true}}"#,
            ),
            (
                diff(Remove, "$.bb[1]", None),
                r#"{"a": 1, "bb": [10, 30], "key with space": {"x": true}}"#,
            ),
            (
                diff(Remove, "$.a", None),
                r#"{"bb": [10, 20, 30], "key with space": {"x": true}}"#,
            ),
            (
                diff(Remove, r#"$."key with space".x"#, None),
                r#"{"a": 1, "bb": [10, 20, 30], "key with space": {}}"#,
            ),
        ];
        for (d, want) in ok {
            let mut doc = sample();
            apply(&mut doc, std::slice::from_ref(d)).expect(&d.path);
            assert_eq!(doc.to_text(), *want, "{} {}", d.op, d.path);
        }
        let rejected: &[Diff] = &[
            diff(Replace, "$", Some("1")),
            diff(Remove, "$", None),
            diff(Replace, "$.missing", Some("1")),
            diff(Replace, "$.bb[3]", Some("1")),
            diff(Replace, "$.bb[last-3]", Some("1")),
            diff(Remove, "$.missing", None),
            diff(Remove, "$.bb[5]", None),
            diff(Insert, "$.a", Some("1")),
            diff(Insert, "$.missing.x", Some("1")),
            diff(Insert, "$.a.x", Some("1")),
            diff(Insert, "$.a[0]", Some("1")),
            diff(Replace, "$[0]", Some("1")),
            diff(Replace, "$.bb.x", Some("1")),
            diff(Remove, "$.bb.x", None),
            diff(Insert, "$.bb.x", Some("1")),
            Diff {
                value: None,
                ..diff(Replace, "$.a", None)
            },
        ];
        for d in rejected {
            let mut doc = sample();
            let got = apply(&mut doc, std::slice::from_ref(d));
            assert!(
                matches!(got, Err(DiffError::NotApplicable { .. })),
                "{} {}: {got:?}",
                d.op,
                d.path
            );
        }
    }

    /// The first diff vector of `json.binlog.000001`'s PARTIAL_UPDATE_ROWS event (offset
    /// 3750): REPLACE `$.age` with int16 26.
    const FIXTURE_VECTOR: [u8; 15] = [
        0x0b, 0, 0, 0, 0x00, 0x05, b'$', b'.', b'a', b'g', b'e', 0x03, 0x05, 0x1a, 0x00,
    ];

    #[test]
    fn reads_a_vector() {
        let mut buf = FIXTURE_VECTOR.to_vec();
        buf.extend_from_slice(b"rest");
        let (diffs, used) = read_vector(&buf).expect("vector");
        assert_eq!(used, 15);
        assert_eq!(diffs, vec![diff(Operation::Replace, "$.age", Some("26"))]);
        // A remove (no value) and an insert in one vector.
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&[2, 3, b'$', b'.', b'a']);
        v.extend_from_slice(&[1, 4, b'$', b'[', b'0', b']', 2, 0x04, 0x01]);
        let n = (v.len() - 4) as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        let (diffs, used) = read_vector(&v).expect("vector");
        assert_eq!(used, v.len());
        assert_eq!(
            diffs,
            vec![
                diff(Operation::Remove, "$.a", None),
                diff(Operation::Insert, "$[0]", Some("true")),
            ]
        );
        let (diffs, used) = read_vector(&[0, 0, 0, 0]).expect("empty");
        assert!(diffs.is_empty());
        assert_eq!(used, 4);
    }

    #[test]
    fn malformed_vectors_are_errors() {
        let v = FIXTURE_VECTOR;
        for n in 0..v.len() {
            assert!(read_vector(&v[..n]).is_err(), "prefix {n}");
        }
        let with = |i: usize, x: u8| {
            let mut b = v.to_vec();
            b[i] = x;
            read_vector(&b)
        };
        assert!(matches!(with(4, 3), Err(DiffError::Malformed(_))), "op 3");
        assert!(
            matches!(with(5, 0xfb), Err(DiffError::Malformed(_))),
            "NULL length"
        );
        assert!(matches!(with(6, b'x'), Err(DiffError::Path { .. })), "path");
        assert!(
            matches!(with(6, 0xff), Err(DiffError::Malformed(_))),
            "utf8"
        );
        assert!(
            matches!(with(12, 0x33), Err(DiffError::Value { .. })),
            "value type"
        );
        // The vector's length says more than the value holds: the value runs out.
        assert!(with(11, 0x09).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_vectors_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let mut b = (body.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(&body);
            if let Ok((diffs, _)) = read_vector(&b) {
                let _ = apply(&mut sample(), &diffs);
            }
        }

        #[test]
        fn random_paths_never_panic(p in "[$.\\[\\]a-z0-9\" \\\\-]{0,20}") {
            if let Ok(legs) = parse_path(&p) {
                let d = Diff { op: Operation::Insert, path: p.clone(), legs, value: Some(s("1")) };
                let _ = apply(&mut sample(), &[d]);
            }
        }
    }
}
