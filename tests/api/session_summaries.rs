//! Сводки сессий, которые следуют журналу: страница `sessions` и `Event.session`
//! по сводкам совпадают с прямым подсчётом по событиям (элементы, порядок,
//! `hasNextPage`) на случайных данных — с остановленным на полпути потребителем
//! (есть неприменённые строки), после догона и после очистки.
//!
//! Зерно: `SESSIONS_SEED=<n>`; без него — случайное, печатается при падении.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use eventlog::model::{EventType, NewEvent};
use eventlog::query::{EventFilter, Position, ReadScope};
use eventlog::storage::Store;
use eventlog::storage::follow::FollowOutcome;
use eventlog::storage::sessions::{FOLLOWER, apply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestDb};

/// Пользователи: разный регистр и не-ASCII, чтобы «наименьший» был по байтам.
const USERS: &[&str] = &["alice", "Bob", "carol", "Ádám"];
const AGENTS: &[&str] = &["planner", "Coder", "reviewer", "ötvös"];

struct World {
    rng: StdRng,
    seed: u64,
    projects: [Uuid; 2],
    sessions: Vec<(Uuid, Uuid)>,
    now: DateTime<Utc>,
}

impl World {
    fn new() -> World {
        let seed = std::env::var("SESSIONS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let projects = [Uuid::new_v4(), Uuid::new_v4()];
        let sessions = (0..36)
            .map(|i| (projects[usize::from(i % 5 == 0)], Uuid::from_u128(rng.random())))
            .collect();
        World {
            rng,
            seed,
            projects,
            sessions,
            now: Utc::now(),
        }
    }

    /// Случайные события: в одной сессии бывает несколько пользователей; время —
    /// по секундам за последние 30 дней (совпадения времени у разных сессий есть).
    fn events(&mut self, n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|_| {
                let (project, session) = self.sessions[self.rng.random_range(0..self.sessions.len())];
                // Обычно сессия — одного «своего» пользователя, иногда — чужого.
                let own = session.as_u128() as usize % USERS.len();
                let user = if self.rng.random_bool(0.8) {
                    own
                } else {
                    self.rng.random_range(0..USERS.len())
                };
                let at = self.now - Duration::seconds(self.rng.random_range(0..30 * 86_400 / 600) * 600);
                let mut e = NewEvent::new(session, USERS[user], project, EventType::ToolRequest).at(at);
                if self.rng.random_bool(0.7) {
                    e = e.agent(AGENTS[self.rng.random_range(0..AGENTS.len())]);
                }
                if self.rng.random_bool(0.2) {
                    e = e.error_code("E_TOOL");
                }
                e
            })
            .collect()
    }

    /// Фильтры: отвечаемые сводками и несколько идущих прямым подсчётом.
    fn filters(&mut self, project: Uuid) -> Vec<EventFilter> {
        let t = self.now - Duration::days(self.rng.random_range(1..29));
        // Граница в микросекундах (как в базе) — по сводкам; с наносекундами — прямым подсчётом.
        let t_micros = DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap();
        let own: Vec<Uuid> = self
            .sessions
            .iter()
            .filter(|(p, _)| *p == project)
            .map(|(_, s)| *s)
            .collect();
        let f = EventFilter::default;
        let mut out = vec![
            f(),
            EventFilter {
                session_id: Some(own[self.rng.random_range(0..own.len())]),
                ..f()
            },
            EventFilter {
                session_id: Some(Uuid::new_v4()),
                ..f()
            },
            EventFilter {
                has_error: Some(true),
                ..f()
            },
            EventFilter {
                has_error: Some(false),
                ..f()
            },
            EventFilter {
                from: Some(t_micros),
                ..f()
            },
            EventFilter {
                to: Some(t_micros),
                ..f()
            },
            EventFilter {
                to: Some(t_micros + Duration::nanoseconds(500)),
                ..f()
            },
            EventFilter {
                agent_ids: Some(vec![AGENTS[0].into(), AGENTS[3].into()]),
                ..f()
            },
            EventFilter {
                agent_ids: Some(vec![]),
                ..f()
            },
            // Прямым подсчётом.
            EventFilter {
                from: Some(t - Duration::days(3)),
                to: Some(t),
                ..f()
            },
            EventFilter {
                has_error: Some(true),
                agent_ids: Some(vec![AGENTS[1].into()]),
                ..f()
            },
        ];
        // Два случайных пользователя (у обычного пользователя — свой или чужой).
        for _ in 0..2 {
            let u = USERS[self.rng.random_range(0..USERS.len())];
            out.push(EventFilter {
                user_id: Some(u.into()),
                ..f()
            });
            out.push(EventFilter {
                user_id: Some(u.into()),
                has_error: Some(true),
                ..f()
            });
        }
        out
    }

    /// Администратор каждого проекта и два пользователя (в сумме — все четыре).
    fn scopes(&self) -> Vec<ReadScope> {
        let mut out = Vec::new();
        for (k, p) in self.projects.into_iter().enumerate() {
            out.push(ReadScope {
                project_id: p,
                user_id: None,
            });
            for u in [USERS[k], USERS[k + 2]] {
                out.push(ReadScope {
                    project_id: p,
                    user_id: Some(u.into()),
                });
            }
        }
        out
    }
}

/// Сверяет оба пути на всех областях и фильтрах, проходя все страницы случайного
/// размера по курсорам. Возвращает число сверенных страниц.
async fn check(store: &Store, w: &mut World, stage: &str) -> usize {
    let seed = w.seed;
    let mut pages = 0;
    for scope in w.scopes() {
        // Без фильтра — всегда; из остальных — случайные 8 (за прогоны — все).
        let mut filters = w.filters(scope.project_id);
        let rest = filters.split_off(1);
        filters.extend(rest.into_iter().filter(|_| w.rng.random_bool(0.5)).take(8));
        for filter in filters {
            let limit = w.rng.random_range(1..9);
            let mut after: Option<Position> = None;
            loop {
                let want = store
                    .sessions_page_scan(&scope, &filter, limit, after)
                    .await
                    .unwrap();
                let got = store.sessions_page(&scope, &filter, limit, after).await.unwrap();
                pages += 1;
                assert_eq!(
                    got.items, want.items,
                    "seed {seed}, {stage}: items differ for {scope:?} {filter:?} limit {limit} after {after:?}"
                );
                assert_eq!(
                    got.has_next, want.has_next,
                    "seed {seed}, {stage}: hasNextPage differs for {scope:?} {filter:?} limit {limit}"
                );
                if !want.has_next {
                    break;
                }
                let last = want.items.last().unwrap();
                after = Some(Position {
                    at: last.last_event_at,
                    id: last.session_id,
                });
            }
        }
        // Event.session: сводки набора сессий (и несуществующей).
        let mut ids: Vec<Uuid> = w
            .sessions
            .iter()
            .filter(|_| w.rng.random_bool(0.5))
            .map(|(_, s)| *s)
            .collect();
        ids.push(Uuid::new_v4());
        let want = store.session_summaries_scan(&scope, &ids).await.unwrap();
        let got = store.session_summaries(&scope, &ids).await.unwrap();
        assert_eq!(
            got, want,
            "seed {seed}, {stage}: Event.session differs for {scope:?}"
        );
    }
    pages
}

/// Несколько шагов потребителя по `max` фиксаций (на SQLite — событий).
async fn step(store: &Store, steps: usize, max: u32) -> bool {
    for _ in 0..steps {
        match store.follow_step(FOLLOWER, max, apply).await.unwrap() {
            FollowOutcome::CaughtUp => return true,
            FollowOutcome::Advanced { .. } => {}
            FollowOutcome::Busy => panic!("no other instance steps in this test"),
        }
    }
    false
}

async fn catch_up(store: &Store) {
    while !step(store, 100, 1000).await {}
}

async fn insert(store: &Store, events: Vec<NewEvent>) {
    // Пакетами: на PostgreSQL каждый пакет — своя фиксация журнала.
    for chunk in events.chunks(25) {
        store.insert_batch(chunk, None).await.unwrap();
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    let row = store
        .connection()
        .query_one_raw(Statement::from_string(store.backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// После догона в таблице ровно по строке на (сессия, пользователь) и на сессию.
async fn assert_rows_match_events(store: &Store, seed: u64, stage: &str) {
    let want = count(
        store,
        "SELECT (SELECT COUNT(*) FROM (SELECT DISTINCT project_id, session_id, user_id FROM event_logs) a) \
         + (SELECT COUNT(*) FROM (SELECT DISTINCT project_id, session_id FROM event_logs) b)",
    )
    .await;
    let got = count(store, "SELECT COUNT(*) FROM session_summaries").await;
    assert_eq!(got, want, "seed {seed}, {stage}: summary rows vs events");
    let empty = count(store, "SELECT COUNT(*) FROM session_summaries WHERE events <= 0").await;
    assert_eq!(empty, 0, "seed {seed}, {stage}: summaries with no events left");
}

async fn summaries_equal_the_scan_at_every_stage(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let mut w = World::new();
    let seed = w.seed;
    let started = std::time::Instant::now();

    // Часть строк — до миграции не бывает (база пустая), поэтому всё идёт через
    // потребителя: сначала он применяет лишь часть.
    let first = w.events(400);
    insert(&store, first).await;
    step(&store, 3, 2).await;
    let mut pages = check(&store, &mut w, "partly applied").await;

    catch_up(&store).await;
    assert_rows_match_events(&store, seed, "caught up").await;
    pages += check(&store, &mut w, "caught up").await;

    // Новые строки в старых и новых сессиях, потребитель стоит.
    w.sessions
        .extend((0..6).map(|i| (w.projects[i % 2], Uuid::from_u128(w.rng.random()))));
    let more = w.events(150);
    insert(&store, more).await;
    pages += check(&store, &mut w, "unapplied tail").await;

    // Очистка порциями, когда часть удаляемых строк применена, а часть нет.
    step(&store, 2, 2).await;
    let cutoff = w.now - Duration::days(15);
    let purged = store.purge_older_than(cutoff, 37).await.unwrap();
    assert!(purged > 0, "seed {seed}: nothing purged");
    pages += check(&store, &mut w, "after purge, partly applied").await;
    catch_up(&store).await;
    assert_rows_match_events(&store, seed, "after purge, caught up").await;
    pages += check(&store, &mut w, "after purge, caught up").await;

    // Очистка всего: сводок не остаётся.
    store
        .purge_older_than(w.now + Duration::days(1), 100)
        .await
        .unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM session_summaries").await, 0);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM session_summary_agents").await,
        0
    );
    eprintln!(
        "session summaries ({b:?}): seed {seed}, {pages} pages compared in {:?}",
        started.elapsed()
    );
}
both!(summaries_equal_the_scan_at_every_stage);

/// Миграция заполняет сводки по уже записанным строкам и ставит потребителя на
/// голову журнала: сразу после неё сводки точны и без дельты.
async fn migration_backfills_existing_rows(b: Backend) {
    use migration::{Migrator, MigratorTrait};
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let mut w = World::new();
    let seed = w.seed;
    let events = w.events(200);
    insert(&store, events).await;
    // Откат до миграции сводок включительно и повтор: заполнение по строкам.
    let all = Migrator::migrations();
    let from_summaries = all.len()
        - all
            .iter()
            .position(|m| m.name() == "m20261205_000003_create_session_summaries")
            .expect("the summaries migration is registered");
    Migrator::down(store.connection(), Some(from_summaries as u32))
        .await
        .unwrap();
    Migrator::up(store.connection(), None).await.unwrap();
    let head = store.log_head().await.unwrap().commit;
    assert_eq!(store.follower_position(FOLLOWER).await.unwrap(), Some(head));
    assert_rows_match_events(&store, seed, "backfilled").await;
    check(&store, &mut w, "backfilled").await;
}
both!(migration_backfills_existing_rows);

/// Порядок агентов и «наименьший пользователь» — по байтам.
async fn agents_and_owner_are_ordered_by_bytes(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let (p, s) = (Uuid::new_v4(), Uuid::new_v4());
    let evs: Vec<NewEvent> = [("carol", "ötvös"), ("Bob", "planner"), ("alice", "Coder")]
        .iter()
        .map(|(u, a)| NewEvent::new(s, *u, p, EventType::ToolResult).agent(*a))
        .collect();
    insert(&store, evs).await;
    catch_up(&store).await;
    let admin = ReadScope {
        project_id: p,
        user_id: None,
    };
    let page = store
        .sessions_page(&admin, &EventFilter::default(), 10, None)
        .await
        .unwrap();
    let agents: BTreeSet<&str> = ["ötvös", "planner", "Coder"].into_iter().collect();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].user_id, "Bob");
    assert_eq!(page.items[0].agent_ids, agents.into_iter().collect::<Vec<_>>());
    assert_eq!(page.items[0].agent_ids[0], "Coder");
}
both!(agents_and_owner_are_ordered_by_bytes);

/// PostgreSQL: страница `sessions` без фильтра — чтение индекса сводок по порядку
/// (без сортировки и без GROUP BY по событиям), и у администратора, и у пользователя.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(eventlog_test_postgres),
    ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
)]
async fn sessions_page_is_an_index_scan_on_postgres() {
    let db = TestDb::new(&Backend::require_postgres()).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let p = Uuid::new_v4();
    let now = Utc::now();
    let events: Vec<NewEvent> = (0..4000)
        .map(|i| {
            NewEvent::new(Uuid::new_v4(), USERS[i % USERS.len()], p, EventType::ToolRequest)
                .at(now - Duration::seconds(i as i64))
        })
        .collect();
    for chunk in events.chunks(1000) {
        store.insert_batch(chunk, None).await.unwrap();
    }
    catch_up(&store).await;
    store
        .connection()
        .execute_unprepared("ANALYZE session_summaries")
        .await
        .unwrap();
    for user in [None, Some("alice")] {
        let scope = ReadScope {
            project_id: p,
            user_id: user.map(str::to_owned),
        };
        let plan = store.explain_sessions_page(&scope, 50).await.unwrap();
        eprintln!("{plan}");
        assert!(
            plan.contains("Index Scan using idx_session_summaries_recent"),
            "{user:?}: {plan}"
        );
        assert!(!plan.contains("Sort"), "{user:?}: {plan}");
        assert!(!plan.contains("event_logs"), "{user:?}: {plan}");
    }
}
