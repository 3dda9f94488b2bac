//! TLS to the source and the target against real MariaDB servers with certificates of a CA of
//! their own (scripts/mariadb.sh, BINFERRY_MARIADB_TLS=1), and secrets that reach no output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::workload::{Workload, create_schema};
use common::{Env, Server, main_port};
use mysql_async::prelude::Queryable;

const CONVERGE: Duration = Duration::from_secs(180);

/// `binferry check` with `config`, extra environment; (exit code, stdout + stderr).
fn check(config: &Path, envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binferry"))
        .args(["check", "--config", config.to_str().unwrap()])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A minimal config: source `host:port` with `tls` settings, target the same server as
/// `user`; `source` holds extra `[source]` fields.
fn config(dir: &Path, host: &str, port: u16, user: &str, tls: &[(&str, String)], source: &[(&str, &str)]) -> PathBuf {
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = dir.join(format!("check-{}.toml", WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let tls: toml::Table = tls.iter().map(|(k, v)| (k.to_string(), toml::Value::from(v.as_str()))).collect();
    let mut src = toml::Table::new();
    src.insert("host".into(), host.into());
    src.insert("port".into(), i64::from(port).into());
    src.insert("user".into(), user.into());
    src.insert("include".into(), vec!["nothing_here.*"].into());
    src.extend(source.iter().map(|(k, v)| (k.to_string(), toml::Value::from(*v))));
    src.insert("tls".into(), tls.clone().into());
    let mut sink = toml::Table::new();
    sink.insert("host".into(), host.into());
    sink.insert("port".into(), i64::from(port).into());
    sink.insert("user".into(), user.into());
    sink.insert("database".into(), "tls_check".into());
    sink.insert("tls".into(), tls.into());
    let mut cfg = toml::Table::new();
    cfg.insert("source".into(), src.into());
    cfg.insert("sink".into(), toml::Table::from_iter([("mysql".to_string(), toml::Value::from(sink))]).into());
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

fn mode(m: &str) -> (&'static str, String) {
    ("mode", m.to_string())
}

fn file(key: &'static str, path: &Path) -> (&'static str, String) {
    (key, path.display().to_string())
}

/// Source and target both over TLS, certificates verified for the host name, with users the
/// server lets in over TLS only: the target equals the source, and `check` shows each
/// connection encrypted and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_with_source_and_target_over_verified_tls() {
    let server = Server::start_tls(&["--performance-schema=ON"]);
    let ca = server.tls_file("ca.pem");
    let mut env = Env::on_server(server, "tls").await;
    let mut c = env.conn().await;
    for sql in [
        "CREATE USER 'cdc'@'127.0.0.1' IDENTIFIED BY 'cdc-pw' REQUIRE SSL".to_string(),
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cdc'@'127.0.0.1'".into(),
        format!("GRANT SELECT ON `{}`.* TO 'cdc'@'127.0.0.1'", env.src),
        "CREATE USER 'writer'@'127.0.0.1' IDENTIFIED BY 'writer-pw' REQUIRE SSL".into(),
        format!("GRANT ALL ON `{}`.* TO 'writer'@'127.0.0.1'", env.dst),
    ] {
        c.query_drop(sql).await.unwrap();
    }
    create_schema(&mut c, &env.src).await;
    let mut w = Workload::new(&env.src, 31);
    w.seed(&mut c, 100).await;
    env.set(&["source", "host"], "localhost");
    env.set(&["source", "user"], "cdc");
    env.set(&["source", "password_env"], "BF_TLS_SOURCE_PW");
    env.use_mysql_target(env.port, "writer");
    env.set(&["sink", "mysql", "host"], "localhost");
    env.set(&["sink", "mysql", "password_env"], "BF_TLS_TARGET_PW");
    for section in ["source", "sink.mysql"] {
        let path: Vec<&str> = section.split('.').chain(["tls"]).collect();
        env.set(&[&path[..], &["mode"]].concat(), "verify_identity");
        env.set(&[&path[..], &["ca_file"]].concat(), ca.display().to_string());
    }
    env.process_env =
        vec![("BF_TLS_SOURCE_PW".into(), "cdc-pw".into()), ("BF_TLS_TARGET_PW".into(), "writer-pw".into())];
    let cfg = env.write_config();
    let (code, out) = check(&cfg, &[("BF_TLS_SOURCE_PW", "cdc-pw"), ("BF_TLS_TARGET_PW", "writer-pw")]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "source connections (metadata, snapshot, binlog) encrypted: TLSv1",
        "target connections encrypted: TLSv1",
        "server certificate verified, for the name localhost",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    let bf = env.start();
    w.run(&mut c, 1_500).await;
    env.wait_equal(CONVERGE).await;
    // Every session of binferry is one of these users, which the server admits over TLS only,
    // and the server reports a cipher for each of those sessions.
    let ciphers: Vec<(String, String)> = c
        .query(
            "SELECT t.PROCESSLIST_USER, s.VARIABLE_VALUE FROM performance_schema.status_by_thread s \
             JOIN performance_schema.threads t USING (THREAD_ID) \
             WHERE s.VARIABLE_NAME = 'Ssl_cipher' AND t.PROCESSLIST_USER IN ('cdc', 'writer')",
        )
        .await
        .unwrap();
    for user in ["cdc", "writer"] {
        assert!(ciphers.iter().any(|(u, _)| u == user), "no session of {user}: {ciphers:?}");
    }
    assert!(ciphers.iter().all(|(_, cipher)| !cipher.is_empty()), "a session without a cipher: {ciphers:?}");
    assert!(bf.interrupt(Duration::from_secs(60)).success());
}

/// `required` against a server without TLS, an unknown CA, and a certificate for another
/// host name: each refused with its own message and fix, exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_failure_says_what_is_wrong_and_how_to_fix_it() {
    common::ensure_main_server();
    let server = Server::start_tls(&[]);
    let dir = tempfile::tempdir().unwrap();
    let ca = server.tls_file("ca.pem");
    let other = server.tls_file("other-ca.pem");
    let cases = [
        (
            config(dir.path(), "127.0.0.1", main_port(), "root", &[mode("required")], &[]),
            "expected a server that offers TLS (required), found source 127.0.0.1",
            "enable TLS on the server",
        ),
        (
            config(dir.path(), "localhost", server.port, "root", &[mode("verify_ca"), file("ca_file", &other)], &[]),
            "is not signed by a CA binferry trusts",
            "set source.tls.ca_file to the CA certificate that signed the server's",
        ),
        (
            config(dir.path(), "127.0.0.1", server.port, "root", &[mode("verify_identity"), file("ca_file", &ca)], &[]),
            "is not issued for the name 127.0.0.1 (it holds [\"localhost\"])",
            "connect with a name the certificate holds (source.host), or set source.tls.mode = \"verify_ca\"",
        ),
    ];
    for (cfg, what, fix) in cases {
        let (code, out) = check(&cfg, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(what) && out.contains(&format!("fix: {fix}")), "{what:?} / {fix:?} not in:\n{out}");
    }
    // verify_ca checks the CA, not the name: the IP address is fine then.
    let cfg = config(dir.path(), "127.0.0.1", server.port, "root", &[mode("verify_ca"), file("ca_file", &ca)], &[]);
    let (code, out) = check(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("server certificate verified (its CA; not the name)"), "{out}");
}

/// A user that the server admits only with a client certificate signed by its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let server = Server::start_tls(&[]);
    let pool = server.pool();
    let mut c = pool.get_conn().await.unwrap();
    c.query_drop("CREATE USER 'mtls'@'127.0.0.1' IDENTIFIED BY 'mtls-pw' REQUIRE X509").await.unwrap();
    c.query_drop("GRANT ALL ON *.* TO 'mtls'@'127.0.0.1'").await.unwrap();
    drop(c);
    let dir = tempfile::tempdir().unwrap();
    let verify = [mode("verify_identity"), file("ca_file", &server.tls_file("ca.pem"))];
    let with_cert =
        [file("cert_file", &server.tls_file("client-cert.pem")), file("key_file", &server.tls_file("client-key.pem"))];
    let password = [("password_env", "BF_MTLS_PW")];
    let cfg = config(dir.path(), "localhost", server.port, "mtls", &[&verify[..], &with_cert[..]].concat(), &password);
    let (code, out) = check(&cfg, &[("BF_MTLS_PW", "mtls-pw"), ("BINFERRY_TARGET_PASSWORD", "mtls-pw")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("client certificate sent"), "{out}");
    // Without the certificate the server refuses the user.
    let cfg = config(dir.path(), "localhost", server.port, "mtls", &verify, &password);
    let (code, out) = check(&cfg, &[("BF_MTLS_PW", "mtls-pw"), ("BINFERRY_TARGET_PASSWORD", "mtls-pw")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Access denied for user 'mtls'"), "{out}");
    pool.disconnect().await.unwrap();
}

/// Distinctive passwords, logging at `trace`, and every error path within reach (a wrong
/// password, an unreachable target), then `status`: no password appears in any output. A password file that
/// other users can read gets a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_reaches_any_output() {
    const SOURCE_PW: &str = "Src-PW-7f3a9e1-secret";
    const TARGET_PW: &str = "Dst-PW-2b8c4d7-secret";
    const WRONG_PW: &str = "Wrong-PW-9d1e6f2-secret";
    let mut env = Env::new("leak").await;
    let user = format!("leak{}", &env.name[env.name.len() - 8..]);
    let mut c = env.conn().await;
    for sql in [
        format!("CREATE USER '{user}_s'@'127.0.0.1' IDENTIFIED BY '{SOURCE_PW}'"),
        format!("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}_s'@'127.0.0.1'"),
        format!("GRANT SELECT ON `{}`.* TO '{user}_s'@'127.0.0.1'", env.src),
        format!("CREATE USER '{user}_t'@'127.0.0.1' IDENTIFIED BY '{TARGET_PW}'"),
        format!("GRANT ALL ON `{}`.* TO '{user}_t'@'127.0.0.1'", env.dst),
    ] {
        c.query_drop(sql).await.unwrap();
    }
    c.query_drop(format!("CREATE TABLE `{}`.t (id INT PRIMARY KEY, v VARCHAR(20))", env.src)).await.unwrap();
    // The source password in a file everyone can read: it works, with a warning.
    let pw_file = env.dir.path().join("source.pw");
    std::fs::write(&pw_file, format!("{SOURCE_PW}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.set(&["source", "user"], format!("{user}_s"));
    env.set(&["source", "password_file"], pw_file.display().to_string());
    let sink = |env: &mut Env, port: u16| {
        env.use_mysql_target(port, &format!("{user}_t"));
        env.set(&["sink", "mysql", "password_env"], "BF_LEAK_TARGET_PW");
    };
    let mut outputs = Vec::new();
    let trace = |args: &[&str], envs: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_binferry"))
            .args(args)
            .env("BINFERRY_LOG", "trace")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // 1. check, then a run that replicates a row, at trace level.
    let port = env.port;
    sink(&mut env, port);
    env.process_env = vec![("BF_LEAK_TARGET_PW".into(), TARGET_PW.into()), ("BINFERRY_LOG".into(), "trace".into())];
    let cfg = env.write_config();
    let (code, out) = trace(&["check", "--config", cfg.to_str().unwrap()], &[("BF_LEAK_TARGET_PW", TARGET_PW)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("a file holding a secret can be read by other users; fix: chmod 600 it"), "{out}");
    outputs.push(out);
    let bf = env.start();
    c.query_drop(format!("INSERT INTO `{}`.t VALUES (1, 'row')", env.src)).await.unwrap();
    env.wait_equal(CONVERGE).await;
    assert!(bf.interrupt(Duration::from_secs(60)).success());
    outputs.push(env.log());
    // 2. A wrong target password: refused, and said so.
    let (code, out) = trace(&["run", "--config", cfg.to_str().unwrap()], &[("BF_LEAK_TARGET_PW", WRONG_PW)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Access denied") && out.contains("fix: check sink.mysql.user and its password"), "{out}");
    outputs.push(out);
    // 3. An unreachable target: waited for, logging each attempt, until stopped.
    sink(&mut env, 1);
    let cfg = env.write_config();
    let log = env.dir.path().join("unreachable.log");
    let waiting = common::Binferry::start_with_env(
        &cfg,
        &log,
        &[],
        &[("BF_LEAK_TARGET_PW", TARGET_PW), ("BINFERRY_LOG", "trace")],
    );
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("a server does not answer yet") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting.interrupt(Duration::from_secs(30)).success());
    outputs.push(std::fs::read_to_string(&log).unwrap());
    // 4. A replay.
    let port = env.port;
    sink(&mut env, port);
    let cfg = env.write_config();
    let (code, out) = trace(
        &["replay", "--config", cfg.to_str().unwrap(), "--from-offset", "0"],
        &[("BF_LEAK_TARGET_PW", TARGET_PW)],
    );
    assert_eq!(code, Some(0), "{out}");
    outputs.push(out);
    // 5. `status`, text and JSON (the run registry holds the runs' errors).
    for json in [false, true] {
        let mut args = vec!["status", "--config", cfg.to_str().unwrap()];
        args.extend(json.then_some("--json"));
        let (code, out) = trace(&args, &[("BF_LEAK_TARGET_PW", TARGET_PW)]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("replay"), "the replay is in the run registry: {out}");
        outputs.push(out);
    }
    let all = outputs.join("\n");
    assert!(
        all.contains(" DEBUG binferry::connection: connecting to the target"),
        "BINFERRY_LOG=trace not honoured:\n{all}"
    );
    for pw in [SOURCE_PW, TARGET_PW, WRONG_PW] {
        let at = all.find(pw);
        assert!(
            at.is_none(),
            "a password reached the output: …{}…",
            &all[at.unwrap().saturating_sub(200)..at.unwrap() + 40]
        );
    }
    for u in [format!("'{user}_s'@'127.0.0.1'"), format!("'{user}_t'@'127.0.0.1'")] {
        let _ = c.query_drop(format!("DROP USER {u}")).await;
    }
}
