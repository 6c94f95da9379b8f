//! Ожидание фиксации пакета: группа считает события, которые ещё не записаны,
//! и будит ждущего, когда счётчик дошёл до нуля.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;
use tokio::sync::oneshot;

/// Итог фиксации пакета.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Вставлено новых строк.
    pub inserted: usize,
    /// Уже были в базе (повторная отправка того же id).
    pub duplicates: usize,
    /// Отвергнуты базой и перенесены в `event_logs_rejected`.
    pub rejected: usize,
    /// Не записаны: их id уже занят строкой другого проекта или пользователя;
    /// перенесены в `event_logs_rejected` (метрика `eventlog_events_id_conflicts_total`).
    pub conflicts: usize,
}

/// Фиксация не дождалась ответа.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CommitError {
    /// Писатель остановился, не записав часть событий (срок остановки истёк).
    #[error("the writer stopped before these events were committed")]
    Lost,
}

/// Ждёт фиксации всех событий пакета.
#[derive(Debug)]
pub struct CommitWaiter {
    rx: oneshot::Receiver<CommitOutcome>,
}

impl CommitWaiter {
    /// Дожидается фиксации.
    pub async fn wait(self) -> Result<CommitOutcome, CommitError> {
        self.rx.await.map_err(|_| CommitError::Lost)
    }
}

/// Группа событий одного пакета. Держится каждым событием пакета в очереди;
/// если писатель бросит события (остановка по сроку), отправитель пропадёт
/// вместе с последней ссылкой, и ждущий получит [`CommitError::Lost`].
pub(crate) struct AckGroup {
    remaining: AtomicUsize,
    inserted: AtomicUsize,
    duplicates: AtomicUsize,
    rejected: AtomicUsize,
    conflicts: AtomicUsize,
    tx: Mutex<Option<oneshot::Sender<CommitOutcome>>>,
    /// Что держится, пока события пакета в очереди или пишутся (например, доля
    /// очереди вызывающего); освобождается вместе с последней ссылкой на группу.
    _hold: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for AckGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckGroup")
            .field("remaining", &self.remaining.load(Ordering::Relaxed))
            .finish()
    }
}

/// Чем закончилось одно событие.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    Inserted,
    Duplicate,
    Rejected,
    /// id занят чужой строкой; событие — в таблице отказов.
    Conflict,
}

impl AckGroup {
    pub(crate) fn new(n: usize, hold: Option<Box<dyn Send + Sync>>) -> (Arc<Self>, CommitWaiter) {
        let (tx, rx) = oneshot::channel();
        let group = Arc::new(Self {
            remaining: AtomicUsize::new(n),
            inserted: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
            tx: Mutex::new(Some(tx)),
            _hold: hold,
        });
        if n == 0 {
            group.finish();
        }
        (group, CommitWaiter { rx })
    }

    /// Отмечает одно событие; последнее будит ждущего.
    pub(crate) fn complete(&self, done: Done) {
        let counter = match done {
            Done::Inserted => &self.inserted,
            Done::Duplicate => &self.duplicates,
            Done::Rejected => &self.rejected,
            Done::Conflict => &self.conflicts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let outcome = CommitOutcome {
            inserted: self.inserted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(outcome);
        }
    }
}
