//! Text in the column's character set, decoded exactly as the source server converts it.
//!
//! Binlog row images carry strings in their column's character set; snapshot queries get
//! them converted to utf8mb4 by the server. Both must give the same text, so binlog text
//! is decoded with the *server's own* conversion: for each character set a replicated column
//! uses, binferry asks the source once to convert every character of it (every byte, every
//! two-byte sequence, and the three-byte ones of EUC-JP) and keeps the answer as a table.
//! General-purpose decoders do not do: the WHATWG tables (encoding_rs) differ from MariaDB's
//! in thousands of characters of latin5, ujis or koi8u, and in a few of sjis or big5
//! (measured); MySQL's and MariaDB's tables differ from each other too.
//!
//! UTF-8, UTF-16 (big and little endian), UCS-2 and UTF-32 are decoded directly: their
//! conversion is the identity on code points. A character set with characters longer than
//! three bytes that is none of these (`gb18030`) is not decoded: its tables are too large to
//! read, and its tables stop with a clear error instead.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::error::{Error, ErrorKind, Result};

/// How the text of one character set is decoded.
#[derive(Clone, Debug)]
pub(crate) enum Decoder {
    Utf8,
    Utf16Be,
    Utf16Le,
    /// UCS-2: big-endian, BMP only.
    Ucs2,
    /// UTF-32, big-endian.
    Utf32,
    /// The source server's conversion table.
    Table(Arc<CharTable>),
}

/// Whether binferry decodes text of `charset`, whose characters take up to `maxlen` bytes.
pub(crate) fn is_decodable(charset: &str, maxlen: u32) -> bool {
    direct(charset).is_some() || (charset != "binary" && maxlen <= 3)
}

/// The decoder that needs no table.
fn direct(charset: &str) -> Option<Decoder> {
    Some(match charset {
        "utf8mb4" | "utf8mb3" | "utf8" => Decoder::Utf8,
        "utf16" => Decoder::Utf16Be,
        "utf16le" => Decoder::Utf16Le,
        "ucs2" => Decoder::Ucs2,
        "utf32" => Decoder::Utf32,
        _ => return None,
    })
}

/// One character set as the source server converts it to Unicode.
#[derive(Debug, Default)]
pub(crate) struct CharTable {
    name: String,
    /// Characters of one byte.
    single: Vec<Option<char>>,
    /// Characters of two or three bytes (big-endian in a u32), and what they convert to.
    multi: HashMap<u32, Box<str>>,
}

impl CharTable {
    /// Decode `bytes` as the server converts them: a character of one byte, else the longest
    /// sequence (three bytes, then two) the table knows, else `?` for that byte (what the
    /// server writes for bytes it cannot convert; it stores such bytes without complaint).
    fn decode(&self, bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len());
        let mut i = 0;
        'next: while i < bytes.len() {
            let single = self.single.get(bytes[i] as usize).copied().flatten();
            if let Some(c) = single.filter(|c| *c != '?' || bytes[i] == b'?') {
                out.push(c);
                i += 1;
                continue;
            }
            for len in [3, 2] {
                let Some(seq) = bytes.get(i..i + len) else { continue };
                let key = seq.iter().fold(0u32, |k, b| (k << 8) | *b as u32);
                if let Some(s) = self.multi.get(&key) {
                    out.push_str(s);
                    i += len;
                    continue 'next;
                }
            }
            out.push('?');
            i += 1;
        }
        out
    }
}

impl Decoder {
    /// Decode `bytes` of this character set.
    pub(crate) fn decode(&self, bytes: Vec<u8>) -> Result<String> {
        let invalid = |what: &str| Error::new(ErrorKind::Unsupported, format!("invalid {what} text"));
        match self {
            Decoder::Utf8 => String::from_utf8(bytes).map_err(|e| invalid(&format!("UTF-8 ({e})"))),
            Decoder::Utf16Be | Decoder::Utf16Le | Decoder::Ucs2 => {
                if bytes.len() % 2 != 0 {
                    return Err(invalid("UTF-16 (odd length)"));
                }
                let le = matches!(self, Decoder::Utf16Le);
                let units = bytes
                    .chunks_exact(2)
                    .map(|c| if le { u16::from_le_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], c[1]]) });
                if matches!(self, Decoder::Ucs2) {
                    return units.map(|u| char::from_u32(u as u32).ok_or_else(|| invalid("UCS-2"))).collect();
                }
                char::decode_utf16(units).map(|c| c.map_err(|_| invalid("UTF-16"))).collect()
            }
            Decoder::Utf32 => {
                if bytes.len() % 4 != 0 {
                    return Err(invalid("UTF-32 (length not a multiple of 4)"));
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| {
                        char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).ok_or_else(|| invalid("UTF-32"))
                    })
                    .collect()
            }
            Decoder::Table(t) => Ok(t.decode(&bytes)),
        }
    }
}

/// The decoders of the character sets seen so far, loaded from the source server.
#[derive(Default)]
pub(crate) struct Charsets {
    decoders: HashMap<String, Decoder>,
}

impl Charsets {
    /// The decoder of `charset`, when it is loaded (see [`Charsets::load`]) or needs none.
    pub(crate) fn get(&self, charset: &str) -> Option<Decoder> {
        direct(charset).or_else(|| self.decoders.get(charset).cloned())
    }

    /// Make sure `charset` (characters of up to `maxlen` bytes) can be decoded: read its
    /// conversion table from the source server once.
    pub(crate) async fn load(&mut self, conn: &mut Conn, charset: &str, maxlen: u32) -> Result<()> {
        if self.get(charset).is_some() {
            return Ok(());
        }
        if !is_decodable(charset, maxlen) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("character set {charset} ({maxlen} bytes per character) is not decoded by binferry"),
            )
            .with_hint("convert the column to utf8mb4, or exclude the table"));
        }
        let table = Arc::new(read_table(conn, charset, maxlen).await?);
        tracing::debug!(
            charset = %table.name,
            characters = table.multi.len() + table.single.iter().flatten().count(),
            "character set table read from the source"
        );
        self.decoders.insert(charset.to_string(), Decoder::Table(table));
        Ok(())
    }
}

/// The query that converts every candidate character of `charset`. Candidates: every byte;
/// with `maxlen` ≥ 2 every pair with a high first byte; with 3 the EUC-JP three-byte ones
/// (0x8F, then two bytes 0xA1–0xFE). A candidate the server does not convert turns into `?`.
fn table_query(charset: &str, maxlen: u32) -> String {
    let mut candidates = vec!["SELECT CHAR(a.i USING binary) AS s FROM n a".to_string()];
    if maxlen >= 2 {
        candidates.push("SELECT CHAR(a.i, b.i USING binary) FROM n a JOIN n b WHERE a.i >= 128 AND b.i >= 48".into());
    }
    if maxlen >= 3 {
        candidates.push(
            "SELECT CHAR(143, a.i, b.i USING binary) FROM n a JOIN n b WHERE a.i BETWEEN 161 AND 254 AND b.i BETWEEN 161 AND 254"
                .into(),
        );
    }
    format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 255) \
         SELECT s, CONVERT(CONVERT(s USING {charset}) USING utf8mb4) FROM ({}) c",
        candidates.join(" UNION ALL ")
    )
}

async fn read_table(conn: &mut Conn, charset: &str, maxlen: u32) -> Result<CharTable> {
    if !charset.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::new(ErrorKind::Unsupported, format!("character set name {charset:?}")));
    }
    let rows: Vec<(Vec<u8>, Option<String>)> = conn
        .query(table_query(charset, maxlen))
        .await
        .map_err(|e| Error::source_mysql(e, format!("reading how the source converts character set {charset}")))?;
    Ok(build_table(charset, rows))
}

/// The table from (bytes, what the server converted them to) pairs.
fn build_table(charset: &str, rows: Vec<(Vec<u8>, Option<String>)>) -> CharTable {
    let mut table = CharTable { name: charset.to_string(), single: vec![None; 256], multi: HashMap::new() };
    // Single bytes first: a pair is a character only when its first byte is none on its own.
    let (singles, longer): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(b, _)| b.len() == 1);
    for (bytes, text) in singles {
        let mut chars = text.as_deref().unwrap_or("").chars();
        if let (Some(c), None, [b]) = (chars.next(), chars.next(), bytes.as_slice()) {
            // `?` too: what the server makes of a byte it cannot convert.
            table.single[*b as usize] = Some(c);
        }
    }
    for (bytes, text) in longer {
        let Some(text) = text else { continue };
        // The server writes `?` for what it cannot convert; a `?` that is the character itself
        // is kept.
        // One character: mapped, or well formed but unmapped (the server shows that as one
        // `?` for the whole sequence). `??` or `?@` are bytes it reads one by one.
        let first_is_a_character = table.single[bytes[0] as usize].is_some_and(|c| c != '?');
        let one_character = text.chars().count() == 1;
        if first_is_a_character || !one_character || (text.contains('?') && text != "?" && !bytes.contains(&b'?')) {
            continue;
        }
        let key = bytes.iter().fold(0u32, |k, b| (k << 8) | *b as u32);
        table.multi.insert(key, text.into_boxed_str());
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_charsets_decode_directly() {
        let d = |cs: &str, b: &[u8]| direct(cs).unwrap().decode(b.to_vec());
        assert_eq!(d("utf16", &[0x00, 0x41, 0xd8, 0x3d, 0xde, 0x00]).unwrap(), "A😀");
        assert_eq!(d("utf16le", &[0x41, 0x00, 0x3d, 0xd8, 0x00, 0xde]).unwrap(), "A😀");
        assert_eq!(d("ucs2", &[0x00, 0xe9, 0x20, 0xac]).unwrap(), "é€");
        assert_eq!(d("utf32", &[0, 1, 0xf6, 0x00, 0, 0, 0, 0x41]).unwrap(), "😀A");
        assert!(d("utf16", &[0xd8, 0x3d]).is_err(), "a lone surrogate");
        assert!(d("utf32", &[0, 0x11, 0, 0]).is_err(), "beyond Unicode");
        assert!(d("utf8mb4", &[0xff]).is_err());
    }

    #[test]
    fn which_charsets_are_decoded() {
        assert!(is_decodable("latin2", 1) && is_decodable("sjis", 2) && is_decodable("ujis", 3));
        assert!(is_decodable("utf32", 4) && is_decodable("utf8mb4", 4));
        assert!(!is_decodable("gb18030", 4));
        assert!(!is_decodable("binary", 1));
    }

    /// A table as the server answers: single bytes, pairs, `?` for what it cannot convert.
    #[test]
    fn tables_decode_the_shortest_known_sequence() {
        let rows = vec![
            (b"A".to_vec(), Some("A".into())),
            (b" ".to_vec(), Some(" ".into())),
            (b"?".to_vec(), Some("?".into())),
            (vec![0x81], Some("?".into())),
            (vec![0xa1], Some("｡".into())),
            (vec![0x81, 0x40], Some("\u{3000}".into())),
            (vec![0x81, 0x5f], Some("\\".into())),
            (vec![0x81, 0x20], Some("??".into())),
            (vec![0xa1, 0x40], Some("｡@".into())),
            (vec![0x8f, 0xa1, 0xa1], Some("丂".into())),
            (vec![0x82], None),
        ];
        let t = build_table("sjis", rows);
        assert_eq!(t.decode(&[b'A', 0x81, 0x40, 0xa1, b'?', 0x81, 0x5f, 0x8f, 0xa1, 0xa1]), "A\u{3000}｡?\\丂");
        assert_eq!(t.decode(&[b'A', 0x81, 0x20]), "A? ", "a byte the server cannot convert is `?`, as it shows it");
        assert_eq!(t.decode(&[0x82]), "?", "a byte the server did not answer for");
        assert!(!t.multi.contains_key(&0xa140), "a pair starting with a character is two");
    }

    #[test]
    fn the_table_query_enumerates_the_candidates() {
        let q = table_query("ujis", 3);
        assert!(q.starts_with("WITH RECURSIVE n(i) AS"), "{q}");
        assert!(q.contains("CHAR(143, a.i, b.i USING binary)"), "{q}");
        assert!(q.contains("CONVERT(CONVERT(s USING ujis) USING utf8mb4)"), "{q}");
        assert!(!table_query("latin2", 1).contains("b.i"), "single-byte sets need single bytes only");
    }
}
