//! [`EventLogger`]: неблокирующая запись событий через ограниченную очередь.
//!
//! Вызывающий кладёт событие в очередь ([`EventLogger::log_event`]) и сразу
//! получает управление; полная очередь — ошибка, возвращающая событие обратно.
//! Фоновый писатель ([`worker`]) собирает пакеты по размеру или по таймеру,
//! пишет каждый одной инструкцией, повторяет временные ошибки с экспоненциальной
//! задержкой и полным джиттером, изолирует строки, которые база отвергает, и при
//! остановке дописывает очередь в пределах срока.
//!
//! Зависит от `storage` и `metrics`; используется `stream::StreamManager`.

mod ack;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ack::AckGroup;
pub use ack::{CommitError, CommitOutcome, CommitWaiter};
pub(crate) use worker::backoff;

use crate::metrics as m;
use crate::model::validation::check_created_at;
use crate::model::{NewEvent, ValidationError};
use crate::storage::Store;

/// Настройки писателя.
#[derive(Debug, Clone)]
pub struct LoggerConfig {
    /// Размер пакета, после которого пишем сразу (по умолчанию 1000).
    pub batch_size: usize,
    /// Сколько ждать добора пакета после первого события (по умолчанию 20 мс).
    pub flush_interval: Duration,
    /// Ёмкость очереди, событий (по умолчанию 65 536).
    pub queue_capacity: usize,
    /// Предел очереди в байтах (оценка памяти событий; по умолчанию 256 МиБ).
    pub queue_bytes: usize,
    /// Срок дописывания очереди при остановке (по умолчанию 10 с).
    pub shutdown_timeout: Duration,
    /// Первая задержка повтора (100 мс).
    pub retry_base: Duration,
    /// Потолок задержки повтора (10 с).
    pub retry_cap: Duration,
    /// Таймаут одной попытки вставки; превышение считается временной ошибкой.
    pub insert_timeout: Duration,
    /// Сколько пакетов может писаться одновременно (PostgreSQL; на SQLite всегда 1).
    /// Пока один пакет ждёт фиксации, следующий уже вставляется; публикация всё равно
    /// идёт строго по порядку seq.
    pub max_in_flight: usize,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            flush_interval: Duration::from_millis(20),
            queue_capacity: 65_536,
            queue_bytes: 256 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(10),
            insert_timeout: Duration::from_secs(30),
            max_in_flight: 4,
        }
    }
}

/// Событие не принято в очередь; событие возвращается вызывающему.
#[derive(Debug, Error)]
pub enum LogError {
    /// Очередь заполнена (учитывается в `eventlog_events_dropped_total`).
    #[error("event queue is full")]
    QueueFull(Box<NewEvent>),
    /// Логгер остановлен.
    #[error("event logger is shut down")]
    Closed(Box<NewEvent>),
    /// `created_at` вне диапазона, который обе базы хранят и читают обратно
    /// ([1970-01-01T00:00:00Z, сейчас + 5 минут]); событие не поставлено
    /// (учитывается в `eventlog_events_dropped_total`).
    #[error("event refused: {error}")]
    Invalid {
        /// Событие, возвращённое вызывающему.
        event: Box<NewEvent>,
        /// Что не так.
        error: ValidationError,
    },
}

/// Пакет не принят целиком; все события возвращаются, ни одно не поставлено.
#[derive(Debug, Error)]
pub enum BatchError {
    /// В очереди нет места на весь пакет.
    #[error("event queue cannot take {} events now", .0.len())]
    QueueFull(Vec<NewEvent>),
    /// Логгер остановлен.
    #[error("event logger is shut down")]
    Closed(Vec<NewEvent>),
    /// `created_at` события вне допустимого диапазона (путь `events[i].createdAt`).
    #[error("batch refused: {1}")]
    Invalid(Vec<NewEvent>, ValidationError),
}

/// Что осталось после остановки.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Дописано при остановке.
    pub drained: usize,
    /// Не успели записать до срока (записано в журнал на уровне ERROR).
    pub lost: usize,
}

/// Функция, которую писатель вызывает после фиксации пакета с числом
/// вставленных строк (так `StreamManager` будит читателя журнала). Сами события
/// подписчики получают из журнала базы, а не отсюда.
pub type CommitHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Элемент очереди: событие, его оценка в байтах и (необязательно) группа
/// ожидания фиксации.
pub(crate) struct Queued {
    pub(crate) event: NewEvent,
    pub(crate) bytes: usize,
    pub(crate) ack: Option<Arc<AckGroup>>,
}

/// Бюджет очереди в байтах: сколько памяти занимают события, ещё не записанные
/// писателем. Резервирует `log_event`/`log_batch`, возвращает писатель, когда
/// пакет записан (или событие потеряно при остановке).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// Резервирует `n` байт; при пустой очереди берёт и событие больше предела,
    /// иначе одно крупное событие никогда бы не прошло.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used + n <= self.max).then_some(used + n)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self, n: usize) {
        self.used
            .fetch_sub(n.min(self.used.load(Ordering::Acquire)), Ordering::AcqRel);
    }
}

/// Состояние писателя, видимое снаружи (для `/readyz`).
///
/// При нескольких пакетах в полёте каждый пакет (вставка или выдача номеров seq),
/// который повторяет неудачу, держит отметку [`Failing`]; писатель «застрял», пока
/// отметка есть хоть у одного, с момента, когда появилась первая. Успех одного
/// пакета не снимает отметку другого.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// (сколько операций сейчас повторяют неудачу, с какого момента (мс Unix) есть
    /// хоть одна; 0 — ни одной).
    failing: std::sync::Mutex<(usize, i64)>,
}

impl WriterState {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, i64)> {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// С какого момента (мс Unix) писатель повторяет неудачу; 0 — не повторяет.
    pub(crate) fn failing_since_ms(&self) -> i64 {
        self.lock().1
    }
}

/// Отметка «эта операция записи повторяет неудачу»; снимается при уничтожении
/// (успех, отказ строки или остановка).
pub(crate) struct Failing<'a> {
    state: &'a WriterState,
    on: bool,
}

impl<'a> Failing<'a> {
    /// Пока без отметки.
    pub(crate) fn new(state: &'a WriterState) -> Self {
        Self { state, on: false }
    }

    /// Операция не удалась: ставит отметку (один раз).
    pub(crate) fn mark(&mut self) {
        if !self.on {
            self.on = true;
            let mut g = self.state.lock();
            if g.0 == 0 {
                g.1 = Utc::now().timestamp_millis();
            }
            g.0 += 1;
        }
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        if self.on {
            let mut g = self.state.lock();
            g.0 = g.0.saturating_sub(1);
            if g.0 == 0 {
                g.1 = 0;
            }
        }
    }
}

/// Дешёвый `Clone`-дескриптор логгера. Фоновый писатель живёт, пока не вызван
/// [`EventLogger::shutdown`].
#[derive(Clone)]
pub struct EventLogger {
    inner: Arc<Inner>,
}

struct Inner {
    /// Отправитель очереди; получатель — у писателя. Закрытие — через `closed`
    /// и `cancel`, потому что клоны дескриптора могут жить у кого угодно.
    tx: mpsc::Sender<Queued>,
    capacity: usize,
    budget: Arc<ByteBudget>,
    closed: AtomicBool,
    cancel: CancellationToken,
    state: Arc<WriterState>,
    worker: Mutex<Option<JoinHandle<ShutdownReport>>>,
}

impl std::fmt::Debug for EventLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLogger")
            .field("capacity", &self.inner.capacity)
            .field("depth", &self.queue_depth())
            .finish()
    }
}

impl EventLogger {
    /// Запускает писателя на текущем рантайме tokio.
    pub fn start(store: Store, config: LoggerConfig, on_commit: Option<CommitHook>) -> Self {
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        let state = Arc::new(WriterState::default());
        let budget = Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            max: config.queue_bytes.max(1),
        });
        let worker = worker::Worker::new(
            store,
            config,
            rx,
            on_commit,
            cancel.clone(),
            state.clone(),
            budget.clone(),
        );
        let handle = tokio::spawn(worker.run());
        Self {
            inner: Arc::new(Inner {
                tx,
                capacity,
                budget,
                closed: AtomicBool::new(false),
                cancel,
                state,
                worker: Mutex::new(Some(handle)),
            }),
        }
    }

    /// Ставит событие в очередь, не блокируясь. При полной очереди событие
    /// возвращается в ошибке и учитывается в `eventlog_events_dropped_total`.
    ///
    /// `created_at` вне [1970-01-01T00:00:00Z, сейчас + 5 минут] — ошибка
    /// [`LogError::Invalid`]: SQLite сохранил бы строку, которую потом нельзя
    /// прочитать, а PostgreSQL отверг бы её посреди пакета. Остальные поля
    /// проверяют ограничения таблицы; отвергнутое базой уходит в таблицу отказов.
    pub fn log_event(&self, event: NewEvent) -> Result<(), LogError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed(Box::new(event)));
        }
        if let Err(error) = check_created_at(event.created_at, Utc::now()) {
            metrics::counter!(m::EVENTS_DROPPED).increment(1);
            return Err(LogError::Invalid {
                event: Box::new(event),
                error,
            });
        }
        let bytes = event.approx_bytes();
        if !self.inner.budget.try_take(bytes) {
            metrics::counter!(m::EVENTS_DROPPED).increment(1);
            return Err(LogError::QueueFull(Box::new(event)));
        }
        match self.inner.tx.try_send(Queued {
            event,
            bytes,
            ack: None,
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(q)) => {
                self.inner.budget.give_back(bytes);
                metrics::counter!(m::EVENTS_DROPPED).increment(1);
                Err(LogError::QueueFull(Box::new(q.event)))
            }
            Err(mpsc::error::TrySendError::Closed(q)) => {
                self.inner.budget.give_back(bytes);
                Err(LogError::Closed(Box::new(q.event)))
            }
        }
    }

    /// Ставит пакет «всё или ничего»: сначала резервирует место под все события
    /// сразу, потом кладёт их. Возвращает [`CommitWaiter`], который дожидается
    /// фиксации всех событий пакета.
    pub fn log_batch(&self, events: Vec<NewEvent>) -> Result<CommitWaiter, BatchError> {
        self.log_batch_holding(events, None)
    }

    /// Как [`EventLogger::log_batch`], но держит `hold`, пока последнее событие
    /// пакета не записано (или не потеряно при остановке), даже если фиксации
    /// никто не ждёт: так API считает долю очереди каждого вызывающего.
    pub fn log_batch_holding(
        &self,
        events: Vec<NewEvent>,
        hold: Option<Box<dyn Send + Sync>>,
    ) -> Result<CommitWaiter, BatchError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BatchError::Closed(events));
        }
        let now = Utc::now();
        if let Some(error) = events.iter().enumerate().find_map(|(i, e)| {
            check_created_at(e.created_at, now)
                .err()
                .map(|err| err.at(&format!("events[{i}]")))
        }) {
            return Err(BatchError::Invalid(events, error));
        }
        let (group, waiter) = AckGroup::new(events.len(), hold);
        if events.is_empty() {
            return Ok(waiter);
        }
        if events.len() > self.inner.capacity {
            return Err(BatchError::QueueFull(events));
        }
        let sizes: Vec<usize> = events.iter().map(NewEvent::approx_bytes).collect();
        let total: usize = sizes.iter().sum();
        if !self.inner.budget.try_take(total) {
            return Err(BatchError::QueueFull(events));
        }
        let permits = match self.inner.tx.try_reserve_many(events.len()) {
            Ok(p) => p,
            Err(e) => {
                self.inner.budget.give_back(total);
                return Err(match e {
                    mpsc::error::TrySendError::Full(()) => BatchError::QueueFull(events),
                    mpsc::error::TrySendError::Closed(()) => BatchError::Closed(events),
                });
            }
        };
        for ((permit, event), bytes) in permits.zip(events).zip(sizes) {
            permit.send(Queued {
                event,
                bytes,
                ack: Some(group.clone()),
            });
        }
        Ok(waiter)
    }

    /// Сколько байт (оценка) занимают события, ещё не записанные писателем.
    pub fn queued_bytes(&self) -> usize {
        self.inner.budget.used.load(Ordering::Acquire)
    }

    /// Сколько событий сейчас в очереди.
    pub fn queue_depth(&self) -> usize {
        self.inner.capacity - self.inner.tx.capacity()
    }

    /// Ёмкость очереди.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Сколько свободных мест в очереди.
    pub fn free_slots(&self) -> usize {
        self.inner.tx.capacity()
    }

    /// Писатель не застрял: не повторяет неудачную вставку дольше `limit`.
    pub fn is_healthy(&self, limit: Duration) -> bool {
        let since = self.inner.state.failing_since_ms();
        since == 0 || Utc::now().timestamp_millis() - since < limit.as_millis() as i64
    }

    /// Останавливает приём, дописывает очередь в пределах срока и ждёт писателя.
    /// Повторный вызов возвращает пустой отчёт.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.cancel.cancel();
        let handle = self.inner.worker.lock().await.take();
        match handle {
            Some(h) => h.await.unwrap_or_default(),
            None => ShutdownReport::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_succeeding_does_not_clear_another_batchs_failure() {
        let state = WriterState::default();
        let mut a = Failing::new(&state);
        let mut b = Failing::new(&state);
        a.mark();
        let since = state.failing_since_ms();
        assert!(since > 0);
        b.mark();
        b.mark();
        // Пакет b поправился; a всё ещё повторяет: писатель по-прежнему застрял, с того же момента.
        drop(b);
        assert_eq!(state.failing_since_ms(), since);
        drop(a);
        assert_eq!(state.failing_since_ms(), 0);
        // Операция без неудач ничего не отмечает.
        drop(Failing::new(&state));
        assert_eq!(state.failing_since_ms(), 0);
    }
}
