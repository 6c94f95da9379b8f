//! Живой буфер процесса: кольцо последних событий журнала, ограниченное и
//! числом событий (`EVENTLOG_LIVE_BUFFER`), и байтами (`EVENTLOG_LIVE_BUFFER_BYTES`).
//!
//! Пишет один читатель журнала; каждая подписка держит свой курсор (номер
//! следующей записи). Старые записи вытесняются, как только превышен любой из
//! пределов, — память буфера не зависит от того, сколько подписчиков отстало и
//! насколько велики события. Подписчик, чья следующая запись уже вытеснена,
//! получает [`RecvError::Lagged`] (как у `tokio::sync::broadcast`, но с пределом
//! в байтах, которого у broadcast нет).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::Live;

/// Почему приём не удался.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvError {
    /// Пропущено столько записей: они вытеснены раньше, чем подписчик их прочёл.
    Lagged(u64),
    /// Буфер закрыт (процесс останавливается).
    Closed,
}

struct Ring {
    entries: VecDeque<(Live, usize)>,
    /// Номер записи `entries[0]`.
    first: u64,
    bytes: usize,
    closed: bool,
}

/// Кольцо с пределами по числу и байтам.
pub(crate) struct LiveRing {
    ring: Mutex<Ring>,
    /// Будит ждущих подписчиков после каждой порции записей.
    notify: Notify,
    max_entries: usize,
    max_bytes: usize,
    receivers: AtomicUsize,
}

impl LiveRing {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                first: 0,
                bytes: 0,
                closed: false,
            }),
            notify: Notify::new(),
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            receivers: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Добавляет порцию записей и будит подписчиков.
    pub(crate) fn push_all(&self, items: impl IntoIterator<Item = Live>) {
        {
            let mut r = self.lock();
            for item in items {
                let size = item.1.approx_bytes();
                r.entries.push_back((item, size));
                r.bytes += size;
                // Вытесняем старое, пока превышен любой предел (последняя запись
                // остаётся всегда, даже если одна больше предела байт).
                while r.entries.len() > 1 && (r.entries.len() > self.max_entries || r.bytes > self.max_bytes)
                {
                    if let Some((_, s)) = r.entries.pop_front() {
                        r.bytes -= s;
                        r.first += 1;
                    }
                }
            }
        }
        self.notify.notify_waiters();
    }

    /// Закрывает буфер: подписчики дочитают то, что в нём, и получат `Closed`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Новый приёмник: получит записи, добавленные после этого вызова.
    pub(crate) fn subscribe(self: &Arc<Self>) -> LiveReceiver {
        let r = self.lock();
        self.receivers.fetch_add(1, Ordering::Relaxed);
        LiveReceiver {
            ring: self.clone(),
            next: r.first + r.entries.len() as u64,
        }
    }

    /// Сколько сейчас приёмников.
    pub(crate) fn receiver_count(&self) -> usize {
        self.receivers.load(Ordering::Relaxed)
    }

    /// Сколько байт занимают записи буфера (для тестов и метрик).
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Курсор подписки в кольце.
pub(crate) struct LiveReceiver {
    ring: Arc<LiveRing>,
    next: u64,
}

impl LiveReceiver {
    /// Следующая запись; ждёт, если новых нет.
    pub(crate) async fn recv(&mut self) -> Result<Live, RecvError> {
        loop {
            // Подписка на пробуждение — до проверки, чтобы не потерять его между
            // проверкой и ожиданием.
            let notified = self.ring.notify.notified();
            {
                let r = self.ring.lock();
                if self.next < r.first {
                    let skipped = r.first - self.next;
                    self.next = r.first;
                    return Err(RecvError::Lagged(skipped));
                }
                let idx = (self.next - r.first) as usize;
                if let Some((item, _)) = r.entries.get(idx) {
                    self.next += 1;
                    return Ok(item.clone());
                }
                if r.closed {
                    return Err(RecvError::Closed);
                }
            }
            notified.await;
        }
    }
}

impl Drop for LiveReceiver {
    fn drop(&mut self) {
        self.ring.receivers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventType, NewEvent};
    use crate::storage::LogPosition;
    use uuid::Uuid;

    fn entry(i: i64, payload_bytes: usize) -> Live {
        let e = NewEvent::new(Uuid::now_v7(), "u", Uuid::now_v7(), EventType::TaskProgress)
            .payload(serde_json::json!({"x": "y".repeat(payload_bytes)}))
            .into_event(i);
        (LogPosition { commit: i, seq: i }, Arc::new(e))
    }

    #[tokio::test]
    async fn the_buffer_stays_within_its_byte_limit_and_a_slow_reader_is_told_it_lagged() {
        // Arrange: предел 64 КиБ и 10 000 событий по числу — держит байтовый предел.
        let ring = LiveRing::new(10_000, 64 * 1024);
        let mut slow = ring.subscribe();
        // Act: 100 событий по ~4 КиБ.
        ring.push_all((1..=100).map(|i| entry(i, 4096)));
        // Assert
        assert!(ring.bytes() <= 64 * 1024, "buffer holds {} bytes", ring.bytes());
        match slow.recv().await {
            Err(RecvError::Lagged(n)) => assert!(n > 80, "skipped {n}"),
            other => panic!("expected Lagged, got {other:?}"),
        }
        // После LAGGED читатель продолжает с самого старого сохранённого события.
        let next = slow.recv().await.unwrap();
        assert!(next.0.seq > 80);
    }

    #[tokio::test]
    async fn a_receiver_sees_everything_pushed_after_it_subscribed_in_order() {
        let ring = LiveRing::new(16, 1 << 20);
        ring.push_all((1..=3).map(|i| entry(i, 10)));
        let mut rx = ring.subscribe();
        ring.push_all((4..=6).map(|i| entry(i, 10)));
        for want in 4..=6 {
            assert_eq!(rx.recv().await.unwrap().0.seq, want);
        }
        ring.close();
        assert_eq!(rx.recv().await.unwrap_err(), RecvError::Closed);
        assert_eq!(ring.receiver_count(), 1);
        drop(rx);
        assert_eq!(ring.receiver_count(), 0);
    }
}
