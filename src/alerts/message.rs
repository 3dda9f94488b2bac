//! An alert as channels send it, and its renderings: plain text (Telegram, email, Slack's
//! `text`) and JSON (plain webhooks). Pure.

use serde::Serialize;

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Replication is stopped or data is not arriving.
    Critical,
    /// Something needs attention soon.
    Warning,
    /// For the record (a schema change applied).
    Info,
}

/// Whether an episode starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The condition holds (sent once per episode).
    Firing,
    /// The condition cleared.
    Resolved,
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// The pipeline.
    pub pipeline: String,
    /// Firing or resolved.
    pub status: Status,
    /// How bad.
    pub severity: Severity,
    /// What (`lag over the bound`, `target failing`, `table stopped`, ...).
    pub alert: String,
    /// Which table, when it is about one.
    pub table: Option<String>,
    /// Since when (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub since: String,
    /// What is wrong, with numbers.
    pub detail: String,
    /// What to do.
    pub fix: String,
    /// Messages the rate limit held back before this one.
    pub suppressed: u64,
}

impl Alert {
    /// One line for subjects and chat previews.
    pub fn subject(&self) -> String {
        let status = match self.status {
            Status::Firing => format!("{:?}", self.severity).to_uppercase(),
            Status::Resolved => "RESOLVED".into(),
        };
        let table = self.table.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
        format!("[binferry {}] {status}: {}{table}", self.pipeline, self.alert)
    }

    /// The whole message for people.
    pub fn text(&self) -> String {
        let mut out = self.subject();
        out.push('\n');
        if let Some(t) = &self.table {
            out.push_str(&format!("table: {t}\n"));
        }
        out.push_str(&format!("since: {} UTC\n", self.since));
        out.push_str(&format!("what: {}\n", self.detail));
        if self.status == Status::Firing && !self.fix.is_empty() {
            out.push_str(&format!("fix: {}\n", self.fix));
        }
        if self.suppressed > 0 {
            out.push_str(&format!(
                "({} earlier alerts were held back by alerting.max_per_hour; see `binferry status`)\n",
                self.suppressed
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_says_what_which_table_since_when_and_the_fix() {
        let mut a = Alert {
            pipeline: "shop".into(),
            status: Status::Firing,
            severity: Severity::Critical,
            alert: "table stopped".into(),
            table: Some("shop.orders".into()),
            since: "2026-11-28 10:00:00".into(),
            detail: "column type not supported".into(),
            fix: "resync the table".into(),
            suppressed: 0,
        };
        assert_eq!(a.subject(), "[binferry shop] CRITICAL: table stopped (shop.orders)");
        let text = a.text();
        for want in ["table: shop.orders", "since: 2026-11-28 10:00:00 UTC", "what: column type", "fix: resync"] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
        a.status = Status::Resolved;
        a.suppressed = 3;
        let text = a.text();
        assert!(text.starts_with("[binferry shop] RESOLVED: table stopped"), "{text}");
        assert!(!text.contains("fix:"), "{text}");
        assert!(text.contains("3 earlier alerts were held back"), "{text}");
    }
}
