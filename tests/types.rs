//! The type matrix: one table per type family, edge values and NULL in every column,
//! replicated into the MySQL target (snapshot and binlog paths both) and compared value by
//! value through the binary protocol, floats bit for bit.

mod common;

use std::time::Duration;

use common::Env;
use mysql_async::prelude::Queryable;

/// (table, DDL columns after `id INT PRIMARY KEY`, rows of values after the id).
fn families() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "ints",
            "ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, \
             i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, b BOOL",
            vec![
                "-128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, TRUE",
                "127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, FALSE",
                "0, 1, -1, 1, -1, 1, -1, 1, -1, 9223372036854775808, NULL",
            ],
        ),
        (
            "decimals",
            "d65 DECIMAL(65,30), d52 DECIMAL(5,2), d0 DECIMAL(65,0), du DECIMAL(10,4) UNSIGNED",
            vec![
                "'99999999999999999999999999999999999.999999999999999999999999999999', 999.99, \
                 99999999999999999999999999999999999999999999999999999999999999999, 0.0001",
                "'-99999999999999999999999999999999999.999999999999999999999999999999', -999.99, \
                 -99999999999999999999999999999999999999999999999999999999999999999, 999999.9999",
                "0.000000000000000000000000000001, -0.01, 0, 0",
            ],
        ),
        (
            "floats",
            "f FLOAT, d DOUBLE",
            vec![
                "-0.0, -0.0",
                "3.40282e38, 1.7976931348623157e308",
                "1.17549e-38, 4.9e-324",
                "0.1, 0.1",
                "-3.1415927, 2.718281828459045",
            ],
        ),
        (
            "bits",
            "b1 BIT(1), b8 BIT(8), b33 BIT(33), b64 BIT(64)",
            vec![
                "b'1', b'11111111', b'101010101010101010101010101010101', 18446744073709551615",
                "b'0', b'0', 0, 0",
                "0, 128, 4294967296, 9223372036854775808",
            ],
        ),
        (
            "temporal",
            "y YEAR, d DATE, dt0 DATETIME, dt3 DATETIME(3), dt6 DATETIME(6), ts0 TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL, \
             t0 TIME, t6 TIME(6)",
            vec![
                "1901, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.001', '1000-01-01 00:00:00.000001', \
                 '1970-01-01 00:00:01', '1970-01-01 00:00:01.000001', '-838:59:59', '-838:59:59.000000'",
                "2155, '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999', \
                 '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999', '838:59:59', '838:59:59.000000'",
                "0000, '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 12:00:00.5', '2024-00-00 00:00:00', \
                 '0000-00-00 00:00:00', '2024-06-30 23:59:59.123456', '-00:00:01', '-00:00:00.500000'",
                "2000, '2024-02-29', '2024-02-29 23:59:59', '2024-02-29 23:59:59.999', '2024-02-29 23:59:59.999999', \
                 '2024-02-29 23:59:59', '2024-02-29 23:59:59.999999', '100:00:00', '24:00:00.000001'",
            ],
        ),
        (
            "strings",
            "c CHAR(10), v VARCHAR(100), t TEXT, lt LONGTEXT, l1 VARCHAR(20) CHARACTER SET latin1, \
             vb VARCHAR(20) COLLATE utf8mb4_bin, a VARCHAR(20) CHARACTER SET ascii, m3 VARCHAR(20) CHARACTER SET utf8mb3",
            vec![
                "'héllo', 'emoji 😀🧄 and 日本語', 'text with \\'quotes\\' and \\\\ backslash', REPEAT('long ', 40000), \
                 'café €uro ÿ', 'CaseSensitive', 'plain ascii', 'ünï'",
                "'', '', '', '', '', '', '', ''",
                "'trailing  ', ' leading', 'tab\\tnew\\nline', 'x', 'Œuvre', 'a', '~', 'é'",
            ],
        ),
        (
            "binaries",
            "bn BINARY(4), vb VARBINARY(20), bl BLOB, lb LONGBLOB",
            vec![
                "X'00010203', X'00FF00FF', X'000000', REPEAT(X'00FF', 300000)",
                "X'', X'', X'', X''",
                "'ab', X'DEADBEEF', 'plain', X'0A0D09'",
            ],
        ),
        (
            "enums",
            "e ENUM('a','b','c d','é'), s SET('x','y','z','w v')",
            vec!["'a', ''", "'c d', 'x,z'", "'é', 'x,y,z'"],
        ),
        (
            "jsons",
            "j JSON",
            vec![
                "'{\"a\": [1, 2, {\"b\": null}], \"unicode\": \"日本 😀\", \"num\": 1.5e300, \"big\": 18446744073709551615}'",
                "'[]'",
                "CONCAT('[', REPEAT('\"abcdefghij\",', 20000), '1]')",
            ],
        ),
        (
            "spatial",
            "g GEOMETRY, p POINT",
            vec![
                "ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))'), ST_GeomFromText('POINT(1 2)', 4326)",
                "ST_GeomFromText('LINESTRING(1.5 2.5, 3 4)', 3857), ST_GeomFromText('POINT(-71.06 42.36)')",
            ],
        ),
        (
            "generated",
            "a INT, b INT, s INT AS (a + b) STORED, v VARCHAR(30) AS (CONCAT('v', a)) VIRTUAL",
            vec!["1, 2, DEFAULT, DEFAULT", "NULL, 5, DEFAULT, DEFAULT"],
        ),
    ]
}

async fn insert_rows(c: &mut mysql_async::Conn, db: &str, first_id: i32) {
    // Zero dates and the like need a permissive session; TIMESTAMPs are written from a
    // non-UTC session to show that replication is independent of the session time zone.
    c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'").await.unwrap();
    c.query_drop("SET SESSION time_zone = '+05:30'").await.unwrap();
    for (table, _, rows) in families() {
        for (i, row) in rows.iter().enumerate() {
            let id = first_id + i as i32;
            c.query_drop(format!("INSERT INTO `{db}`.`{table}` VALUES ({id}, {row})")).await.unwrap();
        }
        // NULL in every column (generated columns compute from NULL).
        let extras: Vec<String> = c
            .exec(
                "SELECT EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND COLUMN_NAME <> 'id' ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await
            .unwrap();
        let nulls: Vec<&str> =
            extras.iter().map(|e| if e.contains("GENERATED") { "DEFAULT" } else { "NULL" }).collect();
        c.query_drop(format!("INSERT INTO `{db}`.`{table}` VALUES ({}, {})", first_id + 50, nulls.join(", ")))
            .await
            .unwrap();
    }
    c.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_replicates_exactly() {
    let env = Env::new("types").await;
    let mut c = env.conn().await;
    for (table, cols, _) in families() {
        c.query_drop(format!("CREATE TABLE `{}`.`{table}` (id INT PRIMARY KEY, {cols})", env.src)).await.unwrap();
    }
    // Rows that exist before binferry starts travel through the snapshot...
    insert_rows(&mut c, &env.src, 1).await;
    let bf = env.start_streaming().await;
    // ...rows written afterwards through the binlog.
    insert_rows(&mut c, &env.src, 101).await;
    env.wait_equal(Duration::from_secs(120)).await;
    // Updates move every value to another family member's edge value; deletes remove some.
    c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'").await.unwrap();
    for (table, _, rows) in families() {
        let cols: Vec<String> = c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND COLUMN_NAME <> 'id' AND EXTRA NOT LIKE '%GENERATED%' ORDER BY ORDINAL_POSITION",
                (&env.src, table),
            )
            .await
            .unwrap();
        let sets = cols
            .iter()
            .map(|col| {
                format!("`{col}` = (SELECT `{col}` FROM (SELECT * FROM `{}`.`{table}`) x WHERE x.id = 2)", env.src)
            })
            .collect::<Vec<_>>()
            .join(", ");
        c.query_drop(format!("UPDATE `{}`.`{table}` SET {sets} WHERE id IN (101, 151)", env.src)).await.unwrap();
        if rows.len() > 2 {
            c.query_drop(format!("DELETE FROM `{}`.`{table}` WHERE id = 103", env.src)).await.unwrap();
        }
    }
    env.wait_equal(Duration::from_secs(120)).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    // The same holds after a replay from the beginning.
    env.replay(&["--from-offset", "0"]);
    assert_eq!(env.diff().await, None);
}
