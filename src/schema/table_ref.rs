//! The name of a source table. A file of its own because [`crate::error`] names tables and
//! every other schema module returns errors: this one imports nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A source table, `db`.`name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    /// Source database (schema) name.
    pub db: String,
    /// Table name.
    pub name: String,
}

impl TableRef {
    /// `db`.`name`.
    pub fn new(db: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef { db: db.into(), name: name.into() }
    }

    /// `db.name`, the form used by include/exclude patterns and in checkpoints.
    pub fn key(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.name)
    }
}
