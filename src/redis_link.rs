//! Необязательная связь с Redis: общий кэш аналитики и пробуждение читателей
//! журнала на других экземплярах.
//!
//! Redis здесь только ускоряет: при его недоступности всё работает локально
//! (кэш в процессе, опрос журнала), а когда он возвращается, связь
//! восстанавливается сама, без перезапуска. Все ключи и каналы начинаются с
//! префикса (`EVENTLOG_REDIS_PREFIX`), чтобы несколько развёртываний или тестов
//! делили один Redis.
//!
//! Вызывают: `stream` (канал пробуждения), `cache` (общий кэш).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// Сколько ждать ответа Redis на одну команду: медленный Redis не должен
/// задерживать запросы больше, чем их задержал бы промах кэша.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Как часто пробовать подключиться снова, если Redis недоступен.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Дешёвый `Clone`-дескриптор связи с Redis.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    /// Менеджер соединения (сам переподключается после обрыва) и время последней
    /// неудачной попытки его создать.
    manager: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl RedisLink {
    /// Разбирает URL; подключение — лениво, при первой команде.
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                prefix: prefix.to_owned(),
                manager: Mutex::new((None, None)),
            }),
        })
    }

    /// Полное имя ключа или канала с префиксом.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.inner.prefix, name)
    }

    /// Клиент (для отдельного соединения подписки pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// Соединение для команд или `None`, если Redis сейчас недоступен.
    pub async fn connection(&self) -> Option<ConnectionManager> {
        let mut guard = self.inner.manager.lock().await;
        if let Some(m) = &guard.0 {
            return Some(m.clone());
        }
        // Не чаще раза в секунду: иначе каждый запрос ждал бы отказа в соединении.
        if guard.1.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            COMMAND_TIMEOUT * 4,
            self.inner.client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(m)) => {
                guard.0 = Some(m.clone());
                guard.1 = None;
                Some(m)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis is unavailable; working locally.");
                guard.1 = Some(Instant::now());
                None
            }
            Err(_) => {
                guard.1 = Some(Instant::now());
                None
            }
        }
    }

    /// Выполняет команду с ограничением времени; `None` — Redis недоступен.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis command failed.");
                None
            }
            Err(_) => None,
        }
    }
}
