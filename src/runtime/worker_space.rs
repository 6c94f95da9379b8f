//! [`UserWorkerSpace`]: рабочее пространство пользователя в одном проекте и
//! одной сессии.
//!
//! Два режима ([`AgentMode`]):
//! - оркестрованный ([`UserWorkerSpace::send`]) — агента выбирает
//!   [`OrchestratorRouter`]; при смене агента — `AGENT_SWITCHED`
//!   (`mode="orchestrated"`), затем план и шаги;
//! - прямой ([`UserWorkerSpace::call_agent`]) — пользователь сам называет
//!   агента: `AGENT_SWITCHED` (`mode="direct"`), если это не текущий агент,
//!   затем `DIRECT_AGENT_CALL` (`agent_id`; `agent_name`, `mode="direct"`,
//!   `input`), затем план и шаги этого агента.
//!
//! Сообщения одной сессии обрабатываются строго по очереди (внутренний
//! мьютекс), поэтому события сессии в журнале не перемешиваются.
//!
//! Вызывают: приложения и демо ([`super::demo`]).

use std::fmt;
use std::sync::Arc;

use serde_json::json;
use thiserror::Error;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::context::{AgentMode, SessionContext, truncate_str};
use super::orchestrator::{Orchestration, OrchestratorError, OrchestratorRouter};
use crate::model::EventType;

/// Ошибка рабочего пространства.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WorkerSpaceError {
    /// Прямой вызов неизвестного агента (событий нет).
    #[error("agent `{0}` is not registered")]
    UnknownAgent(String),
    /// Ошибка оркестрации (нет подходящего агента, неудачный или отклонённый шаг).
    #[error(transparent)]
    Orchestration(#[from] OrchestratorError),
}

/// Дешёвый `Clone`-дескриптор рабочего пространства одной сессии.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventlog::logger::LoggerConfig;
/// use eventlog::runtime::tools::{FlakyService, builtin_tools};
/// use eventlog::runtime::*;
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let publisher = Publisher::new(stream.clone());
/// let approvals = ApprovalManager::start(publisher.clone(), ApprovalConfig::default());
/// let tools = ToolExecutor::new(publisher.clone(), approvals, ToolExecutorConfig::default());
/// for t in builtin_tools(FlakyService::default()) { tools.register(t); }
/// let bus = AgentBus::start(publisher.clone(), BusConfig::default());
/// let router = OrchestratorRouter::new(publisher, tools, bus, KnowledgeBase::builtin(), RouterConfig::default());
/// for a in builtin_agents() { router.register_agent(a); }
///
/// let space = UserWorkerSpace::open(router, "alice", Uuid::now_v7());
/// let reply = space.send("What is 6 * 7?").await?;          // оркестрованный режим
/// assert_eq!(reply.agent_id, "general-agent");
/// let reply = space.call_agent("research-agent", "Summarize agent observability docs").await?; // прямой
/// assert_eq!(space.current_agent().await.as_deref(), Some("research-agent"));
/// # let _ = reply;
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct UserWorkerSpace {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: SessionContext,
    router: OrchestratorRouter,
    /// Текущий агент сессии; мьютекс держится всё время обработки сообщения,
    /// так что сообщения сессии идут по одному.
    current: Mutex<Option<String>>,
}

impl fmt::Debug for UserWorkerSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserWorkerSpace")
            .field("ctx", &self.inner.ctx)
            .finish()
    }
}

impl UserWorkerSpace {
    /// Пространство существующей сессии `ctx`.
    pub fn new(router: OrchestratorRouter, ctx: SessionContext) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx,
                router,
                current: Mutex::new(None),
            }),
        }
    }

    /// Пространство новой сессии пользователя `user_id` в проекте `project_id`.
    pub fn open(router: OrchestratorRouter, user_id: impl Into<String>, project_id: Uuid) -> Self {
        Self::new(router, SessionContext::new_session(user_id, project_id))
    }

    /// Контекст сессии.
    pub fn context(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// Текущий агент сессии (ждёт, пока обрабатывается текущее сообщение).
    pub async fn current_agent(&self) -> Option<String> {
        self.inner.current.lock().await.clone()
    }

    /// Сообщение в оркестрованном режиме: агента выбирает оркестратор.
    pub async fn send(&self, message: &str) -> Result<Orchestration, WorkerSpaceError> {
        let mut current = self.inner.current.lock().await;
        let router = &self.inner.router;
        let (agent, reason) = router.select_agent_in(&self.inner.ctx, message, current.as_deref())?;
        router.switch_agent(
            &self.inner.ctx,
            current.as_deref(),
            agent.as_ref(),
            &reason,
            AgentMode::Orchestrated,
        );
        // Агент выбран — он текущий, даже если план потом не удастся.
        *current = Some(agent.id().to_owned());
        Ok(router
            .execute(&self.inner.ctx, agent, message, AgentMode::Orchestrated)
            .await?)
    }

    /// Прямой вызов агента `agent_id` с входом `input`.
    pub async fn call_agent(&self, agent_id: &str, input: &str) -> Result<Orchestration, WorkerSpaceError> {
        let mut current = self.inner.current.lock().await;
        let router = &self.inner.router;
        let agent = router
            .agent(agent_id)
            .ok_or_else(|| WorkerSpaceError::UnknownAgent(agent_id.to_owned()))?;
        router.switch_agent(
            &self.inner.ctx,
            current.as_deref(),
            agent.as_ref(),
            "user selected the agent directly",
            AgentMode::Direct,
        );
        *current = Some(agent.id().to_owned());
        let event = self
            .inner
            .ctx
            .event(EventType::DirectAgentCall)
            .agent(agent.id())
            .payload(json!({
                "agent_name": agent.name(),
                "mode": AgentMode::Direct.as_str(),
                "input": truncate_str(input, 4096),
            }));
        router.publisher().publish(event);
        Ok(router
            .execute(&self.inner.ctx, agent, input, AgentMode::Direct)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::testkit::{drain_session, has_keys, memory_stream, session, types};
    use crate::runtime::{AgentRuntime, RuntimeConfig};

    async fn setup() -> (crate::StreamManager, AgentRuntime) {
        let stream = memory_stream().await;
        let mut cfg = RuntimeConfig::default();
        cfg.router.retry_backoff = Duration::from_millis(1);
        (stream.clone(), AgentRuntime::start(stream, cfg))
    }

    #[tokio::test]
    async fn direct_mode_switches_then_emits_direct_agent_call_before_the_plan() {
        // Arrange
        let (stream, rt) = setup().await;
        let ctx = session();
        let space = UserWorkerSpace::new(rt.router.clone(), ctx.clone());

        // Act
        space.send("What is 2 + 2?").await.unwrap();
        let reply = space
            .call_agent("research-agent", "Summarize agent observability docs")
            .await
            .unwrap();
        space
            .call_agent("research-agent", "Compare tracing docs")
            .await
            .unwrap();
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(reply.agent_id, "research-agent");
        assert_eq!(space.current_agent().await.as_deref(), Some("research-agent"));
        let t = types(&events);
        let first_direct = t.iter().position(|t| *t == "DIRECT_AGENT_CALL").unwrap();
        assert_eq!(t[first_direct - 1], "AGENT_SWITCHED");
        assert_eq!(t[first_direct + 1], "TASK_PLAN_CREATED");
        let switch = &events[first_direct - 1];
        assert_eq!(switch.payload["mode"], "direct");
        assert_eq!(switch.payload["from_agent_id"], "general-agent");
        let call = &events[first_direct];
        assert_eq!(call.agent_id.as_deref(), Some("research-agent"));
        has_keys(call, &["agent_name", "mode", "input"]);
        assert_eq!(call.payload["mode"], "direct");
        assert_eq!(call.payload["agent_name"], "Research Agent");
        assert_eq!(call.payload["input"], "Summarize agent observability docs");
        // Второй прямой вызов того же агента — без смены.
        assert_eq!(t.iter().filter(|t| **t == "AGENT_SWITCHED").count(), 2);
        assert_eq!(t.iter().filter(|t| **t == "DIRECT_AGENT_CALL").count(), 2);
        assert_eq!(events[0].payload["mode"], "orchestrated");
    }

    #[tokio::test]
    async fn unknown_direct_agent_is_an_error_without_events() {
        let (stream, rt) = setup().await;
        let ctx = session();
        let space = UserWorkerSpace::new(rt.router.clone(), ctx.clone());
        let err = space.call_agent("ghost", "boo").await.unwrap_err();
        assert_eq!(err, WorkerSpaceError::UnknownAgent("ghost".into()));
        rt.shutdown().await;
        assert!(drain_session(&stream, &ctx).await.is_empty());
    }

    #[tokio::test]
    async fn agent_stays_selected_when_its_plan_fails() {
        let stream = memory_stream().await;
        let mut cfg = RuntimeConfig::default();
        cfg.tools.high_risk_approval_expiry = Some(Duration::from_millis(20));
        let rt = AgentRuntime::start(stream.clone(), cfg);
        let space = rt.workspace("bob", uuid::Uuid::now_v7());
        let err = space.send("Fix the bug in the parser").await;
        assert!(err.is_err(), "file_write approval times out");
        assert_eq!(space.current_agent().await.as_deref(), Some("code-agent"));
        rt.shutdown().await;
        let events = drain_session(&stream, space.context()).await;
        assert!(events.iter().all(|e| e.user_id == "bob"));
    }
}
