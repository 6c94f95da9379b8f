//! Набор данных `http-reads`: постоянный и воспроизводимый.
//!
//! 20 пользователей в 4 проектах (80 пар «пользователь, проект»); доли пар —
//! геометрическая прогрессия от 1 до [`SPREAD`] (на 1 млн строк — примерно от 460
//! до 61 000 строк на пару), пары перемешаны зерном, так что у каждого
//! пользователя и проекта есть и большие, и малые пары. Сессии по 10–70 событий
//! (в среднем 40) в пределах получаса, с 1–3 агентами из 40; начала сессий
//! равномерно распределены по 30 дням до зафиксированного «сейчас» набора
//! (`--dataset-now`), поэтому окна аналитики и повторные прогоны сравнимы.
//! Идентификаторы — UUIDv7 от времени события со случайными битами из зерна:
//! одинаковые параметры дают одинаковые строки.
//!
//! Строки пишутся по возрастанию времени (куча таблицы упорядочена по времени,
//! как у журнала, пополняемого вживую) через COPY пачками, затем потребители журнала
//! (свёртки, сводки сессий) доводятся до конца и идёт `VACUUM ANALYZE`. Параметры лежат в таблице [`PARAMS_TABLE`]: с `--reuse`
//! тот же набор не засевается заново.

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use eventlog::model::NewEvent;
use eventlog::storage::{PoolOptions, Store};

/// Пользователей.
pub const USERS: usize = 20;
/// Проектов (каждый пользователь — в каждом).
pub const PROJECTS: usize = 4;
/// Отношение долей самой большой и самой малой пары.
pub const SPREAD: f64 = 132.0;
/// Агентов.
const AGENTS: usize = 40;
/// Версия генератора: меняется вместе с распределением, чтобы `--reuse` не взял
/// старый набор за новый.
const GENERATOR: i32 = 1;
/// Таблица параметров набора (одна строка).
pub const PARAMS_TABLE: &str = "httpbench_dataset";
/// Строк в одном COPY.
const COPY_BATCH: usize = 100_000;

/// Параметры набора: всё, от чего зависят его строки.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Строк.
    pub events: u64,
    /// Зерно генератора.
    pub seed: u64,
    /// «Сейчас» набора: события — в 30 днях до него.
    pub now: DateTime<Utc>,
}

/// Пара «пользователь, проект» с её строками и сессиями (из базы).
#[derive(Debug, Clone)]
pub struct Pair {
    /// Проект.
    pub project: Uuid,
    /// Пользователь.
    pub user: String,
    /// Строк пары.
    pub rows: u64,
    /// Сессии пары.
    pub sessions: Vec<Uuid>,
}

/// Засеянный набор, как его видит прогон.
#[derive(Debug, Clone)]
pub struct World {
    /// Параметры.
    pub spec: Spec,
    /// Проекты.
    pub projects: Vec<Uuid>,
    /// Пары (непустые).
    pub pairs: Vec<Pair>,
}

/// Проекты набора: детерминированы зерном.
pub fn projects(seed: u64) -> Vec<Uuid> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7072_6f6a);
    (0..PROJECTS)
        .map(|_| uuid::Builder::from_random_bytes(rng.random()).into_uuid())
        .collect()
}

/// Имя пользователя `i`.
pub fn user(i: usize) -> String {
    format!("user-{i:02}")
}

/// Доли пар: индекс пары `project * USERS + user`, геометрические от 1 до
/// [`SPREAD`], перемешанные зерном.
pub fn pair_weights(seed: u64) -> Vec<f64> {
    let n = PROJECTS * USERS;
    let mut w: Vec<f64> = (0..n).map(|k| SPREAD.powf(k as f64 / (n - 1) as f64)).collect();
    w.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x7061_6972));
    w
}

/// План сессии.
struct Plan {
    id: Uuid,
    pair: usize,
    agents: Vec<usize>,
    start: DateTime<Utc>,
    size: u64,
}

/// UUIDv7 от момента `at` со случайными битами из `rng`.
fn v7(at: DateTime<Utc>, rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis() as u64, &rng.random()).into_uuid()
}

/// Сессии набора по возрастанию начала; сумма размеров — ровно `spec.events`.
fn plan_sessions(spec: &Spec, rng: &mut StdRng) -> Result<Vec<Plan>> {
    let pick = WeightedIndex::new(pair_weights(spec.seed))?;
    let mut left = spec.events;
    let mut plans = Vec::new();
    while left > 0 {
        let size = rng.random_range(10..=70u64).min(left);
        left -= size;
        // Сессия целиком (до 30 минут) укладывается до «сейчас».
        let start = spec.now - Duration::milliseconds(rng.random_range(1_800_000..30 * 86_400_000));
        plans.push(Plan {
            id: v7(start, rng),
            pair: pick.sample(rng),
            agents: (0..rng.random_range(1..=3))
                .map(|_| rng.random_range(0..AGENTS))
                .collect(),
            start,
            size,
        });
    }
    plans.sort_by_key(|p| (p.start, p.id));
    Ok(plans)
}

/// Порождает строки набора по возрастанию `(created_at, id)` пачками по `batch`
/// и отдаёт их `emit`. Сессии идут по началу; события сессии копятся в `pending`,
/// и всё, что раньше начала очередной сессии, уже окончательно (позже начатые
/// сессии раньше не напишут) — это уходит пачками.
pub fn generate(spec: &Spec, batch: usize, mut emit: impl FnMut(Vec<NewEvent>) -> Result<()>) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let projects = projects(spec.seed);
    let plans = plan_sessions(spec, &mut rng)?;
    let mut pending: Vec<NewEvent> = Vec::new();
    let mut i = 0usize;
    let mut flush = |pending: &mut Vec<NewEvent>, before: Option<DateTime<Utc>>| -> Result<()> {
        pending.sort_by_key(|e| (e.created_at, e.id));
        let ready = before.map_or(pending.len(), |t| pending.partition_point(|e| e.created_at < t));
        let rest = pending.split_off(ready);
        for chunk in std::mem::replace(pending, rest).chunks(batch) {
            emit(chunk.to_vec())?;
        }
        Ok(())
    };
    for p in &plans {
        if pending.len() >= 2 * batch {
            flush(&mut pending, Some(p.start))?;
        }
        let (project, user) = (projects[p.pair / USERS], user(p.pair % USERS));
        for _ in 0..p.size {
            let agent = p.agents[rng.random_range(0..p.agents.len())];
            let at = p.start + Duration::milliseconds(rng.random_range(0..1_800_000));
            let e =
                super::super::loadgen::realistic_event(&mut rng, i, p.id, user.clone(), project, agent, at);
            let id = v7(e.created_at, &mut rng);
            pending.push(e.with_id(id));
            i += 1;
        }
    }
    flush(&mut pending, None)
}

/// URL той же кластерной базы `postgres` (для CREATE/DROP DATABASE).
fn admin_url(url: &str) -> Result<(String, String)> {
    let (base, rest) = url.rsplit_once('/').context("--database-url: no database name")?;
    let (db, query) = match rest.split_once('?') {
        Some((db, q)) => (db, format!("?{q}")),
        None => (rest, String::new()),
    };
    anyhow::ensure!(
        !db.is_empty()
            && db
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "--database-url: the database name must be [a-z0-9_]+, got {db:?}"
    );
    Ok((format!("{base}/postgres{query}"), db.to_owned()))
}

/// Имя базы из URL.
pub fn database_name(url: &str) -> Result<String> {
    Ok(admin_url(url)?.1)
}

/// Параметры засеянного набора, если он засеян полностью.
async fn stored_spec(pool: &PgPool) -> Result<Option<Spec>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(PARAMS_TABLE)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT events, seed, now_at, generator FROM {PARAMS_TABLE}"
    )))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        (r.get::<i32, _>("generator") == GENERATOR).then(|| Spec {
            events: r.get::<i64, _>("events") as u64,
            seed: r.get::<i64, _>("seed") as u64,
            now: r.get("now_at"),
        })
    }))
}

/// Есть ли база `db` в кластере.
async fn database_exists(admin: &mut PgConnection, db: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(db)
            .fetch_one(&mut *admin)
            .await?,
    )
}

/// Готовит набор в базе `url`: с `reuse` и тем же набором в базе — ничего не
/// делает, иначе пересоздаёт базу и засевает. Возвращает, засеян ли набор заново.
pub async fn ensure(url: &str, spec: &Spec, reuse: bool) -> Result<bool> {
    let (admin_url, db) = admin_url(url)?;
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .context("while connecting to the postgres database")?;
    if reuse && database_exists(&mut admin, &db).await? {
        let store = Store::connect(url, PoolOptions::default()).await?;
        let pool = store.connection().get_postgres_connection_pool().clone();
        let same = stored_spec(&pool).await? == Some(*spec);
        let rows: i64 = if same {
            sqlx::query_scalar("SELECT count(*) FROM event_logs")
                .fetch_one(&pool)
                .await?
        } else {
            -1
        };
        store.close().await?;
        if same && rows as u64 == spec.events {
            println!(
                "data set: reusing {db} ({} rows, seed {}, now {})",
                spec.events, spec.seed, spec.now
            );
            return Ok(false);
        }
    }
    // Новая база: никаких следов прежних прогонов (журнал, последователи, кэши).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    seed(url, spec).await?;
    Ok(true)
}

/// Засевает пустую базу: миграции, COPY по времени, VACUUM ANALYZE, параметры.
async fn seed(url: &str, spec: &Spec) -> Result<()> {
    let store = Store::connect(url, PoolOptions::default()).await?;
    store.migrate_up().await.context("while migrating")?;
    let started = Instant::now();
    // Генератор — в своём потоке, COPY — здесь: они идут параллельно.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewEvent>>(2);
    let spec_copy = *spec;
    let generator = tokio::task::spawn_blocking(move || {
        generate(&spec_copy, COPY_BATCH, |batch| {
            tx.blocking_send(batch)
                .map_err(|_| anyhow::anyhow!("COPY side stopped"))
        })
    });
    let mut written = 0u64;
    while let Some(batch) = rx.recv().await {
        written += store.copy_raw(&batch).await?;
        eprint!("\rdata set: {written} of {} rows", spec.events);
    }
    generator.await??;
    eprintln!(" in {:.0} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(
        written == spec.events,
        "COPY wrote {written} of {} rows",
        spec.events
    );
    // Свёртки и сводки сессий — до конца журнала: чтения прогона (и записанные для
    // pgbench инструкции) идут по агрегатам, как у сервера, который их ведёт вживую.
    let t = Instant::now();
    store.catch_up_followers().await?;
    eprintln!(
        "data set: log followers caught up in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let pool = store.connection().get_postgres_connection_pool().clone();
    let t = Instant::now();
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    eprintln!("data set: VACUUM ANALYZE in {:.0} s", t.elapsed().as_secs_f64());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {PARAMS_TABLE} (events bigint NOT NULL, seed bigint NOT NULL, \
         now_at timestamptz NOT NULL, generator int NOT NULL, users int NOT NULL, \
         projects int NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now())"
    )))
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {PARAMS_TABLE} (events, seed, now_at, generator, users, projects) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    )))
    .bind(spec.events as i64)
    .bind(spec.seed as i64)
    .bind(spec.now)
    .bind(GENERATOR)
    .bind(USERS as i32)
    .bind(PROJECTS as i32)
    .execute(&pool)
    .await?;
    store.close().await?;
    Ok(())
}

/// Читает засеянный набор: параметры, пары с числом строк и сессиями.
pub async fn load(pool: &PgPool) -> Result<World> {
    let spec = stored_spec(pool)
        .await?
        .context("the database holds no complete http-reads data set")?;
    let rows =
        sqlx::query("SELECT project_id, user_id, session_id, count(*) AS n FROM event_logs GROUP BY 1, 2, 3")
            .fetch_all(pool)
            .await?;
    let mut pairs: std::collections::BTreeMap<(Uuid, String), Pair> = Default::default();
    for r in rows {
        let (project, user): (Uuid, String) = (r.get("project_id"), r.get("user_id"));
        let pair = pairs.entry((project, user.clone())).or_insert_with(|| Pair {
            project,
            user,
            rows: 0,
            sessions: Vec::new(),
        });
        pair.rows += r.get::<i64, _>("n") as u64;
        pair.sessions.push(r.get("session_id"));
    }
    let projects = projects(spec.seed);
    Ok(World {
        spec,
        projects,
        pairs: pairs.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: u64) -> Spec {
        Spec {
            events,
            seed: 7,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn rows(spec: &Spec) -> Vec<NewEvent> {
        let mut out = Vec::new();
        generate(spec, 1000, |b| {
            assert!(b.len() <= 1000);
            out.extend(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn exact_count_chronological_within_30_days() {
        let s = spec(20_000);
        let rows = rows(&s);
        assert_eq!(rows.len(), 20_000);
        assert!(
            rows.windows(2)
                .all(|w| (w[0].created_at, w[0].id) <= (w[1].created_at, w[1].id))
        );
        assert!(rows[0].created_at >= s.now - Duration::days(30));
        assert!(rows[rows.len() - 1].created_at < s.now);
        let ids: std::collections::HashSet<Uuid> = rows.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), rows.len(), "ids are unique");
    }

    #[test]
    fn same_spec_same_rows_other_seed_other_rows() {
        let a = rows(&spec(3000));
        let b = rows(&spec(3000));
        assert_eq!(a, b);
        let c = rows(&Spec {
            seed: 8,
            ..spec(3000)
        });
        assert_ne!(a[0].id, c[0].id);
    }

    #[test]
    fn pair_sizes_follow_the_weights() {
        let s = spec(200_000);
        let projects = projects(s.seed);
        let mut counts = std::collections::HashMap::<(Uuid, String), u64>::new();
        for e in rows(&s) {
            *counts.entry((e.project_id, e.user_id)).or_default() += 1;
        }
        // Самая малая пара на 200 000 строк — пара сессий, её может и не быть.
        assert!(counts.len() >= PROJECTS * USERS - 3, "{} pairs", counts.len());
        let w = pair_weights(s.seed);
        let total: f64 = w.iter().sum();
        // Самая большая пара — та, что по долям, с точностью выборки.
        let (big, _) = w.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        let expected = 200_000.0 * w[big] / total;
        let got = counts[&(projects[big / USERS], user(big % USERS))] as f64;
        assert!(
            (got / expected - 1.0).abs() < 0.25,
            "biggest pair: {got} rows, expected ~{expected:.0}"
        );
        let max = *counts.values().max().unwrap() as f64;
        let min = *counts.values().min().unwrap() as f64;
        assert!(max / min > 20.0, "sizes differ widely: {min}..{max}");
    }

    #[test]
    fn admin_url_swaps_the_database() {
        assert_eq!(
            admin_url("postgres://u@h:5432/bench_reads_1m?sslmode=disable").unwrap(),
            (
                "postgres://u@h:5432/postgres?sslmode=disable".into(),
                "bench_reads_1m".into()
            )
        );
        assert!(admin_url("postgres://u@h/bad-name").is_err());
    }
}
