//! [`AgentBus`]: ограниченная очередь задач агентов и пул из N исполнителей.
//!
//! События (SPEC §3):
//! - `TASK_QUEUED` при [`AgentBus::submit_task`]: `agent_id`; нагрузка `task_id`,
//!   `queue_position` (1 — следующая на выдачу; + `task_name`, `queue_capacity`).
//! - `TASK_DEQUEUED`, когда исполнитель взял задачу: `agent_id`; `task_id`,
//!   `worker_id`, `wait_ms` (+ `task_name`).
//! - `ERROR`, если задача вернула ошибку или запаниковала: `error_code`,
//!   `agent_id`; `error_message`, `stack_trace` (оба до 8 КиБ),
//!   `source="agent_bus"` (+ `task_id`, `worker_id`, `agent_id`). Код ошибки
//!   задачи приводится к виду колонки (запасной код
//!   [`TASK_ERROR`](super::codes::TASK_ERROR)). Исполнитель после этого
//!   продолжает работу.
//!
//! `TASK_QUEUED` испускается после резервирования места в очереди, но до того,
//! как задача в неё попала: так исполнитель не может испустить `TASK_DEQUEUED`
//! раньше, а отказ из-за полной очереди ([`BusError::QueueFull`]) не оставляет
//! в журнале `TASK_QUEUED` несуществующей задачи. Резервирование и выбор
//! `queue_position` идут под одним замком, поэтому одновременные постановки
//! получают разные позиции.
//!
//! # Остановка
//!
//! [`AgentBus::shutdown`] сначала перестаёт принимать задачи, затем исполнители
//! закрывают получатель очереди и выбирают её до конца (`recv` до `None`).
//! Закрытый канал `None` отдаёт лишь тогда, когда в нём нет задач и нет
//! выданных, но ещё не использованных резервирований — поэтому задача, место
//! для которой зарезервировано до остановки, а отправлено после, всё равно
//! исполняется: каждая принятая задача (каждый `TASK_QUEUED`) доходит до
//! исполнителя.
//!
//! Вызывают: [`OrchestratorRouter`](super::OrchestratorRouter) (шаги плана,
//! делегированные исполнителям) и приложения.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::codes;
use super::context::{
    MAX_ERROR_TEXT_BYTES, MAX_NAME_BYTES, Publisher, SessionContext, clip, millis, panic_message,
    sanitize_error_code, stack_trace,
};
use crate::model::EventType;

/// Число исполнителей по умолчанию.
pub const DEFAULT_BUS_WORKERS: usize = 4;
/// Ёмкость очереди по умолчанию, задач.
pub const DEFAULT_BUS_CAPACITY: usize = 256;

/// Идентификатор задачи (UUIDv7), значение `task_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// Новый идентификатор.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Ошибка, которой задача сообщает о неудаче.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct TaskError {
    /// Код (`error_code`).
    pub code: String,
    /// Сообщение.
    pub message: String,
    /// Имеет ли смысл повторить.
    pub retryable: bool,
}

impl TaskError {
    /// Неповторяемая ошибка.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// Помечает ошибку как временную.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// Ошибка шины.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// Очередь заполнена; задача не принята (`TASK_QUEUED` не испускался).
    #[error("agent bus queue is full ({capacity} tasks)")]
    QueueFull {
        /// Ёмкость очереди.
        capacity: usize,
    },
    /// Шина остановлена и задач не принимает.
    #[error("agent bus is shut down")]
    Closed,
    /// Задача вернула ошибку.
    #[error("task {task_id} failed: {source}")]
    TaskFailed {
        /// Задача.
        task_id: TaskId,
        /// Ошибка задачи.
        source: TaskError,
    },
    /// Задача запаниковала (паника поймана исполнителем).
    #[error("task {task_id} panicked: {message}")]
    TaskPanicked {
        /// Задача.
        task_id: TaskId,
        /// Текст паники.
        message: String,
    },
    /// Результат потерян: исполнитель остановлен, не доделав задачу.
    #[error("task {task_id} result was lost")]
    Lost {
        /// Задача.
        task_id: TaskId,
    },
}

impl BusError {
    /// Код ошибки (`error_code`).
    pub fn code(&self) -> &str {
        match self {
            Self::QueueFull { .. } => codes::QUEUE_FULL,
            Self::Closed => codes::BUS_CLOSED,
            Self::TaskFailed { source, .. } => &source.code,
            Self::TaskPanicked { .. } => codes::TASK_PANIC,
            Self::Lost { .. } => codes::TASK_LOST,
        }
    }

    /// Имеет ли смысл повторить (полная очередь, временная ошибка, паника).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::QueueFull { .. } | Self::TaskPanicked { .. } => true,
            Self::TaskFailed { source, .. } => source.retryable,
            Self::Closed | Self::Lost { .. } => false,
        }
    }
}

/// Задача для шины: имя и ленивое будущее (начнёт исполняться у исполнителя).
///
/// ```
/// use eventlog::runtime::BusTask;
/// use serde_json::json;
/// let task = BusTask::new("index_docs", async { Ok(json!({"indexed": 3})) });
/// assert_eq!(task.name(), "index_docs");
/// ```
pub struct BusTask {
    name: String,
    work: BoxFuture<'static, Result<Value, TaskError>>,
}

impl fmt::Debug for BusTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusTask").field("name", &self.name).finish()
    }
}

impl BusTask {
    /// Задача из будущего.
    pub fn new(
        name: impl Into<String>,
        work: impl Future<Output = Result<Value, TaskError>> + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            work: Box::pin(work),
        }
    }

    /// Имя задачи.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Квитанция принятой задачи.
#[derive(Debug)]
pub struct TaskTicket {
    /// Идентификатор.
    pub task_id: TaskId,
    /// Позиция в очереди при постановке (1 — следующая).
    pub queue_position: usize,
    /// Конец канала результата; отправитель — у исполнителя, взявшего задачу.
    result: oneshot::Receiver<Result<Value, BusError>>,
}

impl TaskTicket {
    /// Ждёт результата задачи.
    pub async fn join(self) -> Result<Value, BusError> {
        match self.result.await {
            Ok(r) => r,
            Err(_) => Err(BusError::Lost {
                task_id: self.task_id,
            }),
        }
    }
}

/// Настройки [`AgentBus`].
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Число исполнителей (не меньше 1).
    pub workers: usize,
    /// Ёмкость очереди (не меньше 1).
    pub capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            workers: DEFAULT_BUS_WORKERS,
            capacity: DEFAULT_BUS_CAPACITY,
        }
    }
}

struct Job {
    task_id: TaskId,
    ctx: SessionContext,
    agent_id: String,
    name: String,
    work: BoxFuture<'static, Result<Value, TaskError>>,
    enqueued_at: Instant,
    /// Отправитель результата; получатель — в [`TaskTicket`]. Если квитанцию
    /// бросили, результат просто выбрасывается.
    reply: oneshot::Sender<Result<Value, BusError>>,
}

/// Дешёвый `Clone`-дескриптор шины задач.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventlog::logger::LoggerConfig;
/// use eventlog::runtime::{AgentBus, BusConfig, BusTask, SessionContext};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use serde_json::json;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let bus = AgentBus::start(stream.clone(), BusConfig { workers: 2, capacity: 16 });
///
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let ticket = bus.submit_task(&ctx, "code-agent", BusTask::new("run_tests", async {
///     Ok(json!({"passed": 12}))
/// }))?;
/// assert_eq!(ticket.join().await?, json!({"passed": 12}));
/// bus.shutdown().await;
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AgentBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Отправитель очереди; получатель делят исполнители. Когда брошены все
    /// дескрипторы, исполнители доделывают очередь и завершаются.
    tx: mpsc::Sender<Job>,
    publisher: Publisher,
    capacity: usize,
    closed: AtomicBool,
    /// Делает резервирование места и расчёт `queue_position` одним шагом:
    /// иначе две одновременные постановки видят одну глубину очереди.
    reserve_lock: std::sync::Mutex<()>,
    /// Отмена: исполнители дорабатывают очередь и выходят.
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for AgentBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBus")
            .field("capacity", &self.inner.capacity)
            .field("depth", &self.queue_depth())
            .finish()
    }
}

impl AgentBus {
    /// Запускает исполнителей на текущем рантайме tokio.
    pub fn start(publisher: impl Into<Publisher>, config: BusConfig) -> Self {
        let capacity = config.capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let publisher = publisher.into();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        for n in 1..=config.workers.max(1) {
            let worker = Worker {
                worker_id: format!("worker-{n}"),
                rx: rx.clone(),
                publisher: publisher.clone(),
                cancel: cancel.clone(),
            };
            tracker.spawn(worker.run());
        }
        tracker.close();
        Self {
            inner: Arc::new(Inner {
                tx,
                publisher,
                capacity,
                closed: AtomicBool::new(false),
                reserve_lock: std::sync::Mutex::new(()),
                cancel,
                tracker,
            }),
        }
    }

    /// Ставит задачу агента `agent_id` в очередь, не блокируясь, и испускает
    /// `TASK_QUEUED`. Полная очередь — [`BusError::QueueFull`].
    pub fn submit_task(
        &self,
        ctx: &SessionContext,
        agent_id: &str,
        task: BusTask,
    ) -> Result<TaskTicket, BusError> {
        Ok(self.reserve(ctx, agent_id, task)?.send())
    }

    /// Первая половина [`Self::submit_task`]: резервирует место, выбирает
    /// позицию и испускает `TASK_QUEUED`; задача попадает в очередь при
    /// [`Reservation::send`].
    fn reserve<'a>(
        &'a self,
        ctx: &SessionContext,
        agent_id: &str,
        task: BusTask,
    ) -> Result<Reservation<'a>, BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let (permit, queue_position) = {
            let _guard = self
                .inner
                .reserve_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let permit = match self.inner.tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => {
                    tracing::warn!(capacity = self.inner.capacity, task_name = %task.name, "Agent bus queue is full.");
                    return Err(BusError::QueueFull {
                        capacity: self.inner.capacity,
                    });
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Err(BusError::Closed),
            };
            // Место уже занято нашим разрешением, поэтому позиция ≥ 1.
            (permit, self.queue_depth().max(1))
        };
        let task_id = TaskId::new();
        self.inner
            .publisher
            .publish(ctx.event(EventType::TaskQueued).agent(agent_id).payload(json!({
                "task_id": task_id.to_string(),
                "queue_position": queue_position,
                "task_name": clip(&task.name, MAX_NAME_BYTES),
                "queue_capacity": self.inner.capacity,
            })));
        Ok(Reservation {
            permit,
            task_id,
            queue_position,
            job: PendingJob {
                ctx: ctx.clone(),
                agent_id: agent_id.to_owned(),
                task,
            },
        })
    }

    /// Сколько задач ждут в очереди (включая зарезервированные места).
    pub fn queue_depth(&self) -> usize {
        self.inner.capacity - self.inner.tx.capacity()
    }

    /// Ёмкость очереди.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Перестаёт принимать задачи, даёт исполнителям доделать очередь и ждёт их.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.cancel.cancel();
        self.inner.tracker.wait().await;
    }
}

/// Задача, чья очередь уже зарезервирована (и `TASK_QUEUED` испущен), но ещё не
/// отправлена исполнителям.
struct Reservation<'a> {
    permit: mpsc::Permit<'a, Job>,
    task_id: TaskId,
    queue_position: usize,
    job: PendingJob,
}

struct PendingJob {
    ctx: SessionContext,
    agent_id: String,
    task: BusTask,
}

impl Reservation<'_> {
    /// Кладёт задачу в очередь. Исполнители выбирают очередь до конца и после
    /// остановки, так что задача будет исполнена.
    fn send(self) -> TaskTicket {
        let (reply, result) = oneshot::channel();
        let PendingJob { ctx, agent_id, task } = self.job;
        self.permit.send(Job {
            task_id: self.task_id,
            ctx,
            agent_id,
            name: task.name,
            work: task.work,
            enqueued_at: Instant::now(),
            reply,
        });
        TaskTicket {
            task_id: self.task_id,
            queue_position: self.queue_position,
            result,
        }
    }
}

/// Один исполнитель шины.
struct Worker {
    worker_id: String,
    /// Общий получатель очереди; мьютекс держит тот исполнитель, что ждёт
    /// следующую задачу.
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    publisher: Publisher,
    cancel: CancellationToken,
}

impl Worker {
    async fn run(self) {
        loop {
            let job = {
                let mut rx = self.rx.lock().await;
                let received = if self.cancel.is_cancelled() {
                    None
                } else {
                    tokio::select! {
                        // Следующая задача; `None` внутри — все дескрипторы брошены.
                        job = rx.recv() => Some(job),
                        _ = self.cancel.cancelled() => None,
                    }
                };
                match received {
                    Some(job) => job,
                    // Остановка: новых резервирований больше нет, а очередь и уже
                    // выданные резервирования выбираются до конца — `recv` вернёт
                    // `None`, только когда не останется ни того, ни другого.
                    None => {
                        rx.close();
                        rx.recv().await
                    }
                }
            };
            let Some(job) = job else { break };
            self.execute(job).await;
        }
        tracing::debug!(worker_id = %self.worker_id, "Agent bus worker stopped.");
    }

    async fn execute(&self, job: Job) {
        let wait_ms = millis(job.enqueued_at.elapsed());
        self.publisher.publish(
            job.ctx
                .event(EventType::TaskDequeued)
                .agent(job.agent_id.clone())
                .payload(json!({
                    "task_id": job.task_id.to_string(),
                    "worker_id": self.worker_id,
                    "wait_ms": wait_ms,
                    "task_name": clip(&job.name, MAX_NAME_BYTES),
                })),
        );
        let outcome = AssertUnwindSafe(job.work).catch_unwind().await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(mut source)) => {
                // Код задачи идёт в колонку `error_code` (varchar(64)).
                source.code = sanitize_error_code(&source.code, codes::TASK_ERROR);
                Err((
                    BusError::TaskFailed {
                        task_id: job.task_id,
                        source,
                    },
                    "task_error",
                ))
            }
            Err(panic) => Err((
                BusError::TaskPanicked {
                    task_id: job.task_id,
                    message: panic_message(panic.as_ref()),
                },
                "panic",
            )),
        };
        if let Err((err, error_type)) = &result {
            tracing::debug!(task_id = %job.task_id, worker_id = %self.worker_id, code = err.code(), error = %err, "Agent bus task failed.");
            let trace = stack_trace(&[
                format!("{error_type}: {err}"),
                format!(
                    "  in task `{}` ({})",
                    clip(&job.name, MAX_NAME_BYTES),
                    job.task_id
                ),
                format!(
                    "  on {} for agent `{}`, session {}",
                    self.worker_id, job.agent_id, job.ctx.session_id
                ),
            ]);
            self.publisher.publish(
                job.ctx
                    .event(EventType::Error)
                    .agent(job.agent_id.as_str())
                    .error_code(err.code())
                    .payload(json!({
                        "error_message": clip(&err.to_string(), MAX_ERROR_TEXT_BYTES),
                        "stack_trace": clip(&trace, MAX_ERROR_TEXT_BYTES),
                        "source": "agent_bus",
                        "error_type": error_type,
                        "task_id": job.task_id.to_string(),
                        "task_name": clip(&job.name, MAX_NAME_BYTES),
                        "worker_id": self.worker_id,
                        "agent_id": job.agent_id,
                    })),
            );
        }
        let _ = job.reply.send(result.map_err(|(e, _)| e));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::testkit::{drain_session, has_keys, memory_stream, session, types};

    #[tokio::test]
    async fn submit_emits_queued_and_a_worker_emits_dequeued_with_catalogue_keys() {
        // Arrange
        let stream = memory_stream().await;
        let bus = AgentBus::start(
            stream.clone(),
            BusConfig {
                workers: 2,
                capacity: 8,
            },
        );
        let ctx = session();

        // Act
        let ticket = bus
            .submit_task(
                &ctx,
                "code-agent",
                BusTask::new("run_tests", async { Ok(json!({"passed": 3})) }),
            )
            .unwrap();
        let task_id = ticket.task_id;
        assert_eq!(ticket.queue_position, 1);
        assert_eq!(ticket.join().await.unwrap(), json!({"passed": 3}));
        bus.shutdown().await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(types(&events), ["TASK_QUEUED", "TASK_DEQUEUED"]);
        let (q, d) = (&events[0], &events[1]);
        for e in [q, d] {
            assert_eq!(e.agent_id.as_deref(), Some("code-agent"));
            assert_eq!(e.payload["task_id"], task_id.to_string());
            assert_eq!(e.error_code, None);
            assert_eq!(e.tool_name, None);
        }
        has_keys(q, &["task_id", "queue_position"]);
        assert_eq!(q.payload["queue_position"], 1);
        has_keys(d, &["task_id", "worker_id", "wait_ms"]);
        assert!(d.payload["worker_id"].as_str().unwrap().starts_with("worker-"));
    }

    #[tokio::test]
    async fn full_queue_is_a_clear_error_and_leaves_no_queued_event() {
        // Arrange: один исполнитель занят, очередь на две задачи.
        let stream = memory_stream().await;
        let bus = AgentBus::start(
            stream.clone(),
            BusConfig {
                workers: 1,
                capacity: 2,
            },
        );
        let ctx = session();
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let blocker = bus
            .submit_task(
                &ctx,
                "a",
                BusTask::new("block", async move {
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Ok(json!(null))
                }),
            )
            .unwrap();
        started_rx.await.unwrap();

        // Act
        let second = bus
            .submit_task(&ctx, "a", BusTask::new("second", async { Ok(json!(2)) }))
            .unwrap();
        let third = bus
            .submit_task(&ctx, "a", BusTask::new("third", async { Ok(json!(3)) }))
            .unwrap();
        let full = bus.submit_task(&ctx, "a", BusTask::new("fourth", async { Ok(json!(4)) }));

        // Assert
        assert_eq!((second.queue_position, third.queue_position), (1, 2));
        assert_eq!(full.unwrap_err(), BusError::QueueFull { capacity: 2 });
        assert_eq!(
            BusError::QueueFull { capacity: 2 }.to_string(),
            "agent bus queue is full (2 tasks)"
        );
        release_tx.send(()).unwrap();
        blocker.join().await.unwrap();
        assert_eq!(second.join().await.unwrap(), json!(2));
        assert_eq!(third.join().await.unwrap(), json!(3));
        bus.shutdown().await;
        let events = drain_session(&stream, &ctx).await;
        let queued = events.iter().filter(|e| e.event_type == "TASK_QUEUED").count();
        assert_eq!(queued, 3, "the refused task must not appear as queued");
        assert!(!events.iter().any(|e| e.payload["task_name"] == "fourth"));
    }

    #[tokio::test]
    async fn failing_and_panicking_tasks_emit_error_and_workers_keep_going() {
        let stream = memory_stream().await;
        let bus = AgentBus::start(
            stream.clone(),
            BusConfig {
                workers: 1,
                capacity: 8,
            },
        );
        let ctx = session();
        let failed = bus
            .submit_task(
                &ctx,
                "a",
                BusTask::new("fail", async {
                    Err(TaskError::new("TESTS_FLAKY", "one test failed").retryable())
                }),
            )
            .unwrap();
        let panicked = bus
            .submit_task(&ctx, "a", BusTask::new("panic", async { panic!("job blew up") }))
            .unwrap();
        let fine = bus
            .submit_task(&ctx, "a", BusTask::new("fine", async { Ok(json!("ok")) }))
            .unwrap();

        let failed = failed.join().await.unwrap_err();
        assert!(matches!(&failed, BusError::TaskFailed { source, .. } if source.code == "TESTS_FLAKY"));
        assert!(failed.is_retryable());
        let panicked = panicked.join().await.unwrap_err();
        assert!(matches!(&panicked, BusError::TaskPanicked { message, .. } if message == "job blew up"));
        assert_eq!(fine.join().await.unwrap(), json!("ok"));
        bus.shutdown().await;

        let events = drain_session(&stream, &ctx).await;
        let errors: Vec<_> = events.iter().filter(|e| e.event_type == "ERROR").collect();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].error_code.as_deref(), Some("TESTS_FLAKY"));
        assert_eq!(errors[1].error_code.as_deref(), Some("TASK_PANIC"));
        for e in &errors {
            has_keys(
                e,
                &["error_message", "stack_trace", "source", "task_id", "worker_id"],
            );
            assert_eq!(e.payload["source"], "agent_bus");
            assert_eq!(
                e.agent_id.as_deref(),
                Some("a"),
                "ERROR carries the agent_id column"
            );
        }
        assert!(
            errors[1].payload["stack_trace"]
                .as_str()
                .unwrap()
                .contains("job blew up")
        );
        // Порядок: взята → ошибка; следующая задача берётся после.
        assert_eq!(
            types(&events),
            [
                "TASK_QUEUED",
                "TASK_QUEUED",
                "TASK_QUEUED",
                "TASK_DEQUEUED",
                "ERROR",
                "TASK_DEQUEUED",
                "ERROR",
                "TASK_DEQUEUED"
            ]
        );
    }

    #[tokio::test]
    async fn shutdown_finishes_queued_tasks_and_then_refuses_new_ones() {
        let stream = memory_stream().await;
        let bus = AgentBus::start(
            stream.clone(),
            BusConfig {
                workers: 1,
                capacity: 8,
            },
        );
        let ctx = session();
        let tickets: Vec<_> = (0..4)
            .map(|i| {
                bus.submit_task(
                    &ctx,
                    "a",
                    BusTask::new("slow", async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok(json!(i))
                    }),
                )
                .unwrap()
            })
            .collect();
        bus.shutdown().await;
        for (i, t) in tickets.into_iter().enumerate() {
            assert_eq!(t.join().await.unwrap(), json!(i));
        }
        let late = bus.submit_task(&ctx, "a", BusTask::new("late", async { Ok(json!(0)) }));
        assert_eq!(late.unwrap_err(), BusError::Closed);
        assert_eq!(bus.queue_depth(), 0);
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn a_slot_reserved_before_shutdown_and_sent_after_it_still_runs() {
        // Arrange: место зарезервировано (и TASK_QUEUED испущен) до остановки.
        let stream = memory_stream().await;
        let bus = AgentBus::start(
            stream.clone(),
            BusConfig {
                workers: 2,
                capacity: 4,
            },
        );
        let ctx = session();
        let reservation = bus
            .reserve(&ctx, "a", BusTask::new("late_send", async { Ok(json!("ran")) }))
            .unwrap();

        // Act: остановка начинается, исполнители видят отмену при пустой очереди
        // (раньше они тут же выходили), и только потом задача отправляется.
        let stopping = tokio::spawn({
            let bus = bus.clone();
            async move { bus.shutdown().await }
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stopping.is_finished(), "shutdown waits for the reserved slot");
        let ticket = reservation.send();
        stopping.await.unwrap();

        // Assert
        assert_eq!(ticket.join().await.unwrap(), json!("ran"));
        let late = bus.submit_task(&ctx, "a", BusTask::new("later", async { Ok(json!(0)) }));
        assert_eq!(late.unwrap_err(), BusError::Closed);
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["TASK_QUEUED", "TASK_DEQUEUED"]);
    }

    #[tokio::test]
    async fn a_reservation_dropped_during_shutdown_does_not_hang_it() {
        let stream = memory_stream().await;
        let bus = AgentBus::start(stream.clone(), BusConfig::default());
        let ctx = session();
        let reservation = bus
            .reserve(&ctx, "a", BusTask::new("never_sent", async { Ok(json!(0)) }))
            .unwrap();
        let stopping = tokio::spawn({
            let bus = bus.clone();
            async move { bus.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(reservation);
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("shutdown finishes once the reservation is gone")
            .unwrap();
        stream.shutdown().await;
    }

    #[test]
    fn concurrent_submits_get_distinct_queue_positions() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let stream = memory_stream().await;
            let ctx = session();
            let threads = 8;
            let per_thread = 25;
            // Гонка редкая, поэтому раундов несколько.
            for round in 0..20 {
                // Arrange: единственный исполнитель занят, так что очередь только растёт.
                let bus = AgentBus::start(
                    stream.clone(),
                    BusConfig {
                        workers: 1,
                        capacity: threads * per_thread,
                    },
                );
                let (started_tx, started_rx) = oneshot::channel();
                let (release_tx, release_rx) = oneshot::channel::<()>();
                let blocker = bus
                    .submit_task(
                        &ctx,
                        "a",
                        BusTask::new("block", async move {
                            let _ = started_tx.send(());
                            let _ = release_rx.await;
                            Ok(json!(null))
                        }),
                    )
                    .unwrap();
                started_rx.await.unwrap();

                // Act: постановки из нескольких потоков одновременно.
                let barrier = Arc::new(std::sync::Barrier::new(threads));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (bus, ctx, barrier) = (bus.clone(), ctx.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            (0..per_thread)
                                .map(|_| {
                                    bus.submit_task(&ctx, "a", BusTask::new("t", async { Ok(json!(1)) }))
                                        .unwrap()
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let tickets: Vec<TaskTicket> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();

                // Assert: позиции — ровно 1..=N, без повторов.
                let mut positions: Vec<usize> = tickets.iter().map(|t| t.queue_position).collect();
                positions.sort_unstable();
                assert_eq!(
                    positions,
                    (1..=threads * per_thread).collect::<Vec<_>>(),
                    "round {round}"
                );
                release_tx.send(()).unwrap();
                blocker.join().await.unwrap();
                for t in tickets {
                    t.join().await.unwrap();
                }
                bus.shutdown().await;
            }
            stream.shutdown().await;
        });
    }
}
