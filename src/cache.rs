//! Точный кэш аналитики: в процессе и (с `EVENTLOG_REDIS_URL`) общий для всех
//! экземпляров в Redis.
//!
//! Ключ — хэш области вызывающего (проект и пользователь), всего запроса
//! (фильтр, корзина) и головы журнала проекта ([`ProjectHead`]: номер последней
//! фиксации с событиями проекта и счётчик очисток). Голову триггер журнала
//! меняет в той же транзакции, что и вставку, а очистка — что и удаление,
//! поэтому ответ из кэша всегда равен ответу базы на момент чтения головы:
//! устаревшим он быть не может. TTL (`EVENTLOG_ANALYTICS_CACHE_TTL`) ограничивает
//! только срок жизни записи. Без Redis или при его недоступности работает
//! только кэш процесса; Redis возвращается сам.
//!
//! Вызывают: `api::reads::analytics`.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::metrics as m;
use crate::query::{EventFilter, ReadScope};
use crate::redis_link::RedisLink;
use crate::storage::ProjectHead;
use crate::storage::analytics::{Analytics, Bucket};

/// Сколько ответов держит кэш процесса.
const LOCAL_ENTRIES: u64 = 10_000;

/// Дешёвый `Clone`-дескриптор кэша.
#[derive(Clone)]
pub struct AnalyticsCache {
    ttl: Duration,
    local: Option<moka::sync::Cache<String, std::sync::Arc<Analytics>>>,
    redis: Option<RedisLink>,
}

impl std::fmt::Debug for AnalyticsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsCache")
            .field("ttl", &self.ttl)
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

/// Всё, от чего зависит ответ: это и хэшируется в ключ.
#[derive(Serialize)]
struct KeyParts<'a> {
    project_id: Uuid,
    user_id: Option<&'a str>,
    filter: &'a EventFilter,
    bucket: Bucket,
    head: (i64, i64),
}

impl AnalyticsCache {
    /// Кэш с временем жизни записи `ttl` (0 — выключен) и, если задан, Redis.
    pub fn new(ttl: Duration, redis: Option<RedisLink>) -> Self {
        let enabled = !ttl.is_zero();
        Self {
            ttl,
            local: enabled.then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(LOCAL_ENTRIES)
                    .time_to_live(ttl)
                    .build()
            }),
            redis: if enabled { redis } else { None },
        }
    }

    /// Кэш включён (TTL больше нуля).
    pub fn is_enabled(&self) -> bool {
        self.local.is_some()
    }

    /// Ключ ответа для области, запроса и головы журнала проекта.
    pub fn key(&self, scope: &ReadScope, filter: &EventFilter, bucket: Bucket, head: ProjectHead) -> String {
        let parts = KeyParts {
            project_id: scope.project_id,
            user_id: scope.user_id.as_deref(),
            filter,
            bucket,
            head: (head.pos, head.purged),
        };
        // Сериализация детерминирована: порядок полей задан структурой.
        let bytes = serde_json::to_vec(&parts).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        let mut hex = String::with_capacity(64);
        for b in digest {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Ответ по ключу: сначала из процесса, затем из Redis.
    pub async fn get(&self, key: &str) -> Option<std::sync::Arc<Analytics>> {
        let local = self.local.as_ref()?;
        if let Some(hit) = local.get(key) {
            metrics::counter!(m::CACHE_HITS, "tier" => "local").increment(1);
            return Some(hit);
        }
        if let Some(redis) = &self.redis {
            let raw: Option<Vec<u8>> = redis
                .run::<Option<Vec<u8>>>(redis::cmd("GET").arg(redis.key(&format!("analytics:{key}"))))
                .await
                .flatten();
            if let Some(a) = raw.and_then(|b| serde_json::from_slice::<Analytics>(&b).ok()) {
                metrics::counter!(m::CACHE_HITS, "tier" => "redis").increment(1);
                let a = std::sync::Arc::new(a);
                local.insert(key.to_owned(), a.clone());
                return Some(a);
            }
        }
        metrics::counter!(m::CACHE_MISSES).increment(1);
        None
    }

    /// Кладёт ответ в процесс и в Redis (с TTL).
    pub async fn put(&self, key: String, value: std::sync::Arc<Analytics>) {
        let Some(local) = &self.local else { return };
        if let Some(redis) = &self.redis
            && let Ok(bytes) = serde_json::to_vec(value.as_ref())
        {
            let _: Option<()> = redis
                .run(
                    redis::cmd("SET")
                        .arg(redis.key(&format!("analytics:{key}")))
                        .arg(bytes)
                        .arg("PX")
                        .arg(self.ttl.as_millis() as u64),
                )
                .await;
        }
        local.insert(key, value);
    }
}
