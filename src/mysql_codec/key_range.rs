//! A range of primary keys as SQL: what the source's chunked copies and `verify`'s chunks
//! read on the source, and what `verify` reads of the same chunk on a MySQL target (whose
//! key columns have the source's types and collations, so both order keys alike).

use mysql_async::Value as My;

use super::param;
use crate::event::Value;

/// `key > bound` (`strict`) or `key <= bound`, lexicographic over the (quoted) key columns,
/// written as ORs of column comparisons that the range optimizer reads (MariaDB does not use
/// indexes for row-constructor comparisons in every version). The parameters are the bound's
/// values in the order [`expand`] gives.
pub(crate) fn compare(keys: &[String], strict: bool) -> String {
    let n = keys.len();
    let terms: Vec<String> = (0..n)
        .map(|i| {
            let mut parts: Vec<String> = keys[..i].iter().map(|k| format!("{k} = ?")).collect();
            let op = match (strict, i + 1 == n) {
                (true, _) => ">",
                (false, true) => "<=",
                (false, false) => "<",
            };
            parts.push(format!("{} {op} ?", keys[i]));
            parts.join(" AND ")
        })
        .collect();
    if n == 1 {
        terms.concat()
    } else {
        format!("({})", terms.iter().map(|t| format!("({t})")).collect::<Vec<_>>().join(" OR "))
    }
}

/// The parameters of [`compare`] for `bound`.
pub(crate) fn expand(bound: &[Value]) -> Vec<My> {
    (0..bound.len()).flat_map(|i| bound[..=i].iter().map(param)).collect()
}

/// ` WHERE` (or `prefix AND`) the key is in `(lower, upper]` (open ends: `None`), and its
/// parameters; empty when both ends are open.
pub(crate) fn filter(keys: &[String], lower: Option<&[Value]>, upper: Option<&[Value]>) -> (Vec<String>, Vec<My>) {
    let (mut cond, mut params) = (vec![], vec![]);
    if let Some(l) = lower {
        cond.push(compare(keys, true));
        params.extend(expand(l));
    }
    if let Some(u) = upper {
        cond.push(compare(keys, false));
        params.extend(expand(u));
    }
    (cond, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compare_keys_lexicographically() {
        let one = vec!["`a`".to_string()];
        assert_eq!(compare(&one, true), "`a` > ?");
        let two = vec!["`b`".to_string(), "`a`".to_string()];
        assert_eq!(compare(&two, true), "((`b` > ?) OR (`b` = ? AND `a` > ?))");
        assert_eq!(compare(&two, false), "((`b` < ?) OR (`b` = ? AND `a` <= ?))");
        let bound = [Value::Text("x".into()), Value::Int(7)];
        assert_eq!(expand(&bound), vec![param(&bound[0]), param(&bound[0]), param(&bound[1])]);
        let (cond, params) = filter(&one, Some(&[Value::Int(1)]), Some(&[Value::Int(9)]));
        assert_eq!(cond, vec!["`a` > ?", "`a` <= ?"]);
        assert_eq!(params, vec![My::Int(1), My::Int(9)]);
        assert_eq!(filter(&one, None, None), (vec![], vec![]));
    }
}
