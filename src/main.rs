//! The `binferry` command line: orchestration only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use binferry::buffer::kafka::KafkaSettings;
use binferry::buffer::kafka::check as kafka_check;
use binferry::config::{BufferKind, Config, LogFormat, SourceKind};

/// mimalloc instead of glibc malloc: the pipeline allocates and frees many small values on
/// several threads, and glibc's allocator took about 30 % of catch-up CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use binferry::error::{Error, ErrorKind, Result};
use binferry::pipeline::{ReplayFrom, Role};
use binferry::retry::Backoff;
use binferry::shutdown::Shutdown;
use binferry::sink::TargetSettings;
use binferry::sink::mysql::MysqlSink;
use binferry::source::bigquery::BigQuerySourceSettings;
use binferry::source::{SourceSettings, preflight};

/// Streaming CDC replicator: MySQL/MariaDB binlog → durable buffer → target, exactly-once effect.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check source and target settings, grants and tables; exits non-zero on problems.
    Check {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the pipeline (after the same checks) until SIGINT or SIGTERM.
    Run {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Start even when the preflight check reports problems.
        #[arg(long)]
        skip_checks: bool,
        /// With the Kafka buffer: run only the binlog reader, or only a sink worker (one of a
        /// consumer group; start as many as there are partitions to share).
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
    },
    /// Show the pipeline: state, lag, source position and binlog retention headroom, per
    /// stream progress, stopped tables with their fix, the last runs. Works whether `run` is
    /// running or not.
    Status {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare the replicated tables of the source and the target by row hash and list the
    /// keys that differ. Runs beside `run` (changes in flight are read again once applied).
    /// Exit code: 0 no drift (or all of it repaired), 3 drift found (and not repaired), 1 the
    /// comparison (or that of a table) could not run, 2 bad config.
    Verify {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only these tables (`db.table`, globs allowed).
        #[arg(long)]
        table: Option<String>,
        /// JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
        /// How long to wait, per table, for the running pipeline to apply changes in flight.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
        /// Rewrite the drifted keys as the source has them now, through the running
        /// pipeline's position-guarded path, then compare those tables again. Exit 0 when
        /// no drift remains.
        #[arg(long)]
        repair: bool,
    },
    /// Copy tables again while `run` runs: the other tables keep streaming, and the target
    /// table stays readable (corrected in place; rows the source no longer has are removed
    /// at the end). Asks the running process through its operations endpoint (a fixed
    /// `http.listen`), then follows the copy until it is applied.
    Resync {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Tables to copy again (`db.table`, globs allowed); repeat for more.
        #[arg(long, required = true)]
        table: Vec<String>,
        /// Return once the request is recorded, without following the copy.
        #[arg(long)]
        no_wait: bool,
        /// JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-apply the buffer to the target from a stored offset (while `run` is stopped).
    /// Safe to repeat: rows already up to date are left alone.
    Replay {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// First buffer offset to re-apply.
        #[arg(long, required_unless_present = "from_time", conflicts_with = "from_time")]
        from_offset: Option<u64>,
        /// Re-apply records appended at or after this time: Unix seconds, or UTC
        /// `YYYY-MM-DDTHH:MM:SS[Z]`.
        #[arg(long)]
        from_time: Option<String>,
        /// Only this table (`db.table`, globs allowed).
        #[arg(long)]
        table: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = match &cli.command {
        Command::Check { config }
        | Command::Run { config, .. }
        | Command::Status { config, .. }
        | Command::Verify { config, .. }
        | Command::Resync { config, .. }
        | Command::Replay { config, .. } => config.clone(),
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("binferry: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("binferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check { .. } => {
                check(&config).await.map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Run { skip_checks, role, .. } => run(&config, skip_checks, role).await,
            Command::Status { json, .. } => status(&config, json).await,
            Command::Verify { table, json, wait_secs, repair, .. } => {
                verify(&config, table.as_deref(), json, wait_secs, repair).await
            }
            Command::Resync { table, no_wait, json, .. } => resync(&config, &table, !no_wait, json).await,
            Command::Replay { from_offset, from_time, table, .. } => {
                replay(&config, from_offset, from_time.as_deref(), table.as_deref()).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            eprintln!("binferry: {e}");
            // 2 = the invocation or config is wrong; 1 = the servers or the data are.
            if e.kind() == ErrorKind::Config { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// `binferry verify`: exit 3 when drift is found (with `--repair`: when drift remains).
async fn verify(config: &Config, table: Option<&str>, json: bool, wait_secs: u64, repair: bool) -> Result<ExitCode> {
    let report = binferry::pipeline::verify(config, table, std::time::Duration::from_secs(wait_secs), repair).await?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("the verify report does not serialise: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.render_text(20));
    }
    Ok(if report.drift_remains() {
        ExitCode::from(3)
    } else if report.incomplete() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `binferry resync`.
async fn resync(config: &Config, tables: &[String], wait: bool, json: bool) -> Result<ExitCode> {
    let summary = binferry::pipeline::resync(config, tables, wait).await?;
    if json {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("the resync summary does not serialise: {e}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let names = |ts: &[binferry::schema::TableRef]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    if !summary.requested.started.is_empty() {
        println!("resync started: {}", names(&summary.requested.started));
    }
    if !summary.requested.already.is_empty() {
        println!("already being copied: {}", names(&summary.requested.already));
    }
    if summary.waited {
        println!("resync complete: {} rows copied and applied", summary.rows);
    } else {
        println!("follow it with `binferry status`");
    }
    Ok(ExitCode::SUCCESS)
}

/// `binferry status`: text for people, JSON for scripts; exit 0 whenever it could report.
async fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let report = binferry::pipeline::status(config).await?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("the status report does not serialise: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BINFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The preflight report of every server the pipeline uses; an `Err` is a check that could
/// not run (a server that does not answer, a login refused).
async fn preflight(config: &Config) -> Result<Vec<Result<preflight::Report>>> {
    let target = TargetSettings::from_config(config)?;
    let mut reports = vec![match config.source.kind {
        SourceKind::Mysql => {
            let source = SourceSettings::from_config(config)?;
            let caps = preflight::TargetCaps { keyless_tables: matches!(target, TargetSettings::Mysql(_)) };
            preflight::check_source(&source, caps).await
        }
        SourceKind::Bigquery => binferry::source::bigquery::check(&BigQuerySourceSettings::from_config(config)?).await,
    }];
    if config.buffer.kind == BufferKind::Kafka {
        reports.push(kafka_check::check(&KafkaSettings::from_config(config)?).await);
    }
    reports.push(match &target {
        TargetSettings::Mysql(t) => MysqlSink::check(t).await,
        TargetSettings::BigQuery(t) => binferry::sink::bigquery::check(t).await,
    });
    Ok(reports)
}

/// Print checked reports; `true` when no problem was found.
fn print_reports(reports: &[preflight::Report]) -> bool {
    let mut ok = true;
    for report in reports {
        println!("{}", report.server);
        for n in &report.notes {
            println!("  ok: {n}");
        }
        for w in &report.warnings {
            println!("  warning: {w}");
        }
        for p in &report.problems {
            println!("  problem: {p}");
        }
        ok &= report.problems.is_empty();
    }
    println!(
        "{}",
        if ok { "all checks passed" } else { "checks failed: fix the problems above and run `binferry check` again" }
    );
    ok
}

/// Run the preflight checks and print the report; `Ok(true)` when there is no problem.
async fn check(config: &Config) -> Result<bool> {
    let reports = preflight(config).await?.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(print_reports(&reports))
}

/// What waiting for the servers at start-up found.
enum Ready {
    /// Every check passed (or checks are skipped).
    Yes,
    /// A definite problem: printed, `run` exits 1.
    Refused,
    /// A signal arrived while waiting.
    Interrupted,
}

/// The checks `run` makes before it starts. A server that does not answer yet is waited for,
/// with the backoff of every other retry and a log line per attempt (a supervisor may start
/// binferry before its databases); wrong settings, missing grants and refused logins are
/// definite and stop it.
async fn wait_until_ready(config: &Config, shutdown: &Shutdown) -> Result<Ready> {
    let mut backoff = Backoff::default();
    loop {
        let mut checked = Vec::new();
        let mut waiting_for = Vec::new();
        for report in preflight(config).await? {
            match report {
                Ok(r) => {
                    waiting_for.extend(
                        r.problems.iter().filter(|p| p.unreachable).map(|p| format!("{}: {}", p.setting, p.found)),
                    );
                    checked.push(r);
                }
                Err(e) if e.is_transient() => waiting_for.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        // A definite problem of a server that answered stops at once, whatever the others do.
        let refused = checked.iter().any(|r| r.problems.iter().any(|p| !p.unreachable));
        if waiting_for.is_empty() || refused {
            return Ok(if print_reports(&checked) { Ready::Yes } else { Ready::Refused });
        }
        let reason = Error::new(ErrorKind::SourceUnavailable, waiting_for.join("; "));
        let delay = backoff.next_delay(&reason).unwrap_or(binferry::retry::DEFAULT_MAX_DELAY);
        warn!(
            attempt = backoff.attempts(),
            waiting_for = %waiting_for.join("; "),
            "a server does not answer yet; checking again in {:.1}s",
            delay.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.triggered() => return Ok(Ready::Interrupted),
        }
    }
}

async fn run(config: &Config, skip_checks: bool, role: Role) -> Result<ExitCode> {
    let shutdown = Shutdown::new();
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received: draining and committing (send again to abort)");
        signalled.trigger();
        wait_for_signal().await;
        warn!("second signal: aborting without draining; the next run resumes from the last checkpoint");
        std::process::exit(130);
    });
    if !skip_checks {
        match wait_until_ready(config, &shutdown).await? {
            Ready::Yes => {}
            Ready::Refused => return Ok(ExitCode::FAILURE),
            Ready::Interrupted => return Ok(ExitCode::SUCCESS),
        }
    }
    binferry::pipeline::run(config, role, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn replay(config: &Config, offset: Option<u64>, time: Option<&str>, table: Option<&str>) -> Result<ExitCode> {
    let from = match (offset, time) {
        (Some(o), _) => ReplayFrom::Offset(o),
        (None, Some(t)) => ReplayFrom::Time(parse_time(t)?),
        (None, None) => return Err(Error::new(ErrorKind::Config, "replay: give --from-offset or --from-time")),
    };
    let s = binferry::pipeline::replay(config, from, table).await?;
    println!(
        "replayed offsets {}..{}: {} rows written, {} already up to date, {} older than the target",
        s.from, s.to, s.written, s.unchanged, s.stale
    );
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds, or UTC `YYYY-MM-DD[T ]HH:MM:SS[Z]`, to Unix milliseconds.
fn parse_time(s: &str) -> Result<u64> {
    let bad = || {
        Error::new(ErrorKind::Config, format!("--from-time: {s:?} is neither Unix seconds nor YYYY-MM-DDTHH:MM:SSZ"))
    };
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    let t = s.trim_end_matches('Z');
    let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    let h: Vec<i64> = time.split(':').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    let (&[y, m, day], &[hh, mm, ss]) = (d.as_slice(), h.as_slice()) else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).map(|s| s * 1000).map_err(|_| bad())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1970-01-02T00:00:00Z").unwrap(), 86_400_000);
        assert_eq!(parse_time("2000-02-29 12:00:00").unwrap(), 951_825_600_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2000-13-01T00:00:00").is_err());
    }
}
