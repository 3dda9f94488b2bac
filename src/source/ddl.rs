//! Classifying DDL statements from the binlog's QUERY events.
//!
//! Changes to columns (add, drop, widen) need no parsing: the next TABLE_MAP
//! event carries the new shape and rows are decoded with it. What TABLE_MAP
//! cannot show is what happened to existing rows or names: a TRUNCATE empties
//! a table, a DROP removes it (MariaDB's `CREATE OR REPLACE TABLE` too: it is a
//! drop followed by a create), a RENAME moves it, and a column rename looks
//! like a drop plus an add. Those statements are recognised here, so they can
//! be applied to the target in source order. A CREATE TABLE is recognised too:
//! a table without rows has no TABLE_MAP to bring its shape, so the source
//! copies it (`binlog.rs`), which gives its target table the shape it had.
//!
//! This is deliberately a small tokenizer, not a SQL parser. It recognises
//! the statement forms it knows, and anything else is `None`. Because column
//! changes travel in TABLE_MAP, ignoring an unknown statement never loses row
//! data. It cannot panic on any input.

use crate::schema::TableRef;

/// A DDL statement that affects replicated rows, names or tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ddl {
    /// `TRUNCATE [TABLE] t`.
    Truncate(TableRef),
    /// `DROP TABLE [IF EXISTS] t1, t2`.
    Drop(Vec<TableRef>),
    /// `CREATE OR REPLACE TABLE t ...` (MariaDB): the table that was there, rows and all, is
    /// dropped, and a new one, empty, takes its name.
    Replace(TableRef),
    /// `CREATE TABLE t ...` (also `LIKE` and `... SELECT`): a new table. Not with `IF NOT
    /// EXISTS`, which the server logs whether or not the table was there.
    Create(TableRef),
    /// `RENAME TABLE a TO b, ...` or `ALTER TABLE a RENAME [TO|AS] b`.
    RenameTables(Vec<(TableRef, TableRef)>),
    /// `ALTER TABLE t RENAME COLUMN a TO b` or `ALTER TABLE t CHANGE [COLUMN] a b ...`.
    RenameColumns(TableRef, Vec<(String, String)>),
}

/// Tokens: identifiers (backquotes removed), words and punctuation; comments and string
/// literals are skipped.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut id = String::new();
                while let Some(c) = chars.next() {
                    if c == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            id.push('`');
                        } else {
                            break;
                        }
                    } else {
                        id.push(c);
                    }
                }
                // A leading NUL marks a quoted identifier: never a keyword.
                out.push(format!("\0{id}"));
            }
            '\'' | '"' => {
                let q = c;
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == q {
                        break;
                    }
                }
                out.push("'".into());
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {}
            '.' | ',' | '(' | ')' | ';' => out.push(c.to_string()),
            _ => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "`.,();'\"".contains(n) {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                out.push(w);
            }
        }
    }
    out
}

struct Cursor<'a> {
    t: &'a [String],
    i: usize,
    default_db: &'a str,
}

impl Cursor<'_> {
    fn peek_kw(&self, kw: &str) -> bool {
        self.t.get(self.i).is_some_and(|w| !w.starts_with('\0') && w.eq_ignore_ascii_case(kw))
    }

    fn kw(&mut self, kw: &str) -> bool {
        let yes = self.peek_kw(kw);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn punct(&mut self, p: &str) -> bool {
        let yes = self.t.get(self.i).is_some_and(|w| w == p);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn ident(&mut self) -> Option<String> {
        let w = self.t.get(self.i)?;
        if w.len() == 1 && ".,();'".contains(w.as_str()) {
            return None;
        }
        self.i += 1;
        Some(w.strip_prefix('\0').unwrap_or(w).to_string())
    }

    fn table(&mut self) -> Option<TableRef> {
        let first = self.ident()?;
        if self.punct(".") {
            let name = self.ident()?;
            Some(TableRef::new(first, name))
        } else {
            Some(TableRef::new(self.default_db, first))
        }
    }
}

/// Classify one statement; `default_db` is the QUERY event's current database.
///
/// One match over statement shapes: the list of DDL binferry follows, in one place.
pub(crate) fn classify(sql: &str, default_db: &str) -> Option<Ddl> {
    let t = tokens(sql);
    let mut c = Cursor { t: &t, i: 0, default_db };
    if c.kw("TRUNCATE") {
        c.kw("TABLE");
        return c.table().map(Ddl::Truncate);
    }
    if c.kw("DROP") {
        if c.kw("TEMPORARY") {
            return None;
        }
        if !c.kw("TABLE") && !c.kw("TABLES") {
            return None;
        }
        if c.kw("IF") && !c.kw("EXISTS") {
            return None;
        }
        let mut tables = vec![c.table()?];
        while c.punct(",") {
            tables.push(c.table()?);
        }
        return Some(Ddl::Drop(tables));
    }
    if c.kw("CREATE") {
        let replace = c.kw("OR");
        if (replace && !c.kw("REPLACE")) || c.kw("TEMPORARY") || !c.kw("TABLE") {
            return None;
        }
        if replace {
            return c.table().map(Ddl::Replace);
        }
        // With IF NOT EXISTS, a table that is there stays as it is, and nothing in the binlog
        // says whether it was.
        if c.peek_kw("IF") {
            return None;
        }
        return c.table().map(Ddl::Create);
    }
    if c.kw("RENAME") {
        if !c.kw("TABLE") && !c.kw("TABLES") {
            return None;
        }
        let mut pairs = Vec::new();
        loop {
            let from = c.table()?;
            if !c.kw("TO") {
                return None;
            }
            pairs.push((from, c.table()?));
            if !c.punct(",") {
                break;
            }
        }
        return Some(Ddl::RenameTables(pairs));
    }
    if c.kw("ALTER") {
        c.kw("ONLINE");
        c.kw("IGNORE");
        if !c.kw("TABLE") {
            return None;
        }
        c.kw("IF").then(|| c.kw("EXISTS"));
        let table = c.table()?;
        let mut renames = Vec::new();
        let mut rename_to = None;
        // Walk the comma-separated alter specifications at the top nesting level.
        loop {
            if c.kw("RENAME") {
                if c.kw("COLUMN") {
                    let from = c.ident()?;
                    if !c.kw("TO") {
                        return None;
                    }
                    renames.push((from, c.ident()?));
                } else if c.kw("INDEX") || c.kw("KEY") {
                    // an index rename: no effect on rows
                } else {
                    let _ = c.kw("TO") || c.kw("AS");
                    rename_to = Some(c.table()?);
                }
            } else if c.kw("CHANGE") {
                c.kw("COLUMN");
                c.kw("IF").then(|| c.kw("EXISTS"));
                let from = c.ident()?;
                let to = c.ident()?;
                if from != to {
                    renames.push((from, to));
                }
            }
            // Skip to the next top-level comma.
            let mut depth = 0usize;
            loop {
                match c.t.get(c.i).map(String::as_str) {
                    None => break,
                    Some("(") => depth += 1,
                    Some(")") => depth = depth.saturating_sub(1),
                    Some(",") if depth == 0 => break,
                    _ => {}
                }
                c.i += 1;
            }
            if !c.punct(",") {
                break;
            }
        }
        if let Some(to) = rename_to {
            return Some(Ddl::RenameTables(vec![(table, to)]));
        }
        if !renames.is_empty() {
            return Some(Ddl::RenameColumns(table, renames));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, n: &str) -> TableRef {
        TableRef::new(db, n)
    }

    #[test]
    fn recognises_the_row_affecting_statements() {
        assert_eq!(classify("TRUNCATE TABLE `shop`.`orders`", "x"), Some(Ddl::Truncate(t("shop", "orders"))));
        assert_eq!(classify("truncate orders", "shop"), Some(Ddl::Truncate(t("shop", "orders"))));
        assert_eq!(
            classify("DROP TABLE IF EXISTS a, `b`.c /* generated by server */", "d"),
            Some(Ddl::Drop(vec![t("d", "a"), t("b", "c")]))
        );
        assert_eq!(
            classify("CREATE OR REPLACE TABLE `shop`.orders (id INT)", "x"),
            Some(Ddl::Replace(t("shop", "orders")))
        );
        assert_eq!(classify("create or replace table orders like o2", "shop"), Some(Ddl::Replace(t("shop", "orders"))));
        assert_eq!(classify("CREATE TABLE a (b INT)", "d"), Some(Ddl::Create(t("d", "a"))));
        assert_eq!(classify("create table `x`.`a` like b", "d"), Some(Ddl::Create(t("x", "a"))));
        assert_eq!(
            classify("CREATE TABLE `a` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) START TRANSACTION", "d"),
            Some(Ddl::Create(t("d", "a")))
        );
        assert_eq!(
            classify("RENAME TABLE a TO b, x.y TO x.z", "d"),
            Some(Ddl::RenameTables(vec![(t("d", "a"), t("d", "b")), (t("x", "y"), t("x", "z"))]))
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME TO b", "d"),
            Some(Ddl::RenameTables(vec![(t("d", "a"), t("d", "b"))]))
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME COLUMN `x` TO `y`, ADD COLUMN z INT DEFAULT (1 + 2)", "d"),
            Some(Ddl::RenameColumns(t("d", "a"), vec![("x".into(), "y".into())]))
        );
        assert_eq!(
            classify("alter table a add column q decimal(10,2), change column b c varchar(10) comment 'x, y'", "d"),
            Some(Ddl::RenameColumns(t("d", "a"), vec![("b".into(), "c".into())]))
        );
    }

    #[test]
    fn ignores_everything_else_without_panicking() {
        for sql in
            ["", "`", "'unterminated", "/* only a comment", "DROP TABLE", "RENAME TABLE a", "ALTER TABLE", "TRUNCATE"]
        {
            assert_eq!(classify(sql, "d"), None, "{sql}");
        }
        assert_eq!(classify("ALTER TABLE a ADD COLUMN b INT", "d"), None);
        assert_eq!(classify("ALTER TABLE a CHANGE b b BIGINT", "d"), None);
        assert_eq!(classify("ALTER TABLE a RENAME INDEX i TO j", "d"), None);
        assert_eq!(classify("DROP TEMPORARY TABLE t", "d"), None);
        assert_eq!(classify("CREATE INDEX i ON a (b)", "d"), None);
        assert_eq!(classify("CREATE TABLE IF NOT EXISTS a (b INT)", "d"), None);
        assert_eq!(classify("CREATE TEMPORARY TABLE a (b INT)", "d"), None);
        assert_eq!(classify("CREATE OR TABLE a (b INT)", "d"), None);
        assert_eq!(classify("CREATE TABLE", "d"), None);
        assert_eq!(classify("CREATE OR REPLACE TEMPORARY TABLE a (b INT)", "d"), None);
        assert_eq!(classify("CREATE OR REPLACE VIEW v AS SELECT 1", "d"), None);
        assert_eq!(classify("CREATE OR REPLACE TABLE", "d"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(sql in ".{0,200}") {
            let _ = classify(&sql, "d");
        }
    }
}
