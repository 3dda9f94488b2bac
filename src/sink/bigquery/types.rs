//! How MySQL/MariaDB column types map to BigQuery types, exactly.
//!
//! The rule is that every source value has exactly one representation in BigQuery that
//! reads back equal. A floating type never stands in for a decimal. Where BigQuery has no
//! exact type (a DECIMAL with more than 38 integer digits), the value goes to STRING in its
//! canonical decimal form. The table is in `docs/types.md`.

use std::fmt;

use crate::schema::ColumnType;

/// A BigQuery column type (the subset binferry creates).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BqType {
    /// INT64.
    Int64,
    /// NUMERIC(precision, scale): up to 29 integer digits and 9 fraction digits.
    Numeric { precision: u8, scale: u8 },
    /// BIGNUMERIC(precision, scale): up to 38 integer digits and 38 fraction digits.
    BigNumeric { precision: u8, scale: u8 },
    /// FLOAT64.
    Float64,
    /// STRING.
    String,
    /// BYTES.
    Bytes,
    /// DATE.
    Date,
    /// DATETIME (microseconds, no time zone).
    DateTime,
    /// TIMESTAMP (microseconds, UTC).
    Timestamp,
    /// TIME (00:00:00 to 23:59:59.999999).
    Time,
    /// JSON.
    Json,
}

impl fmt::Display for BqType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BqType::Int64 => f.write_str("INT64"),
            BqType::Numeric { precision, scale } => write!(f, "NUMERIC({precision}, {scale})"),
            BqType::BigNumeric { precision, scale } => write!(f, "BIGNUMERIC({precision}, {scale})"),
            BqType::Float64 => f.write_str("FLOAT64"),
            BqType::String => f.write_str("STRING"),
            BqType::Bytes => f.write_str("BYTES"),
            BqType::Date => f.write_str("DATE"),
            BqType::DateTime => f.write_str("DATETIME"),
            BqType::Timestamp => f.write_str("TIMESTAMP"),
            BqType::Time => f.write_str("TIME"),
            BqType::Json => f.write_str("JSON"),
        }
    }
}

/// Largest integer digits and scale of NUMERIC and BIGNUMERIC.
const NUMERIC_INT_DIGITS: u8 = 29;
const NUMERIC_SCALE: u8 = 9;
const BIGNUMERIC_INT_DIGITS: u8 = 38;
const BIGNUMERIC_SCALE: u8 = 38;

/// The exact decimal type for `precision` digits of which `scale` are fractional; STRING
/// when no BigQuery decimal holds them.
fn decimal(precision: u8, scale: u8) -> BqType {
    let int_digits = precision.saturating_sub(scale);
    if int_digits <= NUMERIC_INT_DIGITS && scale <= NUMERIC_SCALE {
        BqType::Numeric { precision: precision.max(1), scale }
    } else if int_digits <= BIGNUMERIC_INT_DIGITS && scale <= BIGNUMERIC_SCALE {
        BqType::BigNumeric { precision: precision.max(1), scale }
    } else {
        BqType::String
    }
}

/// The BigQuery type a source column is created with.
pub fn bigquery_type(ty: &ColumnType) -> BqType {
    match ty {
        // BIGINT UNSIGNED reaches 18,446,744,073,709,551,615: beyond INT64.
        ColumnType::Int { bytes: 8, unsigned: true } => decimal(20, 0),
        ColumnType::Int { .. } | ColumnType::Year => BqType::Int64,
        ColumnType::Bit { bits } if *bits <= 63 => BqType::Int64,
        ColumnType::Bit { .. } => decimal(20, 0),
        ColumnType::Decimal { precision, scale, .. } => decimal(*precision, *scale),
        // An f32 converts to f64 without loss; the envelope keeps its shortest form.
        ColumnType::Float { .. } | ColumnType::Double { .. } => BqType::Float64,
        ColumnType::Date => BqType::Date,
        ColumnType::DateTime { .. } => BqType::DateTime,
        ColumnType::Timestamp { .. } => BqType::Timestamp,
        // MySQL TIME spans -838:59:59 to 838:59:59, a duration; BigQuery TIME is a time of
        // day. STRING keeps every value exactly, in MySQL's own format.
        ColumnType::Time { .. } => BqType::String,
        ColumnType::Char { .. }
        | ColumnType::VarChar { .. }
        | ColumnType::Text { .. }
        | ColumnType::Enum { .. }
        | ColumnType::Set { .. } => BqType::String,
        // MariaDB's UUID and INET types, as MariaDB shows them.
        ColumnType::Uuid | ColumnType::Inet4 | ColumnType::Inet6 => BqType::String,
        ColumnType::Binary { .. } | ColumnType::VarBinary { .. } | ColumnType::Blob { .. } => BqType::Bytes,
        ColumnType::Json => BqType::Json,
        // SRID + WKB, as stored by MySQL: exact. GEOGRAPHY accepts only valid WGS84 shapes.
        ColumnType::Geometry => BqType::Bytes,
    }
}

/// Whether a BigQuery column of type `from` can be changed in place to `to` without losing a
/// value (BigQuery allows INT64 → NUMERIC/BIGNUMERIC and NUMERIC → BIGNUMERIC, and wider
/// parameters of the same decimal type).
pub fn widens_to(from: &BqType, to: &BqType) -> bool {
    use BqType::*;
    let holds = |p1: u8, s1: u8, p2: u8, s2: u8| s2 >= s1 && p2.saturating_sub(s2) >= p1.saturating_sub(s1);
    match (from, to) {
        _ if from == to => true,
        (Int64, Numeric { precision, scale }) | (Int64, BigNumeric { precision, scale }) => {
            precision.saturating_sub(*scale) >= 19
        }
        (Numeric { precision: p1, scale: s1 }, Numeric { precision: p2, scale: s2 })
        | (Numeric { precision: p1, scale: s1 }, BigNumeric { precision: p2, scale: s2 })
        | (BigNumeric { precision: p1, scale: s1 }, BigNumeric { precision: p2, scale: s2 }) => {
            holds(*p1, *s1, *p2, *s2)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(bytes: u8, unsigned: bool) -> ColumnType {
        ColumnType::Int { bytes, unsigned }
    }

    fn dec(precision: u8, scale: u8) -> ColumnType {
        ColumnType::Decimal { precision, scale, unsigned: false }
    }

    #[test]
    fn integers_stay_exact() {
        assert_eq!(bigquery_type(&int(4, true)), BqType::Int64);
        assert_eq!(bigquery_type(&int(8, false)), BqType::Int64);
        assert_eq!(bigquery_type(&int(8, true)), BqType::Numeric { precision: 20, scale: 0 });
        assert_eq!(bigquery_type(&ColumnType::Bit { bits: 64 }), BqType::Numeric { precision: 20, scale: 0 });
    }

    #[test]
    fn decimals_never_become_floats() {
        assert_eq!(bigquery_type(&dec(10, 2)), BqType::Numeric { precision: 10, scale: 2 });
        assert_eq!(bigquery_type(&dec(38, 9)), BqType::Numeric { precision: 38, scale: 9 });
        // Ten fraction digits, or thirty integer digits: BIGNUMERIC.
        assert_eq!(bigquery_type(&dec(20, 10)), BqType::BigNumeric { precision: 20, scale: 10 });
        assert_eq!(bigquery_type(&dec(30, 0)), BqType::BigNumeric { precision: 30, scale: 0 });
        assert_eq!(bigquery_type(&dec(65, 30)), BqType::BigNumeric { precision: 65, scale: 30 });
        // 65 integer digits fit nowhere: the canonical text.
        assert_eq!(bigquery_type(&dec(65, 0)), BqType::String);
    }

    #[test]
    fn temporal_and_other_types() {
        assert_eq!(bigquery_type(&ColumnType::DateTime { fsp: 6 }), BqType::DateTime);
        assert_eq!(bigquery_type(&ColumnType::Timestamp { fsp: 3 }), BqType::Timestamp);
        assert_eq!(bigquery_type(&ColumnType::Time { fsp: 0 }), BqType::String);
        assert_eq!(bigquery_type(&ColumnType::Json), BqType::Json);
        assert_eq!(bigquery_type(&ColumnType::Blob { length_bytes: 2 }), BqType::Bytes);
        assert_eq!(bigquery_type(&ColumnType::Geometry), BqType::Bytes);
        assert_eq!(BqType::BigNumeric { precision: 65, scale: 30 }.to_string(), "BIGNUMERIC(65, 30)");
    }

    #[test]
    fn widening_follows_what_bigquery_allows() {
        let n = |p, s| BqType::Numeric { precision: p, scale: s };
        let b = |p, s| BqType::BigNumeric { precision: p, scale: s };
        // The source widenings binferry follows: INT → BIGINT stays INT64.
        assert_eq!(bigquery_type(&int(4, false)), bigquery_type(&int(8, false)));
        assert!(widens_to(&n(5, 2), &n(10, 4)));
        assert!(widens_to(&n(10, 2), &b(40, 2)));
        assert!(widens_to(&BqType::Int64, &n(20, 0)));
        assert!(!widens_to(&n(10, 4), &n(10, 2)), "fewer fraction digits would round");
        assert!(!widens_to(&n(10, 0), &n(10, 4)), "fewer integer digits would overflow");
        assert!(!widens_to(&BqType::String, &BqType::Int64));
        assert!(!widens_to(&BqType::Int64, &n(10, 0)));
    }
}
