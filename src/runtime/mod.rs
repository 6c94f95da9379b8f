//! Инструментированная агентная среда (SPEC §7): компоненты публикуют события
//! каталога SPEC §3 через [`crate::StreamManager`] и только через него (с
//! хранилищем и API среда не связана).
//!
//! # Устройство
//!
//! - [`context`] — [`SessionContext`] (к какой сессии относится событие),
//!   [`Publisher`] (обёртка над `broadcast_event` со счётчиками), [`AgentMode`].
//! - [`approval`] — [`ApprovalManager`]: запросы, решения, предупреждение за 30 с,
//!   истечение.
//! - [`tool_executor`] — [`ToolExecutor`]: реестр [`Tool`], оценка риска,
//!   согласование HIGH/CRITICAL, таймауты, перехват паник.
//! - [`bus`] — [`AgentBus`]: ограниченная очередь задач и N исполнителей.
//! - [`agent`] — трейт [`Agent`] и встроенные агенты на правилах.
//! - [`orchestrator`] — [`OrchestratorRouter`]: выбор агента, план, шаги, контекст.
//! - [`worker_space`] — [`UserWorkerSpace`]: оркестрованный и прямой режимы.
//! - [`tools`] — встроенные детерминированные инструменты.
//! - [`demo`] — [`run_demo`]: генератор реалистичного трафика для `eventlog demo`.
//!
//! Каждый компонент — дешёвый `Clone`-дескриптор; там, где нужна фоновая
//! задача (согласования, исполнители шины), она — приватная структура с
//! `async fn run(self)`. [`AgentRuntime`] собирает всё вместе со встроенными
//! агентами и инструментами.
//!
//! Журнал (`tracing`, по-английски): исходы вызовов, задач и согласований пишутся
//! на уровне DEBUG — они и так записаны событиями; WARN — только событие, не
//! принятое писателем, и переполненная шина.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use eventlog::logger::LoggerConfig;
//! use eventlog::runtime::{AgentRuntime, RuntimeConfig};
//! use eventlog::storage::Store;
//! use eventlog::StreamManager;
//! use uuid::Uuid;
//!
//! let store = Store::connect("sqlite::memory:", Default::default()).await?;
//! store.migrate_up().await?;
//! let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
//! let runtime = AgentRuntime::start(stream.clone(), RuntimeConfig::default());
//! let space = runtime.workspace("alice", Uuid::now_v7());
//! let reply = space.send("Research the latest vector database benchmarks").await?;
//! assert_eq!(reply.agent_id, "research-agent");
//! runtime.shutdown().await;
//! stream.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod approval;
pub mod bus;
pub mod context;
pub mod demo;
pub mod orchestrator;
pub mod tool_executor;
pub mod tools;
pub mod worker_space;

#[cfg(test)]
mod testkit;

use uuid::Uuid;

pub use agent::{
    Agent, AgentInfo, AgentScore, CodeAgent, GeneralAgent, OpsAgent, PlanStep, ResearchAgent, StepAction,
    StepOutput, builtin_agents,
};
pub use approval::{
    ApprovalConfig, ApprovalError, ApprovalId, ApprovalInfo, ApprovalManager, ApprovalRequest, Decision,
    PendingApproval, WARNING_BEFORE_EXPIRY,
};
pub use bus::{AgentBus, BusConfig, BusError, BusTask, TaskError, TaskId, TaskTicket};
pub use context::{AgentMode, PublishStats, Publisher, SessionContext};
pub use demo::{DemoConfig, DemoError, DemoReport, run_demo};
pub use orchestrator::{
    ContextBundle, Document, KnowledgeBase, Orchestration, OrchestratorError, OrchestratorRouter,
    RouterConfig,
};
pub use tool_executor::{
    RiskAssessment, RiskLevel, Tool, ToolError, ToolExecutor, ToolExecutorConfig, ToolExecutorError,
    ToolInfo, ToolOutput, ToolType,
};
pub use worker_space::{UserWorkerSpace, WorkerSpaceError};

use crate::StreamManager;

/// Коды ошибок (`error_code`), которые испускает сама среда. Инструменты и
/// задачи добавляют свои (`UPSTREAM_UNAVAILABLE`, `TESTS_FLAKY`, …).
pub mod codes {
    /// Вызов незарегистрированного инструмента.
    pub const UNKNOWN_TOOL: &str = "UNKNOWN_TOOL";
    /// Согласование отклонено — вызов не выполнен.
    pub const APPROVAL_REJECTED: &str = "APPROVAL_REJECTED";
    /// Срок согласования истёк — вызов не выполнен.
    pub const APPROVAL_TIMEOUT: &str = "APPROVAL_TIMEOUT";
    /// Менеджер согласований недоступен — вызов не выполнен.
    pub const APPROVAL_UNAVAILABLE: &str = "APPROVAL_UNAVAILABLE";
    /// Инструмент запаниковал (при исполнении или оценке риска).
    pub const TOOL_PANIC: &str = "TOOL_PANIC";
    /// Запасной код ошибки инструмента, если его собственный код не годится для
    /// колонки `error_code` даже после очистки.
    pub const TOOL_ERROR: &str = "TOOL_ERROR";
    /// Запасной код ошибки задачи шины (как [`TOOL_ERROR`] для инструментов).
    pub const TASK_ERROR: &str = "TASK_ERROR";
    /// Агент запаниковал (`score`, `plan`, `respond` или синхронная часть `run_job`).
    pub const AGENT_PANIC: &str = "AGENT_PANIC";
    /// Инструмент не уложился в таймаут.
    pub const TOOL_TIMEOUT: &str = "TOOL_TIMEOUT";
    /// Задача инструмента отменена (остановка рантайма).
    pub const TOOL_CANCELLED: &str = "TOOL_CANCELLED";
    /// Очередь шины заполнена.
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    /// Шина остановлена.
    pub const BUS_CLOSED: &str = "BUS_CLOSED";
    /// Задача шины запаниковала.
    pub const TASK_PANIC: &str = "TASK_PANIC";
    /// Результат задачи шины потерян.
    pub const TASK_LOST: &str = "TASK_LOST";
    /// Нет подходящего агента.
    pub const NO_AGENT: &str = "NO_AGENT";
    /// Неизвестный агент.
    pub const UNKNOWN_AGENT: &str = "UNKNOWN_AGENT";
}

/// Настройки [`AgentRuntime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Менеджер согласований.
    pub approvals: ApprovalConfig,
    /// Исполнитель инструментов.
    pub tools: ToolExecutorConfig,
    /// Шина задач.
    pub bus: BusConfig,
    /// Оркестратор.
    pub router: RouterConfig,
    /// Настройки ненадёжного инструмента `service_status`.
    pub flaky: tools::FlakyService,
}

/// Собранная среда: все компоненты на одном [`Publisher`], со встроенными
/// инструментами ([`tools::builtin_tools`]), агентами ([`builtin_agents`]) и
/// базой знаний ([`KnowledgeBase::builtin`]). Дешёвый `Clone`.
#[derive(Debug, Clone)]
pub struct AgentRuntime {
    /// Общий публикатор (его счётчики покрывают все компоненты).
    pub publisher: Publisher,
    /// Менеджер согласований.
    pub approvals: ApprovalManager,
    /// Исполнитель инструментов.
    pub tools: ToolExecutor,
    /// Шина задач.
    pub bus: AgentBus,
    /// Оркестратор.
    pub router: OrchestratorRouter,
}

impl AgentRuntime {
    /// Запускает компоненты на текущем рантайме tokio.
    pub fn start(stream: StreamManager, config: RuntimeConfig) -> Self {
        let publisher = Publisher::new(stream);
        let approvals = ApprovalManager::start(publisher.clone(), config.approvals);
        let tool_executor = ToolExecutor::new(publisher.clone(), approvals.clone(), config.tools);
        for t in tools::builtin_tools(config.flaky) {
            tool_executor.register(t);
        }
        let bus = AgentBus::start(publisher.clone(), config.bus);
        let router = OrchestratorRouter::new(
            publisher.clone(),
            tool_executor.clone(),
            bus.clone(),
            KnowledgeBase::builtin(),
            config.router,
        );
        for a in builtin_agents() {
            router.register_agent(a);
        }
        Self {
            publisher,
            approvals,
            tools: tool_executor,
            bus,
            router,
        }
    }

    /// Рабочее пространство новой сессии пользователя в проекте.
    pub fn workspace(&self, user_id: impl Into<String>, project_id: Uuid) -> UserWorkerSpace {
        UserWorkerSpace::open(self.router.clone(), user_id, project_id)
    }

    /// Останавливает шину (доделав очередь). Согласования живут, пока живы
    /// дескрипторы менеджера или открытые согласования.
    pub async fn shutdown(&self) {
        self.bus.shutdown().await;
    }
}
