//! Connections to MySQL and MariaDB servers: options, TLS with MySQL's `ssl-mode`
//! semantics, and what a connection reports about its encryption. The source (metadata,
//! snapshot and binlog connections) and the MySQL target connect through here.
//!
//! | `tls.mode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disabled` | never | – |
//! | `preferred` (default) | when the server offers TLS; otherwise plain text, with a warning | no |
//! | `required` | always; a server without TLS is refused | no |
//! | `verify_ca` | always | signed by `ca_file` (or a public CA) |
//! | `verify_identity` | always | signed, and issued for the host binferry connects to |
//!
//! TLS is rustls (no OpenSSL). Two details of the client library are handled here:
//! mysql_async 0.37 recognises a certificate issued for another name by the text
//! `NotValidForName` in the error, which rustls 0.23 no longer writes (it reports
//! `NotValidForNameContext`), so its own `verify_ca` refuses such certificates. rustls checks
//! the name only after the chain verified, and its error lists the names the certificate
//! holds: `verify_ca` reconnects verifying against one of them, which checks exactly the
//! chain. And a server without TLS fails the handshake: `preferred` then connects without
//! it, once per process, and says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, Pool, SslOpts};
use tracing::warn;

use crate::config::{TlsConfig, TlsMode};
use crate::error::{Error, ErrorKind, Result};

/// Which side of the pipeline a server is on: decides how its errors are classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The server whose binlog is read.
    Source,
    /// The MySQL target.
    Target,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    /// The connections `check` speaks for.
    fn connections(self) -> &'static str {
        match self {
            Role::Source => "source connections (metadata, snapshot, binlog)",
            Role::Target => "target connections",
        }
    }
}

/// What connecting has learnt about a server, shared by all connections to it.
#[derive(Clone, Debug, Default)]
struct Learnt {
    /// `preferred` and the server offers no TLS: connect in plain text.
    plaintext: bool,
    /// `verify_ca`: the name the server's certificate holds, verified against.
    name: Option<String>,
}

/// One MySQL/MariaDB server and how to connect to it.
#[derive(Clone)]
pub struct Endpoint {
    role: Role,
    /// The config section, for messages (`source`, `sink.mysql`).
    field: &'static str,
    host: String,
    port: u16,
    opts: OptsBuilder,
    tls: TlsConfig,
    connect_timeout: Duration,
    learnt: Arc<Mutex<Learnt>>,
}

impl std::fmt::Debug for Endpoint {
    // The options hold the password: only the address and the TLS settings are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("address", &self.address()).field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// What a connection says about its encryption.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsState {
    /// `Ssl_version` of the session (`TLSv1.3`), `None` when not encrypted.
    pub version: Option<String>,
    /// `Ssl_cipher` of the session.
    pub cipher: Option<String>,
}

impl Endpoint {
    /// A server at `host:port`; `opts` carries everything but the address and TLS (user,
    /// password, init statements, ...).
    pub fn new(
        role: Role,
        field: &'static str,
        host: &str,
        port: u16,
        opts: OptsBuilder,
        tls: TlsConfig,
        connect_timeout: Duration,
    ) -> Self {
        let opts = opts.ip_or_hostname(host.to_string()).tcp_port(port).prefer_socket(false);
        if let Some(key) = &tls.key_file {
            crate::config::warn_if_readable_by_others(&format!("{field}.tls.key_file"), key);
        }
        Endpoint {
            role,
            field,
            host: host.to_string(),
            port,
            opts,
            tls,
            connect_timeout,
            learnt: Arc::new(Mutex::new(Learnt::default())),
        }
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn learnt(&self) -> Learnt {
        self.learnt.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn learn(&self, f: impl FnOnce(&mut Learnt)) {
        if let Ok(mut l) = self.learnt.lock() {
            f(&mut l);
        }
    }

    /// The TLS options of a connection, given what was learnt.
    fn ssl_opts(&self, learnt: &Learnt) -> Option<SslOpts> {
        let mode = self.tls.mode;
        if mode == TlsMode::Disabled || learnt.plaintext {
            return None;
        }
        let mut ssl = SslOpts::default();
        if let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone().into(), key.clone().into())));
        }
        match mode {
            TlsMode::Preferred | TlsMode::Required => ssl = ssl.with_danger_accept_invalid_certs(true),
            TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
                if let Some(ca) = &self.tls.ca_file {
                    ssl = ssl.with_root_certs(vec![ca.clone().into()]).with_disable_built_in_roots(true);
                }
                if let Some(name) = learnt.name.clone().filter(|_| mode == TlsMode::VerifyCa) {
                    ssl = ssl.with_danger_tls_hostname_override(Some(name));
                }
            }
            TlsMode::Disabled => {}
        }
        Some(ssl)
    }

    fn opts(&self, learnt: &Learnt) -> Opts {
        self.opts.clone().ssl_opts(self.ssl_opts(learnt)).into()
    }

    async fn try_connect(&self, learnt: &Learnt) -> std::result::Result<Conn, Attempt> {
        let opts = self.opts(learnt);
        tracing::debug!(
            server = %self.address(),
            user = opts.user().unwrap_or(""),
            tls_mode = self.tls.mode.as_str(),
            tls = opts.ssl_opts().is_some(),
            "connecting to the {}",
            self.role.name()
        );
        match tokio::time::timeout(self.connect_timeout, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Attempt::Failed(e)),
            Err(_) => Err(Attempt::TimedOut),
        }
    }

    /// A new connection, encrypted as `tls.mode` says.
    pub async fn connect(&self) -> Result<Conn> {
        let learnt = self.learnt();
        let err = match self.try_connect(&learnt).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        if let Attempt::Failed(e) = &err {
            if self.tls.mode == TlsMode::Preferred && offers_no_tls(e) {
                warn!(
                    server = %self.address(),
                    "the {} offers no TLS: connecting without encryption (tls.mode = \"preferred\"); credentials and \
                     rows cross the network in clear. Fix: enable TLS on the server and set {}.tls.mode = \
                     \"verify_identity\"",
                    self.role.name(),
                    self.field
                );
                self.learn(|l| l.plaintext = true);
                return self.retry().await;
            }
            if self.tls.mode == TlsMode::VerifyCa
                && let Some(name) = certificate_names(e).into_iter().next()
            {
                self.learn(|l| l.name = Some(name));
                return self.retry().await;
            }
        }
        Err(self.explain(err))
    }

    async fn retry(&self) -> Result<Conn> {
        let learnt = self.learnt();
        self.try_connect(&learnt).await.map_err(|e| self.explain(e))
    }

    /// A pool of connections as [`connect`](Self::connect) makes them (it connects once first,
    /// to learn how).
    pub async fn pool(&self) -> Result<Pool> {
        drop(self.connect().await?);
        Ok(Pool::new(self.opts(&self.learnt())))
    }

    /// The error of a failed connection, with what is wrong and the fix.
    fn explain(&self, attempt: Attempt) -> Error {
        let (address, role, field, mode) = (self.address(), self.role.name(), self.field, self.tls.mode);
        let e = match attempt {
            Attempt::TimedOut => {
                let kind = match self.role {
                    Role::Source => ErrorKind::SourceUnavailable,
                    Role::Target => ErrorKind::TargetUnavailable,
                };
                return Error::new(
                    kind,
                    format!("connecting to {role} {address} timed out after {:?}", self.connect_timeout),
                );
            }
            Attempt::Failed(e) => e,
        };
        let definite = match self.role {
            Role::Source => ErrorKind::SourceSetting,
            Role::Target => ErrorKind::TargetRejected,
        };
        let tls = |detail: String, fix: String| Error::new(definite, detail).with_hint(fix);
        if offers_no_tls(&e) {
            return tls(
                format!(
                    "{field}.tls.mode: expected a server that offers TLS ({}), found {role} {address} without it",
                    mode.as_str()
                ),
                format!(
                    "enable TLS on the server (ssl_cert and ssl_key in [mysqld]), or set {field}.tls.mode = \"preferred\" \
                     to allow an unencrypted connection"
                ),
            );
        }
        match crate::error::tls_failure(&e) {
            Some(rustls::Error::InvalidCertificate(cert)) => {
                let (what, fix) = certificate_problem(cert, field, &self.host, self.tls.ca_file.as_deref(), &e);
                tls(
                    format!("{field}.tls.mode = \"{}\": the certificate of {role} {address} {what}", mode.as_str()),
                    fix,
                )
            }
            Some(other) => tls(
                format!("TLS with {role} {address} failed: {other}"),
                format!("check {field}.tls (ca_file, cert_file, key_file) and the server's TLS settings"),
            ),
            None => {
                let what = format!("connecting to {role} {address}");
                match self.role {
                    Role::Source => Error::source_mysql(e, what),
                    Role::Target => Error::target_mysql(e, what),
                }
            }
        }
    }

    /// One line on how `conn` is encrypted, for `binferry check`; and whether it is a
    /// problem the operator should hear about (a warning, not a refusal).
    pub fn describe(&self, state: &TlsState) -> (String, Option<String>) {
        let (role, connections) = (self.role.name(), self.role.connections());
        match (&state.version, &state.cipher) {
            (Some(version), cipher) => {
                let checked = match self.tls.mode {
                    TlsMode::VerifyIdentity => format!("server certificate verified, for the name {}", self.host),
                    TlsMode::VerifyCa => "server certificate verified (its CA; not the name)".to_string(),
                    _ => format!("server certificate not verified (tls.mode = \"{}\")", self.tls.mode.as_str()),
                };
                let client = if self.tls.cert_file.is_some() { ", client certificate sent" } else { "" };
                let cipher = cipher.as_deref().unwrap_or("?");
                (format!("{connections} encrypted: {version}, {cipher}; {checked}{client}"), None)
            }
            (None, _) => (
                format!("{connections} NOT encrypted (tls.mode = \"{}\")", self.tls.mode.as_str()),
                Some(format!(
                    "the {role} connection is not encrypted: credentials and rows cross the network in clear. Fix: \
                     enable TLS on the server and set {}.tls.mode = \"verify_identity\" (with ca_file if its CA is \
                     private)",
                    self.field
                )),
            ),
        }
    }
}

/// What is wrong with a server certificate that rustls refused, and the operator's fix.
fn certificate_problem(
    cert: &rustls::CertificateError,
    field: &str,
    host: &str,
    ca_file: Option<&std::path::Path>,
    err: &mysql_async::Error,
) -> (String, String) {
    use rustls::CertificateError as C;
    let ca = ca_file.map_or("the public CAs".to_string(), |p| p.display().to_string());
    match cert {
        C::UnknownIssuer | C::BadSignature => (
            format!("is not signed by a CA binferry trusts ({ca})"),
            format!(
                "set {field}.tls.ca_file to the CA certificate that signed the server's (Amazon RDS: the \
                 regional bundle from truststore.pki.rds.amazonaws.com; Cloud SQL: the server CA from the \
                 console; Azure: the DigiCert Global Root G2), or set {field}.tls.mode = \"required\" to \
                 encrypt without checking"
            ),
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => (
            format!("is not issued for the name {host} (it holds {:?})", certificate_names(err)),
            format!(
                "connect with a name the certificate holds ({field}.host), or set {field}.tls.mode = \
                 \"verify_ca\" to check the CA and not the name"
            ),
        ),
        C::Expired | C::ExpiredContext { .. } => (
            "has expired".to_string(),
            "renew the server's certificate (or, if it is new, check this machine's clock)".to_string(),
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            ("is not valid yet".to_string(), "check this machine's clock, or the certificate's start date".to_string())
        }
        other => (format!("was refused ({other:?})"), format!("check the server's certificate and {field}.tls")),
    }
}

/// A failed connection attempt.
enum Attempt {
    Failed(mysql_async::Error),
    TimedOut,
}

/// The session's encryption, as the server reports it.
pub async fn tls_state(conn: &mut Conn) -> std::result::Result<TlsState, mysql_async::Error> {
    let rows: Vec<(String, String)> =
        conn.query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')").await?;
    let get = |name: &str| {
        rows.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    };
    Ok(TlsState { version: get("Ssl_version"), cipher: get("Ssl_cipher") })
}

fn offers_no_tls(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
}

/// The names a refused server certificate holds, when it was refused for its name only.
fn certificate_names(e: &mysql_async::Error) -> Vec<String> {
    let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { presented, .. })) =
        crate::error::tls_failure(e)
    else {
        return vec![];
    };
    // rustls shows each name as `DnsName("db.example")` or `IpAddress(...)`.
    presented
        .iter()
        .filter_map(|p| p.strip_prefix("DnsName(\"").and_then(|s| s.strip_suffix("\")")).map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(mode: TlsMode) -> Endpoint {
        let tls = TlsConfig { mode, ..TlsConfig::default() };
        Endpoint::new(Role::Source, "source", "db.example", 3306, OptsBuilder::default(), tls, Duration::from_secs(1))
    }

    #[test]
    fn each_mode_sets_the_matching_options() {
        let learnt = Learnt::default();
        assert!(endpoint(TlsMode::Disabled).ssl_opts(&learnt).is_none());
        for mode in [TlsMode::Preferred, TlsMode::Required] {
            let ssl = endpoint(mode).ssl_opts(&learnt).unwrap();
            assert!(ssl.accept_invalid_certs(), "{mode:?} encrypts without verifying");
        }
        for mode in [TlsMode::VerifyCa, TlsMode::VerifyIdentity] {
            let ssl = endpoint(mode).ssl_opts(&learnt).unwrap();
            assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation(), "{mode:?} verifies");
            assert_eq!(ssl.tls_hostname_override(), None);
        }
        let named = Learnt { name: Some("localhost".into()), ..Learnt::default() };
        assert_eq!(endpoint(TlsMode::VerifyCa).ssl_opts(&named).unwrap().tls_hostname_override(), Some("localhost"));
        assert_eq!(endpoint(TlsMode::VerifyIdentity).ssl_opts(&named).unwrap().tls_hostname_override(), None);
        let plain = Learnt { plaintext: true, ..Learnt::default() };
        assert!(endpoint(TlsMode::Preferred).ssl_opts(&plain).is_none());
    }

    #[test]
    fn a_plain_connection_is_a_warning_an_encrypted_one_a_note() {
        let e = endpoint(TlsMode::VerifyIdentity);
        let state = TlsState { version: Some("TLSv1.3".into()), cipher: Some("TLS_AES_256_GCM_SHA384".into()) };
        let (line, warning) = e.describe(&state);
        assert_eq!(
            line,
            "source connections (metadata, snapshot, binlog) encrypted: TLSv1.3, TLS_AES_256_GCM_SHA384; server \
             certificate verified, for the name db.example"
        );
        assert!(warning.is_none());
        let (line, warning) = endpoint(TlsMode::Preferred).describe(&TlsState::default());
        assert!(line.contains("NOT encrypted"), "{line}");
        assert!(warning.is_some_and(|w| w.contains("source.tls.mode = \"verify_identity\"")));
    }

    #[test]
    fn debug_shows_no_options() {
        let e = endpoint(TlsMode::Preferred);
        let shown = format!("{e:?}");
        assert!(shown.contains("db.example:3306") && !shown.contains("opts"), "{shown}");
    }

    #[test]
    fn each_refused_certificate_gets_its_own_fix() {
        use rustls::CertificateError as C;
        let err = mysql_async::Error::Other("no names".into());
        let ca = std::path::Path::new("/etc/ca.pem");
        let cases: &[(C, &str, &str)] = &[
            (
                C::UnknownIssuer,
                "is not signed by a CA binferry trusts (/etc/ca.pem)",
                "set source.tls.ca_file to the CA",
            ),
            (C::BadSignature, "is not signed by a CA binferry trusts", "truststore.pki.rds.amazonaws.com"),
            (
                C::NotValidForName,
                "is not issued for the name db.example (it holds [])",
                "source.tls.mode = \"verify_ca\"",
            ),
            (C::Expired, "has expired", "renew the server's certificate"),
            (C::NotValidYet, "is not valid yet", "check this machine's clock"),
            (C::Revoked, "was refused (Revoked)", "check the server's certificate and source.tls"),
        ];
        for (cert, what, fix) in cases {
            let (w, f) = certificate_problem(cert, "source", "db.example", Some(ca), &err);
            assert!(w.contains(what), "{cert:?}: {w}");
            assert!(f.contains(fix), "{cert:?}: {f}");
        }
    }
}
