//! Character sets of MySQL/MariaDB string columns and decoding their bytes into Rust text.
//!
//! The binlog carries raw column bytes in the column's own character set (the table map's
//! optional metadata, or `information_schema.COLUMNS.CHARACTER_SET_NAME`, says which). A
//! collation id maps to a character set; the server's own `information_schema.COLLATIONS`
//! is loaded at startup ([`CollationMap::from_rows`]) and a built-in table of the common ids
//! covers the rest.
//!
//! MySQL's `latin1` is Windows-1252, except that the five bytes cp1252 leaves undefined
//! (0x81, 0x8D, 0x8F, 0x90, 0x9D) map to the C1 controls U+0081… (as in MySQL's own
//! `latin1` to `utf8mb4` conversion). A character set we cannot decode is an error naming
//! the column, never a lossy guess.

use std::collections::HashMap;

/// A character set logtide can (or cannot) decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// `utf8mb4`, `utf8mb3` / `utf8`: UTF-8, validated.
    Utf8,
    /// MySQL `latin1` (cp1252 with the C1 gaps filled).
    Latin1,
    /// `ascii`: 7-bit.
    Ascii,
    /// `binary`: the column is a byte string (`BINARY`, `VARBINARY`, `BLOB`).
    Binary,
    /// `ucs2` and `utf16`: UTF-16 big endian.
    Utf16Be,
    /// `utf16le`.
    Utf16Le,
    /// `utf32`: UTF-32 big endian.
    Utf32,
    /// Anything else (`sjis`, `gbk`, `cp1251`, …): decoding it is an error naming the column.
    Unsupported(String),
}

impl Charset {
    /// The character set of a charset name as the server spells it.
    pub fn from_name(name: &str) -> Charset {
        match name.to_ascii_lowercase().as_str() {
            "utf8mb4" | "utf8mb3" | "utf8" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "ascii" => Charset::Ascii,
            "binary" => Charset::Binary,
            "ucs2" | "utf16" => Charset::Utf16Be,
            "utf16le" => Charset::Utf16Le,
            "utf32" => Charset::Utf32,
            other => Charset::Unsupported(other.to_owned()),
        }
    }

    /// Decodes `bytes` to text. `Err` carries a short reason (the caller names the column).
    pub fn decode(&self, bytes: &[u8]) -> Result<String, String> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| format!("invalid utf8 at byte {}", e.valid_up_to())),
            Charset::Latin1 => Ok(decode_latin1(bytes)),
            Charset::Ascii => {
                if bytes.is_ascii() {
                    // Checked just above: ASCII is valid UTF-8.
                    Ok(bytes.iter().map(|&b| b as char).collect())
                } else {
                    Err("non-ascii byte in an ascii column".into())
                }
            }
            Charset::Binary => Err("binary data is not text".into()),
            Charset::Utf16Be | Charset::Utf16Le => {
                if bytes.len() % 2 != 0 {
                    return Err("odd number of bytes in utf16 text".into());
                }
                let be = *self == Charset::Utf16Be;
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| {
                        if be {
                            u16::from_be_bytes([c[0], c[1]])
                        } else {
                            u16::from_le_bytes([c[0], c[1]])
                        }
                    })
                    .collect();
                String::from_utf16(&units).map_err(|_| "invalid utf16".into())
            }
            Charset::Utf32 => {
                if bytes.len() % 4 != 0 {
                    return Err("length of utf32 text is not a multiple of 4".into());
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| {
                        char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .ok_or_else(|| "invalid utf32 code point".to_string())
                    })
                    .collect()
            }
            Charset::Unsupported(name) => Err(format!(
                "character set {name} is not supported by logtide (supported: utf8mb4, utf8mb3, latin1, ascii, ucs2, utf16, utf16le, utf32, binary); convert the column, e.g. ALTER TABLE … MODIFY … CHARACTER SET utf8mb4"
            )),
        }
    }
}

/// cp1252 0x80..=0x9F; MySQL fills the undefined five with the C1 control of the same value.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// MySQL `latin1` bytes to text.
pub fn decode_latin1(bytes: &[u8]) -> String {
    if bytes.is_ascii() {
        return bytes.iter().map(|&b| b as char).collect();
    }
    let mut s = String::with_capacity(bytes.len() + bytes.len() / 2);
    for &b in bytes {
        match b {
            0x80..=0x9F => s.push(CP1252_HIGH[usize::from(b - 0x80)]),
            _ => s.push(char::from(b)),
        }
    }
    s
}

/// Collation id → character set, for the ids the table map carries.
#[derive(Debug, Clone, Default)]
pub struct CollationMap {
    ids: HashMap<u32, Charset>,
}

impl CollationMap {
    /// The built-in table of common collation ids (MySQL 8 and MariaDB 10.x agree on these).
    pub fn builtin() -> CollationMap {
        let mut ids = HashMap::new();
        let mut add = |range: &[u32], cs: Charset| {
            for &i in range {
                ids.insert(i, cs.clone());
            }
        };
        add(&[63], Charset::Binary);
        add(&[5, 8, 15, 31, 47, 48, 49, 94], Charset::Latin1);
        add(&[11, 65], Charset::Ascii);
        let utf8mb3: Vec<u32> = [33, 76, 83, 223].into_iter().chain(192..=215).collect();
        add(&utf8mb3, Charset::Utf8);
        let utf8mb4: Vec<u32> = [45, 46]
            .into_iter()
            .chain(224..=247)
            .chain(255..=323)
            .collect();
        add(&utf8mb4, Charset::Utf8);
        let ucs2: Vec<u32> = [35, 90, 159].into_iter().chain(128..=151).collect();
        add(&ucs2, Charset::Utf16Be);
        let utf16: Vec<u32> = [54, 55].into_iter().chain(101..=124).collect();
        add(&utf16, Charset::Utf16Be);
        add(&[56, 62], Charset::Utf16Le);
        let utf32: Vec<u32> = [60, 61].into_iter().chain(160..=183).collect();
        add(&utf32, Charset::Utf32);
        CollationMap { ids }
    }

    /// Adds `(id, charset name)` pairs read from `information_schema.COLLATIONS`; the
    /// server's own answer wins over the built-in table.
    pub fn extend_from_rows<'a>(&mut self, rows: impl IntoIterator<Item = (u32, &'a str)>) {
        for (id, name) in rows {
            self.ids.insert(id, Charset::from_name(name));
        }
    }

    /// The character set of collation `id`.
    pub fn charset(&self, id: u32) -> Charset {
        self.ids
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Charset::Unsupported(format!("with collation id {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_mysql_cp1252() {
        assert_eq!(decode_latin1(b"caf\xe9 \x80 \x81 \x9f"), "café € \u{81} Ÿ");
        assert_eq!(decode_latin1(b"plain"), "plain");
    }

    #[test]
    fn charsets_decode_or_refuse() {
        assert_eq!(Charset::Utf8.decode("é😀".as_bytes()).expect("utf8"), "é😀");
        assert!(Charset::Utf8.decode(b"\xff").is_err());
        assert_eq!(
            Charset::Utf16Be
                .decode(&[0, b'a', 0xD8, 0x3D, 0xDE, 0x00])
                .expect("u16"),
            "a😀"
        );
        assert_eq!(Charset::Utf16Le.decode(&[b'a', 0]).expect("u16le"), "a");
        assert_eq!(Charset::Utf32.decode(&[0, 1, 0xF6, 0]).expect("u32"), "😀");
        assert!(Charset::Utf32.decode(&[0, 0x11, 0, 0]).is_err());
        assert!(Charset::Ascii.decode(b"\x80").is_err());
        let Err(e) = Charset::from_name("sjis").decode(b"x") else {
            panic!("sjis decoded")
        };
        assert!(e.contains("sjis"), "{e}");
    }

    #[test]
    fn collation_ids() {
        let mut m = CollationMap::builtin();
        assert_eq!(m.charset(8), Charset::Latin1);
        assert_eq!(m.charset(45), Charset::Utf8);
        assert_eq!(m.charset(255), Charset::Utf8);
        assert_eq!(m.charset(63), Charset::Binary);
        assert!(matches!(m.charset(2304), Charset::Unsupported(_)));
        m.extend_from_rows([(2304, "utf8mb4")]);
        assert_eq!(m.charset(2304), Charset::Utf8);
    }
}
