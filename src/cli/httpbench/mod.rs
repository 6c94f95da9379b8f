//! `eventlog loadgen --target http-reads`: чтение по HTTP/GraphQL у настоящего
//! сервера на постоянном наборе данных и «сырой» знаменатель — те же
//! инструкции PostgreSQL через pgbench в том же прогоне.
//!
//! Порядок: набор данных ([`dataset`], с `--reuse` — без пересева); запись
//! инструкций каждой формы из журнала PostgreSQL на отдельном коротком сервере
//! ([`capture`]; `log_min_duration_statement = 0` только на время записи); сервер
//! замера (`eventlog serve` дочерним процессом); по каждой форме — прогрев, затем
//! pgbench и HTTP-цикл (порядок чередуется по формам), процессорное время сервера
//! и PostgreSQL ([`cpu`]). Итог — таблица и, с `--json`, файл.

pub mod capture;
pub mod cpu;
pub mod dataset;
pub mod load;
pub mod pgbench;
pub mod shapes;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use sqlx::PgPool;

use eventlog::storage::{PoolOptions, Store};

use super::livebench::{Procs, free_port, wait_ready};
use super::loadgen::LoadgenArgs;
use shapes::{Picker, Shape};

/// Параметры `--target http-reads`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Для http-reads: не засевать, если в базе уже тот же набор (те же --events,
    /// --seed, --dataset-now).
    #[arg(long)]
    pub reuse: bool,
    /// Для http-reads: только подготовить набор данных.
    #[arg(long)]
    pub seed_only: bool,
    /// Для http-reads: «сейчас» набора (события — в 30 днях до него).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub dataset_now: DateTime<Utc>,
    /// Для http-reads: формы через запятую (по умолчанию все).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub shapes: Vec<Shape>,
    /// Для http-reads: прогрев каждой формы перед замером, секунд.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Для http-reads: доля запросов с токеном администратора, процентов.
    #[arg(long, default_value_t = 10)]
    pub admin_percent: u8,
    /// Для http-reads: сколько запросов каждой формы записать для pgbench (не
    /// больше 128 — предел файлов скриптов pgbench).
    #[arg(long, default_value_t = 100)]
    pub raw_samples: usize,
    /// Для http-reads: без знаменателя pgbench.
    #[arg(long)]
    pub no_raw: bool,
    /// Для http-reads: журнал PostgreSQL (куда пишет сервер базы).
    #[arg(long, default_value = "/var/log/postgresql/postgresql-15-main.log")]
    pub pg_log: PathBuf,
    /// Для http-reads: каталог скриптов и журналов pgbench.
    #[arg(long, default_value = "target/httpbench")]
    pub work_dir: PathBuf,
    /// Для http-reads: записать итог в JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Итог формы.
#[derive(Debug, Serialize)]
struct ShapeReport {
    shape: Shape,
    requests: u64,
    req_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    server_cpu_ms_per_req: f64,
    pg_cpu_ms_per_req: f64,
    raw: Option<RawReport>,
    /// eventlog / raw по запросам в секунду.
    ratio: Option<f64>,
}

/// Итог pgbench формы.
#[derive(Debug, Serialize)]
struct RawReport {
    req_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    pg_cpu_ms_per_req: f64,
    scripts: usize,
    statements_per_request: f64,
    /// Шёл ли pgbench перед HTTP-циклом (иначе после).
    before_http: bool,
}

/// Итог прогона.
#[derive(Debug, Serialize)]
struct Report {
    database: String,
    events: u64,
    seed: u64,
    dataset_now: DateTime<Utc>,
    pairs: usize,
    pair_rows_min: u64,
    pair_rows_max: u64,
    connections: usize,
    duration_s: u64,
    admin_percent: u8,
    shapes: Vec<ShapeReport>,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Сервер `eventlog serve` на базе `url`; `quiet` — без фонового опроса журнала
/// (для записи инструкций: в журнал попадают только запросы).
fn spawn_server(url: &str, quiet: bool) -> Result<(Procs, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("serve")
        .env("EVENTLOG_DATABASE_URL", url)
        .env("EVENTLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("EVENTLOG_JWT_SECRET", shapes::SECRET)
        // Набор — в прошлом: хранение по сроку удалило бы его.
        .env("EVENTLOG_RETENTION_DAYS", "0")
        .env("EVENTLOG_NO_MIGRATE", "true")
        .env("RUST_LOG", "warn")
        .env_remove("EVENTLOG_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if quiet {
        // Потребители журнала (свёртки, сводки) тоже молчат: их шаги попали бы в запись.
        cmd.env("EVENTLOG_LOG_NOTIFY", "false")
            .env("EVENTLOG_LOG_POLL_MS", "3600000")
            .env("EVENTLOG_ROLLUP_INTERVAL_MS", "0")
            .env("EVENTLOG_SESSIONS_FOLLOW_MS", "0");
    }
    let child = cmd.spawn().context("while starting eventlog serve")?;
    Ok((Procs(vec![child]), port))
}

/// Включает или выключает запись всех инструкций новых соединений базы `db`.
async fn log_statements(pool: &PgPool, db: &str, on: bool) -> Result<()> {
    let sql = if on {
        format!("ALTER DATABASE {db} SET log_min_duration_statement = 0")
    } else {
        format!("ALTER DATABASE {db} RESET log_min_duration_statement")
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

/// Записывает `samples` запросов каждой формы (см. [`capture_shapes`]); запись
/// инструкций базы включена только на это время.
#[allow(clippy::too_many_arguments)]
async fn capture_all(
    url: &str,
    pool: &PgPool,
    db: &str,
    picker: &Picker,
    shapes: &[Shape],
    samples: usize,
    pg_log: &std::path::Path,
    seed: u64,
) -> Result<Vec<Vec<Vec<String>>>> {
    log_statements(pool, db, true).await?;
    let captured = capture_shapes(url, pool, db, picker, shapes, samples, pg_log, seed).await;
    // Выключается и при ошибке: база не должна остаться с полной записью.
    log_statements(pool, db, false).await?;
    captured
}

/// Запросы форм по одному на отдельном сервере (его соединения открыты уже с
/// записью инструкций), между маркерами; фоновый опрос журнала у него выключен.
#[allow(clippy::too_many_arguments)]
async fn capture_shapes(
    url: &str,
    pool: &PgPool,
    db: &str,
    picker: &Picker,
    shapes: &[Shape],
    samples: usize,
    pg_log: &std::path::Path,
    seed: u64,
) -> Result<Vec<Vec<Vec<String>>>> {
    let (procs, port) = spawn_server(url, true)?;
    wait_ready(port).await?;
    let client = load::client(1)?;
    let endpoint = format!("http://127.0.0.1:{port}/graphql");
    // Прогрев соединений пула сервера, чтобы в записи не было их установки.
    for shape in shapes {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfeed);
        load::send(&client, &endpoint, &picker.pick(*shape, &mut rng)).await?;
    }
    let mut conn = pool.acquire().await?;
    sqlx::query("SET log_min_duration_statement = 0")
        .execute(&mut *conn)
        .await?;
    let mut out = Vec::new();
    for (k, shape) in shapes.iter().enumerate() {
        let start = std::fs::metadata(pg_log)
            .with_context(|| format!("--pg-log {}", pg_log.display()))?
            .len();
        let mut rng = StdRng::seed_from_u64(seed ^ (0xcafe + k as u64));
        let mut next = None;
        for i in 0..=samples {
            let marker = format!("SELECT '{}{i}'", capture::MARKER);
            sqlx::raw_sql(sqlx::AssertSqlSafe(marker))
                .execute(&mut *conn)
                .await?;
            if i == samples {
                break;
            }
            let req = match next.take() {
                Some(r) => r,
                None => picker.pick(*shape, &mut rng),
            };
            next = load::send(&client, &endpoint, &req).await?;
        }
        // Журнал пишется процессами асинхронно к ответу: даём дописать.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = read_from(pg_log, start)?;
        let requests = capture::requests(&capture::parse_log(&text), db);
        anyhow::ensure!(
            requests.len() == samples && requests.iter().all(|r| !r.is_empty()),
            "{}: captured {} requests ({} with statements) of {samples} from {}; \
             the log_line_prefix must be '%m [%p] %q%u@%d '",
            shape.name(),
            requests.len(),
            requests.iter().filter(|r| !r.is_empty()).count(),
            pg_log.display()
        );
        out.push(requests);
    }
    drop(procs);
    Ok(out)
}

/// Хвост файла с байта `start`.
fn read_from(path: &std::path::Path, start: u64) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Запуск.
pub async fn run(args: &LoadgenArgs) -> Result<()> {
    let http = &args.http;
    let url = &args.database_url;
    let db = dataset::database_name(url)?;
    let spec = dataset::Spec {
        events: args.events as u64,
        seed: args.seed,
        now: http.dataset_now,
    };
    dataset::ensure(url, &spec, http.reuse).await?;
    if http.seed_only {
        return Ok(());
    }
    let connections = args.connections.unwrap_or(8).max(1);
    let duration = args.live.duration.unwrap_or(Duration::from_secs(15));
    let shapes: Vec<Shape> = if http.shapes.is_empty() {
        Shape::ALL.to_vec()
    } else {
        http.shapes.clone()
    };
    anyhow::ensure!(
        (1..=pgbench::MAX_SCRIPTS).contains(&http.raw_samples),
        "--raw-samples: 1..={}",
        pgbench::MAX_SCRIPTS
    );

    let store = Store::connect(url, PoolOptions::default()).await?;
    // Миграции — здесь, один раз: серверы прогона стартуют без них.
    store.migrate_up().await.context("while migrating")?;
    let pool = store.connection().get_postgres_connection_pool().clone();
    let world = Arc::new(dataset::load(&pool).await?);
    let picker = Arc::new(Picker::new(
        world.clone(),
        f64::from(http.admin_percent.min(100)) / 100.0,
    )?);
    let (rows_min, rows_max) = world
        .pairs
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), p| (lo.min(p.rows), hi.max(p.rows)));
    println!(
        "http-reads: {db}, {} rows, {} user-project pairs of {rows_min}..{rows_max} rows, now {}; \
         {connections} connections, {} s per shape, {} % admin",
        world.spec.events,
        world.pairs.len(),
        world.spec.now,
        duration.as_secs(),
        http.admin_percent
    );

    // Инструкции форм — с отдельного сервера, пока журнал пишет всё.
    let captured = if http.no_raw {
        None
    } else {
        let c = capture_all(
            url,
            &pool,
            &db,
            &picker,
            &shapes,
            http.raw_samples,
            &http.pg_log,
            args.seed,
        )
        .await?;
        let dir = http.work_dir.join(&db);
        let mut scripts = Vec::new();
        for (shape, requests) in shapes.iter().zip(&c) {
            scripts.push(pgbench::write_scripts(&dir.join(shape.name()), requests)?);
        }
        println!(
            "captured {} requests per shape into {}",
            http.raw_samples,
            dir.display()
        );
        Some((dir, scripts))
    };

    let (procs, port) = spawn_server(url, false)?;
    wait_ready(port).await?;
    let server_pid = procs.0[0].id();
    let endpoint = format!("http://127.0.0.1:{port}/graphql");
    let client = load::client(connections)?;
    let mut reports = Vec::new();
    for (k, shape) in shapes.iter().enumerate() {
        let warmup = Duration::from_secs(http.warmup_secs);
        if !warmup.is_zero() {
            load::closed_loop(
                &client,
                &endpoint,
                picker.clone(),
                *shape,
                connections,
                warmup,
                args.seed ^ 0x5eed,
            )
            .await?;
        }
        // pgbench перед HTTP у чётных форм, после — у нечётных: прогрев кэшей не
        // достаётся всё время одной стороне.
        let raw_first = k % 2 == 0;
        let run_raw = || async {
            match &captured {
                Some((dir, scripts)) => {
                    let meter = cpu::Meter::start(None, &db);
                    let raw =
                        pgbench::run(url, &scripts[k], connections, duration, &dir.join(shape.name())).await;
                    let spent = meter.finish().await;
                    raw.map(|r| Some((r, spent)))
                }
                None => Ok(None),
            }
        };
        let mut raw = if raw_first { run_raw().await? } else { None };
        let meter = cpu::Meter::start(Some(server_pid), &db);
        let h = load::closed_loop(
            &client,
            &endpoint,
            picker.clone(),
            *shape,
            connections,
            duration,
            args.seed,
        )
        .await?;
        let spent = meter.finish().await;
        if !raw_first {
            raw = run_raw().await?;
        }
        let n = h.hist.len();
        let raw = raw.map(|(r, spent)| RawReport {
            req_per_s: r.tps,
            p50_ms: ms(&r.hist, 0.5),
            p95_ms: ms(&r.hist, 0.95),
            p99_ms: ms(&r.hist, 0.99),
            pg_cpu_ms_per_req: spent.postgres * 1e3 / r.hist.len() as f64,
            scripts: r.scripts,
            statements_per_request: r.statements_per_tx,
            before_http: raw_first,
        });
        let report = ShapeReport {
            shape: *shape,
            requests: n,
            req_per_s: h.rate(),
            p50_ms: ms(&h.hist, 0.5),
            p95_ms: ms(&h.hist, 0.95),
            p99_ms: ms(&h.hist, 0.99),
            server_cpu_ms_per_req: spent.server * 1e3 / n as f64,
            pg_cpu_ms_per_req: spent.postgres * 1e3 / n as f64,
            ratio: raw.as_ref().map(|r| h.rate() / r.req_per_s),
            raw,
        };
        eprintln!("{}: done", shape.name());
        reports.push(report);
    }
    drop(procs);
    print_table(&reports);
    if let Some(path) = &http.json {
        let report = Report {
            database: db,
            events: world.spec.events,
            seed: world.spec.seed,
            dataset_now: world.spec.now,
            pairs: world.pairs.len(),
            pair_rows_min: rows_min,
            pair_rows_max: rows_max,
            connections,
            duration_s: duration.as_secs(),
            admin_percent: http.admin_percent,
            shapes: reports,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("while writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    store.close().await?;
    Ok(())
}

fn print_table(reports: &[ShapeReport]) {
    println!(
        "\n{:<15} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} | {:>8} {:>7} {:>8} {:>6}",
        "shape",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "srv ms",
        "PG ms",
        "raw r/s",
        "raw p95",
        "raw PG",
        "ratio"
    );
    for r in reports {
        let (rr, rp95, rpg, ratio) = match (&r.raw, r.ratio) {
            (Some(raw), Some(ratio)) => (
                format!("{:.0}", raw.req_per_s),
                format!("{:.2}", raw.p95_ms),
                format!("{:.3}", raw.pg_cpu_ms_per_req),
                format!("{ratio:.2}"),
            ),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<15} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>8.3} {:>8.3} | {:>8} {:>7} {:>8} {:>6}",
            r.shape.name(),
            r.req_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.server_cpu_ms_per_req,
            r.pg_cpu_ms_per_req,
            rr,
            rp95,
            rpg,
            ratio
        );
    }
    println!(
        "srv ms / PG ms: CPU per request of the server process / of the database's PostgreSQL backends; \
         raw: the same statements through pgbench -M prepared; ratio: eventlog req/s / raw req/s"
    );
}
