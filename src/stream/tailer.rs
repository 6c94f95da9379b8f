//! Хвост журнала: один читатель на процесс следует журналу базы
//! ([`Store::read_log`]) и раздаёт каждое зафиксированное событие — чьё угодно:
//! этого сервера, другого экземпляра, `eventlog demo`, встроенного `EventLogger`
//! — в живой канал процесса, ровно один раз и в порядке журнала.
//!
//! Будят его фиксации своего писателя (крюк логгера), `NOTIFY eventlog_log`
//! (PostgreSQL), сообщения Redis и таймер опроса. Уведомления только ускоряют:
//! источник истины — база, потерянное уведомление задерживает событие не больше
//! чем на интервал опроса.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::live::LiveRing;
use crate::logger::backoff;
use crate::metrics as m;
use crate::storage::{LogPosition, Store};

/// Сколько событий читается из журнала за один запрос.
const READ_PAGE: usize = 1000;

/// Состояние хвоста, видимое подпискам и `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailState {
    /// Позиция последнего разосланного события (всё не выше неё уже в живом
    /// канале или было раньше подписки).
    pub position: LogPosition,
    /// Хвост прочитал голову журнала при старте и работает.
    pub ready: bool,
}

/// Здоровье хвоста для `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct TailHealth {
    /// Момент (мс Unix) последнего успешного чтения журнала; 0 — ещё не было.
    pub(crate) last_ok_ms: AtomicI64,
    /// С какого момента (мс Unix) чтения подряд неудачны; 0 — последнее удачно.
    pub(crate) failing_since_ms: AtomicI64,
}

/// Задача-читатель. Владеет отправителями живого канала и водяного знака;
/// получатели — у подписок. Завершается по `cancel`.
pub(crate) struct Tailer {
    pub(crate) store: Store,
    pub(crate) live: Arc<LiveRing>,
    pub(crate) state: watch::Sender<TailState>,
    pub(crate) health: Arc<TailHealth>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) poll_interval: Duration,
    pub(crate) cancel: CancellationToken,
}

impl Tailer {
    pub(crate) async fn run(self) {
        self.follow().await;
        // Читатель остановлен: подписки дочитают буфер и закончатся.
        self.live.close();
    }

    async fn follow(&self) {
        let mut position = match self.start_position().await {
            Some(p) => p,
            None => return,
        };
        // Голова прочитана — это уже успешное чтение журнала.
        self.health
            .last_ok_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.state.send_replace(TailState {
            position,
            ready: true,
        });
        let mut attempt = 0u32;
        loop {
            match self.drain(&mut position).await {
                Ok(()) => {
                    attempt = 0;
                    self.health
                        .last_ok_ms
                        .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
                    self.health.failing_since_ms.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the event log; retrying.");
                    let _ = self.health.failing_since_ms.compare_exchange(
                        0,
                        Utc::now().timestamp_millis(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    let delay = backoff(Duration::from_millis(50), Duration::from_secs(2), attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                // Фиксация своего писателя или уведомление от базы/Redis.
                _ = self.wake.notified() => {}
                // Страховка от потерянных уведомлений и чужих писателей без них.
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Голова журнала при старте: живые подписки без `afterSeq` начинаются с неё.
    async fn start_position(&self) -> Option<LogPosition> {
        let mut attempt = 0u32;
        loop {
            match self.store.log_head().await {
                Ok(p) => return Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the head of the event log; retrying.");
                    let delay = backoff(Duration::from_millis(100), Duration::from_secs(5), attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Читает журнал после `position` до конца и рассылает прочитанное.
    async fn drain(&self, position: &mut LogPosition) -> Result<(), crate::storage::StorageError> {
        loop {
            let page = self.store.read_log(*position, READ_PAGE).await?;
            let n = page.len();
            if let Some(last) = page.last() {
                *position = last.position;
                // Водяной знак двигается ДО рассылки: подписка создаёт приёмник, затем
                // читает знак; всё, что выше прочитанного знака, окажется в приёмнике.
                self.state.send_modify(|s| s.position = *position);
                metrics::counter!(m::LOG_EVENTS_READ).increment(n as u64);
            }
            self.live
                .push_all(page.into_iter().map(|e| (e.position, Arc::new(e.event))));
            if n < READ_PAGE {
                return Ok(());
            }
        }
    }
}
