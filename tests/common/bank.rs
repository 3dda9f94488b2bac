//! A bank-style workload on linked tables, and a reader of the target that checks, in each
//! read, invariants that hold in every state the source ever had:
//!
//! - money only moves between accounts: the balances always sum to the same total;
//! - every transfer writes its audit rows in the same transaction: the audit rows always
//!   number the sum of `transfers.audits`.
//!
//! A target that commits part of a source transaction, or shows tables at different points
//! of the source, breaks one of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const ACCOUNTS: i64 = 50;
pub const START_BALANCE: i64 = 1_000;

/// Create the tables in `db`, with the accounts.
pub async fn create(c: &mut Conn, db: &str) {
    for sql in [
        format!("CREATE TABLE `{db}`.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)"),
        format!(
            "CREATE TABLE `{db}`.transfers (id BIGINT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, \
             amount BIGINT NOT NULL, audits INT NOT NULL)"
        ),
        format!(
            "CREATE TABLE `{db}`.audit (transfer_id BIGINT NOT NULL, seq INT NOT NULL, note VARCHAR(64), \
             PRIMARY KEY (transfer_id, seq))"
        ),
        format!("INSERT INTO `{db}`.accounts SELECT seq, {START_BALANCE} FROM seq_1_to_{ACCOUNTS}"),
    ] {
        c.query_drop(sql).await.unwrap();
    }
}

/// Old transfers of no amount, one audit row each: rows that make a snapshot slow.
pub async fn history(c: &mut Conn, db: &str, transfers: u64) {
    c.query_drop(format!("INSERT INTO `{db}`.transfers SELECT seq, 1, 2, 0, 1 FROM seq_1_to_{transfers}"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.audit SELECT seq, 1, CONCAT('history ', seq) FROM seq_1_to_{transfers}"))
        .await
        .unwrap();
}

/// Makes transfers, one source transaction each.
pub struct Bank {
    db: String,
    rng: StdRng,
    next: i64,
}

impl Bank {
    /// Transfer ids start at `first_id` (above the history's).
    pub fn new(db: &str, seed: u64, first_id: i64) -> Bank {
        Bank { db: db.to_string(), rng: StdRng::seed_from_u64(seed), next: first_id }
    }

    /// One transaction: move money between two accounts, record the transfer and its
    /// `audits` audit rows. The transfer row comes last, so that a prefix of the transaction
    /// breaks both invariants.
    pub async fn transfer(&mut self, c: &mut Conn, audits: usize) {
        let db = &self.db;
        let (from, to, amount) =
            (self.rng.random_range(1..=ACCOUNTS), self.rng.random_range(1..=ACCOUNTS), self.rng.random_range(1..50));
        let id = self.next;
        self.next += 1;
        c.query_drop("START TRANSACTION").await.unwrap();
        c.query_drop(format!("UPDATE `{db}`.accounts SET balance = balance - {amount} WHERE id = {from}"))
            .await
            .unwrap();
        c.query_drop(format!("UPDATE `{db}`.accounts SET balance = balance + {amount} WHERE id = {to}")).await.unwrap();
        for chunk in (1..=audits).collect::<Vec<_>>().chunks(1000) {
            let rows: Vec<String> = chunk.iter().map(|s| format!("({id}, {s}, 'transfer {id} step {s}')")).collect();
            c.query_drop(format!("INSERT INTO `{db}`.audit (transfer_id, seq, note) VALUES {}", rows.join(",")))
                .await
                .unwrap();
        }
        c.query_drop(format!(
            "INSERT INTO `{db}`.transfers (id, src, dst, amount, audits) VALUES ({id}, {from}, {to}, {amount}, {audits})"
        ))
            .await
            .unwrap();
        c.query_drop("COMMIT").await.unwrap();
    }

    /// A transfer with 1 to 4 audit rows.
    pub async fn step(&mut self, c: &mut Conn) {
        let audits = self.rng.random_range(1..=4);
        self.transfer(c, audits).await;
    }
}

/// One read of the target database `dst`: `None` while its tables do not all exist yet,
/// otherwise what is wrong, if anything. One statement, so one read view.
pub async fn check(t: &mut Conn, dst: &str) -> Option<Result<(), String>> {
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM `{dst}`.accounts), (SELECT CAST(SUM(balance) AS SIGNED) FROM `{dst}`.accounts), \
         (SELECT CAST(COALESCE(SUM(audits), 0) AS SIGNED) FROM `{dst}`.transfers), (SELECT COUNT(*) FROM `{dst}`.audit)"
    );
    let row: Option<(i64, Option<i64>, i64, i64)> = t.query_first(sql).await.ok()?;
    let (accounts, total, audits, audit_rows) = row?;
    let want = ACCOUNTS * START_BALANCE;
    if accounts != ACCOUNTS || total != Some(want) {
        return Some(Err(format!("{accounts} accounts holding {total:?}, expected {ACCOUNTS} holding {want}")));
    }
    if audits != audit_rows {
        return Some(Err(format!("transfers announce {audits} audit rows, the audit table has {audit_rows}")));
    }
    Some(Ok(()))
}

/// A reader polling the target every 50 ms while a test runs.
pub struct Reader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Reader {
    /// Start polling `dst`. A read counts only when `gate` (asked just before the read)
    /// says the target promises consistency by then.
    pub fn spawn(pool: Pool, dst: String, gate: impl Fn() -> bool + Send + 'static) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut checks, mut violations) = (0u64, Vec::new());
            let mut t: Option<Conn> = None;
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if t.is_none() {
                    t = pool.get_conn().await.ok();
                }
                let Some(conn) = t.as_mut() else { continue };
                let counts = gate();
                match check(conn, &dst).await {
                    Some(Ok(())) if counts => checks += 1,
                    Some(Err(e)) if counts => {
                        checks += 1;
                        violations.push(e);
                    }
                    _ => {}
                }
            }
            (checks, violations)
        });
        Reader { stop, task }
    }

    /// Stop and return (reads checked, violations seen).
    pub async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.unwrap()
    }
}

impl Drop for Reader {
    /// A test that fails while the reader runs must not leave it holding a pooled connection:
    /// `Env`'s clean-up waits for every connection to come back.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}
