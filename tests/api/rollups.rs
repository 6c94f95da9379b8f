//! Свёртки аналитики: ответ через свёртки равен ответу по сырым строкам, поле в поле.
//!
//! Главный тест — свойство на случайных данных (seed печатается; повтор —
//! `ROLLUP_SEED=<seed>`): несколько проектов, пользователей, сессий и агентов, все
//! типы, которые считает аналитика, токены и модели (в том числе мусорные), время за
//! ~10 дней с точными границами часов; случайные фильтры, окна, области и корзины.
//! Проверяется до применения, на полпути, после догоняния, после очистки и при
//! потребителе, шагающем параллельно с чтением. Плюс: заполнение миграцией,
//! вычитание при очистке (`last_at` группы), потребитель на сервере.

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventlog::model::NewEvent;
use eventlog::query::{EventFilter, ReadScope};
use eventlog::storage::analytics::{Analytics, Bucket};
use eventlog::storage::follow::FollowOutcome;
use eventlog::storage::{Store, rollup_read};
use migration::{Migrator, MigratorTrait};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestDb, wait_for};

const TYPES: [&str; 8] = [
    "TOOL_REQUEST",
    "TOOL_RESULT",
    "MODEL_CALL",
    "APPROVAL_REQUIRED",
    "APPROVAL_RESOLVED",
    "APPROVAL_TIMEOUT",
    "ERROR",
    "TASK_STARTED",
];
const USERS: [&str; 3] = ["u1", "u2", "u3"];
const AGENTS: [&str; 4] = ["a1", "a2", "a3", "a4"];

/// Сумма итогов всех пользователей по строкам часов: столько событий применено.
const TOTALS_N: &str =
    "SELECT CAST(SUM(n) AS BIGINT) FROM rollup_parts WHERE dim = 0 AND grain = 0 AND user_key = ''";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
}

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> &'a T {
    &v[rng.random_range(0..v.len())]
}

/// Случайные данные одного прогона.
struct World {
    projects: Vec<Uuid>,
    sessions: Vec<Uuid>,
}

/// Случайное время за 10 дней: часть — ровно на границе часа, часть — за микросекунду до неё.
fn random_time(rng: &mut StdRng) -> DateTime<Utc> {
    let hours = rng.random_range(0..240);
    let base = t0() + Duration::hours(hours);
    match rng.random_range(0..10) {
        0 | 1 => base,
        2 => base + Duration::hours(1) - Duration::microseconds(1),
        _ => base + Duration::microseconds(rng.random_range(0..3_600_000_000)),
    }
}

/// Значение токенов: целые (в том числе границы), строки, дробные, отрицательные, слишком большие.
fn random_tokens(rng: &mut StdRng) -> Option<Value> {
    Some(match rng.random_range(0..12) {
        0 => return None,
        1 => json!("12"),
        2 => json!(1.5),
        3 => json!(-3),
        4 => json!(1_000_000_000_000_i64),
        5 => json!(999_999_999_999_i64),
        _ => json!(rng.random_range(0..5000)),
    })
}

fn random_event(rng: &mut StdRng, w: &World) -> NewEvent {
    let ty = *pick(rng, &TYPES);
    let mut payload = Map::new();
    if ty == "MODEL_CALL" {
        match rng.random_range(0..6) {
            0 => {}
            1 => {
                payload.insert("model".into(), json!(42));
            }
            // Длиннее записи индекса btree на PostgreSQL — ключ свёртки хранит её хеш.
            2 => {
                payload.insert("model".into(), json!("m".repeat(3000 + rng.random_range(0..2))));
            }
            _ => {
                payload.insert("model".into(), json!(*pick(rng, &["gpt-a", "gpt-b", "unknown"])));
            }
        }
        for key in ["input_tokens", "output_tokens"] {
            if let Some(v) = random_tokens(rng) {
                payload.insert(key.into(), v);
            }
        }
    }
    let tool = match ty {
        "TOOL_REQUEST" | "TOOL_RESULT" => Some(*pick(rng, &["search", "deploy", "calc"])),
        _ if rng.random_bool(0.1) => Some("calc"),
        _ => None,
    };
    let status = match ty {
        "APPROVAL_REQUIRED" => Some("PENDING"),
        "APPROVAL_RESOLVED" => Some(*pick(rng, &["APPROVED", "REJECTED"])),
        "APPROVAL_TIMEOUT" => Some("TIMEOUT"),
        _ if rng.random_bool(0.05) => Some("APPROVED"),
        _ => None,
    };
    NewEvent {
        id: Uuid::new_v4(),
        session_id: *pick(rng, &w.sessions),
        user_id: (*pick(rng, &USERS)).to_owned(),
        project_id: if rng.random_bool(0.8) {
            w.projects[0]
        } else {
            w.projects[1]
        },
        agent_id: rng.random_bool(0.75).then(|| (*pick(rng, &AGENTS)).to_owned()),
        event_type: ty.to_owned(),
        payload,
        created_at: random_time(rng),
        error_code: (ty == "ERROR" || rng.random_bool(0.15))
            .then(|| (*pick(rng, &["E1", "E2", "E3"])).to_owned()),
        tool_name: tool.map(str::to_owned),
        approval_status: status.map(str::to_owned),
    }
}

/// Пишет `n` событий фиксациями случайного размера (1–`batch` событий).
async fn insert_random(store: &Store, rng: &mut StdRng, w: &World, n: usize, batch: usize) {
    let mut left = n;
    while left > 0 {
        let k = rng.random_range(1..=batch).min(left);
        let batch: Vec<NewEvent> = (0..k).map(|_| random_event(rng, w)).collect();
        store.insert_batch(&batch, None).await.expect("insert batch");
        left -= k;
    }
}

/// Граница окна: на границе часа, на случайной минуте или микросекунде.
fn random_bound(rng: &mut StdRng) -> DateTime<Utc> {
    let base = t0() + Duration::hours(rng.random_range(-5..250));
    match rng.random_range(0..3) {
        0 => base,
        1 => base + Duration::minutes(rng.random_range(1..60)),
        _ => base + Duration::microseconds(rng.random_range(1..3_600_000_000)),
    }
}

fn random_list(rng: &mut StdRng, from: &[&str], extra: &str) -> Vec<String> {
    if rng.random_bool(0.05) {
        return Vec::new();
    }
    let mut v: Vec<String> = (0..rng.random_range(1..=3))
        .map(|_| (*pick(rng, from)).to_owned())
        .collect();
    if rng.random_bool(0.2) {
        v.push(extra.to_owned());
    }
    v
}

fn random_query(rng: &mut StdRng, w: &World) -> (ReadScope, EventFilter, Bucket) {
    let scope = ReadScope {
        project_id: if rng.random_bool(0.85) {
            w.projects[0]
        } else {
            w.projects[1]
        },
        user_id: rng.random_bool(0.4).then(|| (*pick(rng, &USERS)).to_owned()),
    };
    let mut f = EventFilter::default();
    // Фильтры по типам, агентам и ошибкам узкие свёртки не скрещивают: ответ по сырым строкам.
    if rng.random_bool(0.2) {
        if rng.random_bool(0.5) {
            f.event_types = Some(random_list(rng, &TYPES, "NOPE"));
        }
        if rng.random_bool(0.5) {
            f.agent_ids = Some(random_list(rng, &AGENTS, "zz"));
        }
        if rng.random_bool(0.5) {
            f.has_error = Some(rng.random_bool(0.5));
        }
    }
    if rng.random_bool(0.15) {
        f.user_id = Some((*pick(rng, &USERS)).to_owned());
    }
    // Фильтры, которых нет в свёртках: ответ по сырым строкам.
    match rng.random_range(0..50) {
        0 => f.tool_name = Some("calc".into()),
        1 => f.error_code = Some("E1".into()),
        2 => f.approval_status = Some("APPROVED".into()),
        3 => f.session_id = Some(*pick(rng, &w.sessions)),
        4 => f.payload_contains = Some(json!({"model": "gpt-a"})),
        _ => {}
    }
    if rng.random_bool(0.75) {
        f.from = Some(random_bound(rng));
    }
    if rng.random_bool(0.75) {
        f.to = Some(match f.from {
            Some(from) if rng.random_bool(0.9) => {
                from + Duration::minutes(rng.random_range(0..5 * 24 * 60))
                    + Duration::microseconds(rng.random_range(0..2) * rng.random_range(0..60_000_000))
            }
            _ => random_bound(rng),
        });
    }
    let bucket = match rng.random_range(0..20) {
        0 => Bucket::Minute,
        1..10 => Bucket::Hour,
        _ => Bucket::Day,
    };
    (scope, f, bucket)
}

/// Ответ через свёртки (если план есть) против ответа по сырым строкам: `queries`
/// случайных запросов. Возвращает, сколько из них шли через свёртки.
async fn check(store: &Store, rng: &mut StdRng, w: &World, seed: u64, stage: &str, queries: usize) -> usize {
    let mut rolled = 0;
    for i in 0..queries {
        let (scope, filter, bucket) = random_query(rng, w);
        let raw = store.analytics_raw(&scope, &filter, bucket).await.unwrap();
        let got = store.analytics(&scope, &filter, bucket).await.unwrap();
        assert_eq!(
            got, raw,
            "ROLLUP_SEED={seed}, stage {stage}, query {i}: scope {scope:?}, filter {filter:?}, bucket {bucket:?}"
        );
        rolled += usize::from(rollup_read::plan(&filter, bucket).is_some());
    }
    rolled
}

/// Шаги потребителя, пока есть что применять (или `limit` шагов).
async fn step(store: &Store, max: u32, limit: usize) -> usize {
    let mut steps = 0;
    while steps < limit {
        match store.step_rollups(max).await.unwrap() {
            FollowOutcome::Advanced { .. } => steps += 1,
            FollowOutcome::CaughtUp => break,
            FollowOutcome::Busy => panic!("nobody else steps the follower in this test"),
        }
    }
    steps
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    let row = store
        .connection()
        .query_one_raw(Statement::from_string(store.backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

fn seed() -> u64 {
    std::env::var("ROLLUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

async fn rollups_equal_raw_on_random_data(b: Backend) {
    let seed = seed();
    eprintln!("rollup property test: ROLLUP_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let w = World {
        projects: vec![Uuid::now_v7(), Uuid::now_v7()],
        sessions: (0..12).map(|_| Uuid::new_v4()).collect(),
    };
    let mut rolled = 0;
    let mut total = 0;
    let mut run = |n: usize| {
        total += n;
        n
    };

    // Ничего не применено: всё из сырых строк через «неприменённый» срез.
    insert_random(&store, &mut rng, &w, 500, 40).await;
    assert_eq!(store.follower_position("rollups").await.unwrap(), Some(0));
    rolled += check(&store, &mut rng, &w, seed, "nothing applied", run(25)).await;

    // Потребитель остановлен на полпути: часть фиксаций применена.
    let max = if store.is_postgres() { 3 } else { 60 };
    assert!(step(&store, max, 3).await > 0);
    let pos = store.follower_position("rollups").await.unwrap().unwrap();
    assert!(
        pos > 0 && pos < store.log_head().await.unwrap().commit,
        "partway: {pos}"
    );
    rolled += check(&store, &mut rng, &w, seed, "partway", run(40)).await;

    // Догнал журнал.
    step(&store, 1000, usize::MAX).await;
    assert!(scalar(&store, "SELECT COUNT(*) FROM rollup_parts").await > 0);
    rolled += check(&store, &mut rng, &w, seed, "caught up", run(40)).await;

    // Новые события, применённые частично, затем очистка порциями по 37 строк.
    insert_random(&store, &mut rng, &w, 300, 40).await;
    step(&store, max, 2).await;
    rolled += check(&store, &mut rng, &w, seed, "new events partway", run(30)).await;
    let cutoff =
        t0() + Duration::hours(rng.random_range(24..120)) + Duration::seconds(rng.random_range(0..3600));
    let before = store.count_events().await.unwrap();
    let purged = store.purge_older_than(cutoff, 37).await.unwrap();
    assert!(purged > 37, "the purge took several chunks: {purged}");
    assert_eq!(store.count_events().await.unwrap(), before - purged as i64);
    for table in ["rollup_parts", "rollup_session_parts"] {
        assert_eq!(
            scalar(&store, &format!("SELECT COUNT(*) FROM {table} WHERE n <= 0")).await,
            0,
            "{table}: groups without events are deleted"
        );
    }
    rolled += check(&store, &mut rng, &w, seed, "after purge", run(40)).await;
    step(&store, 1000, usize::MAX).await;
    rolled += check(&store, &mut rng, &w, seed, "after purge, caught up", run(30)).await;

    // Потребитель шагает параллельно с чтением: данные не меняются, поэтому ответ
    // через свёртки в любой момент равен заранее посчитанному по сырым строкам
    // (позиция и свёртки читаются в одном снимке).
    insert_random(&store, &mut rng, &w, 200, 4).await;
    let queries: Vec<_> = (0..25).map(|_| random_query(&mut rng, &w)).collect();
    let mut expected = Vec::new();
    for (scope, filter, bucket) in &queries {
        expected.push(store.analytics_raw(scope, filter, *bucket).await.unwrap());
    }
    let stepper = {
        let store = store.clone();
        tokio::spawn(async move { step(&store, 1, usize::MAX).await })
    };
    let mut rounds = 0;
    while !stepper.is_finished() || rounds == 0 {
        for (i, ((scope, filter, bucket), want)) in queries.iter().zip(&expected).enumerate() {
            let got: Analytics = store.analytics(scope, filter, *bucket).await.unwrap();
            assert_eq!(
                &got, want,
                "ROLLUP_SEED={seed}, concurrent round {rounds}, query {i}: {scope:?} {filter:?} {bucket:?}"
            );
        }
        rounds += 1;
    }
    assert!(stepper.await.unwrap() > 1);
    eprintln!("rolled {rolled} of {total} random queries; {rounds} concurrent rounds");
    assert!(
        rolled * 2 > total,
        "ROLLUP_SEED={seed}: most random queries must go through the rollups ({rolled} of {total})"
    );
}
both!(rollups_equal_raw_on_random_data);

fn event(project: Uuid, session: Uuid, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        session_id: session,
        user_id: "u1".into(),
        project_id: project,
        agent_id: Some("a1".into()),
        event_type: "TOOL_REQUEST".into(),
        payload: Map::new(),
        created_at: at,
        error_code: None,
        tool_name: Some("calc".into()),
        approval_status: None,
    }
}

/// Очистка вычитает применённые строки; у группы остаётся верный `last_at`, даже
/// когда порция — одна строка; опустевшая группа удаляется.
async fn purge_subtracts_applied_rows(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let (project, session) = (Uuid::now_v7(), Uuid::new_v4());
    let h = t0() + Duration::hours(10);
    let at = [
        h + Duration::minutes(20),
        h + Duration::minutes(10),
        h + Duration::minutes(40),
    ];
    for t in at {
        store
            .insert_batch(&[event(project, session, t)], None)
            .await
            .unwrap();
    }
    step(&store, 1000, usize::MAX).await;
    let scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let day = EventFilter {
        from: Some(t0()),
        to: Some(t0() + Duration::days(1)),
        ..Default::default()
    };
    assert!(rollup_read::plan(&day, Bucket::Hour).is_some());
    let agents = |a: &Analytics| (a.total_events, a.agent_interactions[0].last_seen_at);
    let a = store.analytics(&scope, &day, Bucket::Hour).await.unwrap();
    assert_eq!(agents(&a), (3, at[2]));

    // Порция из одной строки: удаляется самая ранняя (10:10), затем 10:20.
    assert_eq!(
        store
            .purge_older_than(h + Duration::minutes(30), 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(scalar(&store, TOTALS_N).await, 1);
    let a = store.analytics(&scope, &day, Bucket::Hour).await.unwrap();
    assert_eq!(agents(&a), (1, at[2]));
    assert_eq!(a, store.analytics_raw(&scope, &day, Bucket::Hour).await.unwrap());

    // Не применённая строка удаляется без вычитания.
    store
        .insert_batch(&[event(project, session, h + Duration::minutes(5))], None)
        .await
        .unwrap();
    assert_eq!(
        store
            .purge_older_than(h + Duration::minutes(30), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(scalar(&store, TOTALS_N).await, 1);
    step(&store, 1000, usize::MAX).await;
    assert_eq!(scalar(&store, TOTALS_N).await, 1);

    // Последняя строка группы: группа и пара (сессия, час) удаляются.
    assert_eq!(
        store.purge_older_than(h + Duration::hours(1), 10).await.unwrap(),
        1
    );
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM rollup_parts").await, 0);
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM rollup_session_parts").await,
        0
    );
    let a = store.analytics(&scope, &day, Bucket::Hour).await.unwrap();
    assert_eq!(a.total_events, 0);
    assert_eq!(a, store.analytics_raw(&scope, &day, Bucket::Hour).await.unwrap());
}
both!(purge_subtracts_applied_rows);

/// Миграция заполняет свёртки по уже записанным строкам и ставит позицию на голову
/// журнала; `down` убирает таблицы и потребителя, повторный `up` даёт тот же ответ.
async fn migration_backfills_rollups(b: Backend) {
    let seed = seed();
    eprintln!("backfill test: ROLLUP_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    // Все миграции до свёрток (и сколько их после, включая свёртки).
    let all = Migrator::migrations();
    let before = all
        .iter()
        .position(|m| m.name() == "m20261205_000002_create_analytics_rollups")
        .expect("the rollup migration is registered");
    let from_rollups = (all.len() - before) as u32;
    Migrator::up(store.connection(), Some(before as u32))
        .await
        .unwrap();
    let w = World {
        projects: vec![Uuid::now_v7(), Uuid::now_v7()],
        sessions: (0..8).map(|_| Uuid::new_v4()).collect(),
    };
    insert_random(&store, &mut rng, &w, 300, 40).await;
    for round in 0..2 {
        Migrator::up(store.connection(), None).await.unwrap();
        assert_eq!(
            store.follower_position("rollups").await.unwrap(),
            Some(store.log_head().await.unwrap().commit),
            "round {round}: the follower starts at the head"
        );
        assert!(scalar(&store, "SELECT COUNT(*) FROM rollup_parts").await > 0);
        let sum = scalar(&store, TOTALS_N).await;
        assert_eq!(sum, store.count_events().await.unwrap(), "round {round}");
        assert!(check(&store, &mut rng, &w, seed, "backfilled", 30).await > 10);
        if round == 0 {
            Migrator::down(store.connection(), Some(from_rollups))
                .await
                .unwrap();
            assert_eq!(store.follower_position("rollups").await.unwrap(), None);
            let rows = store
                .connection()
                .query_all_raw(Statement::from_string(
                    store.backend(),
                    if b.is_postgres() {
                        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'rollup%'"
                    } else {
                        "SELECT name FROM sqlite_master WHERE name LIKE 'rollup%'"
                    },
                ))
                .await
                .unwrap();
            assert!(rows.is_empty(), "rollup tables and indexes are dropped");
            // Без свёрток аналитика считается по сырым строкам.
            assert!(check(&store, &mut rng, &w, seed, "no rollups", 10).await > 0);
        }
    }
}
both!(migration_backfills_rollups);

/// С `EVENTLOG_ANALYTICS_ROLLUPS=true` сервер сам ведёт свёртки
/// (`EVENTLOG_ROLLUP_INTERVAL_MS`), а с интервалом 0 или без `EVENTLOG_ANALYTICS_ROLLUPS`
/// (по умолчанию) — нет, и аналитика считается по сырым строкам.
async fn server_follower_applies_ingested_events(b: Backend) {
    let w = crate::fixture::world_with(&b, |s| {
        s.analytics_rollups = true;
        s.rollup_interval_ms = 10;
    })
    .await;
    let store = w.app.store.clone();
    let head = store.log_head().await.unwrap().commit;
    wait_for("the rollup follower catches up", 10, || {
        let store = store.clone();
        async move { store.follower_position("rollups").await.unwrap() == Some(head) }
    })
    .await;
    assert_eq!(scalar(&store, TOTALS_N).await, 100);
    let scope = ReadScope {
        project_id: w.project,
        user_id: None,
    };
    for bucket in [Bucket::Hour, Bucket::Day] {
        let f = EventFilter::default();
        assert!(rollup_read::plan(&f, bucket).is_some());
        let a = store.analytics(&scope, &f, bucket).await.unwrap();
        assert_eq!(a.total_events, 90);
        assert_eq!(a, store.analytics_raw(&scope, &f, bucket).await.unwrap());
    }
    let r = w
        .app
        .graphql(
            Some(&w.admin),
            "query($p: UUID!) { analytics(projectId: $p, bucket: HOUR) { totalEvents sessions } }",
            json!({"p": w.project}),
        )
        .await;
    assert_eq!(r["data"]["analytics"]["totalEvents"], 90, "{r}");
    assert_eq!(r["data"]["analytics"]["sessions"], 3, "{r}");

    let off = crate::fixture::world_with(&b, |s| {
        s.analytics_rollups = true;
        s.rollup_interval_ms = 0;
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(off.app.store.follower_position("rollups").await.unwrap(), Some(0));

    // По умолчанию свёртки выключены: потребитель не шагает даже с интервалом, а
    // ответ API — тот же, по сырым строкам.
    let default = crate::fixture::world_with(&b, |s| s.rollup_interval_ms = 10).await;
    assert!(!eventlog::config::Settings::for_database(&default.app.db_url).analytics_rollups);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        default.app.store.follower_position("rollups").await.unwrap(),
        Some(0)
    );
    let r = default
        .app
        .graphql(
            Some(&default.admin),
            "query($p: UUID!) { analytics(projectId: $p, bucket: HOUR) { totalEvents sessions } }",
            json!({"p": default.project}),
        )
        .await;
    assert_eq!(r["data"]["analytics"]["totalEvents"], 90, "{r}");
    assert_eq!(r["data"]["analytics"]["sessions"], 3, "{r}");
}
both!(server_follower_applies_ingested_events);

/// Замер (PostgreSQL, `--ignored`): планы аналитики за 7 дней из свёрток на
/// `ROLLUP_EXPLAIN_EVENTS` событиях (по умолчанию 300 000) за 10 дней. Печатает
/// `EXPLAIN (ANALYZE, BUFFERS)` обеих инструкций и проверяет, что `event_logs`
/// читается только по индексам (края окна и неприменённые строки), без полного просмотра.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored on PostgreSQL"]
async fn explain_seven_days_from_rollups() {
    let b = Backend::require_postgres();
    let n: usize = std::env::var("ROLLUP_EXPLAIN_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let mut rng = StdRng::seed_from_u64(7);
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let w = World {
        projects: vec![Uuid::now_v7(), Uuid::now_v7()],
        sessions: (0..100).map(|_| Uuid::new_v4()).collect(),
    };
    // Правдоподобная форма: сессия — 100 событий одного пользователя и агента за
    // ~час (равномерно случайные события сжимаются свёртками плохо).
    for _ in 0..n / 2000 {
        let mut batch = Vec::with_capacity(2000);
        for _ in 0..20 {
            let (session, user) = (Uuid::new_v4(), format!("user-{}", rng.random_range(0..50)));
            let agent = (*pick(&mut rng, &AGENTS)).to_owned();
            let mut at = t0() + Duration::seconds(rng.random_range(0..10 * 86_400));
            for _ in 0..100 {
                let mut e = random_event(&mut rng, &w);
                at += Duration::seconds(rng.random_range(0..72));
                (e.session_id, e.user_id, e.created_at) = (session, user.clone(), at);
                e.agent_id = Some(agent.clone());
                if e.payload
                    .get("model")
                    .is_some_and(|m| m.as_str().is_some_and(|m| m.len() > 100))
                {
                    e.payload.insert("model".into(), json!("gpt-a"));
                }
                if rng.random_bool(0.8) {
                    e.error_code = None;
                }
                batch.push(e);
            }
        }
        store.insert_batch(&batch, None).await.unwrap();
    }
    step(&store, 1000, usize::MAX).await;
    // Несколько фиксаций остаются неприменёнными.
    insert_random(&store, &mut rng, &w, 500, 100).await;
    store
        .connection()
        .execute_unprepared("VACUUM ANALYZE")
        .await
        .unwrap();
    let scope = ReadScope {
        project_id: w.projects[0],
        user_id: None,
    };
    let from = t0() + Duration::days(2) + Duration::minutes(17);
    let f = EventFilter {
        from: Some(from),
        to: Some(from + Duration::days(7)),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let a = store.analytics(&scope, &f, Bucket::Hour).await.unwrap();
    let rolled = t.elapsed();
    let t = std::time::Instant::now();
    let raw = store.analytics_raw(&scope, &f, Bucket::Hour).await.unwrap();
    let raw_time = t.elapsed();
    assert_eq!(a, raw);
    let rows = scalar(&store, "SELECT COUNT(*) FROM rollup_parts").await;
    let session_rows = scalar(&store, "SELECT COUNT(*) FROM rollup_session_parts").await;
    eprintln!(
        "{n} events, {rows} rollup_parts rows, {session_rows} rollup_session_parts rows; \
         7-day analytics: rollups {rolled:?}, raw {raw_time:?} (debug build, one run each)"
    );
    let plans = store
        .explain_analytics_rollups(&scope, &f, Bucket::Hour)
        .await
        .unwrap();
    for p in &plans {
        eprintln!("{p}\n");
        assert!(!p.contains("Seq Scan on event_logs"), "{p}");
    }
}
