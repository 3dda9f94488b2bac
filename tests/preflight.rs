//! `binferry check` (and `run`'s own checks) against servers with wrong settings, users
//! without grants, and broken configs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Env, Server, binferry_cmd};
use mysql_async::prelude::Queryable;

fn check(env: &Env, extra_env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binferry"))
        .args(["check", "--config"])
        .arg(env.config_path())
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_binlog_format_is_reported() {
    let env = Env::on_server(Server::start(&["--binlog-format=STATEMENT"]), "stmt").await;
    env.write_config();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("binlog_format: expected ROW, found STATEMENT"), "{out}");
    assert!(out.contains("fix: SET GLOBAL binlog_format = 'ROW'"), "{out}");
    assert!(!out.contains("binlog_row_metadata:"), "only the wrong setting is reported: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_row_metadata_is_reported_and_run_refuses() {
    let env = Env::on_server(Server::start(&["--binlog-row-metadata=MINIMAL"]), "meta").await;
    env.write_config();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("binlog_row_metadata: expected FULL, found MINIMAL"), "{out}");
    // `run` performs the same checks and does not start.
    let bf = env.start();
    let status = bf.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(env.log().contains("binlog_row_metadata: expected FULL, found MINIMAL"), "{}", env.log());
    assert!(!env.buffer_path().exists(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_replication_slave_is_reported() {
    let mut env = Env::new("grants").await;
    let user = format!("u{}", &env.name[env.name.len() - 8..]);
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw-{user}'")).await.unwrap();
    c.query_drop(format!("GRANT SELECT ON `{}`.* TO '{user}'@'127.0.0.1'", env.src)).await.unwrap();
    c.query_drop(format!("GRANT BINLOG MONITOR ON *.* TO '{user}'@'127.0.0.1'")).await.unwrap();
    env.set(&["source", "user"], user.clone());
    env.set(&["source", "password_env"], "BF_TEST_PW");
    env.write_config();
    let pw = format!("pw-{user}");
    let (code, out) = check(&env, &[("BF_TEST_PW", &pw)]);
    c.query_drop(format!("DROP USER '{user}'@'127.0.0.1'")).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("grant REPLICATION SLAVE: expected granted ON *.*, found missing"), "{out}");
    assert!(out.contains(&format!("GRANT REPLICATION SLAVE ON *.* TO {user}@127.0.0.1")), "{out}");
    assert!(!out.contains("BINLOG MONITOR: expected"), "{out}");
    assert!(!out.contains(&pw), "the password never reaches the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_setup_passes_and_keyless_tables_follow_their_rule() {
    let mut env = Env::new("checkok").await;
    let mut c = env.conn().await;
    c.query_drop(format!("CREATE TABLE `{}`.t (id INT PRIMARY KEY)", env.src)).await.unwrap();
    c.query_drop(format!("CREATE TABLE `{}`.nokey (v INT)", env.src)).await.unwrap();
    env.write_config();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all checks passed"), "{out}");
    assert!(
        out.contains(&format!("table {}.nokey has no primary key: replicated with the row hash", env.src)),
        "{out}"
    );
    // A rule can refuse keyless tables instead: that table stops, the others replicate, so
    // `check` warns and `run` starts.
    env.add_table_rule(&format!("{}.nokey", env.src), &[("without_primary_key", "refuse".into())]);
    env.write_config();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, 0, "{out}");
    let warning = format!(
        "warning: table {}.nokey has no primary key and its [[tables]] rule says without_primary_key = \"refuse\": \
         binferry stops this table (the others replicate)",
        env.src
    );
    assert!(out.contains(&warning), "{out}");
}

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = binferry_cmd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "config errors exit with 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const VALID: &str = "[source]\nuser = \"r\"\ninclude = [\"d.*\"]\n[sink.mysql]\nuser = \"w\"\ndatabase = \"x\"\n";

#[test]
fn config_errors_name_the_field() {
    let e = config_error(&format!("{VALID}[writer]\nbatch_rows = 1\n"));
    assert!(e.contains("writer.batch_rows") && e.contains("unknown field"), "{e}");
    let e = config_error("[source]\nuser = \"r\"\n[sink.mysql]\nuser = \"w\"\ndatabase = \"x\"\n");
    assert!(e.contains("source.include") && e.contains("missing"), "{e}");
    let e = config_error(&VALID.replace("user = \"r\"", "user = \"r\"\nport = 99999"));
    assert!(e.contains("source.port"), "{e}");
    let e = config_error(&format!("{VALID}[snapshot]\nmode = \"sometimes\"\n"));
    assert!(e.contains("snapshot.mode"), "{e}");
    let e = config_error(&VALID.replace("[sink.mysql]", "[sink.mysql]\npassword_env = \"BF_SURELY_UNSET_VAR\""));
    assert!(e.contains("sink.mysql.password_env") && e.contains("BF_SURELY_UNSET_VAR"), "{e}");
}
