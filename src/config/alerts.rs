//! `[alerting]` (the rules) and `[[alerts]]` (where messages go: webhooks, Telegram, email).
//! Secrets (a webhook URL, a bot token, an SMTP password) come from environment variables,
//! never from the file.

use serde::Deserialize;

use super::{Secret, invalid};
use crate::error::{Error, ErrorKind, Result};

/// `[alerting]`: when an alert fires. Every rule has a default; channels come from
/// `[[alerts]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Fire when the lag stays above this many seconds...
    #[serde(default = "default_lag_max")]
    pub lag_max_secs: u64,
    /// ...for this long.
    #[serde(default = "default_lag_for")]
    pub lag_for_secs: u64,
    /// Fire when the target (or the source) keeps failing for this long.
    #[serde(default = "default_unreachable_for")]
    pub unreachable_for_secs: u64,
    /// Fire when the binlog the reader still needs may be purged within this many seconds.
    #[serde(default = "default_retention_min")]
    pub retention_min_secs: u64,
    /// At most this many messages per hour (each channel gets the same); the rest are
    /// counted and said.
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
    /// Also send an information message for each schema change applied to the target.
    #[serde(default = "default_true")]
    pub schema_changes: bool,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            lag_max_secs: default_lag_max(),
            lag_for_secs: default_lag_for(),
            unreachable_for_secs: default_unreachable_for(),
            retention_min_secs: default_retention_min(),
            max_per_hour: default_max_per_hour(),
            schema_changes: true,
        }
    }
}

fn default_lag_max() -> u64 {
    300
}
fn default_lag_for() -> u64 {
    60
}
fn default_unreachable_for() -> u64 {
    60
}
fn default_retention_min() -> u64 {
    6 * 3600
}
fn default_max_per_hour() -> u32 {
    20
}
fn default_true() -> bool {
    true
}

/// Kinds of alert channel.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An HTTP POST of JSON (Slack-compatible or plain).
    Webhook,
    /// A Telegram bot message.
    Telegram,
    /// Email over SMTP.
    Email,
}

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"text": "..."}`: Slack incoming webhooks, Mattermost, Rocket.Chat, Google Chat.
    #[default]
    Slack,
    /// Every field of the alert as JSON (`status`, `severity`, `alert`, `table`, ...).
    Json,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption (a local relay only).
    None,
}

/// One `[[alerts]]` channel. Which fields apply depends on `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertChannelConfig {
    /// `webhook`, `telegram` or `email`.
    pub kind: AlertKind,
    /// A name for logs (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// Webhook: the URL (use `url_env` when the URL itself is the secret, as Slack's are).
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Webhook: `slack` or `json`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Telegram: environment variable holding the bot token.
    #[serde(default)]
    pub bot_token_env: Option<String>,
    /// Telegram: the chat to post to.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// Telegram: the Bot API base URL.
    #[serde(default = "default_telegram_api")]
    pub api_base: String,
    /// Email: SMTP server.
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// Email: SMTP port (default 587 for STARTTLS, 465 for TLS, 25 without).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// Email: `starttls`, `tls` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// Email: a CA certificate (PEM) to verify the server with, in addition to the public
    /// roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Email: SMTP user, if the server wants a login.
    #[serde(default)]
    pub username: Option<String>,
    /// Email: environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Email: sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// Email: recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}

impl AlertingConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.lag_max_secs == 0 {
            return Err(invalid("alerting.lag_max_secs", "must be at least 1"));
        }
        if self.max_per_hour == 0 {
            return Err(invalid("alerting.max_per_hour", "must be at least 1"));
        }
        Ok(())
    }
}

impl AlertChannelConfig {
    /// The channel's name in logs.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("{:?}", self.kind).to_lowercase())
    }

    pub(super) fn validate(&self, i: usize) -> Result<()> {
        let field = |f: &str| format!("alerts[{i}].{f}");
        let url_like = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        match self.kind {
            AlertKind::Webhook => match (&self.url, &self.url_env) {
                (Some(u), None) if url_like(u) => {}
                (Some(u), None) => {
                    return Err(invalid(&field("url"), format!("{u:?} must be an http:// or https:// URL")));
                }
                (None, Some(_)) => {}
                _ => return Err(invalid(&field("url"), "set exactly one of url and url_env")),
            },
            AlertKind::Telegram => {
                if self.bot_token_env.is_none() {
                    return Err(invalid(&field("bot_token_env"), "missing: the variable holding the bot token"));
                }
                if self.chat_id.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(&field("chat_id"), "missing: the chat to post to"));
                }
                if !url_like(&self.api_base) {
                    return Err(invalid(&field("api_base"), "must be an http:// or https:// URL"));
                }
            }
            AlertKind::Email => {
                if self.smtp_host.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(&field("smtp_host"), "missing: the SMTP server"));
                }
                if self.from.is_none() {
                    return Err(invalid(&field("from"), "missing: the sender address"));
                }
                if self.to.is_empty() {
                    return Err(invalid(&field("to"), "must list at least one recipient"));
                }
                if self.ca_file.is_some() && self.tls == SmtpTls::None {
                    return Err(invalid(
                        &field("ca_file"),
                        "verifies TLS, and tls = \"none\": remove it or use starttls/tls",
                    ));
                }
                if self.password_env.is_some() && self.username.is_none() {
                    return Err(invalid(&field("username"), "missing: password_env needs the user it logs in as"));
                }
            }
        }
        Ok(())
    }

    /// The webhook URL (a secret when it comes from `url_env`).
    pub fn webhook_url(&self) -> Result<Secret> {
        match (&self.url, &self.url_env) {
            (Some(u), _) => Ok(Secret::new(u.clone())),
            (None, Some(var)) => env_secret(var, &format!("{}.url_env", self.label())),
            (None, None) => Err(Error::new(ErrorKind::Config, "alerts: a webhook without url")),
        }
    }

    /// The Telegram bot token.
    pub fn bot_token(&self) -> Result<Secret> {
        let var = self.bot_token_env.as_deref().unwrap_or_default();
        env_secret(var, &format!("{}.bot_token_env", self.label()))
    }

    /// The SMTP password, when one is configured.
    pub fn smtp_password(&self) -> Result<Option<Secret>> {
        self.password_env.as_deref().map(|var| env_secret(var, &format!("{}.password_env", self.label()))).transpose()
    }

    /// The SMTP port: configured, or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

fn env_secret(var: &str, field: &str) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!("alerts {field}: environment variable {var} is empty or not set"),
        )
        .with_hint(format!("export {var}=..."))),
    }
}
