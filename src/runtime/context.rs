//! Контекст сессии и публикатор событий агентной среды.
//!
//! [`SessionContext`] говорит каждому компоненту, к какой сессии (пользователь,
//! проект, сессия) относится событие. [`Publisher`] — единственный путь, которым
//! компоненты среды отдают события: он оборачивает
//! [`StreamManager::broadcast_event`](crate::StreamManager::broadcast_event) и
//! считает опубликованные события по типам (это нужно демо и тестам).
//! [`AgentMode`] — режим работы (оркестрованный или прямой), который попадает в
//! нагрузку событий как ключ `mode`.
//!
//! Вызывают: все компоненты `runtime`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StreamManager;
use crate::logger::LogError;
use crate::model::{EventType, NewEvent};

/// К какой сессии относятся события: пользователь (JWT `sub`), проект и сессия.
///
/// ```
/// use eventlog::model::EventType;
/// use eventlog::runtime::SessionContext;
/// use uuid::Uuid;
///
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let ev = ctx.event(EventType::TaskQueued);
/// assert_eq!(ev.user_id, "alice");
/// assert_eq!(ev.session_id, ctx.session_id);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionContext {
    /// Пользователь — владелец событий.
    pub user_id: String,
    /// Проект.
    pub project_id: Uuid,
    /// Сессия.
    pub session_id: Uuid,
}

impl SessionContext {
    /// Контекст существующей сессии.
    pub fn new(user_id: impl Into<String>, project_id: Uuid, session_id: Uuid) -> Self {
        Self {
            user_id: user_id.into(),
            project_id,
            session_id,
        }
    }

    /// Контекст новой сессии с идентификатором UUIDv7.
    pub fn new_session(user_id: impl Into<String>, project_id: Uuid) -> Self {
        Self::new(user_id, project_id, Uuid::now_v7())
    }

    /// Заготовка события этой сессии (остальные поля задаются построителем
    /// [`NewEvent`]).
    pub fn event(&self, event_type: EventType) -> NewEvent {
        NewEvent::new(self.session_id, self.user_id.clone(), self.project_id, event_type)
    }
}

/// Режим работы пространства пользователя; значение ключа `mode` в нагрузке.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Агента выбирает оркестратор ([`OrchestratorRouter`](super::OrchestratorRouter)).
    #[default]
    Orchestrated,
    /// Пользователь обращается к агенту напрямую.
    Direct,
}

impl AgentMode {
    /// Строковое значение (`orchestrated` или `direct`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orchestrated => "orchestrated",
            Self::Direct => "direct",
        }
    }
}

impl fmt::Display for AgentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Снимок счётчиков [`Publisher`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Принято в очередь записи, по типам каталога (в порядке [`EventType::ALL`]);
    /// типы с нулём не перечисляются.
    pub by_type: Vec<(EventType, u64)>,
    /// Событий вне каталога (компоненты среды их не испускают; для полноты).
    pub other: u64,
    /// Не принято: очередь писателя полна или логгер остановлен.
    pub dropped: u64,
}

impl PublishStats {
    /// Всего принято в очередь.
    pub fn total(&self) -> u64 {
        self.by_type.iter().map(|(_, n)| n).sum::<u64>() + self.other
    }

    /// Сколько принято событий типа `t`.
    pub fn count(&self, t: EventType) -> u64 {
        self.by_type.iter().find(|(x, _)| *x == t).map_or(0, |(_, n)| *n)
    }
}

/// Публикатор событий среды: дешёвый `Clone`-дескриптор поверх
/// [`StreamManager`], общий для компонентов, которые должны делить счётчики.
///
/// Публикация никогда не блокирует и не прерывает работу агента: если очередь
/// писателя полна или логгер остановлен, событие теряется, это пишется в журнал
/// (WARN) и учитывается в [`PublishStats::dropped`] (а логгер сам считает его в
/// метрике `eventlog_events_dropped_total`). Инструментирование не должно ронять
/// то, что оно наблюдает.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventlog::logger::LoggerConfig;
/// use eventlog::model::EventType;
/// use eventlog::runtime::{Publisher, SessionContext};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let publisher = Publisher::new(stream.clone());
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// publisher.publish(ctx.event(EventType::TaskQueued).agent("planner"));
/// assert_eq!(publisher.stats().count(EventType::TaskQueued), 1);
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Publisher {
    stream: StreamManager,
    counters: Arc<Counters>,
}

struct Counters {
    /// Индекс — позиция типа в [`EventType::ALL`].
    by_type: [AtomicU64; EventType::ALL.len()],
    other: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("stats", &self.stats()).finish()
    }
}

impl From<StreamManager> for Publisher {
    fn from(stream: StreamManager) -> Self {
        Self::new(stream)
    }
}

impl Publisher {
    /// Публикатор с собственными (нулевыми) счётчиками.
    pub fn new(stream: StreamManager) -> Self {
        Self {
            stream,
            counters: Arc::new(Counters {
                by_type: std::array::from_fn(|_| AtomicU64::new(0)),
                other: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Менеджер потока, через который идут события.
    pub fn stream(&self) -> &StreamManager {
        &self.stream
    }

    /// Отдаёт событие писателю, не блокируясь. Возвращает `true`, если событие
    /// принято в очередь; `false` — потеряно (см. описание типа).
    pub fn publish(&self, event: NewEvent) -> bool {
        let idx = EventType::ALL.iter().position(|t| t.as_str() == event.event_type);
        match self.stream.broadcast_event(event) {
            Ok(()) => {
                match idx {
                    Some(i) => self.counters.by_type[i].fetch_add(1, Ordering::Relaxed),
                    None => self.counters.other.fetch_add(1, Ordering::Relaxed),
                };
                true
            }
            Err(err) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let (reason, ev) = match &err {
                    LogError::QueueFull(ev) => ("queue_full", ev),
                    LogError::Closed(ev) => ("closed", ev),
                };
                tracing::warn!(
                    reason,
                    event_type = %ev.event_type,
                    session_id = %ev.session_id,
                    "Runtime event was not accepted by the event logger."
                );
                false
            }
        }
    }

    /// Снимок счётчиков.
    pub fn stats(&self) -> PublishStats {
        let by_type = EventType::ALL
            .iter()
            .zip(self.counters.by_type.iter())
            .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        PublishStats {
            by_type,
            other: self.counters.other.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Обрезает строку до `max` байт по границе символа.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Миллисекунды длительности (насыщаясь на `u64::MAX`).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Текст паники из её полезной нагрузки.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Трасса для ключа `stack_trace`: логические кадры среды (что вызывало что) и,
/// если сбор включён (`RUST_BACKTRACE`), backtrace места, где ошибку поймали.
pub(crate) fn stack_trace(frames: &[String]) -> String {
    let mut out = frames.join("\n");
    let bt = std::backtrace::Backtrace::capture();
    if bt.status() == std::backtrace::BacktraceStatus::Captured {
        out.push_str("\ncaptured at:\n");
        out.push_str(&bt.to_string());
    }
    out
}

/// Стабильный (не зависящий от версии Rust) 64-битный хеш FNV-1a: на нём
/// построены детерминированные решения встроенных агентов, инструментов и демо.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Разделитель частей, чтобы ("ab","c") ≠ ("a","bc").
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Финальное перемешивание (splitmix64), чтобы младшие биты были равномерны.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Равномерное число в [0, 1) из хеша.
pub(crate) fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_str_respects_char_boundaries() {
        assert_eq!(truncate_str("привет", 3), "п");
        assert_eq!(truncate_str("abc", 10), "abc");
        assert_eq!(truncate_str("abc", 2), "ab");
    }

    #[test]
    fn stable_hash_is_stable_and_separates_parts() {
        assert_eq!(stable_hash(&[b"abc"]), stable_hash(&[b"abc"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        let u = unit_interval(stable_hash(&[b"x"]));
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let a: Box<dyn std::any::Any + Send> = Box::new("boom");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        let c: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(a.as_ref()), "boom");
        assert_eq!(panic_message(b.as_ref()), "bang");
        assert_eq!(panic_message(c.as_ref()), "non-string panic payload");
    }
}
