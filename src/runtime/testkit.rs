//! Общие помощники модульных тестов среды: настоящий SQLite в памяти за
//! `StreamManager` и чтение записанных событий в порядке `seq`.
//!
//! Тесты таймеров останавливают часы (`tokio::time::pause()`) уже после
//! подготовки базы, а не через `start_paused = true`: пока SQLite работает в
//! своём потоке, рантайм простаивает, и остановленные часы перескакивают к
//! ближайшему таймеру — таймаут получения соединения при миграции сработал бы
//! ложно (проверено: `ConnectionAcquire(Timeout)`). Перед чтением базы часы
//! запускаются снова (`tokio::time::resume()`).

use std::time::Duration;

use uuid::Uuid;

use crate::StreamManager;
use crate::logger::LoggerConfig;
use crate::model::Event;
use crate::query::{EventFilter, ReadScope};
use crate::storage::{PoolOptions, Store};

use super::context::SessionContext;

/// Поток над SQLite в памяти. Таймауты писателя и пула огромны: с
/// остановленными часами tokio время перескакивает к ближайшему таймеру, пока
/// SQLite работает в своём потоке, и короткий таймаут сработал бы ложно.
pub(crate) async fn memory_stream() -> StreamManager {
    let store = Store::connect(
        "sqlite::memory:",
        PoolOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(86_400),
            ..Default::default()
        },
    )
    .await
    .expect("SQLite в памяти открывается");
    store.migrate_up().await.expect("миграции применяются");
    let config = LoggerConfig {
        flush_interval: Duration::from_millis(2),
        insert_timeout: Duration::from_secs(86_400),
        shutdown_timeout: Duration::from_secs(86_400),
        ..LoggerConfig::default()
    };
    StreamManager::start(store, config, 4096)
}

/// Новая сессия в новом проекте.
pub(crate) fn session() -> SessionContext {
    SessionContext::new_session("alice", Uuid::now_v7())
}

/// Останавливает писателя (дописав очередь) и читает события сессии в порядке
/// seq. Тест с остановленными часами сначала запускает их (`tokio::time::resume`).
pub(crate) async fn drain_session(stream: &StreamManager, ctx: &SessionContext) -> Vec<Event> {
    stream.shutdown().await;
    let scope = ReadScope {
        project_id: ctx.project_id,
        user_id: None,
    };
    let filter = EventFilter {
        session_id: Some(ctx.session_id),
        ..EventFilter::default()
    };
    stream
        .store()
        .events_after_seq(&scope, &filter, 0, i64::MAX, 10_000)
        .await
        .expect("события читаются")
}

/// Типы событий по порядку.
pub(crate) fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Проверяет, что в нагрузке есть все ключи.
pub(crate) fn has_keys(e: &Event, keys: &[&str]) {
    for k in keys {
        assert!(
            e.payload.contains_key(*k),
            "{} payload lacks `{k}`: {:?}",
            e.event_type,
            e.payload
        );
    }
}
