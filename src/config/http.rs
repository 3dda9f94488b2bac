//! `[http]`: the operations endpoint (`/metrics`, `/healthz`, `/readyz`, `/status`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::Secret;
use crate::error::{Error, ErrorKind, Result};

/// Where the endpoint listens unless configured: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// `/readyz` fails while the lag is above this many seconds, by default.
pub const DEFAULT_READY_MAX_LAG_SECS: u64 = 60;

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on; `""` turns the endpoint off. An address other than
    /// loopback needs `token_env`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Environment variable holding a bearer token that `/status` requires. `/metrics` and
    /// the probes never need it.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `/readyz` answers 503 while the replication lag is above this many seconds.
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_listen(), token_env: None, ready_max_lag_secs: default_ready_max_lag() }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}

fn default_ready_max_lag() -> u64 {
    DEFAULT_READY_MAX_LAG_SECS
}

impl HttpConfig {
    /// The address to listen on, `None` when the endpoint is off.
    pub fn address(&self) -> Result<Option<SocketAddr>> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.listen.parse().map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("http.listen: expected host:port such as {DEFAULT_LISTEN}, found {:?} ({e})", self.listen),
            )
        })?;
        if !addr.ip().is_loopback() && self.token_env.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("http.listen: {addr} is reachable from other hosts, and no http.token_env protects /status"),
            )
            .with_hint("keep the default loopback address (put a proxy in front), or set http.token_env to a variable holding a bearer token"));
        }
        Ok(Some(addr))
    }

    /// The bearer token, read from its variable; an empty or missing variable is an error,
    /// not an open endpoint.
    pub fn token(&self) -> Result<Option<Secret>> {
        let Some(var) = &self.token_env else { return Ok(None) };
        match std::env::var(var) {
            Ok(t) if !t.is_empty() => Ok(Some(Secret::new(t))),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("http.token_env: environment variable {var} is empty or not set"),
            )
            .with_hint(format!("export {var} with the token clients send as `Authorization: Bearer <token>`"))),
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        self.address()?;
        if self.ready_max_lag_secs == 0 {
            return Err(Error::new(ErrorKind::Config, "http.ready_max_lag_secs: must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(listen: &str, token_env: Option<&str>) -> HttpConfig {
        HttpConfig { listen: listen.into(), token_env: token_env.map(String::from), ..HttpConfig::default() }
    }

    #[test]
    fn only_loopback_listens_without_a_token() {
        assert_eq!(http("", None).address().ok(), Some(None), "off");
        assert!(http(DEFAULT_LISTEN, None).address().is_ok_and(|a| a.is_some()));
        assert!(http("[::1]:9187", None).address().is_ok());
        let open = http("0.0.0.0:9187", None).address().unwrap_err();
        assert!(open.to_string().contains("no http.token_env protects /status"), "{open}");
        assert!(http("0.0.0.0:9187", Some("T")).address().is_ok());
        let bad = http("localhost", None).address().unwrap_err();
        assert!(bad.to_string().contains("expected host:port"), "{bad}");
    }

    #[test]
    fn a_missing_token_is_an_error_not_an_open_door() {
        let e = http(DEFAULT_LISTEN, Some("BINFERRY_TEST_NO_SUCH_TOKEN_VAR")).token().unwrap_err();
        assert!(e.to_string().contains("BINFERRY_TEST_NO_SUCH_TOKEN_VAR"), "{e}");
    }
}
