//! EventLogger на настоящей базе: ровно один раз, пакеты по размеру и по таймеру,
//! идемпотентность, остановка без потерь, отвергнутые строки, обрыв базы.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventlog::logger::{CommitHook, EventLogger, LogError, LoggerConfig};
use eventlog::model::{EventType, NewEvent};
use eventlog::storage::{LogPosition, PoolOptions, Store};
use serde_json::json;
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, FaultProxy, TestDb, pg_host_port, replace_db, wait_for};

fn ev(project: Uuid, i: usize) -> NewEvent {
    NewEvent::new(
        Uuid::now_v7(),
        format!("user{}", i % 3),
        project,
        EventType::ToolRequest,
    )
    .agent(format!("agent{}", i % 5))
    .tool("search")
    .payload(json!({"i": i, "text": "x".repeat(200)}))
}

async fn migrated(b: &Backend) -> (TestDb, Store) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    (db, store)
}

/// Крюк фиксации, который считает сообщённые писателем строки.
fn recorder() -> (CommitHook, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let hook: CommitHook = Arc::new(move |rows: usize| {
        s.fetch_add(rows, Ordering::SeqCst);
    });
    (hook, seen)
}

/// Весь журнал базы по порядку.
async fn whole_log(store: &Store) -> Vec<eventlog::storage::LogEntry> {
    let mut out = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = store.read_log(after, 1000).await.unwrap();
        let n = page.len();
        if let Some(last) = page.last() {
            after = last.position;
        }
        out.extend(page);
        if n < 1000 {
            return out;
        }
    }
}

async fn every_logged_event_is_stored_exactly_once_and_appears_once_in_the_log(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let (hook, seen) = recorder();
    let logger = EventLogger::start(store.clone(), LoggerConfig::default(), Some(hook));
    let project = Uuid::now_v7();
    let events: Vec<_> = (0..2500).map(|i| ev(project, i)).collect();
    for e in &events {
        logger.log_event(e.clone()).unwrap();
    }
    let report = logger.shutdown().await;
    assert_eq!(report.lost, 0);
    assert_eq!(store.count_events().await.unwrap(), 2500);
    assert_eq!(seen.load(Ordering::SeqCst), 2500, "every commit is reported once");
    let log = whole_log(&store).await;
    let ids: HashSet<_> = log.iter().map(|e| e.event.id).collect();
    assert_eq!(log.len(), 2500, "an event appears twice in the log");
    assert_eq!(ids, events.iter().map(|e| e.id).collect());
    assert!(
        log.windows(2).all(|w| w[0].position < w[1].position),
        "log positions must strictly ascend"
    );
}
both!(every_logged_event_is_stored_exactly_once_and_appears_once_in_the_log);

async fn flushes_on_batch_size_before_the_interval(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        batch_size: 100,
        flush_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    for i in 0..150 {
        logger.log_event(ev(p, i)).unwrap();
    }
    // Полный пакет пишется сразу; хвост из 50 ждёт 30-секундного таймера.
    wait_for("a full batch", 10, || async {
        store.count_events().await.unwrap() == 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.count_events().await.unwrap(),
        100,
        "the partial batch must wait for its timer"
    );
    assert_eq!(logger.shutdown().await.drained, 50);
    assert_eq!(store.count_events().await.unwrap(), 150);
}
both!(flushes_on_batch_size_before_the_interval);

async fn flushes_a_partial_batch_when_the_interval_fires(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        batch_size: 1000,
        flush_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    for i in 0..7 {
        logger.log_event(ev(p, i)).unwrap();
    }
    wait_for("the interval flush", 10, || async {
        store.count_events().await.unwrap() == 7
    })
    .await;
    logger.shutdown().await;
}
both!(flushes_a_partial_batch_when_the_interval_fires);

async fn relogging_the_same_ids_adds_no_rows(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let (hook, seen) = recorder();
    let logger = EventLogger::start(store.clone(), LoggerConfig::default(), Some(hook));
    let p = Uuid::now_v7();
    let events: Vec<_> = (0..300).map(|i| ev(p, i)).collect();
    let first = logger.log_batch(events.clone()).unwrap().wait().await.unwrap();
    assert_eq!(first.inserted, 300);
    // Тот же пакет ещё раз и повтор id внутри одного пакета.
    let mut again = events.clone();
    again.push(events[0].clone());
    let second = logger.log_batch(again).unwrap().wait().await.unwrap();
    assert_eq!((second.inserted, second.duplicates), (0, 301));
    let dup = ev(p, 999);
    let third = logger
        .log_batch(vec![dup.clone(), dup])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!((third.inserted, third.duplicates), (1, 1));
    assert_eq!(store.count_events().await.unwrap(), 301);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        301,
        "duplicates must not be reported as committed again"
    );
    assert_eq!(
        whole_log(&store).await.len(),
        301,
        "duplicates must not enter the log"
    );
    logger.shutdown().await;
}
both!(relogging_the_same_ids_adds_no_rows);

async fn shutdown_with_thousands_queued_loses_none(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        flush_interval: Duration::from_secs(60),
        queue_capacity: 100_000,
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    for i in 0..20_000 {
        logger.log_event(ev(p, i)).unwrap();
    }
    let report = logger.shutdown().await;
    assert_eq!(report.lost, 0);
    assert_eq!(store.count_events().await.unwrap(), 20_000);
    // После остановки новые события возвращаются вызывающему.
    assert!(matches!(logger.log_event(ev(p, 0)), Err(LogError::Closed(_))));
}
both!(shutdown_with_thousands_queued_loses_none);

async fn a_full_queue_hands_the_event_back(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        queue_capacity: 8,
        batch_size: 4,
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..2000 {
        let e = ev(p, i);
        let id = e.id;
        match logger.log_event(e) {
            Ok(()) => accepted += 1,
            Err(LogError::QueueFull(back)) => {
                assert_eq!(back.id, id, "the refused event comes back intact");
                refused += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        refused > 0,
        "a queue of 8 must overflow under 2000 back-to-back events"
    );
    // Пакет больше свободного места не ставится ни частично.
    let before = logger.queue_depth();
    if let Err(eventlog::logger::BatchError::QueueFull(back)) =
        logger.log_batch((0..9).map(|i| ev(p, i)).collect())
    {
        assert_eq!(back.len(), 9);
    } else {
        panic!("a 9-event batch cannot fit a queue of 8");
    }
    assert!(logger.queue_depth() <= before.max(8));
    logger.shutdown().await;
    assert_eq!(store.count_events().await.unwrap(), accepted);
}
both!(a_full_queue_hands_the_event_back);

async fn a_row_the_database_rejects_goes_to_dead_letter_and_the_rest_is_stored(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let logger = EventLogger::start(store.clone(), LoggerConfig::default(), None);
    let p = Uuid::now_v7();
    let mut events: Vec<_> = (0..64).map(|i| ev(p, i)).collect();
    // Мимо проверки API: статус, который запрещает CHECK-ограничение базы.
    events[17].approval_status = Some("BOGUS".into());
    events[40].event_type = "lower_case".into();
    let bad = [events[17].id, events[40].id];
    let outcome = logger.log_batch(events).unwrap().wait().await.unwrap();
    assert_eq!((outcome.inserted, outcome.rejected), (62, 2));
    assert_eq!(store.count_events().await.unwrap(), 62);
    assert_eq!(store.count_rejected().await.unwrap(), 2);
    let rows = store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            store.backend(),
            "SELECT raw_event, error FROM event_logs_rejected",
        ))
        .await
        .unwrap();
    use sea_orm::ConnectionTrait as _;
    for r in rows {
        let raw: String = if b.is_postgres() {
            r.try_get::<serde_json::Value>("", "raw_event")
                .unwrap()
                .to_string()
        } else {
            r.try_get("", "raw_event").unwrap()
        };
        let error: String = r.try_get("", "error").unwrap();
        assert!(bad.iter().any(|id| raw.contains(&id.to_string())), "{raw}");
        assert!(
            error.to_lowercase().contains("check"),
            "error text names the constraint: {error}"
        );
    }
    logger.shutdown().await;
}
both!(a_row_the_database_rejects_goes_to_dead_letter_and_the_rest_is_stored);

/// Настоящий обрыв: прокси рвёт соединения писателя посреди потока и не пускает
/// новые 1,5 с. Ничего не теряется и не дублируется (только PostgreSQL: у SQLite
/// нет сетевого соединения).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(eventlog_test_postgres),
    ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
)]
async fn database_going_away_mid_stream_loses_and_duplicates_nothing() {
    crate::helpers::init_log();
    let b = Backend::require_postgres();
    let (db, direct) = migrated(&b).await;
    let proxy = FaultProxy::start(pg_host_port(&db.url)).await;
    let proxied_url = {
        let name = db
            .url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        replace_db(&format!("postgres://postgres@127.0.0.1:{}/x", proxy.port), &name)
    };
    let store = Store::connect(
        &proxied_url,
        PoolOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (hook, seen) = recorder();
    let cfg = LoggerConfig {
        batch_size: 200,
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_millis(500),
        insert_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let logger = EventLogger::start(store, cfg, Some(hook));
    let p = Uuid::now_v7();
    let total = 6000;
    for i in 0..total {
        logger.log_event(ev(p, i)).unwrap();
        if i == 2000 {
            proxy.cut();
        }
        if i == 4000 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.restore();
        }
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let report = logger.shutdown().await;
    assert_eq!(report.lost, 0);
    assert_eq!(direct.count_events().await.unwrap(), total as i64);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        total,
        "every committed event is reported once"
    );
    let log = whole_log(&direct).await;
    let unique: HashSet<_> = log.iter().map(|e| e.event.id).collect();
    assert_eq!(unique.len(), total, "every committed event is in the log once");
    assert_eq!(log.len(), total, "an event appears twice in the log");
}

async fn rename(store: &Store, from: &str, to: &str) {
    use sea_orm::ConnectionTrait;
    store
        .connection()
        .execute_unprepared(&format!("ALTER TABLE {from} RENAME TO {to}"))
        .await
        .unwrap();
}

/// Ошибка уровня инструкции (таблицы нет) — не вина строк: пакет повторяется,
/// пока база не поправится; ничего не уходит в таблицу отказов и не теряется.
async fn a_statement_level_error_is_retried_not_dead_lettered(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(100),
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    logger
        .log_batch((0..10).map(|i| ev(p, i)).collect())
        .unwrap()
        .wait()
        .await
        .unwrap();
    rename(&store, "event_logs", "event_logs_away").await;
    let waiter = logger.log_batch((10..110).map(|i| ev(p, i)).collect()).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    rename(&store, "event_logs_away", "event_logs").await;
    let outcome = waiter.wait().await.unwrap();
    assert_eq!((outcome.inserted, outcome.rejected), (100, 0));
    logger.shutdown().await;
    assert_eq!(store.count_events().await.unwrap(), 110);
    assert_eq!(store.count_rejected().await.unwrap(), 0);
}
both!(a_statement_level_error_is_retried_not_dead_lettered);

/// Срок остановки истёк, а база так и не вернулась: отчёт называет потерю,
/// ожидающие получают Lost, а не ложное подтверждение.
async fn shutdown_deadline_reports_what_was_lost(b: Backend) {
    let (_db, store) = migrated(&b).await;
    let cfg = LoggerConfig {
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(50),
        shutdown_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    logger.log_batch(vec![ev(p, 0)]).unwrap().wait().await.unwrap();
    rename(&store, "event_logs", "event_logs_away").await;
    let waiter = logger.log_batch((1..51).map(|i| ev(p, i)).collect()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = logger.shutdown().await;
    assert_eq!(report.lost, 50);
    assert!(matches!(
        waiter.wait().await,
        Err(eventlog::logger::CommitError::Lost)
    ));
}
both!(shutdown_deadline_reports_what_was_lost);

/// Пакет ставится целиком или никак и при частично занятой очереди.
async fn a_batch_larger_than_the_free_room_is_refused_whole(b: Backend) {
    let (_db, store) = migrated(&b).await;
    // Писатель не может прочитать seq базы, пока таблицы нет, и не берёт события:
    // очередь заполняется детерминированно.
    rename(&store, "event_logs", "event_logs_away").await;
    let cfg = LoggerConfig {
        queue_capacity: 10,
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    let first = logger.log_batch((0..7).map(|i| ev(p, i)).collect()).unwrap();
    assert_eq!(logger.free_slots(), 3);
    match logger.log_batch((7..11).map(|i| ev(p, i)).collect()) {
        Err(eventlog::logger::BatchError::QueueFull(back)) => assert_eq!(back.len(), 4),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(logger.free_slots(), 3, "nothing of the refused batch was queued");
    let second = logger.log_batch((7..10).map(|i| ev(p, i)).collect()).unwrap();
    rename(&store, "event_logs_away", "event_logs").await;
    assert_eq!(first.wait().await.unwrap().inserted, 7);
    assert_eq!(second.wait().await.unwrap().inserted, 3);
    logger.shutdown().await;
    assert_eq!(store.count_events().await.unwrap(), 10);
}
both!(a_batch_larger_than_the_free_room_is_refused_whole);

/// /readyz видит застрявшего писателя и тогда, когда повторяется выдача номеров seq
/// (раньше отметку ставила только вставка). Только PostgreSQL: номера заранее
/// выдаются только там.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(eventlog_test_postgres),
    ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
)]
async fn seq_reservation_retries_mark_the_writer_as_stuck() {
    crate::helpers::init_log();
    let b = Backend::require_postgres();
    let (db, direct) = migrated(&b).await;
    let proxy = FaultProxy::start(pg_host_port(&db.url)).await;
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let proxied_url = replace_db(&format!("postgres://postgres@127.0.0.1:{}/x", proxy.port), &name);
    let store = Store::connect(
        &proxied_url,
        PoolOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cfg = LoggerConfig {
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(100),
        insert_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let logger = EventLogger::start(store, cfg, None);
    // Писатель прочитал базу и записал первое событие: он готов.
    logger.log_event(ev(Uuid::now_v7(), 0)).unwrap();
    wait_for("the first event", 10, || async {
        direct.count_events().await.unwrap() == 1
    })
    .await;
    assert!(logger.is_healthy(Duration::ZERO));
    // Act: база недоступна — первой падает выдача номеров.
    proxy.cut();
    logger.log_event(ev(Uuid::now_v7(), 1)).unwrap();
    wait_for("the writer to report itself stuck", 10, || async {
        !logger.is_healthy(Duration::ZERO)
    })
    .await;
    proxy.restore();
    wait_for("the writer to recover", 15, || async {
        logger.is_healthy(Duration::ZERO)
    })
    .await;
    assert_eq!(logger.shutdown().await.lost, 0);
    assert_eq!(direct.count_events().await.unwrap(), 2);
}

async fn the_queue_is_bounded_in_bytes_as_well_as_in_events(b: Backend) {
    let (_db, store) = migrated(&b).await;
    // Писатель не пишет до остановки (таймер 30 с, пакет 1000): очередь держит всё.
    let cfg = LoggerConfig {
        flush_interval: Duration::from_secs(30),
        queue_bytes: 64 * 1024,
        ..Default::default()
    };
    let logger = EventLogger::start(store.clone(), cfg, None);
    let p = Uuid::now_v7();
    let big = |i: usize| {
        NewEvent::new(Uuid::now_v7(), "u", p, EventType::TaskProgress)
            .payload(json!({"i": i, "blob": "x".repeat(16 * 1024)}))
    };
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..10 {
        match logger.log_event(big(i)) {
            Ok(()) => accepted += 1,
            Err(LogError::QueueFull(e)) => {
                refused = Some(e);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // 64 КиБ вмещают три события по ~16 КиБ, но не десять; отказ возвращает событие.
    assert!((2..=4).contains(&accepted), "accepted {accepted}");
    assert!(refused.is_some(), "the byte limit never refused an event");
    assert!(logger.queued_bytes() <= 64 * 1024 + 20 * 1024);
    assert!(logger.queue_depth() < 10);
    // Пакет, который не влезает в байты, отвергается целиком.
    let batch: Vec<_> = (0..4).map(big).collect();
    assert!(
        matches!(logger.log_batch(batch), Err(eventlog::logger::BatchError::QueueFull(b)) if b.len() == 4)
    );
    let report = logger.shutdown().await;
    assert_eq!(report.lost, 0);
    assert_eq!(logger.queued_bytes(), 0, "written events give their bytes back");
    assert_eq!(store.count_events().await.unwrap(), accepted as i64);
}
both!(the_queue_is_bounded_in_bytes_as_well_as_in_events);
