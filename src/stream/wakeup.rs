//! Источники пробуждения читателя журнала: `LISTEN eventlog_log` (PostgreSQL;
//! `NOTIFY` шлёт триггер журнала при каждой фиксации любого писателя) и канал
//! Redis `<prefix>log` (публикует писатель после фиксации). Оба лишь будят
//! [`Tailer`](super::tailer::Tailer): пропущенное уведомление стоит не больше
//! интервала опроса. Оба сами переподключаются после обрыва.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::logger::backoff;
use crate::redis_link::RedisLink;
use crate::storage::{NOTIFY_CHANNEL, Store};

/// Держит сессию слушателя: `session` работает, пока соединение живо; после
/// обрыва — пауза с экспоненциальной задержкой и новая сессия, до отмены.
async fn reconnecting<F, Fut, E>(what: &str, cap: Duration, cancel: CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = session() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, what, "Wake-up connection lost; reconnecting.");
                }
            }
        }
        let delay = backoff(Duration::from_millis(100), cap, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Слушает `NOTIFY eventlog_log` отдельным соединением PostgreSQL.
pub(crate) async fn listen_postgres(store: Store, wake: Arc<Notify>, cancel: CancellationToken) {
    let pool = store.connection().get_postgres_connection_pool().clone();
    reconnecting("LISTEN", Duration::from_secs(5), cancel, || {
        let (pool, wake) = (pool.clone(), wake.clone());
        async move {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            // После (пере)подключения могли пропустить уведомления: проверяем журнал.
            wake.notify_one();
            loop {
                listener.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        }
    })
    .await;
}

/// Подписывается на канал Redis `<prefix>log` и будит читателя на каждое сообщение.
pub(crate) async fn listen_redis(link: RedisLink, wake: Arc<Notify>, cancel: CancellationToken) {
    let channel = link.key("log");
    reconnecting("Redis", Duration::from_secs(2), cancel, || {
        let (link, wake, channel) = (link.clone(), wake.clone(), channel.clone());
        async move {
            let mut pubsub = link.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            wake.notify_one();
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                wake.notify_one();
            }
            Ok::<(), redis::RedisError>(())
        }
    })
    .await;
}

/// Публикует в Redis «есть новые фиксации». Сигналы от писателя сливаются:
/// пока идёт одна публикация, следующие копятся в одну.
pub(crate) async fn publish_redis(link: RedisLink, mut signals: mpsc::Receiver<()>) {
    let channel = link.key("log");
    while signals.recv().await.is_some() {
        while signals.try_recv().is_ok() {}
        let _: Option<i64> = link.run(redis::cmd("PUBLISH").arg(&channel).arg(1)).await;
    }
}
