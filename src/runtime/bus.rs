//! [`AgentBus`]: ограниченная очередь задач агентов и пул из N исполнителей.
//!
//! События (SPEC §3):
//! - `TASK_QUEUED` при [`AgentBus::submit_task`]: `agent_id`; нагрузка `task_id`,
//!   `queue_position` (1 — следующая на выдачу; + `task_name`, `queue_capacity`).
//! - `TASK_DEQUEUED`, когда исполнитель взял задачу: `agent_id`; `task_id`,
//!   `worker_id`, `wait_ms` (+ `task_name`).
//! - `ERROR`, если задача вернула ошибку или запаниковала: `error_code`;
//!   `error_message`, `stack_trace`, `source="agent_bus"` (+ `task_id`,
//!   `worker_id`, `agent_id`). Исполнитель после этого продолжает работу.
//!
//! `TASK_QUEUED` испускается после резервирования места в очереди, но до того,
//! как задача в неё попала: так исполнитель не может испустить `TASK_DEQUEUED`
//! раньше, а отказ из-за полной очереди ([`BusError::QueueFull`]) не оставляет
//! в журнале `TASK_QUEUED` несуществующей задачи.
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
use super::context::{Publisher, SessionContext, millis, panic_message, stack_trace};
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
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
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
        let queue_position = self.queue_depth().max(1);
        let task_id = TaskId::new();
        self.inner
            .publisher
            .publish(ctx.event(EventType::TaskQueued).agent(agent_id).payload(json!({
                "task_id": task_id.to_string(),
                "queue_position": queue_position,
                "task_name": task.name,
                "queue_capacity": self.inner.capacity,
            })));
        let (reply, result) = oneshot::channel();
        permit.send(Job {
            task_id,
            ctx: ctx.clone(),
            agent_id: agent_id.to_owned(),
            name: task.name,
            work: task.work,
            enqueued_at: Instant::now(),
            reply,
        });
        Ok(TaskTicket {
            task_id,
            queue_position,
            result,
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
                if self.cancel.is_cancelled() {
                    rx.try_recv().ok()
                } else {
                    tokio::select! {
                        // Следующая задача; `None` — все дескрипторы шины брошены.
                        job = rx.recv() => job,
                        // Остановка: берём только то, что уже в очереди.
                        _ = self.cancel.cancelled() => rx.try_recv().ok(),
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
                    "task_name": job.name,
                })),
        );
        let outcome = AssertUnwindSafe(job.work).catch_unwind().await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err((
                BusError::TaskFailed {
                    task_id: job.task_id,
                    source,
                },
                "task_error",
            )),
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
                format!("  in task `{}` ({})", job.name, job.task_id),
                format!(
                    "  on {} for agent `{}`, session {}",
                    self.worker_id, job.agent_id, job.ctx.session_id
                ),
            ]);
            self.publisher.publish(
                job.ctx
                    .event(EventType::Error)
                    .error_code(err.code())
                    .payload(json!({
                        "error_message": err.to_string(),
                        "stack_trace": trace,
                        "source": "agent_bus",
                        "error_type": error_type,
                        "task_id": job.task_id.to_string(),
                        "task_name": job.name,
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
}
