//! StreamManager: повтор, затем живые события — без пропусков и повторов на стыке
//! при одновременной записи; фильтр и область; LAGGED.

use std::collections::HashSet;
use std::time::Duration;

use eventlog::logger::LoggerConfig;
use eventlog::model::{EventType, NewEvent};
use eventlog::query::{EventFilter, ReadScope};
use eventlog::stream::{StreamError, StreamManager};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestDb};

/// id событий проекта в порядке журнала базы.
pub async fn log_of(store: &eventlog::storage::Store, project: Uuid) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut after = eventlog::storage::LogPosition::START;
    loop {
        let page = store.read_log(after, 1000).await.unwrap();
        let n = page.len();
        if let Some(last) = page.last() {
            after = last.position;
        }
        out.extend(
            page.into_iter()
                .filter(|e| e.event.project_id == project)
                .map(|e| e.event.id),
        );
        if n < 1000 {
            return out;
        }
    }
}

async fn replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_writes(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let cfg = LoggerConfig {
        batch_size: 50,
        flush_interval: Duration::from_millis(2),
        ..Default::default()
    };
    let stream = StreamManager::start(store.clone(), cfg, 100_000);
    let project = Uuid::now_v7();
    let other = Uuid::now_v7();
    let total = 3000usize;
    let writer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..total {
                let e = NewEvent::new(Uuid::now_v7(), "u", project, EventType::TaskProgress)
                    .payload(json!({"i": i}));
                ids.push(e.id);
                // Чужой проект вперемешку: его события подписчик не должен увидеть.
                let noise = NewEvent::new(Uuid::now_v7(), "u", other, EventType::TaskProgress);
                let w = stream.broadcast_events(vec![e, noise]).unwrap();
                if i % 50 == 0 {
                    w.wait().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            ids
        })
    };
    // Подписка посреди записи: часть событий уже в базе, часть ещё придёт.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let scope = ReadScope {
        project_id: project,
        user_id: Some("u".into()),
    };
    let sub = stream.subscribe(scope, EventFilter::default(), Some(0));
    let got: Vec<_> = tokio::time::timeout(
        Duration::from_secs(60),
        sub.take(total)
            .map(|r| r.expect("no lag with a large buffer"))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("all events delivered");
    let ids = writer.await.unwrap();
    // Порядок доставки — порядок журнала базы (при нескольких пакетах в полёте
    // он может отличаться от порядка seq).
    let log: Vec<_> = log_of(&store, project).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        log,
        "not in log order, duplicated or missing"
    );
    let got_ids: HashSet<_> = got.iter().map(|e| e.id).collect();
    assert_eq!(
        got_ids,
        ids.into_iter().collect::<HashSet<_>>(),
        "gap at the seam"
    );
    assert!(got.iter().all(|e| e.project_id == project));
    stream.shutdown().await;
}
both!(replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_writes);

async fn a_slow_subscriber_gets_lagged_with_its_resume_point(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let stream = StreamManager::start(store.clone(), LoggerConfig::default(), 16);
    // Живая подписка начинается с водяного знака читателя журнала: ждём, пока он
    // прочитает голову.
    stream.sync_to_head().await.unwrap();
    let project = Uuid::now_v7();
    let scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let mut sub = Box::pin(stream.subscribe(scope.clone(), EventFilter::default(), None));
    let events: Vec<_> = (0..200)
        .map(|_| NewEvent::new(Uuid::now_v7(), "u", project, EventType::TaskQueued))
        .collect();
    stream.broadcast_events(events).unwrap().wait().await.unwrap();
    // Читатель журнала разослал всё зафиксированное; подписчик не читал, буфер на
    // 16 событий переполнен.
    stream.sync_to_head().await.unwrap();
    match sub.next().await {
        Some(Err(StreamError::Lagged { skipped, last_seq })) => {
            assert!(skipped > 0);
            // Живая подписка начинается с водяного знака — пустая база, 0.
            assert_eq!(last_seq, 0);
        }
        other => panic!("expected LAGGED, got {other:?}"),
    }
    assert!(sub.next().await.is_none(), "the stream ends after LAGGED");
    // Продолжение с afterSeq отдаёт всё.
    let resumed: Vec<_> = stream
        .subscribe(scope, EventFilter::default(), Some(0))
        .take(200)
        .collect()
        .await;
    assert_eq!(resumed.len(), 200);
    stream.shutdown().await;
}
both!(a_slow_subscriber_gets_lagged_with_its_resume_point);

async fn a_replay_longer_than_the_live_buffer_still_catches_up(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    // Буфер на 8 событий, а история — 2000: пока повтор читает базу, живой буфер
    // переполняется чужими событиями; подписка должна дочитать всё сама.
    let stream = StreamManager::start(store.clone(), LoggerConfig::default(), 8);
    let project = Uuid::now_v7();
    let other = Uuid::now_v7();
    let history: Vec<_> = (0..2000)
        .map(|_| NewEvent::new(Uuid::now_v7(), "u", project, EventType::TaskQueued))
        .collect();
    stream.broadcast_events(history).unwrap().wait().await.unwrap();
    let scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let mut sub = Box::pin(stream.subscribe(scope, EventFilter::default(), Some(0)));
    let first = sub.next().await.unwrap().unwrap();
    // Пока подписчик держит первую страницу, идёт поток чужих и своих событий.
    let mut mine = Vec::new();
    for i in 0..50 {
        let e = NewEvent::new(Uuid::now_v7(), "u", project, EventType::TaskStarted);
        mine.push(e.id);
        let noise: Vec<_> = (0..20)
            .map(|_| NewEvent::new(Uuid::now_v7(), "u", other, EventType::TaskQueued))
            .collect();
        let mut batch = noise;
        batch.insert(i % 20, e);
        stream.broadcast_events(batch).unwrap().wait().await.unwrap();
    }
    let mut got = vec![first];
    while got.len() < 2050 {
        match tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
        {
            Some(Ok(e)) => got.push(e),
            other => panic!("expected events, got {other:?} after {}", got.len()),
        }
    }
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        log_of(&store, project).await,
        "not in log order"
    );
    let tail: HashSet<_> = got[2000..].iter().map(|e| e.id).collect();
    assert_eq!(tail, mine.into_iter().collect::<HashSet<_>>());
    stream.shutdown().await;
}
both!(a_replay_longer_than_the_live_buffer_still_catches_up);

async fn the_live_buffer_is_bounded_in_bytes(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let stream = StreamManager::start_with(
        store.clone(),
        LoggerConfig::default(),
        eventlog::stream::StreamConfig {
            live_capacity: 100_000,
            live_bytes: 64 * 1024,
            ..Default::default()
        },
    );
    stream.sync_to_head().await.unwrap();
    let project = Uuid::now_v7();
    let scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let mut stalled = Box::pin(stream.subscribe(scope, EventFilter::default(), None));
    let events: Vec<_> = (0..200)
        .map(|i| {
            NewEvent::new(Uuid::now_v7(), "u", project, EventType::TaskQueued)
                .payload(json!({"i": i, "blob": "x".repeat(4096)}))
        })
        .collect();
    stream.broadcast_events(events).unwrap().wait().await.unwrap();
    stream.sync_to_head().await.unwrap();
    // ~200 × 4 КиБ прошли через буфер, а держит он не больше 64 КиБ.
    assert!(
        stream.live_buffer_bytes() <= 64 * 1024,
        "live buffer holds {} bytes",
        stream.live_buffer_bytes()
    );
    match stalled.next().await {
        Some(Err(StreamError::Lagged { skipped, .. })) => assert!(skipped > 150, "skipped {skipped}"),
        other => panic!("expected LAGGED, got {other:?}"),
    }
    stream.shutdown().await;
}
both!(the_live_buffer_is_bounded_in_bytes);
