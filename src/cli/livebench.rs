//! `eventlog loadgen --target live`: задержка живой доставки на нескольких
//! экземплярах сервера — настоящие процессы `eventlog serve` на одной базе
//! PostgreSQL, приём по HTTP, подписчики по websocket.
//!
//! Каждый экземпляр принимает `--rate` событий в секунду в своём проекте,
//! разбросанных по `--sessions` сессиям; на каждую сессию — подписчик на ДРУГОМ
//! экземпляре (доставка между экземплярами), плюс `--project-subscribers`
//! подписчиков на весь проект на каждом экземпляре. Задержка — от ответа на
//! мутацию приёма (событие зафиксировано) до получения подписчиком. Печатает
//! p50/p99, долю доставленного, и что читатели журнала стоят базе: запросов
//! (транзакций) в секунду и CPU процессов PostgreSQL в простое и под нагрузкой.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use eventlog::auth::JwtKeys;
use eventlog::query::Role;
use eventlog::storage::Store;

/// Как экземпляры узнают о чужих фиксациях.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wakeup {
    /// `LISTEN/NOTIFY` PostgreSQL (по умолчанию сервера).
    Notify,
    /// Только опрос журнала (`EVENTLOG_LOG_NOTIFY=false`, без Redis).
    Poll,
    /// Только Redis pub/sub (`EVENTLOG_LOG_NOTIFY=false`, `--redis-url`).
    Redis,
}

/// Параметры `--target live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Экземпляров сервера.
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// Событий в секунду на экземпляр.
    #[arg(long, default_value_t = 1000)]
    pub rate: usize,
    /// Сессий на экземпляр (по подписчику на каждую).
    #[arg(long, default_value_t = 300)]
    pub sessions: usize,
    /// Подписчиков на весь проект на экземпляр.
    #[arg(long, default_value_t = 10)]
    pub project_subscribers: usize,
    /// Длительность нагрузки (live: 20 с по умолчанию; http-reads: 15 с на форму).
    /// Число — секунды, иначе humantime (`15s`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Источник пробуждения читателей журнала.
    #[arg(long, value_enum, default_value = "notify")]
    pub wakeup: Wakeup,
    /// Redis для `--wakeup redis`.
    #[arg(long, env = "EVENTLOG_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Держать открытой постороннюю пишущую транзакцию (в базе `postgres` того
    /// же кластера) столько секунд с начала нагрузки.
    #[arg(long, default_value_t = 0)]
    pub hold_unrelated_tx_secs: u64,
    /// Сколько секунд мерить стоимость читателей журнала в простое.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
}

/// Длительность: число секунд или humantime (`15s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

const SECRET: &str = "eventlog-loadgen-live-secret";

/// Строк истории в базе до замера (в других проектах).
const HISTORY_EVENTS: usize = 200_000;

/// Процессы, убиваемые при выходе.
pub(super) struct Procs(pub(super) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Сумма utime+stime (тики) процессов с данным именем.
fn cpu_ticks(comm: &str) -> u64 {
    super::procstat::pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, ticks) = super::procstat::parse_stat(&stat)?;
            (name == comm).then_some(ticks)
        })
        .sum()
}

/// Транзакций базы (фиксаций и откатов) с начала статистики.
async fn xacts(store: &Store) -> Result<i64> {
    let row = store
        .connection()
        .query_one_raw(Statement::from_string(
            store.backend(),
            "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await?
        .context("pg_stat_database")?;
    Ok(row.try_get("", "n")?)
}

/// Замер «запросы/с и CPU PostgreSQL» за `secs`.
async fn db_cost(store: &Store, secs: f64) -> Result<(f64, f64)> {
    let hz = 100.0;
    let (x0, c0) = (xacts(store).await?, cpu_ticks("postgres"));
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (x1, c1) = (xacts(store).await?, cpu_ticks("postgres"));
    // Сама выборка статистики — две транзакции; их не считаем.
    Ok((((x1 - x0 - 1).max(0)) as f64 / secs, (c1 - c0) as f64 / hz / secs))
}

/// Свободный порт на 127.0.0.1.
pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ждёт `/readyz` сервера на `port` (до минуты).
pub(super) async fn wait_ready(port: u16) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("instance on {port} never became ready")
}

type Deliveries = Vec<(Uuid, Instant)>;

/// Подписчик: возвращает полученные события с моментами получения.
async fn subscriber(
    port: u16,
    token: String,
    vars: Value,
    stop: Arc<tokio::sync::Notify>,
    ready: Arc<Semaphore>,
) -> Result<Deliveries> {
    let mut req = format!("ws://127.0.0.1:{port}/graphql/ws").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    let sub = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($p: UUID!, $f: EventFilter) { events(projectId: $p, filter: $f) { id } }",
        "variables": vars}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    ready.add_permits(1);
    let mut got = Vec::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    let v: Value = serde_json::from_str(&t)?;
                    if v["type"] == "next"
                        && let Some(id) = v["payload"]["data"]["events"]["id"].as_str()
                    {
                        got.push((id.parse()?, at));
                    } else if v["type"] == "error" || v["type"] == "complete" || v["payload"]["errors"].is_array() {
                        // Отказ сервера (например, предел подписок) — провал замера, а не тихая недоставка.
                        bail!("subscription on port {port} failed: {t}");
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("socket on port {port} closed by the server: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("socket on port {port}: {e}"),
                None => bail!("socket on port {port} ended"),
            }
        }
    }
    Ok(got)
}

/// Запуск замера.
pub async fn run(store: &Store, database_url: &str, args: &LiveArgs) -> Result<()> {
    if args.wakeup == Wakeup::Redis && args.redis_url.is_none() {
        bail!("--wakeup redis needs --redis-url");
    }
    super::loadgen::truncate(store).await?;
    // История до замера: серверы стартуют на таблице со строками и статистикой, как в
    // работе. На пустой таблице PostgreSQL закэшировал бы общие планы с полным
    // просмотром (проверка id при приёме) до первого автоанализа — артефакт замера.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let history = super::loadgen::generate(&mut rng, HISTORY_EVENTS, &[Uuid::now_v7(), Uuid::now_v7()]);
    for chunk in history.chunks(50_000) {
        store.copy_raw(chunk).await?;
    }
    store.catch_up_followers().await?;
    store.connection().execute_unprepared("ANALYZE").await?;
    let exe = std::env::current_exe()?;
    let mut procs = Procs(Vec::new());
    let mut ports = Vec::new();
    let prefix = format!("eventlog-live-{}:", Uuid::new_v4().simple());
    for _ in 0..args.instances {
        let port = free_port()?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .env("EVENTLOG_DATABASE_URL", database_url)
            .env("EVENTLOG_LISTEN", format!("127.0.0.1:{port}"))
            .env("EVENTLOG_JWT_SECRET", SECRET)
            .env("EVENTLOG_RETENTION_DAYS", "0")
            .env("EVENTLOG_LOG_NOTIFY", (args.wakeup == Wakeup::Notify).to_string())
            .env("EVENTLOG_REDIS_PREFIX", &prefix)
            // Все подписчики замера — один вызывающий (токен `u`): пределы на токен
            // подняты до числа его сокетов, иначе сервер законно отказал бы лишним.
            .env("EVENTLOG_WS_MAX_CONNECTIONS_PER_TOKEN", "100000")
            .env("EVENTLOG_WS_MAX_SUBSCRIPTIONS_PER_TOKEN", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd.env_remove("EVENTLOG_REDIS_URL");
        if args.wakeup == Wakeup::Redis
            && let Some(r) = &args.redis_url
        {
            cmd.env("EVENTLOG_REDIS_URL", r);
        }
        procs
            .0
            .push(cmd.spawn().context("while starting eventlog serve")?);
        ports.push(port);
    }
    for p in &ports {
        wait_ready(*p).await?;
    }
    let n = args.instances;
    let duration = args.duration.unwrap_or(Duration::from_secs(20));
    println!(
        "live: {n} instances ({:?} wake-ups), {} events/s and {} sessions per instance, {} project subscribers per instance, {} s",
        args.wakeup,
        args.rate,
        args.sessions,
        args.project_subscribers,
        duration.as_secs()
    );

    // Стоимость читателей журнала в простое: экземпляры работают, никто не пишет.
    let (idle_qps, idle_cpu) = db_cost(store, args.idle_secs as f64).await?;
    println!(
        "idle log readers: {idle_qps:.1} database transactions/s, PostgreSQL CPU {:.1} % of a core",
        idle_cpu * 100.0
    );

    let keys = JwtKeys::new(SECRET.as_bytes());
    let projects: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let token = keys.mint(
        "u",
        Role::User,
        Some(projects.clone()),
        chrono::Duration::hours(2),
    )?;
    let sessions: Vec<Vec<Uuid>> = (0..n)
        .map(|_| (0..args.sessions).map(|_| Uuid::now_v7()).collect())
        .collect();
    let stop = Arc::new(tokio::sync::Notify::new());
    let ready = Arc::new(Semaphore::new(0));
    let mut subs = Vec::new();
    for (i, list) in sessions.iter().enumerate() {
        // Подписчик сессии — на следующем экземпляре: доставка между экземплярами.
        let port = ports[(i + 1) % n];
        for s in list {
            let vars = json!({"p": projects[i], "f": {"sessionId": s}});
            subs.push(tokio::spawn(subscriber(
                port,
                token.clone(),
                vars,
                stop.clone(),
                ready.clone(),
            )));
        }
    }
    for (j, port) in ports.iter().enumerate() {
        for _ in 0..args.project_subscribers {
            let vars = json!({"p": projects[(j + 1) % n]});
            subs.push(tokio::spawn(subscriber(
                *port,
                token.clone(),
                vars,
                stop.clone(),
                ready.clone(),
            )));
        }
    }
    let total_subs = subs.len() as u32;
    let _ = tokio::time::timeout(Duration::from_secs(60), ready.acquire_many(total_subs)).await;
    // Подписки оформляются на сервере асинхронно: даём им начаться.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let unrelated = if args.hold_unrelated_tx_secs > 0 {
        let url = match database_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/postgres"),
            None => bail!("--database-url: cannot derive the postgres database"),
        };
        let hold = Duration::from_secs(args.hold_unrelated_tx_secs);
        Some(tokio::spawn(async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await?;
            sqlx::query("BEGIN").execute(&mut c).await?;
            // Транзакция с номером: она держит xmin снимков всего кластера.
            sqlx::query("SELECT pg_current_xact_id()").execute(&mut c).await?;
            tokio::time::sleep(hold).await;
            sqlx::query("COMMIT").execute(&mut c).await?;
            Ok::<(), anyhow::Error>(())
        }))
    } else {
        None
    };

    // Нагрузка: каждые 10 мс пакет из rate/100 событий на экземпляр.
    let client = reqwest::Client::new();
    let acks: Arc<std::sync::Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let inflight = Arc::new(Semaphore::new(64));
    let per_tick = (args.rate / 100).max(1);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut requests = Vec::new();
    let load_cost = {
        let store = store.clone();
        let secs = duration.as_secs_f64();
        tokio::spawn(async move { db_cost(&store, secs).await })
    };
    let server_cpu0 = cpu_ticks("eventlog");
    while started.elapsed() < duration {
        tick.tick().await;
        for i in 0..n {
            let events: Vec<Value> = {
                let mut rng = rand::rng();
                (0..per_tick)
                    .map(|_| {
                        let s = sessions[i][rng.random_range(0..sessions[i].len())];
                        json!({"id": Uuid::now_v7(), "sessionId": s, "projectId": projects[i], "eventType": "TOOL_REQUEST",
                               "toolName": "search", "payload": {"q": "quarterly revenue", "top_k": 8}})
                    })
                    .collect()
            };
            let ids: Vec<Uuid> = events
                .iter()
                .filter_map(|e| e["id"].as_str()?.parse().ok())
                .collect();
            let body = json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }", "variables": {"e": events}});
            let (client, acks, port) = (client.clone(), acks.clone(), ports[i]);
            let permit = inflight.clone().acquire_owned().await?;
            let token = token.clone();
            requests.push(tokio::spawn(async move {
                let _permit = permit;
                let r = client
                    .post(format!("http://127.0.0.1:{port}/graphql"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await;
                let at = Instant::now();
                if let Ok(r) = r
                    && r.status().is_success()
                {
                    let mut acks = acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for id in ids {
                        acks.insert(id, at);
                    }
                }
            }));
        }
    }
    for r in requests {
        let _ = r.await;
    }
    let server_cpu =
        (cpu_ticks("eventlog").saturating_sub(server_cpu0)) as f64 / 100.0 / started.elapsed().as_secs_f64();
    let (load_qps, load_cpu) = load_cost.await??;
    // Последние события ещё в пути.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.notify_waiters();
    let mut deliveries = Vec::new();
    let mut failed = Vec::new();
    for s in subs {
        match s.await {
            Ok(Ok(d)) => deliveries.extend(d),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if let Some(first) = failed.first() {
        bail!(
            "{} of {total_subs} subscribers failed; the first: {first}",
            failed.len()
        );
    }
    if let Some(u) = unrelated {
        u.await??;
    }
    let acks = acks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut early = 0u64;
    let mut matched = 0u64;
    for (id, at) in &deliveries {
        if let Some(ack) = acks.get(id) {
            matched += 1;
            match at.checked_duration_since(*ack) {
                Some(d) => hist.record(d.as_micros().max(1) as u64)?,
                None => {
                    // Подписчик получил событие раньше, чем клиент — ответ на приём.
                    early += 1;
                    hist.record(1)?;
                }
            }
        }
    }
    let expected = acks.len() as u64 * (1 + args.project_subscribers as u64);
    println!(
        "acknowledged {} events; deliveries {} of {} expected ({:.2} %), {} before the ack",
        acks.len(),
        matched,
        expected,
        100.0 * matched as f64 / expected.max(1) as f64,
        early
    );
    println!(
        "ack -> subscriber latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    println!(
        "under load: {load_qps:.1} database transactions/s, PostgreSQL CPU {:.1} % of a core, servers' CPU {:.1} % of a core",
        load_cpu * 100.0,
        server_cpu * 100.0
    );
    drop(procs);
    Ok(())
}
