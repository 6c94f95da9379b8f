//! `eventlog loadgen`: воспроизводимые замеры.
//!
//! - `--target inprocess`: строки в секунду через EventLogger в PostgreSQL рядом с «сырым»
//!   COPY тех же строк в ту же таблицу (в одном прогоне, порядок чередуется), плюс
//!   задержка `log_event` p50/p99.
//! - `--target live`: несколько процессов `eventlog serve` на одной базе, задержка
//!   от подтверждения приёма до подписчика (см. [`super::livebench`]).
//! - `--target reads`: засевает N строк и меряет страницу из 50 строк с фильтром и
//!   аналитику проекта за 7 дней (p50/p95), печатает планы EXPLAIN.
//! - `--target sqlite-sync`: SQLite, EventLogger при `synchronous=FULL` и `NORMAL`.
//! - `--target otlp`: спаны в секунду через OTLP/HTTP protobuf рядом с событиями в
//!   секунду мутации (см. `otlp_bench`).
//! - `--target http-reads`: чтение по HTTP/GraphQL у настоящего сервера на
//!   постоянном наборе данных рядом с теми же инструкциями через pgbench (см.
//!   [`super::httpbench`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use uuid::Uuid;

use eventlog::logger::{EventLogger, LogError, LoggerConfig};
use eventlog::model::{EventType, NewEvent};
use eventlog::query::{EventFilter, ReadScope, SortOrder};
use eventlog::storage::analytics::Bucket;
use eventlog::storage::{PgWriteMethod, PoolOptions, SqliteDurability, Store};

/// Что мерить.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    /// EventLogger против COPY.
    Inprocess,
    /// Чтение на засеянной базе.
    Reads,
    /// SQLite: EventLogger с `synchronous=FULL` против `NORMAL` (цена долговечности).
    SqliteSync,
    /// Задержка «подтверждение → подписчик» на нескольких экземплярах сервера.
    Live,
    /// OTLP/HTTP protobuf против мутации через встроенный сервер.
    Otlp,
    /// Чтение по HTTP у настоящего сервера против тех же инструкций через pgbench.
    HttpReads,
}

/// Способ записи для `inprocess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// UNNEST (по умолчанию в сервере).
    Unnest,
    /// COPY во временную таблицу.
    Copy,
    /// Многострочный INSERT.
    Multirow,
    /// Все три по очереди.
    All,
}

/// Аргументы `eventlog loadgen`.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Что мерить.
    #[arg(long, value_enum, default_value = "inprocess")]
    pub target: Target,
    /// База PostgreSQL (таблица очищается!).
    #[arg(long, env = "EVENTLOG_DATABASE_URL")]
    pub database_url: String,
    /// Строк на прогон (inprocess) или строк засева (reads).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Повторов (отчёт — медиана).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Способ записи EventLogger.
    #[arg(long, value_enum, default_value = "unnest")]
    pub method: Method,
    /// Размер пакета.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Пакетов в полёте у писателя.
    #[arg(long, default_value_t = LoggerConfig::default().max_in_flight)]
    pub in_flight: usize,
    /// Зерно генератора.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Для reads: не засевать, использовать то, что уже в базе.
    #[arg(long)]
    pub no_seed: bool,
    /// Для reads: сколько раз выполнить каждый запрос.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Для inprocess: сколько параллельных соединений у базового COPY (по
    /// умолчанию — сколько пакетов писатель держит в полёте).
    #[arg(long)]
    pub copy_connections: Option<usize>,
    /// Для inprocess: ещё один ряд — EventLogger с выключенным триггером журнала
    /// (цена журнала фиксаций; только для замера, база остаётся с триггером).
    #[arg(long)]
    pub compare_without_log_trigger: bool,
    /// Для inprocess: потребители журнала (свёртки аналитики, сводки сессий) шагают
    /// параллельно с записью, как на сервере, и время прогона EventLogger включает их
    /// догоняние (запись «со свёртками, догнавшими журнал»).
    #[arg(long)]
    pub with_followers: bool,
    /// Для live: параметры прогона.
    #[command(flatten)]
    pub live: super::livebench::LiveArgs,
    /// Для otlp: спанов в одном запросе.
    #[arg(long, default_value_t = 512)]
    pub spans_per_request: usize,
    /// Одновременных соединений (otlp: 4 по умолчанию; http-reads: 8).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Для http-reads: параметры прогона.
    #[command(flatten)]
    pub http: super::httpbench::HttpArgs,
}

/// Запуск.
pub async fn run(args: LoadgenArgs) -> Result<()> {
    if matches!(args.target, Target::SqliteSync) {
        if !args.database_url.starts_with("sqlite:") {
            bail!("--database-url: --target sqlite-sync needs a sqlite:// URL");
        }
        return sqlite_sync(&args).await;
    }
    if !args.database_url.starts_with("postgres") {
        bail!("--database-url: loadgen measures PostgreSQL; give a postgres:// URL");
    }
    if matches!(args.target, Target::HttpReads) {
        // Сам создаёт базу набора данных и сервер: общий Store здесь не нужен.
        return super::httpbench::run(&args).await;
    }
    let store = Store::connect(&args.database_url, PoolOptions::default())
        .await
        .context("while connecting")?;
    store.migrate_up().await.context("while migrating")?;
    match args.target {
        Target::Inprocess => inprocess(&store, &args).await,
        Target::Reads => reads(&store, &args).await,
        Target::SqliteSync => sqlite_sync(&args).await,
        Target::Live => super::livebench::run(&store, &args.database_url, &args.live).await,
        Target::Otlp => super::otlp_bench::run(&store, &args).await,
        Target::HttpReads => unreachable!("handled above"),
    }
}

const PROJECTS: usize = 10;
const USERS_PER_PROJECT: usize = 50;
const AGENTS: usize = 40;

/// Реалистичные события с нагрузкой ~300 байт: сессии по ~40 событий одного
/// пользователя одного проекта в пределах получаса, с 1–3 агентами; начала сессий
/// разбросаны по последним 30 дням.
pub(super) fn generate(rng: &mut StdRng, n: usize, projects: &[Uuid]) -> Vec<NewEvent> {
    struct Session {
        id: Uuid,
        project: usize,
        user: usize,
        agents: Vec<usize>,
        start: chrono::DateTime<Utc>,
    }
    let now = Utc::now();
    let sessions: Vec<Session> = (0..(n / 40).max(1))
        .map(|_| Session {
            id: Uuid::now_v7(),
            project: rng.random_range(0..projects.len()),
            user: rng.random_range(0..USERS_PER_PROJECT),
            agents: (0..rng.random_range(1..=3))
                .map(|_| rng.random_range(0..AGENTS))
                .collect(),
            start: now - chrono::Duration::seconds(rng.random_range(1800..30 * 86_400)),
        })
        .collect();
    (0..n)
        .map(|i| {
            let s = &sessions[rng.random_range(0..sessions.len())];
            let agent = s.agents[rng.random_range(0..s.agents.len())];
            let at = s.start + chrono::Duration::milliseconds(rng.random_range(0..1_800_000));
            realistic_event(
                rng,
                i,
                s.id,
                format!("user-{}-{}", s.project, s.user),
                projects[s.project],
                agent,
                at,
            )
        })
        .collect()
}

/// Одно событие агентной среды: случайный тип, агент, инструмент у вызовов
/// инструментов, код ошибки у ошибок (и у 2 % прочих) и нагрузка ~300 байт.
/// Общее у генераторов `loadgen` и набора данных `http-reads`.
pub(super) fn realistic_event(
    rng: &mut StdRng,
    i: usize,
    session: Uuid,
    user: String,
    project: Uuid,
    agent: usize,
    at: chrono::DateTime<Utc>,
) -> NewEvent {
    let ty = EventType::ALL[rng.random_range(0..EventType::ALL.len())];
    let mut e = NewEvent::new(session, user, project, ty)
        .agent(format!("agent-{agent}"))
        .at(at)
        .payload(json!({
            "tool_call_id": format!("call_{i:012}"),
            "agent_name": "research-assistant",
            "input": {"query": "quarterly revenue by region and product line", "top_k": 8},
            "risk_level": "LOW",
            "risk_factors": ["network", "read_only"],
            "duration_ms": rng.random_range(1..5000),
            "status": "success",
            "note": "x".repeat(60),
        }));
    if matches!(ty, EventType::ToolRequest | EventType::ToolResult) {
        e = e.tool(["web_search", "sql_query", "deploy", "file_write"][rng.random_range(0..4)]);
    }
    if ty == EventType::Error || rng.random_range(0..50) == 0 {
        e = e.error_code(["TIMEOUT", "TOOL_FAILED", "RATE_LIMITED"][rng.random_range(0..3)]);
    }
    e
}

pub(super) async fn truncate(store: &Store) -> Result<()> {
    if !store.is_postgres() {
        store
            .connection()
            .execute_unprepared("DELETE FROM event_logs")
            .await?;
        return Ok(());
    }
    store
        .connection()
        .execute_unprepared(
            "TRUNCATE event_logs, event_log_commits, event_log_heads, rollup_parts, rollup_session_parts, \
             session_summaries, session_summary_agents RESTART IDENTITY; UPDATE log_followers SET pos = 0",
        )
        .await?;
    store.connection().execute_unprepared("CHECKPOINT").await.ok();
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Включает или выключает триггер журнала (только для замера его цены).
async fn set_log_trigger(store: &Store, on: bool) -> Result<()> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    store
        .connection()
        .execute_unprepared(&format!(
            "ALTER TABLE event_logs {verb} TRIGGER event_logs_log_commit"
        ))
        .await?;
    Ok(())
}

/// «Сырой» COPY тех же строк из `connections` параллельных соединений.
async fn run_copy(store: &Store, events: &[NewEvent], connections: usize) -> Result<f64> {
    truncate(store).await?;
    let started = Instant::now();
    let chunk = events.len().div_ceil(connections.max(1));
    let parts = events
        .chunks(chunk)
        .map(|part| store.copy_raw(part))
        .collect::<Vec<_>>();
    let n: u64 = futures::future::try_join_all(parts).await?.into_iter().sum();
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(n as usize == events.len(), "COPY wrote {n} rows");
    Ok(events.len() as f64 / secs)
}

async fn run_logger(
    store: &Store,
    events: &[NewEvent],
    method: PgWriteMethod,
    batch_size: usize,
    in_flight: usize,
    with_followers: bool,
    hist: &mut Histogram<u64>,
) -> Result<(f64, u64)> {
    truncate(store).await?;
    // Потребители журнала параллельно с записью (как цикл потребителей сервера).
    let cancel = tokio_util::sync::CancellationToken::new();
    let followers = with_followers.then(|| {
        let (store, cancel) = (store.clone(), cancel.clone());
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                store.catch_up_followers().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, eventlog::storage::StorageError>(())
        })
    });
    let logger = EventLogger::start(
        store.clone().with_pg_write_method(method),
        LoggerConfig {
            batch_size,
            max_in_flight: in_flight,
            // Замер дописывает всю очередь при остановке: срок не должен её обрезать.
            shutdown_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        None,
    );
    let mut full = 0u64;
    let started = Instant::now();
    for e in events {
        let mut e = e.clone();
        loop {
            let t = Instant::now();
            match logger.log_event(e) {
                Ok(()) => {
                    hist.record(t.elapsed().as_nanos() as u64).ok();
                    break;
                }
                // Полная очередь: событие вернулось, ждём писателя и повторяем.
                Err(LogError::QueueFull(back)) => {
                    full += 1;
                    e = *back;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(LogError::Closed(_)) => bail!("logger closed"),
                Err(e @ LogError::Invalid { .. }) => bail!("{e}"),
            }
        }
    }
    let report = logger.shutdown().await;
    if let Some(task) = followers {
        cancel.cancel();
        task.await??;
        store.catch_up_followers().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.lost == 0, "lost {} events", report.lost);
    let stored = store.count_events().await?;
    anyhow::ensure!(
        stored as usize == events.len(),
        "stored {stored} of {}",
        events.len()
    );
    Ok((events.len() as f64 / secs, full))
}

async fn inprocess(store: &Store, args: &LoadgenArgs) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let projects: Vec<Uuid> = (0..PROJECTS).map(|_| Uuid::now_v7()).collect();
    let events = generate(&mut rng, args.events, &projects);
    let avg_payload = events
        .iter()
        .map(|e| serde_json::to_string(&e.payload).map_or(0, |s| s.len()))
        .sum::<usize>()
        / events.len();
    let methods: Vec<(PgWriteMethod, &str)> = match args.method {
        Method::Unnest => vec![(PgWriteMethod::Unnest, "unnest")],
        Method::Copy => vec![(PgWriteMethod::CopyStaging, "copy-staging")],
        Method::Multirow => vec![(PgWriteMethod::MultiRow, "multi-row")],
        Method::All => vec![
            (PgWriteMethod::Unnest, "unnest"),
            (PgWriteMethod::CopyStaging, "copy-staging"),
            (PgWriteMethod::MultiRow, "multi-row"),
        ],
    };
    let copy_connections = args.copy_connections.unwrap_or(args.in_flight);
    println!(
        "inprocess: {} rows/run, avg payload {avg_payload} B, batch {}, {} in flight, COPY from {copy_connections} connections, {} rounds",
        events.len(),
        args.batch_size,
        args.in_flight,
        args.rounds
    );
    let mut copy_rates = Vec::new();
    let mut bare_rates = Vec::new();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    for round in 0..args.rounds {
        // Порядок чередуется, чтобы прогрев и состояние диска не давали преимущества одной стороне.
        let copy_first = round % 2 == 0;
        let mut copy_rate = 0.0;
        if copy_first {
            copy_rate = run_copy(store, &events, copy_connections).await?;
        }
        let mut round_rates = Vec::new();
        for (m, _) in &methods {
            let (r, _full) = run_logger(
                store,
                &events,
                *m,
                args.batch_size,
                args.in_flight,
                args.with_followers,
                &mut hist,
            )
            .await?;
            round_rates.push(r);
        }
        if args.compare_without_log_trigger {
            set_log_trigger(store, false).await?;
            let bare = run_logger(
                store,
                &events,
                methods[0].0,
                args.batch_size,
                args.in_flight,
                false,
                &mut hist,
            )
            .await;
            set_log_trigger(store, true).await?;
            bare_rates.push(bare?.0);
        }
        if !copy_first {
            copy_rate = run_copy(store, &events, copy_connections).await?;
        }
        copy_rates.push(copy_rate);
        print!("round {}: COPY {:.0} rows/s", round + 1, copy_rate);
        for (i, (_, name)) in methods.iter().enumerate() {
            rates[i].push(round_rates[i]);
            ratios[i].push(round_rates[i] / copy_rate);
            print!(
                ", {name} {:.0} rows/s ({:.2}x)",
                round_rates[i],
                round_rates[i] / copy_rate
            );
        }
        if let Some(b) = bare_rates.last() {
            print!(", {} without the log trigger {b:.0} rows/s", methods[0].1);
        }
        println!();
    }
    if !bare_rates.is_empty() {
        println!(
            "median EventLogger/{} without the log trigger: {:.0} rows/s (the log costs {:.1} %)",
            methods[0].1,
            median(bare_rates.clone()),
            100.0 * (1.0 - median(rates[0].clone()) / median(bare_rates))
        );
    }
    println!("median COPY: {:.0} rows/s", median(copy_rates));
    for (i, (_, name)) in methods.iter().enumerate() {
        println!(
            "median EventLogger/{name}: {:.0} rows/s, ratio to COPY {:.2}x",
            median(rates[i].clone()),
            median(ratios[i].clone())
        );
    }
    println!(
        "log_event enqueue latency over {} calls: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    truncate(store).await?;
    Ok(())
}

/// SQLite: строки в секунду через EventLogger при `synchronous=FULL` и `NORMAL`;
/// режимы чередуются по раундам, отчёт — медианы.
async fn sqlite_sync(args: &LoadgenArgs) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let projects: Vec<Uuid> = (0..PROJECTS).map(|_| Uuid::now_v7()).collect();
    let events = generate(&mut rng, args.events, &projects);
    println!(
        "sqlite-sync: {} rows/run, batch {}, {} rounds",
        events.len(),
        args.batch_size,
        args.rounds
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    let modes = [SqliteDurability::Full, SqliteDurability::Normal];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let store = Store::connect(
                &args.database_url,
                PoolOptions {
                    sqlite_synchronous: modes[i],
                    ..Default::default()
                },
            )
            .await
            .context("while connecting")?;
            store.migrate_up().await.context("while migrating")?;
            let (rate, _) = run_logger(
                &store,
                &events,
                PgWriteMethod::default(),
                args.batch_size,
                1,
                false,
                &mut hist,
            )
            .await?;
            println!("round {}: synchronous={} {:.0} rows/s", round + 1, modes[i], rate);
            rates[i].push(rate);
            store.close().await?;
        }
    }
    let full = median(rates[0].clone());
    let normal = median(rates[1].clone());
    println!(
        "median synchronous=full {full:.0} rows/s, synchronous=normal {normal:.0} rows/s, \
         full/normal {:.2}x",
        full / normal
    );
    Ok(())
}

async fn reads(store: &Store, args: &LoadgenArgs) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    if !args.no_seed {
        truncate(store).await?;
        let projects: Vec<Uuid> = (0..PROJECTS).map(|_| Uuid::now_v7()).collect();
        let started = Instant::now();
        let mut left = args.events;
        while left > 0 {
            let n = left.min(100_000);
            store.copy_raw(&generate(&mut rng, n, &projects)).await?;
            left -= n;
            eprint!("\rseeded {} rows", args.events - left);
        }
        eprintln!(" in {:.0} s", started.elapsed().as_secs_f64());
        store
            .connection()
            .execute_unprepared("VACUUM ANALYZE event_logs")
            .await?;
    }
    // Проект и пользователь с данными.
    let row = store
        .connection()
        .query_one_raw(Statement::from_string(
            store.backend(),
            "SELECT project_id::text AS p, user_id AS u, COUNT(*) OVER () AS n FROM event_logs LIMIT 1",
        ))
        .await?
        .context("no rows: seed first")?;
    let project: Uuid = row.try_get::<String>("", "p")?.parse()?;
    let user: String = row.try_get("", "u")?;
    let total = store.count_events().await?;
    println!("reads: {total} rows; project {project}, user {user}");
    let user_scope = ReadScope {
        project_id: project,
        user_id: Some(user.clone()),
    };
    let admin_scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let filter = EventFilter {
        event_types: Some(vec!["TOOL_REQUEST".into()]),
        ..Default::default()
    };
    let week = EventFilter {
        from: Some(Utc::now() - chrono::Duration::days(7)),
        ..Default::default()
    };

    let report = |name: &str, mut samples: Vec<f64>| {
        samples.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{name}: p50 {:.2} ms, p95 {:.2} ms ({} runs)",
            p(0.5),
            p(0.95),
            samples.len()
        );
    };
    let mut time = Vec::new();
    for _ in 0..args.iterations {
        let t = Instant::now();
        let page = store
            .page(&user_scope, &filter, SortOrder::NewestFirst, 50, 0, None)
            .await?;
        time.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!page.items.is_empty());
    }
    report("user page, 50 rows, eventTypes filter", time);
    let mut time = Vec::new();
    for _ in 0..args.iterations {
        let t = Instant::now();
        store
            .page(
                &admin_scope,
                &EventFilter::default(),
                SortOrder::NewestFirst,
                50,
                0,
                None,
            )
            .await?;
        time.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("admin page, 50 rows, no filter", time);
    for (name, scope) in [("admin", &admin_scope), ("user", &user_scope)] {
        let mut time = Vec::new();
        for _ in 0..args.iterations.min(20) {
            let t = Instant::now();
            let a = store.analytics(scope, &week, Bucket::Hour).await?;
            time.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(a.total_events > 0);
        }
        report(&format!("{name} analytics, 7 days, hourly buckets"), time);
    }
    // Планы тех же инструкций, что выполняет сервер: страницы идут по индексу в
    // нужном порядке (без Sort), аналитика — index-only по индексу проекта, без
    // сортировки с записью на диск.
    let mut problems = Vec::new();
    for (name, plan) in [
        (
            "user page, eventTypes filter",
            store
                .explain_page(&user_scope, &filter, SortOrder::NewestFirst, 50)
                .await?,
        ),
        (
            "admin page",
            store
                .explain_page(&admin_scope, &EventFilter::default(), SortOrder::NewestFirst, 50)
                .await?,
        ),
    ] {
        println!("\n-- EXPLAIN {name}\n{plan}");
        if !plan.contains("Index Scan") || plan.contains("Sort") {
            problems.push(format!("{name}: not an index-ordered scan"));
        }
    }
    for (i, plan) in store
        .explain_analytics(&admin_scope, &week, Bucket::Hour)
        .await?
        .into_iter()
        .enumerate()
    {
        let name = ["analytics: GROUPING SETS", "analytics: agents and sessions"][i];
        println!("\n-- EXPLAIN {name} (admin, 7 days)\n{plan}");
        if !plan.contains("Index Only Scan") {
            problems.push(format!("{name}: not an index-only scan"));
        }
        if plan.contains("external merge") || plan.contains("Disk Usage") {
            problems.push(format!("{name}: spills to disk"));
        }
    }
    if problems.is_empty() {
        println!("\nplan check: ok");
    } else {
        bail!("plan check failed: {}", problems.join("; "));
    }
    Ok(())
}
