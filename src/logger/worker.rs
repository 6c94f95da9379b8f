//! Фоновый писатель: собирает пакеты, пишет их (на PostgreSQL — до
//! `max_in_flight` пакетов одновременно), повторяет временные ошибки, изолирует
//! отвергнутые строки, публикует зафиксированное строго по порядку seq и при
//! остановке дописывает очередь в пределах срока.
//!
//! Номера при нескольких пакетах в полёте: каждый пакет до вставки получает
//! номера seq из последовательности базы (`Store::reserve_seqs`), и получает их
//! строго в порядке очереди (цепочка oneshot); поэтому номера пакета k меньше
//! номеров пакета k+1, а события пакета идут в порядке ввода. Порядок доставки
//! подписчикам задаёт журнал базы (порядок фиксаций), а не этот процесс: после
//! фиксации писатель только будит читателя журнала крюком `on_commit`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ack::{AckGroup, Done};
use super::{ByteBudget, CommitHook, Failing, LoggerConfig, Queued, ShutdownReport, WriterState};
use crate::metrics as m;
use crate::model::NewEvent;
use crate::storage::{InsertedRow, RowOwner, StorageError, Store};

/// Причина в `event_logs_rejected` для события, чей id занят чужой строкой.
pub(crate) const ID_CONFLICT_REASON: &str =
    "id conflict: the id is already used by an event of another project or user";

/// Срок остановки истёк: дальше писать нельзя.
struct DeadlineHit;

/// Срок дописывания: задаётся один раз, когда кто-то первым увидел отмену.
struct Deadline {
    at: Mutex<Option<Instant>>,
    timeout: Duration,
}

impl Deadline {
    fn start(&self) -> Instant {
        *self
            .at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| Instant::now() + self.timeout)
    }

    fn get(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Пакет, отданный на запись.
struct Job {
    events: Vec<NewEvent>,
    acks: Vec<Option<Arc<AckGroup>>>,
    /// Создан после начала остановки (для отчёта `drained`).
    after_cancel: bool,
    /// Сколько байт бюджета очереди держат события пакета.
    bytes: usize,
    /// Наибольший seq, записанный этим писателем до создания пакета (граница для
    /// восстановления после неоднозначной ошибки, когда номера не выдавались заранее).
    floor: i64,
}

/// Итог записи пакета.
struct Outcome {
    job: Job,
    inserted: Vec<InsertedRow>,
    done: Vec<Done>,
    /// Индексы событий, которые не успели записать до срока.
    unwritten: Vec<usize>,
}

/// Всё, что нужно одной записи пакета; клонируется в каждую future.
#[derive(Clone)]
struct Writer {
    store: Store,
    config: LoggerConfig,
    cancel: CancellationToken,
    deadline: Arc<Deadline>,
    state: Arc<WriterState>,
    reserve: bool,
}

pub(super) struct Worker {
    writer: Writer,
    /// Получатель очереди; отправитель — в `EventLogger`. `close()` при остановке
    /// запрещает новые события, оставляя уже поставленные для дописывания.
    rx: mpsc::Receiver<Queued>,
    on_commit: Option<CommitHook>,
    /// Бюджет очереди в байтах: писатель возвращает байты записанных пакетов.
    budget: Arc<ByteBudget>,
    /// Собираемый пакет живёт здесь, а не в future сбора, чтобы сбор можно было
    /// прервать без потери уже вынутых из очереди событий.
    pending: Vec<Queued>,
    flush_at: Option<Instant>,
    closing: bool,
    /// Больше не отдаём пакеты на запись (срок истёк или очередь кончилась).
    stopped: bool,
    /// Наибольший seq, записанный этим писателем.
    last_seq: i64,
    drained: usize,
    lost: usize,
    /// Сигнал «предыдущий пакет получил номера»: следующий ждёт его.
    reserve_chain: Option<oneshot::Receiver<()>>,
}

impl Worker {
    pub(super) fn new(
        store: Store,
        config: LoggerConfig,
        rx: mpsc::Receiver<Queued>,
        on_commit: Option<CommitHook>,
        cancel: CancellationToken,
        state: Arc<WriterState>,
        budget: Arc<ByteBudget>,
    ) -> Self {
        let reserve = store.is_postgres();
        let deadline = Arc::new(Deadline {
            at: Mutex::new(None),
            timeout: config.shutdown_timeout,
        });
        Self {
            writer: Writer {
                store,
                config,
                cancel,
                deadline,
                state,
                reserve,
            },
            rx,
            on_commit,
            budget,
            pending: Vec::new(),
            flush_at: None,
            closing: false,
            stopped: false,
            last_seq: 0,
            drained: 0,
            lost: 0,
            reserve_chain: None,
        }
    }

    pub(super) async fn run(mut self) -> ShutdownReport {
        self.last_seq = self.initial_seq().await;
        // SQLite пишет одним соединением: параллельные пакеты там ничего не дают.
        let max_in_flight = if self.writer.reserve {
            self.writer.config.max_in_flight.max(1)
        } else {
            1
        };
        let mut in_flight = FuturesOrdered::new();
        loop {
            metrics::gauge!(m::QUEUE_DEPTH).set((self.rx.len() + self.pending.len()) as f64);
            let can_submit = !self.stopped && in_flight.len() < max_in_flight;
            tokio::select! {
                biased;
                // Готовые пакеты — по порядку отдачи, то есть по порядку seq.
                Some(out) = in_flight.next(), if !in_flight.is_empty() => self.finish(out),
                // Следующий пакет собран (или очередь закрыта и пуста).
                ready = self.fill(), if can_submit => {
                    if ready {
                        let job = self.take_job();
                        let (tx, rx) = oneshot::channel();
                        let prev = self.reserve_chain.replace(rx);
                        in_flight.push_back(self.writer.clone().write(job, prev, tx));
                    } else {
                        self.stopped = true;
                    }
                }
                // Нечего ждать: всё записано и новых пакетов не будет.
                else => break,
            }
        }
        self.report()
    }

    /// Наибольший seq в базе при старте (с повторами, пока база недоступна).
    async fn initial_seq(&self) -> i64 {
        loop {
            match self.writer.store.max_seq().await {
                Ok(v) => return v,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the current seq; retrying.");
                    tokio::select! {
                        _ = sleep(Duration::from_millis(500)) => {}
                        _ = self.writer.cancel.cancelled() => return 0,
                    }
                }
            }
        }
    }

    fn begin_close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.rx.close();
            self.writer.deadline.start();
        }
    }

    /// Набирает `pending`. `true` — пакет готов (полон, истёк таймер первого
    /// события или идёт остановка); `false` — очередь закрыта и пуста.
    async fn fill(&mut self) -> bool {
        let size = self.writer.config.batch_size.max(1);
        loop {
            if self.pending.len() >= size {
                return true;
            }
            if self.closing {
                // Остановка: берём то, что уже в очереди, без ожидания таймера.
                if self.pending.is_empty() {
                    return self.rx.recv_many(&mut self.pending, size).await > 0;
                }
                while self.pending.len() < size {
                    match self.rx.try_recv() {
                        Ok(q) => self.pending.push(q),
                        Err(_) => break,
                    }
                }
                return true;
            }
            if self.pending.is_empty() {
                tokio::select! {
                    biased;
                    // Отмена: переходим к дописыванию.
                    _ = self.writer.cancel.cancelled() => self.begin_close(),
                    // Первое событие пакета запускает таймер добора.
                    n = self.rx.recv_many(&mut self.pending, size) => {
                        if n == 0 {
                            return false;
                        }
                        self.flush_at = Some(Instant::now() + self.writer.config.flush_interval);
                    }
                }
            } else {
                let want = size - self.pending.len();
                let flush_at = self.flush_at.unwrap_or_else(Instant::now);
                tokio::select! {
                    biased;
                    // Остановка: не ждём таймер.
                    _ = self.writer.cancel.cancelled() => self.begin_close(),
                    // Таймер первого события истёк — пишем, что есть.
                    _ = sleep_until(flush_at) => return true,
                    // Добираем сколько есть, но не больше размера пакета.
                    n = self.rx.recv_many(&mut self.pending, want) => if n == 0 { return true },
                }
            }
        }
    }

    fn take_job(&mut self) -> Job {
        let pending = std::mem::take(&mut self.pending);
        let bytes = pending.iter().map(|q| q.bytes).sum();
        let (events, acks) = pending.into_iter().map(|q| (q.event, q.ack)).unzip();
        self.flush_at = None;
        Job {
            events,
            acks,
            after_cancel: self.closing,
            bytes,
            floor: self.last_seq,
        }
    }

    /// Отмечает вставленное, будит читателя журнала и ожидающих, считает итоги пакета.
    fn finish(&mut self, mut out: Outcome) {
        // Пакет больше не в памяти очереди (записан или потерян при остановке).
        self.budget.give_back(out.job.bytes);
        let events = &out.job.events;
        if !out.inserted.is_empty() {
            // Повтор id внутри пакета: база вставила первое вхождение.
            let index: std::collections::HashMap<Uuid, usize> =
                events.iter().enumerate().rev().map(|(i, e)| (e.id, i)).collect();
            for row in &out.inserted {
                if let Some(&i) = index.get(&row.id) {
                    out.done[i] = Done::Inserted;
                }
                self.last_seq = self.last_seq.max(row.seq);
            }
            metrics::counter!(m::EVENTS_WRITTEN).increment(out.inserted.len() as u64);
            if let Some(hook) = &self.on_commit {
                hook(out.inserted.len());
            }
        }
        let unwritten: HashSet<usize> = out.unwritten.iter().copied().collect();
        let mut written = 0;
        for (i, (ack, d)) in std::mem::take(&mut out.job.acks)
            .into_iter()
            .zip(out.done)
            .enumerate()
        {
            if unwritten.contains(&i) {
                // Не записано до срока: группа ожидания не завершится, и ждущий
                // получит CommitError::Lost, когда последняя ссылка пропадёт.
                continue;
            }
            written += 1;
            if let Some(a) = ack {
                a.complete(d);
            }
        }
        if out.job.after_cancel {
            self.drained += written;
        }
        if !unwritten.is_empty() {
            self.lost += unwritten.len();
            self.stopped = true;
        }
    }

    /// Итог остановки; всё, что не записано, — на уровне ERROR (потеря данных).
    fn report(mut self) -> ShutdownReport {
        self.rx.close();
        self.lost += self.pending.len();
        self.budget.give_back(self.pending.iter().map(|q| q.bytes).sum());
        while let Ok(q) = self.rx.try_recv() {
            self.budget.give_back(q.bytes);
            self.lost += 1;
        }
        metrics::gauge!(m::QUEUE_DEPTH).set(0.0);
        if self.lost > 0 {
            metrics::counter!(m::EVENTS_DROPPED).increment(self.lost as u64);
            tracing::error!(
                lost = self.lost,
                drained = self.drained,
                "Shutdown deadline passed; queued events were not written."
            );
        }
        ShutdownReport {
            drained: self.drained,
            lost: self.lost,
        }
    }
}

impl Writer {
    /// Записывает пакет: номера seq (PostgreSQL), затем вставка с повторами
    /// временных ошибок; при отказе базы принять строку пакет делится пополам,
    /// пока отвергнутая строка не останется одна, и она уходит в таблицу отказов.
    async fn write(
        self,
        job: Job,
        prev: Option<oneshot::Receiver<()>>,
        reserved_tx: oneshot::Sender<()>,
    ) -> Outcome {
        let n = job.events.len();
        let mut out = Outcome {
            inserted: Vec::with_capacity(n),
            done: vec![Done::Duplicate; n],
            unwritten: Vec::new(),
            job,
        };
        let seqs = if self.reserve {
            // Номера берутся строго по очереди пакетов.
            if let Some(prev) = prev {
                let _ = prev.await;
            }
            match self.reserve(n).await {
                Ok(s) => Some(s),
                Err(DeadlineHit) => {
                    out.unwritten = (0..n).collect();
                    return out;
                }
            }
        } else {
            None
        };
        let _ = reserved_tx.send(());
        let events = &out.job.events;
        // Стек диапазонов вместо рекурсии: правую половину кладём первой, чтобы
        // левая писалась раньше.
        let mut stack: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        stack.push(0..n);
        while let Some(range) = stack.pop() {
            let slice = &events[range.clone()];
            let slice_seqs = seqs.as_deref().map(|s| &s[range.clone()]);
            match self.insert_retrying(slice, slice_seqs, out.job.floor).await {
                Ok(Ok(rows)) => out.inserted.extend(rows),
                Ok(Err(err)) if slice.len() == 1 => match self.reject(&slice[0], &err.to_string()).await {
                    Ok(()) => out.done[range.start] = Done::Rejected,
                    Err(DeadlineHit) => out.unwritten.push(range.start),
                },
                Ok(Err(_)) => {
                    let mid = range.start + slice.len() / 2;
                    stack.push(mid..range.end);
                    stack.push(range.start..mid);
                }
                Err(DeadlineHit) => {
                    // Уже записанные части пакета публикуются; остальное — потеря.
                    out.unwritten.extend(range);
                    for r in stack.drain(..) {
                        out.unwritten.extend(r);
                    }
                }
            }
        }
        self.reject_foreign_ids(&mut out).await;
        out
    }

    /// Среди событий, которые база сочла повторами, находит те, чей id занят
    /// строкой другого проекта или пользователя (гонка с проверкой в API или
    /// `log_event`), и переносит их в таблицу отказов с причиной.
    async fn reject_foreign_ids(&self, out: &mut Outcome) {
        // Вставленным считается первое вхождение id в пакете (как в `finish`); все
        // остальные вхождения — повторы, в том числе от другого запроса в том же
        // пакете, и их владельца надо сверить со строкой в базе.
        let inserted: HashSet<Uuid> = out.inserted.iter().map(|r| r.id).collect();
        let mut first_seen: HashSet<Uuid> = HashSet::with_capacity(inserted.len());
        let unwritten: HashSet<usize> = out.unwritten.iter().copied().collect();
        let candidates: Vec<usize> = (0..out.job.events.len())
            .filter(|i| {
                let id = out.job.events[*i].id;
                if inserted.contains(&id) && first_seen.insert(id) {
                    return false;
                }
                out.done[*i] == Done::Duplicate && !unwritten.contains(i)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let claims: Vec<RowOwner> = candidates
            .iter()
            .map(|&i| RowOwner::of(&out.job.events[i]))
            .collect();
        let mut attempt = 0;
        let foreign = loop {
            match self.store.foreign_ids(&claims).await {
                Ok(f) => break f,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot check the owners of duplicate ids; retrying.");
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    attempt += 1;
                    if self.wait(delay).await.is_err() {
                        // Срок остановки: считаем повторами, как до проверки.
                        return;
                    }
                }
            }
        };
        for k in foreign {
            let i = candidates[k];
            metrics::counter!(m::EVENTS_ID_CONFLICTS).increment(1);
            match self.reject(&out.job.events[i], ID_CONFLICT_REASON).await {
                Ok(()) => out.done[i] = Done::Conflict,
                Err(DeadlineHit) => out.unwritten.push(i),
            }
        }
    }

    /// Номера seq для пакета, с повторами.
    async fn reserve(&self, n: usize) -> Result<Vec<i64>, DeadlineHit> {
        let mut attempt = 0;
        // Повторы выдачи номеров — тоже «писатель застрял» для /readyz.
        let mut failing = Failing::new(&self.state);
        loop {
            match self.store.reserve_seqs(n).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    failing.mark();
                    metrics::counter!(m::INSERT_ERRORS).increment(1);
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    tracing::warn!(error = %e, attempt, "Cannot reserve seq numbers; retrying.");
                    attempt = attempt.saturating_add(1);
                    self.wait(delay).await?;
                }
            }
        }
    }

    /// Одна вставка с повторами временных ошибок. Внешний `Err` — срок остановки
    /// истёк; внутренний — база отвергла данные строки.
    async fn insert_retrying(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
        floor: i64,
    ) -> Result<Result<Vec<InsertedRow>, StorageError>, DeadlineHit> {
        let mut attempt: u32 = 0;
        // Отметка для /readyz снимается, когда эта вставка закончится (успехом или нет).
        let mut failing = Failing::new(&self.state);
        loop {
            // Во время остановки одна попытка не может пережить срок.
            let mut limit = self.config.insert_timeout;
            if let Some(d) = self.writer_deadline() {
                limit = limit.min(d.saturating_duration_since(Instant::now()));
            }
            let started = std::time::Instant::now();
            let result = match timeout(limit, self.store.insert_batch(events, seqs)).await {
                Ok(r) => r,
                Err(_) => Err(StorageError::Sqlx(sqlx::Error::PoolTimedOut)),
            };
            metrics::histogram!(m::BATCH_INSERT_DURATION).record(started.elapsed().as_secs_f64());
            match result {
                Ok(mut rows) => {
                    if attempt > 0 {
                        // Прошлая попытка могла зафиксироваться, а ответ потеряться:
                        // такие строки уже в базе, RETURNING их не вернул.
                        let recovered = self.recover_ambiguous(events, seqs, floor, &rows).await?;
                        rows.extend(recovered);
                    }
                    return Ok(Ok(rows));
                }
                Err(e) if e.is_row_rejection() => {
                    metrics::counter!(m::INSERT_ERRORS).increment(1);
                    return Ok(Err(e));
                }
                Err(e) => {
                    metrics::counter!(m::INSERT_ERRORS).increment(1);
                    failing.mark();
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, rows = events.len(), "Batch insert failed; retrying.");
                    metrics::counter!(m::INSERT_RETRIES).increment(1);
                    attempt = attempt.saturating_add(1);
                    self.wait(delay).await?;
                }
            }
        }
    }

    fn writer_deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Ждёт `delay`, но не дольше срока остановки.
    async fn wait(&self, delay: Duration) -> Result<(), DeadlineHit> {
        if self.deadline.get().is_none() {
            tokio::select! {
                _ = sleep(delay) => return Ok(()),
                // Отмена во время ожидания: с этого момента идёт срок дописывания.
                _ = self.cancel.cancelled() => { self.deadline.start(); }
            }
        }
        let deadline = self.deadline.start();
        if Instant::now() + delay >= deadline {
            sleep_until(deadline).await;
            return Err(DeadlineHit);
        }
        sleep(delay).await;
        Ok(())
    }

    /// Находит строки пакета, которые уже в базе и принадлежат этой записи: с
    /// номером из выданных пакету (или, без выдачи, выше опубликованного до пакета).
    async fn recover_ambiguous(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
        floor: i64,
        got: &[InsertedRow],
    ) -> Result<Vec<InsertedRow>, DeadlineHit> {
        let seen: HashSet<Uuid> = got.iter().map(|r| r.id).collect();
        let missing: Vec<Uuid> = events
            .iter()
            .map(|e| e.id)
            .filter(|id| !seen.contains(id))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let mine = |seq: i64| match seqs {
            Some(s) => s.binary_search(&seq).is_ok(),
            None => seq > floor,
        };
        let mut attempt = 0;
        loop {
            match self.store.seqs_of(&missing).await {
                Ok(rows) => return Ok(rows.into_iter().filter(|r| mine(r.seq)).collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot check for rows committed by a failed attempt; retrying.");
                    let delay = backoff(self.config.retry_base, self.config.retry_cap, attempt);
                    attempt += 1;
                    self.wait(delay).await?;
                }
            }
        }
    }

    /// Переносит событие в таблицу отказов (с повторами временных ошибок).
    async fn reject(&self, event: &NewEvent, text: &str) -> Result<(), DeadlineHit> {
        let mut attempt = 0;
        loop {
            match self.store.insert_rejected(event, text).await {
                Ok(()) => {
                    metrics::counter!(m::EVENTS_REJECTED).increment(1);
                    tracing::warn!(event_id = %event.id, error = %text, "Event rejected by the database; moved to event_logs_rejected.");
                    return Ok(());
                }
                Err(e) if !e.is_row_rejection() => {
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
