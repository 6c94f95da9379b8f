//! [`StreamManager`]: единственный путь, которым события попадают в базу и к
//! живым подписчикам.
//!
//! `broadcast_event(s)` отдаёт события [`EventLogger`] без блокировки. Когда
//! писатель зафиксировал пакет, крюк фиксации кладёт вставленные события (с `seq`)
//! в канал `tokio::sync::broadcast` — подписчик никогда не увидит события, которого
//! не найдёт запрос. [`StreamManager::subscribe`] отдаёт сначала сохранённые события
//! после `after_seq`, затем живые, без пропусков и повторов на стыке.
//!
//! Зависит от `logger`, `storage` (повтор), `query` (фильтр и область).

use std::sync::Arc;

use futures::Stream;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::logger::{
    BatchError, CommitHook, CommitWaiter, EventLogger, LogError, LoggerConfig, ShutdownReport,
};
use crate::metrics as m;
use crate::model::{Event, NewEvent};
use crate::query::{EventFilter, ReadScope};
use crate::storage::{StorageError, Store};

/// Ёмкость живого буфера по умолчанию (событий). Подписчик, отставший больше чем
/// на столько событий, получает LAGGED и может продолжить с `afterSeq`.
pub const DEFAULT_LIVE_CAPACITY: usize = 16_384;

/// Сколько событий читается за один запрос повтора.
const REPLAY_PAGE: usize = 500;

/// Ошибка подписки.
#[derive(Debug, Error)]
pub enum StreamError {
    /// Подписчик отстал от живого буфера; `last_seq` — последний отданный ему seq,
    /// с него можно продолжить.
    #[error("subscriber fell behind by {skipped} events; resume with afterSeq {last_seq}")]
    Lagged {
        /// Сколько событий пропущено в буфере.
        skipped: u64,
        /// Последний доставленный seq.
        last_seq: i64,
    },
    /// Ошибка чтения при повторе.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Дешёвый `Clone`-дескриптор.
#[derive(Clone)]
pub struct StreamManager {
    inner: Arc<Inner>,
}

struct Inner {
    logger: EventLogger,
    /// Отправитель живых событий; его держит и крюк фиксации писателя.
    /// Получатели создаются в `subscribe` и живут, пока жив поток подписки.
    live: broadcast::Sender<Arc<Event>>,
    store: Store,
}

impl std::fmt::Debug for StreamManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamManager")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl StreamManager {
    /// Запускает писателя и живой канал.
    pub fn start(store: Store, config: LoggerConfig, live_capacity: usize) -> Self {
        let (live, _) = broadcast::channel(live_capacity.max(1));
        let sender = live.clone();
        let hook: CommitHook = Arc::new(move |events: &[Arc<Event>]| {
            for e in events {
                // Нет подписчиков — не ошибка: событие уже в базе.
                let _ = sender.send(e.clone());
            }
        });
        let logger = EventLogger::start(store.clone(), config, Some(hook));
        Self {
            inner: Arc::new(Inner { logger, live, store }),
        }
    }

    /// Отдаёт событие писателю, не блокируясь.
    pub fn broadcast_event(&self, event: NewEvent) -> Result<(), LogError> {
        self.inner.logger.log_event(event)
    }

    /// Отдаёт пакет «всё или ничего»; ожидатель дождётся фиксации.
    pub fn broadcast_events(&self, events: Vec<NewEvent>) -> Result<CommitWaiter, BatchError> {
        self.inner.logger.log_batch(events)
    }

    /// Логгер (метрики очереди, здоровье писателя).
    pub fn logger(&self) -> &EventLogger {
        &self.inner.logger
    }

    /// Хранилище, из которого идёт повтор.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Сколько сейчас живых подписчиков.
    pub fn subscriber_count(&self) -> usize {
        self.inner.live.receiver_count()
    }

    /// Останавливает писателя, дописывая очередь.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.logger.shutdown().await
    }

    /// Подписка на события области `scope` под фильтром `filter`.
    ///
    /// С `after_seq` сначала отдаются сохранённые события с `seq > after_seq`
    /// по возрастанию seq, затем живые; без `after_seq` — только живые (с текущего
    /// водяного знака). Каждое событие отдаётся один раз, в порядке seq. Если живой
    /// буфер переполнился, пока подписка читала историю из базы, она дочитывает
    /// пропущенное из базы сама (иначе при постоянном потоке событий длинный повтор
    /// никогда бы не догнал живые); отставание живого подписчика —
    /// [`StreamError::Lagged`] с последним отданным seq, после чего поток заканчивается.
    pub fn subscribe(
        &self,
        scope: ReadScope,
        filter: EventFilter,
        after_seq: Option<i64>,
    ) -> impl Stream<Item = Result<Arc<Event>, StreamError>> + Send + use<> {
        // Получатель создаётся до чтения водяного знака W: всё, что опубликовано после
        // этого момента, окажется в нём; всё с seq <= W уже в базе и найдётся повтором.
        // Стык сшивается по seq: писатель публикует строго по возрастанию seq.
        let mut rx = self.inner.live.subscribe();
        let mut published = self.inner.logger.published_seq();
        // Водяной знак читается сразу, а не при первом опросе потока: события,
        // опубликованные между вызовом и первым опросом, уже в `rx` и не должны
        // отсечься по seq.
        let at_call = published.borrow().current;
        let store = self.inner.store.clone();
        let gauge = SubscriberGauge::new();
        async_stream::stream! {
            let _gauge = gauge;
            let start = if at_call >= 0 {
                at_call
            } else {
                // Писатель ещё не начал: всё, что он опубликует, выше `initial` и
                // попадёт в `rx`, поэтому живые начинаются именно с `initial`.
                match published.wait_for(|w| w.initial >= 0).await {
                    Ok(w) => w.initial,
                    Err(_) => return,
                }
            };
            let mut last = after_seq.unwrap_or(start);
            let mut replay = after_seq.is_some();
            let mut recoveries = 0;
            loop {
                let replayed = replay;
                if replay {
                    let upto = published.borrow().current;
                    loop {
                        let page = match store.events_after_seq(&scope, &filter, last, upto, REPLAY_PAGE).await {
                            Ok(p) => p,
                            Err(e) => { yield Err(StreamError::Storage(e)); return; }
                        };
                        let n = page.len();
                        for e in page {
                            last = e.seq;
                            yield Ok(Arc::new(e));
                        }
                        if n < REPLAY_PAGE { break; }
                    }
                    last = last.max(upto);
                }
                let mut caught_up = false;
                let lagged = loop {
                    match rx.recv().await {
                        Ok(e) => {
                            caught_up = true;
                            // Изоляция и фильтр — до того, как событие уйдёт подписчику.
                            if e.seq > last && scope.matches(&e) && filter.matches(&e) {
                                last = e.seq;
                                yield Ok(e);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(skipped)) => break skipped,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                };
                // Буфер переполнился, пока догоняли историю: пропущенное уже в базе
                // (оно опубликовано), дочитываем его повтором.
                if replayed && !caught_up && recoveries < MAX_RECOVERIES {
                    recoveries += 1;
                    replay = true;
                    continue;
                }
                yield Err(StreamError::Lagged { skipped: lagged, last_seq: last });
                return;
            }
        }
    }
}

/// Сколько раз подписка сама дочитывает из базы пропущенное при переполнении
/// буфера во время догоняния истории.
const MAX_RECOVERIES: u32 = 8;

/// Считает подписчиков в метрике `eventlog_subscribers`, пока жив поток.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!(m::SUBSCRIBERS).increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::SUBSCRIBERS).decrement(1.0);
    }
}
