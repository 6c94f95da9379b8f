//! Фоновый писатель: собирает пакеты, пишет, повторяет, изолирует, дописывает.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ack::Done;
use super::{CommitHook, LoggerConfig, Queued, ShutdownReport, WriterState};
use crate::metrics as m;
use crate::model::NewEvent;
use crate::storage::{InsertedRow, StorageError, Store};

/// Срок истёк во время остановки: пакет не записан.
struct DeadlineHit;

pub(super) struct Worker {
    store: Store,
    config: LoggerConfig,
    /// Получатель очереди; отправитель — в `EventLogger`. `close()` при остановке
    /// запрещает новые события, оставляя уже поставленные для дописывания.
    rx: mpsc::Receiver<Queued>,
    on_commit: Option<CommitHook>,
    cancel: CancellationToken,
    state: Arc<WriterState>,
    /// Срок дописывания; задаётся в момент, когда писатель увидел отмену.
    deadline: Option<Instant>,
    /// Наибольший опубликованный seq: всё, что выше и уже есть в базе после
    /// неоднозначной ошибки фиксации, — наше и ещё не опубликовано.
    last_published: i64,
    /// Сколько событий записано после начала остановки.
    drained: usize,
}

impl Worker {
    pub(super) fn new(
        store: Store,
        config: LoggerConfig,
        rx: mpsc::Receiver<Queued>,
        on_commit: Option<CommitHook>,
        cancel: CancellationToken,
        state: Arc<WriterState>,
    ) -> Self {
        Self {
            store,
            config,
            rx,
            on_commit,
            cancel,
            state,
            deadline: None,
            last_published: 0,
            drained: 0,
        }
    }

    pub(super) async fn run(mut self) -> ShutdownReport {
        // seq растёт монотонно; начинаем с текущего максимума базы.
        self.last_published = self.store.max_seq().await.unwrap_or(0);
        let batch_size = self.config.batch_size.max(1);
        loop {
            metrics::gauge!(m::QUEUE_DEPTH).set(self.rx.len() as f64);
            let first = tokio::select! {
                biased;
                // Отмена: переходим к дописыванию.
                _ = self.cancel.cancelled() => break,
                // Первое событие пакета запускает таймер добора.
                q = self.rx.recv() => match q { Some(q) => q, None => break },
            };
            let mut batch = Vec::with_capacity(batch_size);
            batch.push(first);
            let flush_at = Instant::now() + self.config.flush_interval;
            while batch.len() < batch_size {
                let want = batch_size - batch.len();
                tokio::select! {
                    // Таймер первого события истёк — пишем, что есть.
                    _ = sleep_until(flush_at) => break,
                    // Остановка: не ждём таймер, пишем сразу, дальше — дописывание.
                    _ = self.cancel.cancelled() => break,
                    // Добираем сколько есть, но не больше размера пакета.
                    n = self.rx.recv_many(&mut batch, want) => if n == 0 { break },
                }
            }
            let n = batch.len();
            let cancelled = self.cancel.is_cancelled();
            if let Err((DeadlineHit, rest)) = self.flush(batch).await {
                return self.give_up(rest);
            }
            if cancelled {
                self.drained += n;
            }
        }
        self.drain().await
    }

    /// Остановка: закрываем очередь и пишем всё, что в ней, пока не истёк срок.
    async fn drain(mut self) -> ShutdownReport {
        self.rx.close();
        self.start_deadline();
        let batch_size = self.config.batch_size.max(1);
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            while batch.len() < batch_size {
                match self.rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                metrics::gauge!(m::QUEUE_DEPTH).set(0.0);
                return ShutdownReport {
                    drained: self.drained,
                    lost: 0,
                };
            }
            let n = batch.len();
            match self.flush(batch).await {
                Ok(()) => self.drained += n,
                Err((DeadlineHit, rest)) => return self.give_up(rest),
            }
        }
    }

    /// Срок истёк: считаем, что осталось, и сообщаем на уровне ERROR (потеря данных).
    fn give_up(mut self, rest: Vec<Queued>) -> ShutdownReport {
        let drained = self.drained;
        self.rx.close();
        let mut lost = rest.len();
        while self.rx.try_recv().is_ok() {
            lost += 1;
        }
        metrics::counter!(m::EVENTS_DROPPED).increment(lost as u64);
        tracing::error!(
            lost,
            drained,
            "Shutdown deadline passed; queued events were not written."
        );
        ShutdownReport { drained, lost }
    }

    fn start_deadline(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.config.shutdown_timeout);
        }
    }

    /// Пишет пакет: повторяет временные ошибки, делит пакет пополам при постоянной
    /// ошибке, пока отвергнутая строка не останется одна, и переносит её в таблицу
    /// отказов. После фиксации публикует вставленное и отмечает группы ожидания.
    async fn flush(&mut self, batch: Vec<Queued>) -> Result<(), (DeadlineHit, Vec<Queued>)> {
        let (events, acks): (Vec<NewEvent>, Vec<_>) = batch.into_iter().map(|q| (q.event, q.ack)).unzip();
        let mut done = vec![Done::Duplicate; events.len()];
        let mut inserted: Vec<InsertedRow> = Vec::with_capacity(events.len());
        // Стек диапазонов вместо рекурсии: правую половину кладём первой, чтобы
        // левая писалась раньше и seq шёл в порядке очереди.
        let mut stack: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        stack.push(0..events.len());
        while let Some(range) = stack.pop() {
            let slice = &events[range.clone()];
            match self.insert_retrying(slice).await {
                Ok(Ok(rows)) => inserted.extend(rows),
                Ok(Err(err)) if slice.len() == 1 => {
                    if self.reject(&slice[0], &err).await.is_err() {
                        return Err((DeadlineHit, requeue(events, acks)));
                    }
                    done[range.start] = Done::Rejected;
                }
                Ok(Err(_)) => {
                    let mid = range.start + slice.len() / 2;
                    stack.push(mid..range.end);
                    stack.push(range.start..mid);
                }
                Err(DeadlineHit) => return Err((DeadlineHit, requeue(events, acks))),
            }
        }
        self.publish(&events, &mut inserted, &mut done);
        for (ack, d) in acks.into_iter().zip(done) {
            if let Some(a) = ack {
                a.complete(d);
            }
        }
        Ok(())
    }

    /// Строит сохранённые события из вставленных строк и отдаёт их крюку фиксации.
    fn publish(&mut self, events: &[NewEvent], inserted: &mut [InsertedRow], done: &mut [Done]) {
        if inserted.is_empty() {
            return;
        }
        inserted.sort_unstable_by_key(|r| r.seq);
        // Повтор id внутри пакета: база вставила первое вхождение.
        let mut index: HashMap<Uuid, usize> = HashMap::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            index.entry(e.id).or_insert(i);
        }
        let mut committed = Vec::with_capacity(inserted.len());
        for row in inserted.iter() {
            if let Some(&i) = index.get(&row.id) {
                done[i] = Done::Inserted;
                committed.push(Arc::new(events[i].clone().into_event(row.seq)));
            }
        }
        metrics::counter!(m::EVENTS_WRITTEN).increment(committed.len() as u64);
        if let Some(last) = committed.last() {
            self.last_published = self.last_published.max(last.seq);
        }
        if let Some(hook) = &self.on_commit {
            hook(&committed);
        }
    }

    /// Одна вставка с повторами временных ошибок. Внешний `Err` — срок остановки
    /// истёк; внутренний — база отвергла данные (постоянная ошибка).
    async fn insert_retrying(
        &mut self,
        events: &[NewEvent],
    ) -> Result<Result<Vec<InsertedRow>, StorageError>, DeadlineHit> {
        let mut attempt: u32 = 0;
        loop {
            let started = std::time::Instant::now();
            let result = match timeout(self.config.insert_timeout, self.store.insert_batch(events)).await {
                Ok(r) => r,
                Err(_) => Err(StorageError::Sqlx(sqlx::Error::PoolTimedOut)),
            };
            metrics::histogram!(m::BATCH_INSERT_DURATION).record(started.elapsed().as_secs_f64());
            match result {
                Ok(mut rows) => {
                    self.state.retrying_since_ms.store(0, Ordering::Relaxed);
                    if attempt > 0 {
                        // Прошлая попытка могла зафиксироваться, а ответ потеряться:
                        // такие строки уже в базе, RETURNING их не вернул.
                        rows.extend(self.recover_ambiguous(events, &rows).await);
                    }
                    return Ok(Ok(rows));
                }
                Err(e) => {
                    metrics::counter!(m::INSERT_ERRORS).increment(1);
                    if !e.is_transient() {
                        return Ok(Err(e));
                    }
                    if attempt == 0 {
                        self.state
                            .retrying_since_ms
                            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
                    }
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, rows = events.len(), "Batch insert failed; retrying.");
                    metrics::counter!(m::INSERT_RETRIES).increment(1);
                    attempt = attempt.saturating_add(1);
                    self.wait(delay).await?;
                }
            }
        }
    }

    /// Ждёт `delay`, но не дольше срока остановки.
    async fn wait(&mut self, delay: Duration) -> Result<(), DeadlineHit> {
        if self.deadline.is_none() {
            tokio::select! {
                _ = sleep(delay) => return Ok(()),
                // Отмена во время ожидания: с этого момента идёт срок дописывания.
                _ = self.cancel.cancelled() => self.start_deadline(),
            }
        }
        let deadline = self.deadline.expect("срок задан выше");
        if Instant::now() + delay >= deadline {
            sleep_until(deadline).await;
            return Err(DeadlineHit);
        }
        sleep(delay).await;
        Ok(())
    }

    /// Находит строки пакета, которые уже в базе с seq выше опубликованного:
    /// их зафиксировала прошлая, «неудачная» попытка.
    async fn recover_ambiguous(&self, events: &[NewEvent], got: &[InsertedRow]) -> Vec<InsertedRow> {
        let seen: std::collections::HashSet<Uuid> = got.iter().map(|r| r.id).collect();
        let missing: Vec<Uuid> = events
            .iter()
            .map(|e| e.id)
            .filter(|id| !seen.contains(id))
            .collect();
        if missing.is_empty() {
            return Vec::new();
        }
        match self.store.seqs_of(&missing).await {
            Ok(rows) => rows.into_iter().filter(|r| r.seq > self.last_published).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Could not check for rows committed by a failed attempt.");
                Vec::new()
            }
        }
    }

    /// Переносит событие в таблицу отказов (с повторами временных ошибок).
    async fn reject(&mut self, event: &NewEvent, err: &StorageError) -> Result<(), DeadlineHit> {
        let text = err.to_string();
        let mut attempt = 0;
        loop {
            match self.store.insert_rejected(event, &text).await {
                Ok(()) => {
                    metrics::counter!(m::EVENTS_REJECTED).increment(1);
                    tracing::warn!(event_id = %event.id, error = %text, "Event rejected by the database; moved to event_logs_rejected.");
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    attempt += 1;
                    self.wait(delay).await?;
                }
                Err(e) => {
                    metrics::counter!(m::EVENTS_DROPPED).increment(1);
                    tracing::error!(event_id = %event.id, error = %e, cause = %text, "Rejected event could not be stored in event_logs_rejected; it is lost.");
                    return Ok(());
                }
            }
        }
    }
}

/// Возвращает события пакета в очередь-остаток (для подсчёта потерь).
fn requeue(events: Vec<NewEvent>, acks: Vec<Option<Arc<super::AckGroup>>>) -> Vec<Queued> {
    events
        .into_iter()
        .zip(acks)
        .map(|(event, ack)| Queued { event, ack })
        .collect()
}

/// Экспоненциальная задержка с полным джиттером: случайно в [0, min(cap, base·2^n)].
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let upper = exp.min(cap);
    let ms = rand::rng().random_range(0..=upper.as_millis() as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_exponential_bound_and_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for attempt in 0..30 {
            let bound = (base * 2u32.saturating_pow(attempt.min(20))).min(cap);
            for _ in 0..50 {
                assert!(backoff(base, cap, attempt) <= bound);
            }
        }
        // Полный джиттер: значения действительно разбросаны, а не равны границе.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| backoff(base, cap, 6)).collect();
        assert!(samples.len() > 10);
    }
}
