//! Delivering an alert: webhooks (Slack-compatible or plain JSON), the Telegram Bot API, and
//! email over SMTP. Each returns an error text that never holds a secret: URLs (a Slack
//! webhook URL, the Telegram URL with its bot token) are stripped from HTTP errors.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::Alert;
use crate::config::Secret;
use crate::config::alerts::{AlertChannelConfig, AlertKind, SmtpTls, WebhookFormat};
use crate::error::{Error, ErrorKind, Result};

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a channel delivers.
enum Target {
    Webhook { url: Secret, format: WebhookFormat },
    Telegram { send_message: Secret, chat_id: String },
    Email { transport: Box<AsyncSmtpTransport<Tokio1Executor>>, from: Mailbox, to: Vec<Mailbox> },
}

/// One configured `[[alerts]]` channel, ready to send.
pub(super) struct Channel {
    /// For logs.
    pub(super) label: String,
    target: Target,
    http: reqwest::Client,
}

impl Channel {
    /// Resolve the channel's secrets and build its client.
    pub(super) fn from_config(c: &AlertChannelConfig) -> Result<Channel> {
        let label = c.label();
        let bad = |what: String| Error::new(ErrorKind::Config, format!("alerts {label}: {what}"));
        let target = match c.kind {
            AlertKind::Webhook => Target::Webhook { url: c.webhook_url()?, format: c.format },
            AlertKind::Telegram => Target::Telegram {
                send_message: Secret::new(format!(
                    "{}/bot{}/sendMessage",
                    c.api_base.trim_end_matches('/'),
                    c.bot_token()?.expose()
                )),
                chat_id: c.chat_id.clone().unwrap_or_default(),
            },
            AlertKind::Email => {
                let host = c.smtp_host.clone().unwrap_or_default();
                // The public (Mozilla) roots, plus the configured CA for a private one.
                let params = || -> Result<TlsParameters> {
                    let mut b = TlsParameters::builder(host.clone());
                    if let Some(path) = &c.ca_file {
                        let pem = std::fs::read(path)
                            .map_err(|e| bad(format!("ca_file: cannot read {}: {e}", path.display())))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|e| bad(format!("ca_file {}: not a PEM certificate: {e}", path.display())))?;
                        b = b.add_root_certificate(cert);
                    }
                    b.build_rustls().map_err(|e| bad(format!("TLS for {host}: {e}")))
                };
                let tls = match c.tls {
                    SmtpTls::None => Tls::None,
                    SmtpTls::Starttls => Tls::Required(params()?),
                    SmtpTls::Tls => Tls::Wrapper(params()?),
                };
                let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()).tls(tls);
                let mut builder = builder.port(c.port()).timeout(Some(SEND_TIMEOUT));
                if let Some(user) = &c.username {
                    let password = c.smtp_password()?.map(|p| p.expose().to_string()).unwrap_or_default();
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                let mailbox =
                    |a: &str, field: &str| a.parse::<Mailbox>().map_err(|e| bad(format!("{field} {a:?}: {e}")));
                Target::Email {
                    transport: Box::new(builder.build()),
                    from: mailbox(c.from.as_deref().unwrap_or_default(), "from")?,
                    to: c.to.iter().map(|a| mailbox(a, "to")).collect::<Result<_>>()?,
                }
            }
        };
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(Channel { label, target, http })
    }

    /// Deliver `alert` once.
    pub(super) async fn send(&self, alert: &Alert) -> std::result::Result<(), String> {
        match &self.target {
            Target::Webhook { url, format } => {
                let body = match format {
                    WebhookFormat::Slack => serde_json::json!({ "text": alert.text() }),
                    WebhookFormat::Json => {
                        let mut v = serde_json::to_value(alert).map_err(|e| e.to_string())?;
                        v["text"] = alert.text().into();
                        v
                    }
                };
                self.post(url, &body).await
            }
            Target::Telegram { send_message, chat_id } => {
                let body =
                    serde_json::json!({ "chat_id": chat_id, "text": alert.text(), "disable_web_page_preview": true });
                self.post(send_message, &body).await
            }
            Target::Email { transport, from, to } => {
                let mut message = Message::builder().from(from.clone()).subject(alert.subject());
                for m in to {
                    message = message.to(m.clone());
                }
                let message = message.body(alert.text()).map_err(|e| format!("building the email: {e}"))?;
                transport.send(message).await.map(|_| ()).map_err(|e| format!("SMTP: {e}"))
            }
        }
    }

    async fn post(&self, url: &Secret, body: &serde_json::Value) -> std::result::Result<(), String> {
        let resp =
            self.http.post(url.expose()).json(body).send().await.map_err(|e| format!("HTTP: {}", e.without_url()))?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("HTTP {}", resp.status())) }
    }
}
