//! The type matrix: every type family, every fractional precision of TIME, DATETIME and
//! TIMESTAMP (negative TIME too), BINARY(n) with trailing zero bytes as value and as key, zero
//! dates as keys, every character set MariaDB ships, UUID and INET (also as a key), odd
//! identifiers, declared numeric types, a keyless table of short-fraction TIMEs. Each table
//! exists before binferry starts (snapshot path) and is created again while it streams
//! (binlog path from the table's first row); rows are then updated and deleted. Source and
//! MySQL target are compared value by value through the binary protocol, floats bit for bit.
//!
//! A second test shows that a value the target refuses stops that table only, durably, that
//! a restart is not stuck on it, and that a table excluded after its changes entered the
//! buffer is passed over.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, quote};
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(180);

/// A table keyed by `id INT`: its other columns, and rows of values after the id.
struct Family {
    name: String,
    columns: String,
    rows: Vec<String>,
}

fn family(name: &str, columns: &str, rows: &[&str]) -> Family {
    Family { name: name.into(), columns: columns.into(), rows: rows.iter().map(|r| r.to_string()).collect() }
}

/// `digits` cut to `fsp` fraction digits, with the point; nothing for `fsp` 0.
fn frac(digits: &str, fsp: usize) -> String {
    if fsp == 0 { String::new() } else { format!(".{}", &digits[..fsp]) }
}

/// One table per fractional precision, with the edge values of each temporal type.
fn temporal(fsp: usize) -> Family {
    let f = |d: &str| frac(d, fsp);
    let smallest = if fsp == 0 { "-00:00:01".to_string() } else { format!("-00:00:00.{}1", "0".repeat(fsp - 1)) };
    let rows = vec![
        format!(
            "'-838:59:59{}', '1000-01-01 00:00:00{}', '1970-01-02 00:00:01{}', '1000-01-01', 1901",
            f("999999"),
            f("000001"),
            f("123456")
        ),
        format!(
            "'-23:45:56{}', '9999-12-31 23:59:59{}', '2038-01-19 03:14:07{}', '9999-12-31', 2155",
            f("765432"),
            f("999999"),
            f("999999")
        ),
        format!("'{smallest}', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00', 0000"),
        format!(
            "'838:59:59{}', '2024-02-29 12:00:00{}', '2024-06-30 23:59:59{}', '2024-00-00', 2000",
            f("999999"),
            f("500000"),
            f("010101")
        ),
        format!(
            "'-00:00:00{}', '2024-00-00 00:00:00', '1999-12-31 23:59:59{}', '2024-02-00', 1999",
            f("500000"),
            f("000009")
        ),
        format!("'100:00:00{}', '2024-01-00 10:00:00{}', NULL, '0000-01-01', NULL", f("000001"), f("900000")),
    ];
    Family {
        name: format!("temporal{fsp}"),
        columns: format!("t TIME({fsp}), dt DATETIME({fsp}), ts TIMESTAMP({fsp}) NULL, d DATE, y YEAR"),
        rows,
    }
}

/// Every character set MariaDB ships (but utf8, binary): byte sequences of each, converted by
/// the server (sequences it does not accept become `?`).
const CHARSETS: &[(&str, u32)] = &[
    ("armscii8", 1),
    ("ascii", 1),
    ("big5", 2),
    ("cp1250", 1),
    ("cp1251", 1),
    ("cp1256", 1),
    ("cp1257", 1),
    ("cp850", 1),
    ("cp852", 1),
    ("cp866", 1),
    ("cp932", 2),
    ("dec8", 1),
    ("eucjpms", 3),
    ("euckr", 2),
    ("gb2312", 2),
    ("gbk", 2),
    ("geostd8", 1),
    ("greek", 1),
    ("hebrew", 1),
    ("hp8", 1),
    ("keybcs2", 1),
    ("koi8r", 1),
    ("koi8u", 1),
    ("latin1", 1),
    ("latin2", 1),
    ("latin5", 1),
    ("latin7", 1),
    ("macce", 1),
    ("macroman", 1),
    ("sjis", 2),
    ("swe7", 1),
    ("tis620", 1),
    ("ucs2", 2),
    ("ujis", 3),
    ("utf16", 4),
    ("utf16le", 4),
    ("utf32", 4),
];

/// A value of every character of interest in `charset`, as SQL.
fn charset_sample(charset: &str, maxlen: u32) -> String {
    if charset.starts_with("utf") || charset == "ucs2" {
        let text =
            if charset == "ucs2" { "Ünïcödé € ж 日本 ﬀ" } else { "Ünïcödé € ж 日本 😀 𝄞" };
        return format!("CONVERT('{text}' USING {charset})");
    }
    let mut bytes: Vec<u8> = (0x20..=0xff).collect();
    if maxlen >= 2 {
        // Text of the multi-byte sets: ASCII, then pairs over their lead and trail ranges (the
        // pairs where MySQL's tables and the WHATWG ones differ among them).
        bytes = (0x20..0x7f).collect();
        for lead in [0x81u8, 0x88, 0x8e, 0x90, 0x9f, 0xa1, 0xa4, 0xb0, 0xc8, 0xd0, 0xe0, 0xe8, 0xf0, 0xf9, 0xfc, 0xfe] {
            for trail in [
                0x40u8, 0x41, 0x45, 0x4e, 0x5c, 0x5f, 0x60, 0x7c, 0x7e, 0x80, 0x91, 0xa1, 0xa4, 0xaa, 0xc2, 0xdf, 0xe3,
                0xfc, 0xfe,
            ] {
                bytes.extend([lead, trail]);
            }
        }
    }
    if maxlen >= 3 {
        for trail in [0xa1u8, 0xa2, 0xc3, 0xf3, 0xf5, 0xfe] {
            bytes.extend([0x8f, 0xa2, trail, 0x8f, 0xf3, trail, 0x8f, 0xf5, trail]);
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("CONVERT(X'{hex}' USING {charset})")
}

fn charsets() -> Family {
    let columns =
        CHARSETS.iter().map(|(cs, _)| format!("c_{cs} TEXT CHARACTER SET {cs}")).collect::<Vec<_>>().join(", ");
    let sample = CHARSETS.iter().map(|(cs, n)| charset_sample(cs, *n)).collect::<Vec<_>>().join(", ");
    let plain =
        CHARSETS.iter().map(|(cs, _)| format!("CONVERT('plain text 123' USING {cs})")).collect::<Vec<_>>().join(", ");
    let empty = vec!["''"; CHARSETS.len()].join(", ");
    Family { name: "charsets".into(), columns, rows: vec![sample, plain, empty] }
}

/// The tables keyed by `id INT PRIMARY KEY`.
fn families() -> Vec<Family> {
    let mut all = vec![
        family(
            "ints",
            "ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, \
             i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, b BOOL",
            &[
                "-128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, TRUE",
                "127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, FALSE",
                "0, 1, -1, 1, -1, 1, -1, 1, -1, 9223372036854775808, NULL",
            ],
        ),
        family(
            "declared",
            "flag TINYINT(1), z INT(5) UNSIGNED ZEROFILL, f FLOAT(7,3), d DOUBLE(10,2), dz DECIMAL(8,2) UNSIGNED ZEROFILL",
            &["1, 42, 1234.567, 12345678.91, 7.5", "0, 0, -0.001, -0.01, 0", "NULL, 99999, NULL, NULL, NULL"],
        ),
        family(
            "decimals",
            "d65 DECIMAL(65,30), d52 DECIMAL(5,2), d0 DECIMAL(65,0), du DECIMAL(10,4) UNSIGNED",
            &[
                "'99999999999999999999999999999999999.999999999999999999999999999999', 999.99, \
                 99999999999999999999999999999999999999999999999999999999999999999, 0.0001",
                "'-99999999999999999999999999999999999.999999999999999999999999999999', -999.99, \
                 -99999999999999999999999999999999999999999999999999999999999999999, 999999.9999",
                "0.000000000000000000000000000001, -0.01, 0, 0",
            ],
        ),
        family(
            "floats",
            "f FLOAT, d DOUBLE",
            &[
                "-0.0, -0.0",
                "3.40282e38, 1.7976931348623157e308",
                "1.17549e-38, 4.9e-324",
                "0.1, 0.1",
                "-3.1415927, 2.718281828459045",
            ],
        ),
        family(
            "bits",
            "b1 BIT(1), b8 BIT(8), b33 BIT(33), b64 BIT(64)",
            &[
                "b'1', b'11111111', b'101010101010101010101010101010101', 18446744073709551615",
                "b'0', b'0', 0, 0",
                "0, 128, 4294967296, 9223372036854775808",
            ],
        ),
        family(
            "strings",
            "c CHAR(10), v VARCHAR(100), t TEXT, lt LONGTEXT, vb VARCHAR(20) COLLATE utf8mb4_bin, m3 VARCHAR(20) CHARACTER SET utf8mb3",
            &[
                "'héllo', 'emoji 😀🧄 and 日本語', 'text with \\'quotes\\' and \\\\ backslash', REPEAT('long ', 40000), 'CaseSensitive', 'ünï'",
                "'', '', '', '', '', ''",
                "'trailing  ', ' leading', 'tab\\tnew\\nline', 'x', 'a', 'é'",
            ],
        ),
        family(
            "binaries",
            "bn BINARY(4), b16 BINARY(16), vb VARBINARY(20), bl BLOB, lb LONGBLOB",
            &[
                "X'00010203', X'00000000000000000000000000000000', X'00FF00FF', X'000000', REPEAT(X'00FF', 300000)",
                "X'', X'', X'', X'', X''",
                "'ab', X'FF', X'DEADBEEF00', 'plain', X'0A0D0900'",
                "X'01000000', X'0100000000000000000000000000000000', X'00', X'00', X'00'",
            ],
        ),
        family(
            "enums",
            "e ENUM('a','b','c d','é'), s SET('x','y','z','w v')",
            &["'a', ''", "'c d', 'x,z'", "'é', 'x,y,z'"],
        ),
        family(
            "jsons",
            "j JSON",
            &[
                "'{\"a\": [1, 2, {\"b\": null}], \"unicode\": \"日本 😀\", \"num\": 1.5e300, \"big\": 18446744073709551615}'",
                "'[]'",
                "CONCAT('[', REPEAT('\"abcdefghij\",', 20000), '1]')",
            ],
        ),
        family(
            "spatial",
            "g GEOMETRY, p POINT",
            &[
                "ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))'), ST_GeomFromText('POINT(1 2)', 4326)",
                "ST_GeomFromText('LINESTRING(1.5 2.5, 3 4)', 3857), ST_GeomFromText('POINT(-71.06 42.36)')",
            ],
        ),
        family(
            "generated",
            "a INT, b INT, s INT AS (a + b) STORED, v VARCHAR(30) AS (CONCAT('v', a)) VIRTUAL",
            &["1, 2, DEFAULT, DEFAULT", "NULL, 5, DEFAULT, DEFAULT"],
        ),
        family(
            "network",
            "u UUID, i4 INET4, i6 INET6",
            &[
                "'123e4567-e89b-12d3-a456-426614174000', '192.168.0.1', '2001:db8::ff00:42:8329'",
                "'00000000-0000-0000-0000-000000000000', '0.0.0.0', '::ffff:1.2.3.4'",
                "'6ccd780c-baba-1026-9564-5b8c656024db', '10.0.0.255', '::'",
                "'ffffffff-ffff-ffff-ffff-ffffffffffff', '255.255.255.255', '1::3:4:5:6:7:8'",
            ],
        ),
        family(
            "odd table-€",
            "`special\"[``$]'_id` INT, `sp ace` VARCHAR(10), `ümlaut` INT, `select` INT, `123abc` INT",
            &["1, 'a b', 2, 3, 4", "NULL, '', NULL, NULL, NULL"],
        ),
        charsets(),
    ];
    all.extend((0..=6).map(temporal));
    all
}

/// Tables with keys of their own: (name, columns and key, rows, later changes with `{t}`).
fn keyed() -> Vec<(&'static str, &'static str, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            "binkey",
            "k BINARY(4) PRIMARY KEY, b16 BINARY(16), v INT",
            vec![
                "X'01000000', X'00000000000000000000000000000000', 1",
                "X'00000000', X'FF', 2",
                "X'0102', 'ab', 3",
                "X'FFFFFF00', NULL, 4",
            ],
            vec![
                "UPDATE {t} SET v = v + 10, b16 = X'0000' WHERE k = X'00000000'",
                "DELETE FROM {t} WHERE k = X'01000000'",
                "UPDATE {t} SET k = X'02000000' WHERE k = X'01020000'",
            ],
        ),
        (
            "datekey",
            "d DATE, n INT, v VARCHAR(10), PRIMARY KEY (d, n)",
            vec!["'0000-00-00', 1, 'a'", "'2000-00-00', 2, 'b'", "'2000-01-00', 3, 'c'", "'2024-02-29', 4, 'd'"],
            vec!["UPDATE {t} SET v = 'B' WHERE d = '2000-00-00'", "DELETE FROM {t} WHERE d = '0000-00-00'"],
        ),
        (
            "uuidkey",
            "u UUID PRIMARY KEY, v INT",
            vec![
                "'00000000-0000-0000-0000-000000000000', 1",
                "'123e4567-e89b-12d3-a456-426614174000', 2",
                "'ffffffff-ffff-ffff-ffff-ffffff000000', 3",
            ],
            vec![
                "UPDATE {t} SET v = 20 WHERE u = '123e4567-e89b-12d3-a456-426614174000'",
                "DELETE FROM {t} WHERE u = '00000000-0000-0000-0000-000000000000'",
                "UPDATE {t} SET u = '6ccd780c-baba-1026-9564-5b8c656024db' WHERE v = 3",
            ],
        ),
        (
            // Keyless: the before image of an UPDATE identifies the row, so a wrongly
            // decoded TIME(1) would leave stale rows behind.
            "keyless_time",
            "t1 TIME(1), t2 TIME(2), n INT",
            vec![
                "'-23:45:56.7', '-838:59:59.99', 1",
                "'-00:00:00.1', '-00:00:00.01', 2",
                "'-00:00:00.1', '-00:00:00.01', 2",
                "'838:59:59.9', '00:00:00.00', 3",
            ],
            vec![
                "UPDATE {t} SET t1 = '-00:00:00.2' WHERE n = 2 LIMIT 1",
                "DELETE FROM {t} WHERE t2 = '-838:59:59.99'",
                "UPDATE {t} SET t2 = '-12:00:00.05' WHERE n = 3",
            ],
        ),
    ]
}

async fn create(c: &mut mysql_async::Conn, db: &str, suffix: &str) {
    for f in families() {
        let t = quote(&format!("{}{suffix}", f.name));
        c.query_drop(format!("CREATE TABLE {}.{t} (id INT PRIMARY KEY, {})", quote(db), f.columns)).await.unwrap();
    }
    for (name, columns, _, _) in keyed() {
        c.query_drop(format!("CREATE TABLE {}.{} ({columns})", quote(db), quote(&format!("{name}{suffix}"))))
            .await
            .unwrap();
    }
}

/// Zero dates and the like need a permissive session; TIMESTAMPs are written from a non-UTC
/// session to show that replication is independent of the session time zone.
async fn permissive(c: &mut mysql_async::Conn) {
    c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'").await.unwrap();
    c.query_drop("SET SESSION time_zone = '+05:30'").await.unwrap();
}

/// Rows from `first_id` on, a row of NULLs at `first_id + 50`, and the keyed tables' rows.
async fn fill(c: &mut mysql_async::Conn, db: &str, suffix: &str, first_id: i32) {
    permissive(c).await;
    for f in families() {
        let t = format!("{}.{}", quote(db), quote(&format!("{}{suffix}", f.name)));
        for (i, row) in f.rows.iter().enumerate() {
            c.query_drop(format!("INSERT INTO {t} VALUES ({}, {row})", first_id + i as i32)).await.unwrap();
        }
        let extras: Vec<String> = c
            .exec(
                "SELECT EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND COLUMN_NAME <> 'id' ORDER BY ORDINAL_POSITION",
                (db, format!("{}{suffix}", f.name)),
            )
            .await
            .unwrap();
        let nulls: Vec<&str> =
            extras.iter().map(|e| if e.contains("GENERATED") { "DEFAULT" } else { "NULL" }).collect();
        c.query_drop(format!("INSERT INTO {t} VALUES ({}, {})", first_id + 50, nulls.join(", "))).await.unwrap();
    }
    if first_id == 1 || !suffix.is_empty() {
        for (name, _, rows, _) in keyed() {
            let t = format!("{}.{}", quote(db), quote(&format!("{name}{suffix}")));
            for row in rows {
                c.query_drop(format!("INSERT INTO {t} VALUES ({row})")).await.unwrap();
            }
        }
    }
    c.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
}

/// Updates move values to another row's (rows 101 and 151 take row 102's), deletes remove
/// some; the keyed tables run their own changes.
async fn change(c: &mut mysql_async::Conn, db: &str, suffix: &str) {
    permissive(c).await;
    for f in families() {
        let name = format!("{}{suffix}", f.name);
        let t = format!("{}.{}", quote(db), quote(&name));
        let cols: Vec<String> = c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND COLUMN_NAME <> 'id' AND EXTRA NOT LIKE '%GENERATED%' ORDER BY ORDINAL_POSITION",
                (db, &name),
            )
            .await
            .unwrap();
        let sets = cols
            .iter()
            .map(|col| format!("{0} = (SELECT {0} FROM (SELECT * FROM {t}) x WHERE x.id = 102)", quote(col)))
            .collect::<Vec<_>>()
            .join(", ");
        c.query_drop(format!("UPDATE {t} SET {sets} WHERE id IN (101, 151)")).await.unwrap();
        if f.rows.len() > 2 {
            c.query_drop(format!("DELETE FROM {t} WHERE id = 103")).await.unwrap();
        }
    }
    for (name, _, _, changes) in keyed() {
        let t = format!("{}.{}", quote(db), quote(&format!("{name}{suffix}")));
        for sql in changes {
            c.query_drop(sql.replace("{t}", &t)).await.unwrap();
        }
    }
    c.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_replicates_exactly() {
    let env = Env::new("types").await;
    let mut c = env.conn().await;
    // Tables and rows that exist before binferry starts travel through the snapshot...
    create(&mut c, &env.src, "").await;
    fill(&mut c, &env.src, "", 1).await;
    let bf = env.start_streaming().await;
    // ...rows written afterwards, and tables created afterwards, through the binlog.
    fill(&mut c, &env.src, "", 101).await;
    create(&mut c, &env.src, "_live").await;
    fill(&mut c, &env.src, "_live", 101).await;
    env.wait_equal(CONVERGE).await;
    change(&mut c, &env.src, "").await;
    change(&mut c, &env.src, "_live").await;
    env.wait_equal(CONVERGE).await;
    // Declared types a reader of the target sees stay as the source declares them.
    let declared = "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
                    AND TABLE_NAME = 'declared_live' AND COLUMN_NAME <> 'id' AND COLUMN_NAME NOT LIKE '\\_binferry%' \
                    ORDER BY ORDINAL_POSITION";
    let source: Vec<(String, String)> = c.exec(declared, (&env.src,)).await.unwrap();
    let target: Vec<(String, String)> = c.exec(declared, (&env.dst,)).await.unwrap();
    assert_eq!(source, target, "declared column types");
    assert!(!env.log().contains("table stopped"), "a table was stopped:\n{}", env.log_tails());
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    // The same holds after a replay from the beginning.
    env.replay(&["--from-offset", "0"]);
    assert_eq!(env.diff().await, None);
    // `verify` hashes the values the target holds, read back as the source's are: every type
    // must hash as the writer hashed it, or verify would report drift where there is none.
    let (code, text) = env.verify(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no drift in"), "{text}");
}

/// The target refuses a value (its column was narrowed by hand): that table stops, recorded
/// with the row's key, the column and the value; the others go on, also after a restart. A
/// table excluded after its changes entered the buffer is passed over. A keyless table that
/// its rule refuses stops alone when it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_target_refuses_stops_that_table_only() {
    let mut env = Env::new("refused").await.with_target(Server::start(&[]));
    env.set(&["pipeline", "drain_timeout_secs"], 3);
    env.add_table_rule(&format!("{}.keyless", env.src), &[("without_primary_key", "refuse".into())]);
    let db = env.src.clone();
    let mut c = env.conn().await;
    for t in ["narrow", "fine", "later"] {
        c.query_drop(format!("CREATE TABLE `{db}`.{t} (id INT PRIMARY KEY, name VARCHAR(20))")).await.unwrap();
        c.query_drop(format!("INSERT INTO `{db}`.{t} VALUES (1, 'one')")).await.unwrap();
    }
    let bf = env.start_streaming().await;
    env.wait_equal(CONVERGE).await;
    let mut t = env.target_pool.get_conn().await.unwrap();
    t.query_drop(format!("ALTER TABLE `{}`.narrow MODIFY name VARCHAR(3)", env.dst)).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.narrow VALUES (2, 'too long')")).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{db}`.keyless (a INT, b VARCHAR(5))")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.keyless VALUES (1, 'x')")).await.unwrap();
    for i in 2..20 {
        c.query_drop(format!("INSERT INTO `{db}`.fine VALUES ({i}, 'row {i}')")).await.unwrap();
    }
    env.diff_skip = vec!["narrow".into(), "keyless".into()];
    env.wait_equal(CONVERGE).await;
    let sql = format!("SELECT source_table, reason FROM `{}`._binferry_stopped ORDER BY 1", env.dst);
    let rows: Vec<(String, String)> = t.query(sql).await.unwrap();
    assert_eq!(rows.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["keyless", "narrow"], "{rows:?}");
    let reason = &rows[1].1;
    for part in ["key (id = 2)", "column `name` = 'too long'", "Data too long"] {
        assert!(reason.contains(part), "the stop record lacks {part:?}: {reason}");
    }
    assert!(rows[0].1.contains("has no primary key"), "{}", rows[0].1);
    assert!(bf.interrupt(Duration::from_secs(60)).success());

    // A restart is not stuck on the refused value, and keeps the table stopped.
    let bf = env.start();
    c.query_drop(format!("INSERT INTO `{db}`.fine VALUES (100, 'after restart')")).await.unwrap();
    env.wait_equal(CONVERGE).await;
    assert!(env.log().contains("table is stopped; its changes are skipped"), "{}", env.log_tails());

    // Changes of `later` wait in the buffer while the target is down; then `later` is excluded.
    env.target_server().stop();
    c.query_drop(format!("INSERT INTO `{db}`.later VALUES (2, 'buffered')")).await.unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.fine VALUES (101, 'buffered too')")).await.unwrap();
    let start = Instant::now();
    while !env.log().contains("writer failed; retrying") {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", env.log_tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked to stop while the target is down, the writer drains for the configured time at
    // most, saying what it waits for, and binferry exits.
    assert!(bf.interrupt(Duration::from_secs(30)).success());
    let log = env.log();
    assert!(log.contains("did not finish draining in time"), "{}", env.log_tails());
    assert!(log.contains("waiting_for=waiting to retry after: connecting to target"), "{}", env.log_tails());
    env.set(&["source", "exclude"], vec![format!("{db}.later")]);
    env.target_server().restart();
    let bf = env.start();
    env.diff_skip.push("later".into());
    env.wait_equal(CONVERGE).await;
    let mut t = env.target_pool.get_conn().await.unwrap();
    let later: Vec<i32> = t.query(format!("SELECT id FROM `{}`.later ORDER BY id", env.dst)).await.unwrap();
    assert_eq!(later, [1], "a change of an excluded table was applied from the buffer");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}
