//! Shared test harness: real MariaDB servers, the real binferry binary.
//!
//! - [`Env`] gives each test its own source and target databases (unique names) on the
//!   project's MariaDB (`scripts/mariadb.sh`, port `BINFERRY_MARIADB_PORT`, default 3407)
//!   and drops them afterwards, so tests run in parallel.
//! - [`Server`] starts a throwaway MariaDB with extra options (wrong settings on purpose,
//!   or binlogs a test may purge) through the same script, and destroys it on drop.
//! - [`Binferry`] runs the binary with a generated config; tests kill and restart it.
#![allow(dead_code)]

pub mod bank;
pub mod bigquery;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, Row, Value};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Port of the shared project MariaDB.
pub fn main_port() -> u16 {
    std::env::var("BINFERRY_MARIADB_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3407)
}

fn mariadb_script(port: u16, dir: Option<&Path>, args: &[&str]) -> std::process::Output {
    mariadb_script_tls(port, dir, args, false)
}

fn mariadb_script_tls(port: u16, dir: Option<&Path>, args: &[&str], tls: bool) -> std::process::Output {
    let mut cmd = Command::new(repo_root().join("scripts/mariadb.sh"));
    cmd.args(args)
        .env("BINFERRY_MARIADB_PORT", port.to_string())
        .env("BINFERRY_MARIADB_TLS", if tls { "1" } else { "0" });
    if let Some(d) = dir {
        cmd.env("BINFERRY_MARIADB_DIR", d);
    }
    cmd.output().expect("run scripts/mariadb.sh")
}

/// Make sure the shared MariaDB runs (scripts/test.sh starts it; `cargo test` alone works too).
pub fn ensure_main_server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let out = mariadb_script(main_port(), None, &["start"]);
        assert!(out.status.success(), "cannot start MariaDB: {}", String::from_utf8_lossy(&out.stderr));
    });
}

/// `host:port` of the shared Kafka-protocol broker (`scripts/kafka.sh`, port
/// `BINFERRY_KAFKA_PORT`, default 19092).
pub fn kafka_brokers() -> String {
    let port: u16 = std::env::var("BINFERRY_KAFKA_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19092);
    format!("127.0.0.1:{port}")
}

/// REST base URL of the shared BigQuery emulator (`scripts/bigquery.sh`, port
/// `BINFERRY_BQ_PORT`, default 19050).
pub fn bigquery_endpoint() -> String {
    let port: u16 = std::env::var("BINFERRY_BQ_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19050);
    format!("http://127.0.0.1:{port}/bigquery/v2")
}

/// The emulator's Storage API (gRPC) endpoint.
pub fn bigquery_storage_endpoint() -> String {
    let port: u16 = std::env::var("BINFERRY_BQ_GRPC_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19051);
    format!("http://127.0.0.1:{port}")
}

/// Make sure the shared BigQuery emulator runs (scripts/test.sh starts it).
pub fn ensure_bigquery() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/bigquery.sh"))
            .arg("start")
            .output()
            .expect("run scripts/bigquery.sh");
        assert!(out.status.success(), "cannot start the BigQuery emulator: {}", String::from_utf8_lossy(&out.stderr));
    });
}

/// Port of the project's SMTP server (`scripts/smtp.sh`).
pub fn smtp_port() -> u16 {
    std::env::var("BINFERRY_SMTP_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19025)
}

/// Where the SMTP server keeps the messages it receives, one `.eml` file each.
pub fn smtp_dir() -> PathBuf {
    std::env::var_os("BINFERRY_SMTP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/binferry-smtp-{}/mail", smtp_port())))
}

/// The CA that signed the certificate of the SMTP server's STARTTLS listener (port + 1).
pub fn smtp_ca() -> PathBuf {
    PathBuf::from(format!("/tmp/binferry-smtp-{}/tls/ca.pem", smtp_port()))
}

/// Start the project's SMTP server unless it answers.
pub fn ensure_smtp() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/smtp.sh"))
            .arg("start")
            .status()
            .expect("run scripts/smtp.sh");
        assert!(status.success(), "scripts/smtp.sh start failed");
    });
}

/// Make sure the shared broker runs (scripts/test.sh starts it; `cargo test` alone works too).
pub fn ensure_kafka() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let out =
            Command::new(repo_root().join("scripts/kafka.sh")).arg("start").output().expect("run scripts/kafka.sh");
        assert!(out.status.success(), "cannot start the Kafka broker: {}", String::from_utf8_lossy(&out.stderr));
    });
}

pub fn opts(port: u16, user: &str, password: &str) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .init(vec!["SET NAMES utf8mb4", "SET time_zone = '+00:00'"])
        .into()
}

/// A unique suffix for database and pipeline names.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{prefix}_{}_{n:08x}", std::process::id())
}

/// A throwaway MariaDB instance on a free port.
pub struct Server {
    pub port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with(extra, false)
    }

    /// An instance that serves TLS with certificates of a CA of its own ([`Server::tls_file`]).
    pub fn start_tls(extra: &[&str]) -> Server {
        Self::start_with(extra, true)
    }

    /// A file of the instance's TLS material: `ca.pem`, `server-cert.pem` (for `localhost`
    /// only), `client-cert.pem`, `client-key.pem`, `other-ca.pem` (scripts/mariadb.sh).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("tls").join(name)
    }

    fn start_with(extra: &[&str], tls: bool) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["start", "--"];
        args.extend_from_slice(extra);
        let out = mariadb_script_tls(port, Some(dir.path()), &args, tls);
        assert!(out.status.success(), "cannot start MariaDB {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        Server { port, dir, tls }
    }

    pub fn pool(&self) -> Pool {
        Pool::new(opts(self.port, "root", ""))
    }

    /// Shut the server down (its data stays).
    pub fn stop(&self) {
        let out = mariadb_script(self.port, Some(self.dir.path()), &["stop"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Start it again after [`stop`](Self::stop).
    pub fn restart(&self) {
        let out = mariadb_script_tls(self.port, Some(self.dir.path()), &["start"], self.tls);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = mariadb_script(self.port, Some(self.dir.path()), &["destroy"]);
    }
}

/// A test's own source and target databases, config and buffer directory.
pub struct Env {
    pub port: u16,
    pub name: String,
    pub src: String,
    pub dst: String,
    pub pool: Pool,
    pub dir: tempfile::TempDir,
    /// The binferry config, as typed values ([`Env::set`], [`Env::add_table_rule`]), written
    /// out by [`Env::write_config`].
    pub config: toml::Table,
    /// Source tables the comparisons leave out (tables a test expects to be stopped).
    pub diff_skip: Vec<String>,
    /// Environment variables of the binferry processes this `Env` starts (passwords).
    pub process_env: Vec<(String, String)>,
    /// Where the target database lives (the source server unless [`with_target`](Self::with_target)).
    pub target_port: u16,
    pub target_pool: Pool,
    target_server: Option<Server>,
    owns_server: Option<Server>,
}

impl Env {
    /// Databases on the shared server.
    pub async fn new(prefix: &str) -> Env {
        ensure_main_server();
        Self::on(main_port(), prefix, None).await
    }

    /// Databases on a dedicated server (tests that purge binlogs or restart servers).
    pub async fn on_server(server: Server, prefix: &str) -> Env {
        let port = server.port;
        Self::on(port, prefix, Some(server)).await
    }

    async fn on(port: u16, prefix: &str, owns_server: Option<Server>) -> Env {
        let name = unique(prefix);
        let src = format!("{name}_src");
        let dst = format!("{name}_dst");
        let pool = Pool::new(opts(port, "root", ""));
        let mut c = pool.get_conn().await.unwrap();
        c.query_drop(format!("CREATE DATABASE `{src}` CHARACTER SET utf8mb4")).await.unwrap();
        // Connections of the pool default to the source database (sequence tables need one).
        let pool = Pool::new(OptsBuilder::from_opts(opts(port, "root", "")).db_name(Some(src.clone())));
        let mut env = Env {
            port,
            name,
            src,
            dst,
            target_pool: pool.clone(),
            pool,
            dir: tempfile::tempdir().unwrap(),
            config: toml::Table::new(),
            diff_skip: Vec::new(),
            process_env: Vec::new(),
            target_port: port,
            target_server: None,
            owns_server,
        };
        env.set(&["pipeline", "name"], env.name.clone());
        env.set(&["source", "host"], "127.0.0.1");
        env.set(&["source", "port"], i64::from(port));
        env.set(&["source", "user"], "root");
        env.set(&["source", "include"], vec![format!("{}.*", env.src)]);
        env.set(&["buffer", "embedded", "path"], env.buffer_path().display().to_string());
        env.use_mysql_target(port, "root");
        // Tests run side by side: each process takes a free port (the log line names it).
        env.set(&["http", "listen"], "127.0.0.1:0");
        env.set(&["writer", "batch_max_delay_ms"], 50);
        env.set(&["log", "progress_interval_secs"], 1);
        env
    }

    /// Set the config value at `path` (section names, then the field), creating sections.
    pub fn set(&mut self, path: &[&str], value: impl Into<toml::Value>) {
        let (field, sections) = path.split_last().expect("a non-empty path");
        let mut table = &mut self.config;
        for s in sections {
            table = table
                .entry(s.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("config {s} is not a section"));
        }
        table.insert(field.to_string(), value.into());
    }

    /// Remove the value or section at `path`.
    pub fn remove(&mut self, path: &[&str]) {
        let (field, sections) = path.split_last().expect("a non-empty path");
        let mut table = &mut self.config;
        for s in sections {
            match table.get_mut(*s).and_then(|v| v.as_table_mut()) {
                Some(t) => table = t,
                None => return,
            }
        }
        table.remove(*field);
    }

    /// The config value at `path`, if set.
    pub fn get(&self, path: &[&str]) -> Option<&toml::Value> {
        let (field, sections) = path.split_last()?;
        let mut table = &self.config;
        for s in sections {
            table = table.get(*s)?.as_table()?;
        }
        table.get(*field)
    }

    /// Append a `[[tables]]` rule for `pattern` with `options`.
    pub fn add_table_rule(&mut self, pattern: &str, options: &[(&str, toml::Value)]) {
        let mut rule = toml::Table::new();
        rule.insert("pattern".into(), pattern.into());
        for (k, v) in options {
            rule.insert(k.to_string(), v.clone());
        }
        let rules = self.config.entry("tables").or_insert_with(|| toml::Value::Array(Vec::new()));
        rules.as_array_mut().expect("tables is an array").push(toml::Value::Table(rule));
    }

    /// Replace the `[sink]` section with a MySQL target on `port`, as `user`.
    pub fn use_mysql_target(&mut self, port: u16, user: &str) {
        self.remove(&["sink"]);
        self.set(&["sink", "mysql", "port"], i64::from(port));
        self.set(&["sink", "mysql", "user"], user);
        self.set(&["sink", "mysql", "database"], self.dst.clone());
    }

    /// Whether the target is BigQuery.
    pub fn on_bigquery(&self) -> bool {
        self.get(&["sink", "kind"]).and_then(|v| v.as_str()) == Some("bigquery")
    }

    /// Put the target database on its own server (tests that take the target down).
    pub fn with_target(mut self, server: Server) -> Env {
        self.target_port = server.port;
        self.use_mysql_target(server.port, "root");
        self.target_pool = server.pool();
        self.target_server = Some(server);
        self
    }

    /// The dedicated source server of [`Env::on_server`].
    pub fn owned_server(&self) -> &Server {
        self.owns_server.as_ref().expect("Env::on_server")
    }

    pub fn target_server(&self) -> &Server {
        self.target_server.as_ref().expect("with_target")
    }

    pub async fn conn(&self) -> Conn {
        self.pool.get_conn().await.unwrap()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("binferry.toml")
    }

    pub fn buffer_path(&self) -> PathBuf {
        self.dir.path().join("buffer.redb")
    }

    /// Write the config ([`Env::config`]) to [`Env::config_path`].
    pub fn write_config(&self) -> PathBuf {
        let cfg = toml::to_string(&self.config).expect("the config serialises");
        // Atomically: a process started a moment ago may be reading the previous version.
        let tmp = self.dir.path().join("binferry.toml.tmp");
        std::fs::write(&tmp, cfg).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
        self.config_path()
    }

    pub fn start(&self) -> Binferry {
        self.write_config();
        let env: Vec<(&str, &str)> = self.process_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Binferry::start_with_env(&self.config_path(), &self.dir.path().join("binferry.log"), &[], &env)
    }

    /// Carry this test's changes through the shared Kafka-protocol broker, in topics of its
    /// own (the prefix is the test's unique name), with `layout`.
    /// Serve the operations endpoint on a free port of its own, for the commands that ask the
    /// running process (`resync`, `verify --repair`); returns its address.
    pub fn listen_on_a_free_port(&mut self) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        self.set(&["http", "listen"], addr.clone());
        addr
    }

    /// `binferry resync --table T...` with this test's config, as an operator runs it next to
    /// `run`: whether it succeeded, and what it printed (stdout, then stderr).
    pub fn resync(&self, tables: &[&str]) -> (bool, String) {
        let cfg = self.config_path();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_binferry"));
        cmd.args(["resync", "--config", cfg.to_str().unwrap()]);
        for t in tables {
            cmd.args(["--table", t]);
        }
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn use_kafka(&mut self, layout: &str) {
        ensure_kafka();
        self.set(&["buffer", "kind"], "kafka");
        self.set(&["buffer", "kafka", "brokers"], kafka_brokers());
        self.set(&["buffer", "kafka", "topic_prefix"], self.name.clone());
        self.set(&["buffer", "kafka", "layout"], layout);
        self.set(&["buffer", "kafka", "partitions"], 4);
        // tansu 0.6.0 (the broker here) loses the rest of a multi-record batch when a fetch
        // starts in its middle, and sink workers resume from the offsets stored in the target:
        // one record per batch keeps every resume point at a batch start. Real Kafka needs
        // none of this.
        self.set(&["buffer", "kafka", "producer", "batch.num.messages"], "1");
        self.set(&["buffer", "kafka", "producer", "linger.ms"], "0");
    }

    /// `binferry run --role ROLE`, logging to `<log>.log` in the test directory.
    pub fn start_role(&self, role: &str, log: &str) -> Binferry {
        self.write_config();
        Binferry::start_with(&self.config_path(), &self.dir.path().join(format!("{log}.log")), &["--role", role])
    }

    /// A `--role reader` process and two `--role worker` processes (logs `reader`, `a`, `b`),
    /// once both workers own partitions.
    pub async fn start_reader_and_two_workers(&self) -> (Binferry, Binferry, Binferry) {
        let reader = self.start_role("reader", "reader");
        let a = self.start_role("worker", "a");
        let b = self.start_role("worker", "b");
        let start = Instant::now();
        while !(self.log_of("a").contains("partition assigned") && self.log_of("b").contains("partition assigned")) {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "partitions were not shared:\n--- a ---\n{}\n--- b ---\n{}",
                self.log_of("a"),
                self.log_of("b")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (reader, a, b)
    }

    /// The log of a process started with [`start_role`](Self::start_role).
    pub fn log_of(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{log}.log"))).unwrap_or_default()
    }

    /// Start binferry and wait until its operations endpoint listens; returns the process
    /// and the endpoint's `http://host:port`.
    pub async fn start_with_endpoint(&self) -> (Binferry, String) {
        let listening = |log: String| log.matches("operations endpoint listening").count();
        let before = listening(self.log());
        let bf = self.start();
        let start = Instant::now();
        while listening(self.log()) == before {
            assert!(start.elapsed() < Duration::from_secs(60), "binferry did not start its endpoint:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (bf, self.http_base().await)
    }

    /// `/status` of the endpoint at `base` (with the bearer `token`, if any); `None` while it
    /// does not answer.
    pub async fn status(base: &str, token: Option<&str>) -> Option<serde_json::Value> {
        let mut req = reqwest::Client::new().get(format!("{base}/status"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.ok()?.json().await.ok()
    }

    /// Start binferry and wait until it streams the binlog (the snapshot is done), so that
    /// the changes a test makes next arrive through the binlog. Asks the process's `/status`.
    /// Generous: a chunked snapshot into the BigQuery emulator waits for each chunk's commit,
    /// and the emulator serves several tests at once.
    pub async fn start_streaming(&self) -> Binferry {
        let start = Instant::now();
        let (bf, base) = self.start_with_endpoint().await;
        loop {
            let status = Self::status(&base, None).await;
            if status.as_ref().is_some_and(|s| s["state"] == "streaming") {
                return bf;
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "binferry did not start streaming ({status:?}):\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `binferry replay --config ... ARGS`, returning stdout (panics on failure).
    pub fn replay(&self, args: &[&str]) -> String {
        let cfg = self.config_path();
        let mut all = vec!["replay", "--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = binferry_cmd(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "replay failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// The last progress line's `name=value` counter.
    pub fn last_counter(&self, name: &str) -> Option<u64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains(" progress ") || l.ends_with(" progress"))?;
        let key = format!("{name}=");
        let at = line.find(&key)? + key.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    /// Tables of the source database (but those in `diff_skip`).
    pub async fn tables(&self) -> Vec<String> {
        let mut c = self.conn().await;
        let all: Vec<String> = c
            .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1", (&self.src,))
            .await
            .unwrap();
        all.into_iter().filter(|t| !self.diff_skip.contains(t)).collect()
    }

    /// A paced workload in the background on this test's source (its own connection), spanning
    /// many seconds so that kills and restarts land inside it: `changes` changes, `pause`
    /// apart, new ingredients numbered from 1,000,000 so they never meet seeded ones. Returns
    /// how many changes it made.
    pub fn background_load(&self, seed: u64, changes: u64, pause: Duration) -> tokio::task::JoinHandle<u64> {
        let (src, pool) = (self.src.clone(), self.pool.clone());
        tokio::spawn(async move {
            let mut c = pool.get_conn().await.unwrap();
            let mut w = workload::Workload::new(&src, seed);
            w.next_ingredient_from(1_000_000);
            w.run_paced(&mut c, changes, pause).await
        })
    }

    /// Tables of the target database that no source table explains: not a source table, not
    /// binferry's own (`_binferry_*`), not one kept after a source DROP (`*__dropped_*`) or
    /// moved aside when a resync rebuilt a stopped table (`*__stopped_*`).
    pub async fn target_only_tables(&self) -> Vec<String> {
        let mut c = self.target_pool.get_conn().await.unwrap();
        let target: Vec<String> = c
            .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1", (&self.dst,))
            .await
            .unwrap();
        let mut c = self.conn().await;
        let source: Vec<String> = c
            .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", (&self.src,))
            .await
            .unwrap();
        target
            .into_iter()
            .filter(|t| {
                !t.starts_with("_binferry")
                    && !t.contains("__dropped_")
                    && !t.contains("__stopped_")
                    && !t.contains("__rebuilding")
            })
            .filter(|t| !source.contains(t) && !self.diff_skip.contains(t))
            .collect()
    }

    /// Row-by-row difference between source and target: `None` when equal. A table only the
    /// target has is a difference too.
    pub async fn diff(&self) -> Option<String> {
        let extra = self.target_only_tables().await;
        if !extra.is_empty() {
            return Some(format!("tables only in the target: {extra:?}"));
        }
        let mut c = self.conn().await;
        for t in self.tables().await {
            let cols: Vec<String> = c
                .exec("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", (&self.src, &t))
                .await
                .unwrap();
            let pk: Vec<String> = c
                .exec("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (&self.src, &t))
                .await
                .unwrap();
            let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            // Keyless tables compare as multisets: order by every column.
            let order =
                if pk.is_empty() { list.clone() } else { pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ") };
            let q = |db: &str| format!("SELECT {list} FROM {}.{} ORDER BY {order}", quote(db), quote(&t));
            // The binary protocol returns floats, temporals and integers as typed values, which
            // are compared bit for bit below.
            let a: Vec<Row> = c.exec(q(&self.src), ()).await.unwrap();
            let mut tc = self.target_pool.get_conn().await.unwrap();
            let b: Vec<Row> = match tc.exec(q(&self.dst), ()).await {
                Ok(rows) => rows,
                // A table binferry has not seen a row of yet has no target table yet.
                Err(_) if a.is_empty() => continue,
                Err(e) => return Some(format!("{t}: target not readable: {e}")),
            };
            if a.len() != b.len() {
                return Some(format!("{t}: {} source rows, {} target rows", a.len(), b.len()));
            }
            for (ra, rb) in a.iter().zip(&b) {
                let va: Vec<Value> = (0..ra.len()).map(|i| ra.as_ref(i).cloned().unwrap_or(Value::NULL)).collect();
                let vb: Vec<Value> = (0..rb.len()).map(|i| rb.as_ref(i).cloned().unwrap_or(Value::NULL)).collect();
                if va.len() != vb.len() {
                    return Some(format!("{t}: source row has {} values, target row {}", va.len(), vb.len()));
                }
                if let Some(i) = (0..va.len()).find(|&i| !same_value(&va[i], &vb[i])) {
                    // Long texts: from a little before where the two start to differ.
                    let from = match (&va[i], &vb[i]) {
                        (Value::Bytes(x), Value::Bytes(y)) => x.iter().zip(y).take_while(|(p, q)| p == q).count(),
                        _ => 0,
                    };
                    let show = |v: &Value| match v {
                        Value::Bytes(b) => {
                            let start = from.saturating_sub(40);
                            let text = String::from_utf8_lossy(&b[start.min(b.len())..]);
                            let at = |s: &str| s.chars().take(120).collect::<String>();
                            format!("…{:?} ({} bytes, from byte {start})", at(&text), b.len())
                        }
                        other => format!("{other:?}"),
                    };
                    let key = show(&va[0]);
                    return Some(format!(
                        "{t}: row {key}, column `{}`: source {} != target {}",
                        cols[i],
                        show(&va[i]),
                        show(&vb[i])
                    ));
                }
            }
        }
        None
    }

    /// Wait until the target equals the source, or panic with the last difference and the log.
    pub async fn wait_equal(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let d = self.diff().await;
            match d {
                None => return,
                Some(d) if start.elapsed() > timeout => {
                    let keys = self.key_diff().await;
                    panic!("target did not converge in {timeout:?}: {d}\n{keys}{}", self.log_tails())
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// For failure messages: per table, up to 10 keys the target has and the source does not
    /// (with the position that wrote them) and up to 10 the other way round. Source and
    /// target databases are on one server here, so one join compares them.
    pub async fn key_diff(&self) -> String {
        let mut c = self.conn().await;
        let tables: Vec<String> = c
            .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1", (&self.src,))
            .await
            .unwrap_or_default();
        let mut out = String::new();
        for t in tables {
            let key: Vec<String> = c
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? \
                     AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                    (&self.src, &t),
                )
                .await
                .unwrap_or_default();
            let Some(first) = key.first() else { continue };
            let cols = key.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
            let on = key.iter().map(|k| format!("a.`{k}` = b.`{k}`")).collect::<Vec<_>>().join(" AND ");
            let (src, dst) = (&self.src, &self.dst);
            let extra: Vec<(String, String)> = c
                .query(format!(
                    "SELECT CONCAT_WS(',', {}), HEX(a._binferry_pos) FROM `{dst}`.`{t}` a LEFT JOIN `{src}`.`{t}` b ON {on} \
                     WHERE b.`{first}` IS NULL LIMIT 10",
                    key.iter().map(|k| format!("a.`{k}`")).collect::<Vec<_>>().join(", ")
                ))
                .await
                .unwrap_or_default();
            let missing: Vec<String> = c
                .query(format!(
                    "SELECT CONCAT_WS(',', {}) FROM `{src}`.`{t}` a LEFT JOIN `{dst}`.`{t}` b ON {on} \
                     WHERE b.`{first}` IS NULL LIMIT 10",
                    key.iter().map(|k| format!("a.`{k}`")).collect::<Vec<_>>().join(", ")
                ))
                .await
                .unwrap_or_default();
            if !extra.is_empty() || !missing.is_empty() {
                out.push_str(&format!("{t} ({cols}): only in the target {extra:?}; only in the source {missing:?}\n"));
            }
        }
        out
    }

    /// The last 40 lines other than progress lines of every `*.log` of the test directory
    /// (binferry processes, failpoint runs), for failure messages.
    pub fn log_tails(&self) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        let mut tails = String::new();
        for path in logs {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            // Progress lines every second would hide what happened.
            let events = log.lines().filter(|l| !l.contains(" progress "));
            let tail: Vec<&str> = events.rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            tails.push_str(&format!("--- {} tail ---\n{}\n", path.display(), tail.join("\n")));
        }
        tails
    }

    /// Row count and an order-independent checksum of the source columns of `table` in `db`
    /// (on the source server for the source database, the target server otherwise).
    pub async fn checksum(&self, db: &str, table: &str) -> (u64, u64) {
        let mut c = self.conn().await;
        let cols: Vec<String> = c
            .exec("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", (&self.src, table))
            .await
            .unwrap();
        let list = cols.iter().map(|c| format!("COALESCE(`{c}`, '<null>')")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('#', {list}))), 0) FROM `{db}`.`{table}`");
        let mut conn = if db == self.src { c } else { self.target_pool.get_conn().await.unwrap() };
        let r: Option<(u64, u64)> = conn.query_first(sql).await.unwrap_or(None);
        r.unwrap_or((0, 0))
    }

    /// `CHECKSUM TABLE` of every target table (binferry's own columns included).
    pub async fn target_checksums(&self) -> Vec<(String, Option<u64>)> {
        let mut c = self.target_pool.get_conn().await.unwrap();
        let mut out = Vec::new();
        for t in self.tables().await {
            let r: Option<(String, Option<u64>)> =
                c.query_first(format!("CHECKSUM TABLE `{}`.`{t}`", self.dst)).await.unwrap();
            out.push(r.unwrap());
        }
        out
    }

    /// `binferry verify` with this environment's config and `args`: its exit code and
    /// everything it printed.
    pub fn verify(&self, args: &[&str]) -> (Option<i32>, String) {
        let cfg = self.config_path();
        let mut all = vec!["verify", "--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = binferry_cmd(&all);
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// `binferry status [--json]` with this environment's config: its stdout (the command must
    /// succeed).
    pub fn status_text(&self, json: bool) -> String {
        let cfg = self.config_path();
        let mut args = vec!["status", "--config", cfg.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = binferry_cmd(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "status failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// `binferry status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let text = self.status_text(true);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {text}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("binferry.log")).unwrap_or_default()
    }

    /// Wait until the log holds `line`, or panic with the log after `timeout`. For lines that
    /// can follow what a test waited for: the target may equal the source a moment before
    /// the last chunk, whose rows the stream had already delivered, is logged.
    pub async fn wait_log(&self, line: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(line) {
            assert!(start.elapsed() < timeout, "no {line:?} in the log after {timeout:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://host:port` of the operations endpoint of the running binferry (the last one
    /// started), from the line it logs once it listens.
    pub async fn http_base(&self) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.log();
            if let Some(addr) = log
                .lines()
                .rev()
                .find(|l| l.contains("operations endpoint listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
            {
                return format!("http://{addr}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no operations endpoint:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let target = self.target_pool.clone();
        let (src, dst) = (self.src.clone(), self.dst.clone());
        let bigquery = self.on_bigquery() && std::env::var_os("BINFERRY_TEST_KEEP_DATASETS").is_none();
        // Drop runs inside or outside a runtime; use a small runtime of our own on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if bigquery {
                    let url = format!(
                        "{}/projects/{}/datasets/{dst}?deleteContents=true",
                        bigquery_endpoint(),
                        bigquery::PROJECT
                    );
                    let _ = reqwest::Client::new().delete(url).send().await;
                }
                if let Ok(mut c) = pool.get_conn().await {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{src}`")).await;
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{dst}`")).await;
                }
                if let Ok(mut c) = target.get_conn().await {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{dst}`")).await;
                }
                let _ = pool.disconnect().await;
                let _ = target.disconnect().await;
            });
        })
        .join();
    }
}

/// A quoted MySQL identifier.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Value equality that tells -0.0 from 0.0 and compares NaN payloads: bit for bit.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// A running `binferry run` process. Killed (SIGKILL) on drop if still running.
pub struct Binferry {
    child: Child,
}

impl Binferry {
    pub fn start(config: &Path, log: &Path) -> Binferry {
        Self::start_with(config, log, &[])
    }

    pub fn start_with(config: &Path, log: &Path, args: &[&str]) -> Binferry {
        Self::start_with_env(config, log, args, &[])
    }

    /// Like [`start_with`](Self::start_with), with extra environment variables (failpoints).
    pub fn start_with_env(config: &Path, log: &Path, args: &[&str], envs: &[(&str, &str)]) -> Binferry {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_binferry"))
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .envs(envs.iter().copied())
            .env("BINFERRY_LOG", std::env::var("BINFERRY_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn binferry");
        Binferry { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGINT and wait for the exit status.
    pub fn interrupt(self, timeout: Duration) -> ExitStatus {
        unsafe {
            libc::kill(self.pid(), libc::SIGINT);
        }
        self.wait_exit(timeout)
    }

    /// Wait for the process to exit; SIGKILL and panic after `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("binferry did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Peak resident set size so far (kB), from /proc.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Binferry {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `binferry` with arguments and capture its output.
pub fn binferry_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_binferry")).args(args).stdin(Stdio::null()).output().expect("run binferry")
}
