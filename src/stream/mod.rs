//! [`StreamManager`]: единственный путь, которым события попадают в базу и к
//! живым подписчикам.
//!
//! `broadcast_event(s)` отдаёт события [`EventLogger`] без блокировки. Живые
//! события идут не из памяти писателя, а из журнала базы ([`tailer`]): один
//! читатель на процесс следует журналу и раздаёт каждое зафиксированное событие
//! — кто бы его ни записал — в канал `tokio::sync::broadcast`. Поэтому подписчик
//! никогда не увидит события, которого не найдёт запрос, а все экземпляры и
//! процессы на одной базе отдают одно и то же в одном порядке журнала.
//! [`StreamManager::subscribe`] отдаёт сначала сохранённые события после
//! позиции `afterSeq`, затем живые, без пропусков и повторов на стыке.
//!
//! Зависит от `logger`, `storage` (журнал), `query` (фильтр и область),
//! `redis_link` (пробуждение других экземпляров).

mod live;
mod tailer;
mod wakeup;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use live::{LiveReceiver, LiveRing, RecvError};
pub use tailer::TailState;
use tailer::{TailHealth, Tailer};

use crate::logger::{
    BatchError, CommitHook, CommitWaiter, EventLogger, LogError, LoggerConfig, ShutdownReport,
};
use crate::metrics as m;
use crate::model::{Event, NewEvent};
use crate::query::{EventFilter, ReadScope};
use crate::redis_link::RedisLink;
use crate::storage::{LogPosition, StorageError, Store};

/// Элемент живого канала: позиция в журнале и событие.
pub(crate) type Live = (LogPosition, Arc<Event>);

/// Ёмкость живого буфера по умолчанию (событий). Подписчик, отставший больше чем
/// на столько событий, получает LAGGED и может продолжить с `afterSeq`.
pub const DEFAULT_LIVE_CAPACITY: usize = 16_384;

/// Предел живого буфера по умолчанию в байтах (оценка памяти событий).
pub const DEFAULT_LIVE_BYTES: usize = 64 * 1024 * 1024;

/// Интервал опроса журнала по умолчанию: столько в худшем случае ждёт событие
/// другого процесса, если уведомление о нём потерялось или их нет.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Сколько событий читается за один запрос повтора.
const REPLAY_PAGE: usize = 500;

/// Ошибка подписки.
#[derive(Debug, Error)]
pub enum StreamError {
    /// Подписчик отстал от живого буфера; `last_seq` — seq последнего
    /// просмотренного события, с него можно продолжить.
    #[error("subscriber fell behind by {skipped} events; resume with afterSeq {last_seq}")]
    Lagged {
        /// Сколько событий пропущено в буфере.
        skipped: u64,
        /// Позиция продолжения (seq события журнала).
        last_seq: i64,
    },
    /// `afterSeq` не называет зафиксированного события, и позицию продолжения
    /// определить нельзя: клиент должен подписаться заново.
    #[error(
        "afterSeq {0} does not name a committed event whose position is known (it may have been purged); \
         resubscribe without afterSeq, or with afterSeq \"0\" to replay everything retained"
    )]
    UnknownSeq(i64),
    /// Ошибка чтения при повторе.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Как процесс следит за журналом.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Ёмкость живого буфера, событий.
    pub live_capacity: usize,
    /// Предел живого буфера, байт.
    pub live_bytes: usize,
    /// Интервал опроса журнала.
    pub poll_interval: Duration,
    /// Слушать `NOTIFY eventlog_log` (PostgreSQL).
    pub listen_notify: bool,
    /// Redis: публиковать свои фиксации и слушать чужие.
    pub redis: Option<RedisLink>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            live_capacity: DEFAULT_LIVE_CAPACITY,
            live_bytes: DEFAULT_LIVE_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            listen_notify: true,
            redis: None,
        }
    }
}

/// Дешёвый `Clone`-дескриптор.
#[derive(Clone)]
pub struct StreamManager {
    inner: Arc<Inner>,
}

struct Inner {
    logger: EventLogger,
    store: Store,
    config: StreamConfig,
    /// Живой буфер: пишет читатель журнала, курсоры создаются в `subscribe` и
    /// живут, пока жив поток подписки.
    live: Arc<LiveRing>,
    /// Водяной знак читателя журнала; отправитель — у читателя.
    tail: watch::Receiver<TailState>,
    tail_tx: watch::Sender<TailState>,
    health: Arc<TailHealth>,
    /// Будит читателя: крюк фиксации писателя и слушатели уведомлений.
    wake: Arc<Notify>,
    /// Читатель журнала запускается один раз — при старте сервера или первой подписке.
    started: OnceLock<()>,
    /// Останавливает читателя и слушателей.
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for StreamManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamManager")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl StreamManager {
    /// Запускает писателя; живой канал ёмкостью `live_capacity`, остальное по умолчанию.
    pub fn start(store: Store, config: LoggerConfig, live_capacity: usize) -> Self {
        Self::start_with(
            store,
            config,
            StreamConfig {
                live_capacity,
                ..StreamConfig::default()
            },
        )
    }

    /// Запускает писателя и читателя журнала с настройками слежения за журналом.
    pub fn start_with(store: Store, config: LoggerConfig, stream: StreamConfig) -> Self {
        let live = LiveRing::new(stream.live_capacity, stream.live_bytes);
        let (tail_tx, tail) = watch::channel(TailState {
            position: LogPosition::START,
            ready: false,
        });
        let wake = Arc::new(Notify::new());
        let redis_signal = stream.redis.clone().map(|link| {
            // Ёмкость 1: сигналы сливаются, писатель никогда не ждёт Redis.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(wakeup::publish_redis(link, rx));
            tx
        });
        let hook: CommitHook = {
            let wake = wake.clone();
            Arc::new(move |_rows: usize| {
                // Своя фиксация: свой читатель просыпается сразу, чужие — через
                // NOTIFY (шлёт триггер) и Redis.
                wake.notify_one();
                if let Some(tx) = &redis_signal {
                    let _ = tx.try_send(());
                }
            })
        };
        let logger = EventLogger::start(store.clone(), config, Some(hook));
        let this = Self {
            inner: Arc::new(Inner {
                logger,
                store,
                config: stream,
                live,
                tail,
                tail_tx,
                health: Arc::new(TailHealth::default()),
                wake,
                started: OnceLock::new(),
                cancel: CancellationToken::new(),
            }),
        };
        // Читатель стартует сразу: живые подписки начинаются с его водяного знака,
        // и чем раньше он прочитал голову, тем точнее «с момента подписки».
        this.follow_log();
        this
    }

    /// Запускает читателя журнала и слушателей уведомлений (один раз; повторный
    /// вызов ничего не делает).
    pub fn follow_log(&self) {
        self.inner.started.get_or_init(|| {
            let inner = &self.inner;
            let tailer = Tailer {
                store: inner.store.clone(),
                live: inner.live.clone(),
                state: inner.tail_tx.clone(),
                health: inner.health.clone(),
                wake: inner.wake.clone(),
                poll_interval: inner.config.poll_interval,
                cancel: inner.cancel.clone(),
            };
            tokio::spawn(tailer.run());
            if inner.config.listen_notify && inner.store.is_postgres() {
                tokio::spawn(wakeup::listen_postgres(
                    inner.store.clone(),
                    inner.wake.clone(),
                    inner.cancel.clone(),
                ));
            }
            if let Some(link) = &inner.config.redis {
                tokio::spawn(wakeup::listen_redis(
                    link.clone(),
                    inner.wake.clone(),
                    inner.cancel.clone(),
                ));
            }
        });
    }

    /// Отдаёт событие писателю, не блокируясь.
    pub fn broadcast_event(&self, event: NewEvent) -> Result<(), LogError> {
        self.inner.logger.log_event(event)
    }

    /// Отдаёт пакет «всё или ничего»; ожидатель дождётся фиксации.
    pub fn broadcast_events(&self, events: Vec<NewEvent>) -> Result<CommitWaiter, BatchError> {
        self.inner.logger.log_batch(events)
    }

    /// Как [`StreamManager::broadcast_events`], но `hold` держится, пока пакет в
    /// очереди или пишется (см. [`EventLogger::log_batch_holding`]).
    pub fn broadcast_events_holding(
        &self,
        events: Vec<NewEvent>,
        hold: Box<dyn Send + Sync>,
    ) -> Result<CommitWaiter, BatchError> {
        self.inner.logger.log_batch_holding(events, Some(hold))
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

    /// Сколько байт сейчас занимает живой буфер (оценка).
    pub fn live_buffer_bytes(&self) -> usize {
        self.inner.live.bytes()
    }

    /// Водяной знак читателя журнала.
    pub fn tail_state(&self) -> TailState {
        *self.inner.tail.borrow()
    }

    /// Читатель журнала работает: читал журнал не позже `limit` назад и сейчас не
    /// застрял на ошибках дольше `limit`.
    pub fn is_following(&self, limit: Duration) -> bool {
        let now = Utc::now().timestamp_millis();
        let limit = limit.as_millis() as i64;
        let failing = self.inner.health.failing_since_ms.load(Ordering::Relaxed);
        let last_ok = self.inner.health.last_ok_ms.load(Ordering::Relaxed);
        self.tail_state().ready && (failing == 0 || now - failing < limit) && now - last_ok < limit.max(1)
    }

    /// Ждёт, пока читатель журнала разошлёт всё, что зафиксировано в базе на
    /// момент вызова (голову журнала читает из базы). Возвращает эту голову.
    pub async fn sync_to_head(&self) -> Result<LogPosition, StreamError> {
        self.follow_log();
        let head = self.inner.store.log_head().await?;
        let mut tail = self.inner.tail.clone();
        if tail.borrow().ready && tail.borrow().position >= head {
            return Ok(head);
        }
        self.inner.wake.notify_one();
        // Отправитель живёт, пока жив `Inner`, то есть пока жив `self`.
        let _ = tail.wait_for(|s| s.ready && s.position >= head).await;
        Ok(head)
    }

    /// Останавливает писателя, дописывая очередь, и читателя журнала.
    pub async fn shutdown(&self) -> ShutdownReport {
        let report = self.inner.logger.shutdown().await;
        self.inner.cancel.cancel();
        report
    }

    /// Позиция продолжения для `afterSeq`: позиция события с этим seq (даже
    /// удалённого очисткой или невидимого вызывающему). Ошибка — если позицию
    /// определить нельзя.
    pub async fn resume_position(&self, after_seq: i64) -> Result<LogPosition, StreamError> {
        self.inner
            .store
            .position_of_seq(after_seq)
            .await?
            .ok_or(StreamError::UnknownSeq(after_seq))
    }

    /// Подписка на события области `scope` под фильтром `filter`.
    ///
    /// С `after_seq` сначала отдаются сохранённые события после позиции события с
    /// этим seq (`0` — с начала журнала) в порядке журнала, затем живые; без
    /// `after_seq` — только живые (с текущего водяного знака читателя журнала).
    /// Если позицию `after_seq` определить нельзя, поток отдаёт
    /// [`StreamError::UnknownSeq`] и заканчивается.
    pub fn subscribe(
        &self,
        scope: ReadScope,
        filter: EventFilter,
        after_seq: Option<i64>,
    ) -> impl Stream<Item = Result<Arc<Event>, StreamError>> + Send + use<> {
        let this = self.clone();
        let prepared = self.prepare();
        async_stream::stream! {
            let after = match after_seq {
                Some(seq) => match this.resume_position(seq).await {
                    Ok(p) => Some(p),
                    Err(e) => { yield Err(e); return; }
                },
                None => None,
            };
            let inner = prepared.run(this.inner.store.clone(), scope, filter, after, None);
            for await item in inner {
                yield item;
            }
        }
    }

    /// Подписка с уже найденной позицией продолжения (см. [`StreamManager::resume_position`]).
    /// `replay_hold` держится, пока идёт повтор из базы (так API ограничивает число
    /// одновременных повторов одного вызывающего), и отпускается при переходе к живым.
    pub fn subscribe_from(
        &self,
        scope: ReadScope,
        filter: EventFilter,
        after: Option<LogPosition>,
        replay_hold: Option<Box<dyn Send + Sync>>,
    ) -> impl Stream<Item = Result<Arc<Event>, StreamError>> + Send + use<> {
        self.prepare()
            .run(self.inner.store.clone(), scope, filter, after, replay_hold)
    }

    /// Приёмник живого канала и водяной знак — строго в этом порядке и сразу при
    /// вызове: всё, что будет разослано после чтения знака, окажется в приёмнике.
    fn prepare(&self) -> Prepared {
        self.follow_log();
        let rx = self.inner.live.subscribe();
        let tail = self.inner.tail.clone();
        let at_call = *tail.borrow();
        Prepared { rx, tail, at_call }
    }
}

/// Подготовленная подписка: приёмник создан до чтения водяного знака.
struct Prepared {
    rx: LiveReceiver,
    tail: watch::Receiver<TailState>,
    at_call: TailState,
}

impl Prepared {
    /// Повтор из базы до водяного знака, затем живые события после него. Стык
    /// сшивается по позиции журнала: читатель рассылает строго по её возрастанию.
    fn run(
        self,
        store: Store,
        scope: ReadScope,
        filter: EventFilter,
        after: Option<LogPosition>,
        replay_hold: Option<Box<dyn Send + Sync>>,
    ) -> impl Stream<Item = Result<Arc<Event>, StreamError>> + Send + use<> {
        let Prepared {
            mut rx,
            mut tail,
            at_call,
        } = self;
        let gauge = SubscriberGauge::new();
        async_stream::stream! {
            let _gauge = gauge;
            let start = if at_call.ready {
                at_call.position
            } else {
                // Читатель ещё не прочитал голову: всё, что он разошлёт, выше неё и
                // попадёт в `rx`, поэтому живые начинаются именно с неё.
                match tail.wait_for(|s| s.ready).await {
                    Ok(s) => s.position,
                    Err(_) => return,
                }
            };
            let mut last = after.unwrap_or(start);
            let mut replay = after.is_some();
            let mut replay_hold = replay_hold;
            let mut recoveries = 0;
            loop {
                let replayed = replay;
                if replay {
                    let upto = tail.borrow().position;
                    loop {
                        let page = match store.replay_log(&scope, &filter, last, upto, REPLAY_PAGE).await {
                            Ok(p) => p,
                            Err(e) => { yield Err(StreamError::Storage(e)); return; }
                        };
                        let n = page.len();
                        for entry in page {
                            last = entry.position;
                            yield Ok(Arc::new(entry.event));
                        }
                        if n < REPLAY_PAGE { break; }
                    }
                    last = last.max(upto);
                    // Повтор окончен: доля вызывающего освобождается.
                    drop(replay_hold.take());
                }
                let mut caught_up = false;
                let lagged = loop {
                    match rx.recv().await {
                        Ok((position, e)) => {
                            caught_up = true;
                            if position <= last {
                                continue;
                            }
                            last = position;
                            // Изоляция и фильтр — до того, как событие уйдёт подписчику.
                            if scope.matches(&e) && filter.matches(&e) {
                                yield Ok(e);
                            }
                        }
                        Err(RecvError::Lagged(skipped)) => break skipped,
                        Err(RecvError::Closed) => return,
                    }
                };
                // Буфер переполнился, пока догоняли историю: пропущенное уже в базе,
                // дочитываем его повтором.
                if replayed && !caught_up && recoveries < MAX_RECOVERIES {
                    recoveries += 1;
                    replay = true;
                    continue;
                }
                yield Err(StreamError::Lagged { skipped: lagged, last_seq: last.seq });
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
