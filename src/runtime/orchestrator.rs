//! [`OrchestratorRouter`]: выбор агента, план задач, выполнение шагов,
//! извлечение контекста; инструменты — через [`ToolExecutor`], делегированная
//! работа — через [`AgentBus`].
//!
//! События (SPEC §3):
//! - `AGENT_SWITCHED` — когда выбранный агент отличается от текущего (в том
//!   числе первый выбор в сессии, `from_agent_id = null`): `agent_id` = новый
//!   агент; `from_agent_id`, `to_agent_id`, `agent_name`, `reason`, `mode`.
//! - `TASK_PLAN_CREATED` — `agent_id`; `plan_id`, `steps` (массив описаний
//!   шагов, см. [`PlanStep::describe`]) (+ `request`, `mode`, `agent_name`).
//! - На каждый шаг — `TASK_STARTED`, затем `TASK_PROGRESS` (перед внешней
//!   работой шага со `status="running"` и при каждом повторе со
//!   `status="retrying"`), затем `TASK_COMPLETED` со `status` = `completed`,
//!   `failed` или `refused` (согласование отклонено или истекло). Все три:
//!   `agent_id`; `task_id` (свой у каждого шага), `step` (номер с 0),
//!   `progress` (доля плана, выполненная к этому моменту, 0..1), `status`,
//!   `duration_ms` (время шага на момент события) (+ `plan_id`, `step_name`).
//!   Неудачный шаг останавливает план: остальные шаги не начинаются.
//! - `CONTEXT_RETRIEVED` — `agent_id`; `query`, `documents` (число),
//!   `sources` (список источников), `duration_ms` (+ `task_id`).
//!
//! Паника агента (`score`, `plan`, `respond`, синхронная часть `run_job`)
//! ловится: `ERROR` (`error_code=AGENT_PANIC`, `agent_id`; `error_message`,
//! `stack_trace`, `source="orchestrator"`, `stage`), для шага — затем
//! `TASK_COMPLETED` со `status="failed"`, а вызывающий получает
//! [`OrchestratorError::AgentPanicked`]. Паника в `score` при выборе агента
//! ([`OrchestratorRouter::select_agent`]) событий не испускает (сессии там нет);
//! [`OrchestratorRouter::route`] и [`UserWorkerSpace`](super::UserWorkerSpace)
//! испускают `ERROR` сами.
//!
//! Повторы: шаг-инструмент или шаг-задача с временной ошибкой
//! ([`ToolExecutorError::is_retryable`], [`BusError::is_retryable`])
//! повторяется до [`RouterConfig::max_retries`] раз с линейной паузой; вход
//! повтора — объект со значением `attempt` (1, 2, …), чтобы инструмент и журнал
//! видели номер попытки. Отказ в согласовании не повторяется.
//!
//! Вызывают: [`UserWorkerSpace`](super::UserWorkerSpace) и приложения.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use thiserror::Error;
use tokio::time::Instant;
use uuid::Uuid;

use super::agent::{Agent, AgentInfo, PlanStep, StepAction, StepOutput};
use super::bus::{AgentBus, BusError, BusTask, TaskId};
use super::context::{
    AgentMode, MAX_ERROR_TEXT_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES, Publisher, SessionContext, clip, millis,
    panic_message, stable_hash, stack_trace, truncate_str,
};
use super::tool_executor::{ToolExecutor, ToolExecutorError};
use crate::model::EventType;

/// Документ базы знаний.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Источник (URI), попадает в `sources`.
    pub source: String,
    /// Заголовок.
    pub title: String,
    /// Текст.
    pub text: String,
}

impl Document {
    /// Документ из источника, заголовка и текста.
    pub fn new(source: impl Into<String>, title: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            title: title.into(),
            text: text.into(),
        }
    }
}

/// Детерминированная база знаний в памяти: поиск по пересечению слов.
///
/// ```
/// use eventlog::runtime::{Document, KnowledgeBase};
/// let kb = KnowledgeBase::new(vec![
///     Document::new("kb://a", "Deploy runbook", "how to deploy payments safely"),
///     Document::new("kb://b", "Parser notes", "the parser tokenizer design"),
/// ]);
/// let hits = kb.search("deploy payments", 5);
/// assert_eq!(hits[0].source, "kb://a");
/// ```
#[derive(Debug, Clone, Default)]
pub struct KnowledgeBase {
    docs: Arc<Vec<Document>>,
}

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect()
}

impl KnowledgeBase {
    /// База из документов.
    pub fn new(docs: Vec<Document>) -> Self {
        Self { docs: Arc::new(docs) }
    }

    /// Небольшая встроенная база (ранбуки, заметки о коде, обзоры) для демо.
    pub fn builtin() -> Self {
        let d = Document::new;
        Self::new(vec![
            d(
                "kb://runbooks/deploy",
                "Deployment runbook",
                "deploy release rollback production staging canary payments billing checkout gateway",
            ),
            d(
                "kb://runbooks/incident",
                "Incident response",
                "incident outage latency down restart status health monitor escalate oncall",
            ),
            d(
                "kb://runbooks/scaling",
                "Scaling guide",
                "scale autoscaling capacity latency search auth notifications",
            ),
            d(
                "kb://code/parser",
                "Parser internals",
                "codebase parser tokenizer bug fix grammar tests module",
            ),
            d(
                "kb://code/config",
                "Configuration module",
                "codebase config file loader settings module write tests",
            ),
            d(
                "kb://code/testing",
                "Testing guide",
                "codebase tests test suite flaky fix refactor function compile",
            ),
            d(
                "kb://research/vector-db",
                "Vector database benchmarks",
                "research latest vector database benchmarks compare recall latency",
            ),
            d(
                "kb://research/llm-eval",
                "LLM evaluation survey",
                "research papers evaluation benchmarks summarize compare models",
            ),
            d(
                "kb://research/observability",
                "Agent observability",
                "research agents observability tracing events logging docs documentation",
            ),
            d(
                "kb://faq/general",
                "General FAQ",
                "help questions answers general assistant",
            ),
        ])
    }

    /// До `k` документов с наибольшим числом общих слов с запросом (не меньше
    /// одного); при равенстве — по источнику.
    pub fn search(&self, query: &str, k: usize) -> Vec<Document> {
        let q = terms(query);
        let mut scored: Vec<(usize, &Document)> = self
            .docs
            .iter()
            .map(|d| {
                let t = terms(&format!("{} {}", d.title, d.text));
                (q.iter().filter(|w| t.contains(w)).count(), d)
            })
            .filter(|(s, _)| *s > 0)
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.source.cmp(&b.1.source)));
        scored.into_iter().take(k).map(|(_, d)| d.clone()).collect()
    }
}

/// Извлечённый контекст.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextBundle {
    /// Запрос.
    pub query: String,
    /// Найденные документы.
    pub documents: Vec<Document>,
    /// Сколько длилось извлечение.
    pub duration: Duration,
}

/// Итог обработки запроса.
#[derive(Debug, Clone, PartialEq)]
pub struct Orchestration {
    /// Агент, выполнявший план.
    pub agent_id: String,
    /// Имя агента.
    pub agent_name: String,
    /// План.
    pub plan_id: Uuid,
    /// Результаты шагов.
    pub steps: Vec<StepOutput>,
    /// Ответ агента.
    pub response: String,
}

/// Ошибка оркестратора.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OrchestratorError {
    /// Ни один агент не подходит (реестр пуст или все оценки нулевые).
    #[error("no agent can handle the request")]
    NoAgent,
    /// Агента с таким идентификатором нет.
    #[error("agent `{0}` is not registered")]
    UnknownAgent(String),
    /// Шаг-инструмент завершился неудачей (после повторов) или был отклонён.
    #[error("plan {plan_id} step {step} failed: {source}")]
    ToolStep {
        /// План.
        plan_id: Uuid,
        /// Номер шага.
        step: usize,
        /// Причина.
        source: Box<ToolExecutorError>,
    },
    /// Шаг-задача шины завершился неудачей (после повторов).
    #[error("plan {plan_id} step {step} failed: {source}")]
    BusStep {
        /// План.
        plan_id: Uuid,
        /// Номер шага.
        step: usize,
        /// Причина.
        source: Box<BusError>,
    },
    /// Агент запаниковал (паника поймана; событие `ERROR` с кодом `AGENT_PANIC`).
    #[error("agent `{agent_id}` panicked in {stage}: {message}")]
    AgentPanicked {
        /// Агент.
        agent_id: String,
        /// Метод агента: `score`, `plan`, `respond` или `run_job`.
        stage: &'static str,
        /// Текст паники.
        message: String,
    },
}

impl OrchestratorError {
    /// Код ошибки: код причины для шагов, иначе `NO_AGENT` / `UNKNOWN_AGENT`.
    pub fn code(&self) -> &str {
        match self {
            Self::NoAgent => super::codes::NO_AGENT,
            Self::UnknownAgent(_) => super::codes::UNKNOWN_AGENT,
            Self::ToolStep { source, .. } => source.code(),
            Self::BusStep { source, .. } => source.code(),
            Self::AgentPanicked { .. } => super::codes::AGENT_PANIC,
        }
    }
}

/// Настройки [`OrchestratorRouter`].
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Сколько раз повторять шаг с временной ошибкой (по умолчанию 2).
    pub max_retries: u32,
    /// Пауза перед повтором, умножается на номер попытки (по умолчанию 50 мс).
    pub retry_backoff: Duration,
    /// Сколько документов извлекать (по умолчанию 3).
    pub context_documents: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            retry_backoff: Duration::from_millis(50),
            context_documents: 3,
        }
    }
}

/// Дешёвый `Clone`-дескриптор оркестратора. Своей задачи не держит: запрос
/// обрабатывается в задаче вызывающего.
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
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let done = router.route(&ctx, None, "Research the latest vector database benchmarks").await?;
/// assert_eq!(done.agent_id, "research-agent");
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OrchestratorRouter {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    tools: ToolExecutor,
    bus: AgentBus,
    knowledge: KnowledgeBase,
    config: RouterConfig,
    /// Агенты в порядке регистрации (он же порядок при равных оценках).
    agents: RwLock<Vec<Arc<dyn Agent>>>,
}

impl fmt::Debug for OrchestratorRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.agents().into_iter().map(|a| a.id).collect();
        f.debug_struct("OrchestratorRouter")
            .field("agents", &ids)
            .finish()
    }
}

/// Шаг плана в работе: всё, что нужно для его событий.
struct StepRun<'a> {
    ctx: &'a SessionContext,
    agent_id: &'a str,
    plan_id: Uuid,
    task_id: TaskId,
    step: usize,
    steps: usize,
    name: &'a str,
    started: Instant,
}

impl StepRun<'_> {
    fn progress(&self, done: f64) -> f64 {
        let p = if self.steps == 0 {
            1.0
        } else {
            done / self.steps as f64
        };
        (p.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
    }

    fn event(&self, t: EventType, done: f64, status: &str, extra: Value) -> crate::model::NewEvent {
        let mut payload = json!({
            "task_id": self.task_id.to_string(),
            "step": self.step,
            "progress": self.progress(done),
            "status": status,
            "duration_ms": millis(self.started.elapsed()),
            "plan_id": self.plan_id.to_string(),
            "step_name": clip(self.name, MAX_NAME_BYTES),
        });
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
            p.extend(extra);
        }
        self.ctx.event(t).agent(self.agent_id).payload(payload)
    }
}

fn with_attempt(input: &Value, attempt: u32) -> Value {
    let mut input = input.clone();
    if attempt > 0
        && let Some(obj) = input.as_object_mut()
    {
        obj.insert("attempt".into(), json!(attempt));
    }
    input
}

impl OrchestratorRouter {
    /// Оркестратор без агентов.
    pub fn new(
        publisher: impl Into<Publisher>,
        tools: ToolExecutor,
        bus: AgentBus,
        knowledge: KnowledgeBase,
        config: RouterConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                publisher: publisher.into(),
                tools,
                bus,
                knowledge,
                config,
                agents: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Регистрирует агента (заменяя агента с тем же `id` на его месте).
    pub fn register_agent(&self, agent: Arc<dyn Agent>) -> Option<Arc<dyn Agent>> {
        let mut agents = self
            .inner
            .agents
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match agents.iter_mut().find(|a| a.id() == agent.id()) {
            Some(slot) => Some(std::mem::replace(slot, agent)),
            None => {
                agents.push(agent);
                None
            }
        }
    }

    /// Агент по идентификатору.
    pub fn agent(&self, id: &str) -> Option<Arc<dyn Agent>> {
        let agents = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        agents.iter().find(|a| a.id() == id).cloned()
    }

    /// Агенты в порядке регистрации.
    pub fn agents(&self) -> Vec<AgentInfo> {
        let agents = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        agents.iter().map(|a| a.info()).collect()
    }

    /// Исполнитель инструментов.
    pub fn tools(&self) -> &ToolExecutor {
        &self.inner.tools
    }

    /// Шина задач.
    pub fn bus(&self) -> &AgentBus {
        &self.inner.bus
    }

    /// Публикатор, через который идут события оркестратора.
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Выбирает агента для запроса без событий: наибольшая оценка; при равенстве
    /// остаётся текущий агент `current`, иначе — раньше зарегистрированный.
    /// Возвращает агента и причину выбора. Паника в [`Agent::score`] ловится и
    /// становится [`OrchestratorError::AgentPanicked`] (событие `ERROR` испускает
    /// [`OrchestratorRouter::route`], у которого есть сессия).
    pub fn select_agent(
        &self,
        request: &str,
        current: Option<&str>,
    ) -> Result<(Arc<dyn Agent>, String), OrchestratorError> {
        let agents = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut best: Option<(f64, &Arc<dyn Agent>, String)> = None;
        for agent in agents.iter() {
            let s = match std::panic::catch_unwind(AssertUnwindSafe(|| agent.score(request))) {
                Ok(s) => s,
                Err(panic) => {
                    return Err(OrchestratorError::AgentPanicked {
                        agent_id: agent.id().to_owned(),
                        stage: "score",
                        message: panic_message(panic.as_ref()),
                    });
                }
            };
            let better = match &best {
                None => true,
                Some((b, _, _)) => s.score > *b || (s.score == *b && Some(agent.id()) == current),
            };
            if better {
                best = Some((s.score, agent, clip(&s.reason, MAX_TEXT_BYTES)));
            }
        }
        match best {
            Some((score, agent, reason)) if score > 0.0 => Ok((agent.clone(), reason)),
            _ => Err(OrchestratorError::NoAgent),
        }
    }

    /// Испускает `AGENT_SWITCHED`, если `to` отличается от `from`; возвращает,
    /// была ли смена.
    pub fn switch_agent(
        &self,
        ctx: &SessionContext,
        from: Option<&str>,
        to: &dyn Agent,
        reason: &str,
        mode: AgentMode,
    ) -> bool {
        if from == Some(to.id()) {
            return false;
        }
        self.inner
            .publisher
            .publish(ctx.event(EventType::AgentSwitched).agent(to.id()).payload(json!({
                "from_agent_id": from,
                "to_agent_id": to.id(),
                "agent_name": to.name(),
                "reason": clip(reason, MAX_TEXT_BYTES),
                "mode": mode.as_str(),
            })));
        tracing::debug!(from = ?from, to = to.id(), %mode, "Agent switched.");
        true
    }

    /// Полный путь оркестрованного режима: выбор агента (`AGENT_SWITCHED` при
    /// смене относительно `current`), план и шаги.
    pub async fn route(
        &self,
        ctx: &SessionContext,
        current: Option<&str>,
        request: &str,
    ) -> Result<Orchestration, OrchestratorError> {
        let (agent, reason) = self.select_agent_in(ctx, request, current)?;
        self.switch_agent(ctx, current, agent.as_ref(), &reason, AgentMode::Orchestrated);
        self.execute(ctx, agent, request, AgentMode::Orchestrated).await
    }

    /// [`Self::select_agent`] в сессии `ctx`: паника в `score` испускает `ERROR`.
    pub(crate) fn select_agent_in(
        &self,
        ctx: &SessionContext,
        request: &str,
        current: Option<&str>,
    ) -> Result<(Arc<dyn Agent>, String), OrchestratorError> {
        let selected = self.select_agent(request, current);
        if let Err(err @ OrchestratorError::AgentPanicked { .. }) = &selected {
            self.emit_agent_panic(ctx, err, &["  in OrchestratorRouter::select_agent".to_owned()]);
        }
        selected
    }

    /// `ERROR` о панике агента (`err` — [`OrchestratorError::AgentPanicked`]).
    fn emit_agent_panic(&self, ctx: &SessionContext, err: &OrchestratorError, frames: &[String]) {
        let OrchestratorError::AgentPanicked { agent_id, stage, .. } = err else {
            return;
        };
        tracing::debug!(agent_id, stage, error = %err, "Agent panicked.");
        let mut trace = vec![
            format!("panic: {err}"),
            format!("  at Agent::{stage} of `{agent_id}`"),
        ];
        trace.extend_from_slice(frames);
        trace.push(format!("  session {}", ctx.session_id));
        self.inner.publisher.publish(
            ctx.event(EventType::Error)
                .agent(agent_id.as_str())
                .error_code(err.code())
                .payload(json!({
                    "error_message": clip(&err.to_string(), MAX_ERROR_TEXT_BYTES),
                    "stack_trace": clip(&stack_trace(&trace), MAX_ERROR_TEXT_BYTES),
                    "source": "orchestrator",
                    "error_type": "panic",
                    "stage": stage,
                    "agent_id": agent_id,
                })),
        );
    }

    /// Извлекает контекст и испускает `CONTEXT_RETRIEVED`.
    pub async fn retrieve_context(&self, ctx: &SessionContext, agent_id: &str, query: &str) -> ContextBundle {
        self.retrieve(ctx, agent_id, query, None).await
    }

    async fn retrieve(
        &self,
        ctx: &SessionContext,
        agent_id: &str,
        query: &str,
        task_id: Option<TaskId>,
    ) -> ContextBundle {
        let started = Instant::now();
        // Имитация обращения к индексу: 3–15 мс, детерминированно по запросу.
        tokio::time::sleep(Duration::from_millis(
            3 + stable_hash(&[query.as_bytes(), b"kb"]) % 13,
        ))
        .await;
        let documents = self
            .inner
            .knowledge
            .search(query, self.inner.config.context_documents);
        let duration = started.elapsed();
        let sources: Vec<&str> = documents.iter().map(|d| d.source.as_str()).collect();
        self.inner.publisher.publish(
            ctx.event(EventType::ContextRetrieved)
                .agent(agent_id)
                .payload(json!({
                    "query": clip(query, MAX_TEXT_BYTES),
                    "documents": documents.len(),
                    "sources": sources,
                    "duration_ms": millis(duration),
                    "task_id": task_id.map(|t| t.to_string()),
                })),
        );
        ContextBundle {
            query: query.to_owned(),
            documents,
            duration,
        }
    }

    /// Выполняет запрос агентом `agent` без выбора: `TASK_PLAN_CREATED`, затем
    /// шаги плана по порядку.
    pub async fn execute(
        &self,
        ctx: &SessionContext,
        agent: Arc<dyn Agent>,
        request: &str,
        mode: AgentMode,
    ) -> Result<Orchestration, OrchestratorError> {
        let plan_id = Uuid::now_v7();
        let plan = match std::panic::catch_unwind(AssertUnwindSafe(|| agent.plan(request))) {
            Ok(plan) => plan,
            Err(panic) => {
                let err = OrchestratorError::AgentPanicked {
                    agent_id: agent.id().to_owned(),
                    stage: "plan",
                    message: panic_message(panic.as_ref()),
                };
                self.emit_agent_panic(
                    ctx,
                    &err,
                    &[format!("  in OrchestratorRouter::execute, plan {plan_id}")],
                );
                return Err(err);
            }
        };
        let described: Vec<Value> = plan.iter().enumerate().map(|(i, s)| s.describe(i)).collect();
        self.inner
            .publisher
            .publish(
                ctx.event(EventType::TaskPlanCreated)
                    .agent(agent.id())
                    .payload(json!({
                        "plan_id": plan_id.to_string(),
                        "steps": described,
                        "request": clip(request, MAX_TEXT_BYTES),
                        "mode": mode.as_str(),
                        "agent_name": agent.name(),
                    })),
            );
        let mut outputs: Vec<StepOutput> = Vec::with_capacity(plan.len());
        let mut response = None;
        for (i, step) in plan.iter().enumerate() {
            let run = StepRun {
                ctx,
                agent_id: agent.id(),
                plan_id,
                task_id: TaskId::new(),
                step: i,
                steps: plan.len(),
                name: &step.name,
                started: Instant::now(),
            };
            self.inner
                .publisher
                .publish(run.event(EventType::TaskStarted, i as f64, "running", json!({})));
            match self.run_step(&run, &agent, request, step, &outputs).await {
                Ok(output) => {
                    if matches!(step.action, StepAction::Respond) {
                        response = output.get("response").and_then(Value::as_str).map(str::to_owned);
                    }
                    self.inner.publisher.publish(run.event(
                        EventType::TaskCompleted,
                        (i + 1) as f64,
                        "completed",
                        json!({}),
                    ));
                    outputs.push(StepOutput {
                        step: i,
                        name: step.name.clone(),
                        output,
                    });
                }
                Err(err) => {
                    let refused =
                        matches!(&err, OrchestratorError::ToolStep { source, .. } if source.is_refused());
                    let status = if refused { "refused" } else { "failed" };
                    self.inner.publisher.publish(run.event(
                        EventType::TaskCompleted,
                        i as f64,
                        status,
                        json!({
                            "failure_code": err.code(),
                            "failure": clip(&err.to_string(), MAX_ERROR_TEXT_BYTES),
                        }),
                    ));
                    tracing::debug!(%plan_id, step = i, code = err.code(), "Plan stopped at a failed step.");
                    return Err(err);
                }
            }
        }
        let response = match response {
            Some(r) => r,
            None => self.respond(ctx, &agent, request, &outputs, plan_id)?,
        };
        Ok(Orchestration {
            agent_id: agent.id().to_owned(),
            agent_name: agent.name().to_owned(),
            plan_id,
            steps: outputs,
            response,
        })
    }

    /// [`Agent::respond`] с перехватом паники (`ERROR`, затем ошибка).
    fn respond(
        &self,
        ctx: &SessionContext,
        agent: &Arc<dyn Agent>,
        request: &str,
        outputs: &[StepOutput],
        plan_id: Uuid,
    ) -> Result<String, OrchestratorError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| agent.respond(request, outputs))).map_err(|panic| {
            let err = OrchestratorError::AgentPanicked {
                agent_id: agent.id().to_owned(),
                stage: "respond",
                message: panic_message(panic.as_ref()),
            };
            self.emit_agent_panic(ctx, &err, &[format!("  in plan {plan_id}")]);
            err
        })
    }

    async fn run_step(
        &self,
        run: &StepRun<'_>,
        agent: &Arc<dyn Agent>,
        request: &str,
        step: &PlanStep,
        outputs: &[StepOutput],
    ) -> Result<Value, OrchestratorError> {
        let i = run.step as f64;
        let running = |detail: String| {
            self.inner.publisher.publish(run.event(
                EventType::TaskProgress,
                i + 0.5,
                "running",
                json!({ "detail": detail }),
            ));
        };
        let retrying = |attempt: u32, code: &str| {
            self.inner.publisher.publish(run.event(
                EventType::TaskProgress,
                i + 0.5,
                "retrying",
                json!({ "attempt": attempt, "last_error_code": code }),
            ));
        };
        let max_retries = self.inner.config.max_retries;
        let backoff = self.inner.config.retry_backoff;
        match &step.action {
            StepAction::RetrieveContext { query } => {
                running(format!("retrieving context for \"{}\"", truncate_str(query, 100)));
                let bundle = self
                    .retrieve(run.ctx, run.agent_id, query, Some(run.task_id))
                    .await;
                let sources: Vec<&str> = bundle.documents.iter().map(|d| d.source.as_str()).collect();
                Ok(json!({ "documents": bundle.documents.len(), "sources": sources }))
            }
            StepAction::CallTool { tool, input } => {
                running(format!("calling tool {}", clip(tool, MAX_NAME_BYTES)));
                let mut attempt = 0;
                loop {
                    match self
                        .inner
                        .tools
                        .call(run.ctx, run.agent_id, tool, with_attempt(input, attempt))
                        .await
                    {
                        Ok(out) => break Ok(out.value),
                        Err(e) if e.is_retryable() && attempt < max_retries => {
                            attempt += 1;
                            retrying(attempt, e.code());
                            tokio::time::sleep(backoff * attempt).await;
                        }
                        Err(source) => {
                            break Err(OrchestratorError::ToolStep {
                                plan_id: run.plan_id,
                                step: run.step,
                                source: Box::new(source),
                            });
                        }
                    }
                }
            }
            StepAction::Delegate { job, input } => {
                running(format!(
                    "delegating {} to the agent bus",
                    clip(job, MAX_NAME_BYTES)
                ));
                let mut attempt = 0;
                loop {
                    // Синхронная часть `run_job` идёт здесь, в задаче вызывающего.
                    let work = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        agent.run_job(job, with_attempt(input, attempt))
                    })) {
                        Ok(work) => work,
                        Err(panic) => {
                            let err = OrchestratorError::AgentPanicked {
                                agent_id: agent.id().to_owned(),
                                stage: "run_job",
                                message: panic_message(panic.as_ref()),
                            };
                            self.emit_agent_panic(
                                run.ctx,
                                &err,
                                &[format!(
                                    "  in step {} (`{}`) of plan {}, job `{}`",
                                    run.step,
                                    clip(run.name, MAX_NAME_BYTES),
                                    run.plan_id,
                                    clip(job, MAX_NAME_BYTES)
                                )],
                            );
                            break Err(err);
                        }
                    };
                    let result = match self.inner.bus.submit_task(
                        run.ctx,
                        run.agent_id,
                        BusTask::new(job.clone(), work),
                    ) {
                        Ok(ticket) => ticket.join().await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(v) => break Ok(v),
                        Err(e) if e.is_retryable() && attempt < max_retries => {
                            attempt += 1;
                            retrying(attempt, e.code());
                            tokio::time::sleep(backoff * attempt).await;
                        }
                        Err(source) => {
                            break Err(OrchestratorError::BusStep {
                                plan_id: run.plan_id,
                                step: run.step,
                                source: Box::new(source),
                            });
                        }
                    }
                }
            }
            StepAction::Respond => self
                .respond(run.ctx, agent, request, outputs, run.plan_id)
                .map(|response| json!({ "response": response })),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use crate::StreamManager;
    use crate::model::Event;
    use crate::runtime::agent::AgentScore;
    use crate::runtime::bus::TaskError;
    use crate::runtime::testkit::{drain_session, has_keys, memory_stream, session, types};
    use crate::runtime::{AgentRuntime, RuntimeConfig};

    /// Агент с заданным планом; задача шины `flaky_job` падает на первой попытке.
    struct PlanAgent {
        plan: Vec<PlanStep>,
    }

    impl Agent for PlanAgent {
        fn id(&self) -> &str {
            "plan-agent"
        }
        fn name(&self) -> &str {
            "Plan Agent"
        }
        fn score(&self, request: &str) -> AgentScore {
            AgentScore {
                score: if request.contains("scripted") { 100.0 } else { 0.0 },
                reason: "scripted request".into(),
            }
        }
        fn plan(&self, _request: &str) -> Vec<PlanStep> {
            self.plan.clone()
        }
        fn run_job(&self, job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
            let job = job.to_owned();
            Box::pin(async move {
                let attempt = input.get("attempt").and_then(Value::as_u64).unwrap_or(0);
                if job == "flaky_job" && attempt == 0 {
                    Err(TaskError::new("JOB_FLAKY", "first attempt fails").retryable())
                } else {
                    Ok(json!({ "job": job, "attempt": attempt }))
                }
            })
        }
        fn respond(&self, _request: &str, outputs: &[StepOutput]) -> String {
            format!("{} steps done", outputs.len())
        }
    }

    async fn setup() -> (StreamManager, AgentRuntime) {
        let stream = memory_stream().await;
        let mut cfg = RuntimeConfig::default();
        cfg.router.retry_backoff = Duration::from_millis(1);
        cfg.tools.high_risk_approval_expiry = Some(Duration::from_millis(50));
        (stream.clone(), AgentRuntime::start(stream, cfg))
    }

    fn of<'a>(events: &'a [Event], t: &str) -> Vec<&'a Event> {
        events.iter().filter(|e| e.event_type == t).collect()
    }

    #[tokio::test]
    async fn route_emits_switch_plan_context_steps_in_order_with_catalogue_keys() {
        // Arrange
        let (stream, rt) = setup().await;
        let ctx = session();

        // Act
        let done = rt
            .router
            .route(&ctx, None, "Research the latest vector database benchmarks")
            .await
            .unwrap();
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(done.agent_id, "research-agent");
        assert!(done.response.contains("Research on"));
        assert_eq!(
            &types(&events)[..3],
            ["AGENT_SWITCHED", "TASK_PLAN_CREATED", "TASK_STARTED"]
        );
        let sw = &events[0];
        assert_eq!(sw.agent_id.as_deref(), Some("research-agent"));
        has_keys(
            sw,
            &["from_agent_id", "to_agent_id", "agent_name", "reason", "mode"],
        );
        assert_eq!(sw.payload["from_agent_id"], Value::Null);
        assert_eq!(sw.payload["to_agent_id"], "research-agent");
        assert_eq!(sw.payload["agent_name"], "Research Agent");
        assert_eq!(sw.payload["mode"], "orchestrated");
        assert!(sw.payload["reason"].as_str().unwrap().contains("research"));

        let plan = &events[1];
        has_keys(plan, &["plan_id", "steps"]);
        assert_eq!(plan.payload["plan_id"], done.plan_id.to_string());
        let steps = plan.payload["steps"].as_array().unwrap();
        assert_eq!(steps.len(), done.steps.len());
        assert_eq!(steps[0]["action"], "retrieve_context");

        let ctx_ev = of(&events, "CONTEXT_RETRIEVED");
        assert_eq!(ctx_ev.len(), 1);
        has_keys(ctx_ev[0], &["query", "documents", "sources", "duration_ms"]);
        assert!(ctx_ev[0].payload["documents"].as_u64().unwrap() >= 1);
        assert!(
            ctx_ev[0].payload["sources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "kb://research/vector-db")
        );

        // Каждый шаг: STARTED → … → COMPLETED с одним task_id; прогресс растёт до 1.
        let started = of(&events, "TASK_STARTED");
        let completed = of(&events, "TASK_COMPLETED");
        assert_eq!(started.len(), steps.len());
        assert_eq!(completed.len(), steps.len());
        let mut last_progress = -1.0;
        for e in events.iter().filter(|e| {
            e.event_type.starts_with("TASK_")
                && e.event_type != "TASK_PLAN_CREATED"
                && e.event_type != "TASK_QUEUED"
                && e.event_type != "TASK_DEQUEUED"
        }) {
            has_keys(e, &["task_id", "step", "progress", "status", "duration_ms"]);
            assert_eq!(e.agent_id.as_deref(), Some("research-agent"));
            let p = e.payload["progress"].as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&p) && p >= last_progress,
                "{p} after {last_progress}"
            );
            last_progress = p;
        }
        assert_eq!(completed.last().unwrap().payload["progress"], 1.0);
        for (s, c) in started.iter().zip(&completed) {
            assert_eq!(s.payload["task_id"], c.payload["task_id"]);
            assert_eq!(s.payload["status"], "running");
            assert_eq!(c.payload["status"], "completed");
        }
        assert!(!of(&events, "TASK_PROGRESS").is_empty());
        // Инструмент и шина тоже участвовали.
        assert_eq!(
            of(&events, "TOOL_REQUEST")[0].tool_name.as_deref(),
            Some("web_search")
        );
        assert_eq!(of(&events, "TASK_QUEUED").len(), 1);
        assert_eq!(of(&events, "TASK_DEQUEUED").len(), 1);
    }

    #[tokio::test]
    async fn the_same_agent_again_is_not_a_switch() {
        let (stream, rt) = setup().await;
        let ctx = session();
        let first = rt.router.route(&ctx, None, "What is 2 + 2?").await.unwrap();
        assert_eq!(first.agent_id, "general-agent");
        rt.router
            .route(&ctx, Some("general-agent"), "What is 3 * 3?")
            .await
            .unwrap();
        rt.router
            .route(
                &ctx,
                Some("general-agent"),
                "Deploy billing to staging? no: status of billing",
            )
            .await
            .ok();
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;
        let switches = of(&events, "AGENT_SWITCHED");
        assert_eq!(switches.len(), 2);
        assert_eq!(switches[1].payload["from_agent_id"], "general-agent");
        assert_eq!(switches[1].payload["to_agent_id"], "ops-agent");
        assert_eq!(switches[1].agent_id.as_deref(), Some("ops-agent"));
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_with_attempt_numbers() {
        // Arrange
        let (stream, rt) = setup().await;
        rt.router.register_agent(Arc::new(PlanAgent {
            plan: vec![
                PlanStep::new(
                    "probe",
                    StepAction::CallTool {
                        tool: "service_status".into(),
                        input: json!({"service": "billing", "simulate": "error_once"}),
                    },
                ),
                PlanStep::new(
                    "job",
                    StepAction::Delegate {
                        job: "flaky_job".into(),
                        input: json!({}),
                    },
                ),
                PlanStep::new("answer", StepAction::Respond),
            ],
        }));
        let ctx = session();

        // Act
        let done = rt.router.route(&ctx, None, "scripted run").await.unwrap();
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(done.response, "2 steps done");
        assert_eq!(done.steps[1].output, json!({"job": "flaky_job", "attempt": 1}));
        let requests = of(&events, "TOOL_REQUEST");
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].payload["attempt"], 1);
        let retries: Vec<_> = of(&events, "TASK_PROGRESS")
            .into_iter()
            .filter(|e| e.payload["status"] == "retrying")
            .collect();
        assert_eq!(retries.len(), 2);
        assert_eq!(retries[0].payload["last_error_code"], "UPSTREAM_UNAVAILABLE");
        assert_eq!(retries[1].payload["last_error_code"], "JOB_FLAKY");
        let errors = of(&events, "ERROR");
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].payload["source"], "tool_executor");
        assert_eq!(errors[1].payload["source"], "agent_bus");
        assert!(
            of(&events, "TASK_COMPLETED")
                .iter()
                .all(|e| e.payload["status"] == "completed")
        );
    }

    #[tokio::test]
    async fn a_refused_step_stops_the_plan_with_status_refused() {
        let (stream, rt) = setup().await;
        rt.router.register_agent(Arc::new(PlanAgent {
            plan: vec![
                PlanStep::new(
                    "write",
                    StepAction::CallTool {
                        tool: "file_write".into(),
                        input: json!({"path": "a.txt", "content": "x"}),
                    },
                ),
                PlanStep::new("answer", StepAction::Respond),
            ],
        }));
        let ctx = session();
        let err = rt.router.route(&ctx, None, "scripted write").await.unwrap_err();
        assert_eq!(err.code(), "APPROVAL_TIMEOUT");
        assert!(matches!(err, OrchestratorError::ToolStep { step: 0, .. }));
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;
        let completed = of(&events, "TASK_COMPLETED");
        assert_eq!(completed.len(), 1, "the plan stops at the refused step");
        assert_eq!(completed[0].payload["status"], "refused");
        assert_eq!(completed[0].payload["progress"], 0.0);
        assert_eq!(completed[0].error_code, None);
        assert_eq!(of(&events, "TASK_STARTED").len(), 1);
        assert_eq!(
            types(&events).last().copied(),
            Some("TASK_COMPLETED"),
            "{:?}",
            types(&events)
        );
    }

    #[tokio::test]
    async fn no_agent_for_a_request_is_a_clear_error() {
        let stream = memory_stream().await;
        let rt = AgentRuntime::start(stream.clone(), RuntimeConfig::default());
        let empty = OrchestratorRouter::new(
            rt.publisher.clone(),
            rt.tools.clone(),
            rt.bus.clone(),
            KnowledgeBase::default(),
            RouterConfig::default(),
        );
        let err = empty.route(&session(), None, "anything").await.unwrap_err();
        assert_eq!(err, OrchestratorError::NoAgent);
        assert_eq!(err.code(), "NO_AGENT");
        rt.shutdown().await;
        stream.shutdown().await;
    }

    #[test]
    fn knowledge_base_search_ranks_by_overlap_then_source() {
        let kb = KnowledgeBase::builtin();
        let hits = kb.search("deploy payments to production", 2);
        assert_eq!(hits[0].source, "kb://runbooks/deploy");
        assert!(kb.search("zzz qqq", 3).is_empty());
    }

    /// Агент, паникующий в заданном методе.
    struct PanicAgent {
        stage: &'static str,
    }

    impl Agent for PanicAgent {
        fn id(&self) -> &str {
            "panic-agent"
        }
        fn name(&self) -> &str {
            "Panic Agent"
        }
        fn score(&self, request: &str) -> AgentScore {
            if self.stage == "score" {
                panic!("score exploded");
            }
            AgentScore {
                score: if request.contains("boom") { 100.0 } else { 0.0 },
                reason: "boom requested".into(),
            }
        }
        fn plan(&self, _request: &str) -> Vec<PlanStep> {
            if self.stage == "plan" {
                panic!("plan exploded");
            }
            vec![
                PlanStep::new(
                    "job",
                    StepAction::Delegate {
                        job: "work".into(),
                        input: json!({}),
                    },
                ),
                PlanStep::new("answer", StepAction::Respond),
            ]
        }
        fn run_job(&self, _job: &str, _input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
            if self.stage == "run_job" {
                panic!("run_job exploded");
            }
            Box::pin(async { Ok(json!({"done": true})) })
        }
        fn respond(&self, _request: &str, _outputs: &[StepOutput]) -> String {
            if self.stage == "respond" {
                panic!("respond exploded");
            }
            "ok".into()
        }
    }

    #[tokio::test]
    async fn a_panic_in_plan_is_an_error_event_and_a_clear_error() {
        // Arrange
        let (stream, rt) = setup().await;
        rt.router.register_agent(Arc::new(PanicAgent { stage: "plan" }));
        let ctx = session();

        // Act: раньше паника разматывала стек вызывающего.
        let err = rt.router.route(&ctx, None, "boom").await.unwrap_err();
        // Оркестратор работоспособен и после паники.
        let ok = rt.router.route(&ctx, None, "What is 2 + 2?").await;
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(
            err,
            OrchestratorError::AgentPanicked {
                agent_id: "panic-agent".into(),
                stage: "plan",
                message: "plan exploded".into(),
            }
        );
        assert_eq!(err.code(), "AGENT_PANIC");
        assert!(ok.is_ok());
        assert_eq!(&types(&events)[..2], ["AGENT_SWITCHED", "ERROR"]);
        let error = &events[1];
        assert_eq!(error.error_code.as_deref(), Some("AGENT_PANIC"));
        assert_eq!(error.agent_id.as_deref(), Some("panic-agent"));
        has_keys(error, &["error_message", "stack_trace", "source"]);
        assert_eq!(error.payload["source"], "orchestrator");
        assert_eq!(error.payload["stage"], "plan");
        assert!(
            error.payload["stack_trace"]
                .as_str()
                .unwrap()
                .contains("plan exploded")
        );
        assert_eq!(
            of(&events, "TASK_PLAN_CREATED").len(),
            1,
            "only the second request has a plan"
        );
    }

    #[tokio::test]
    async fn panics_in_respond_and_run_job_fail_the_step_with_an_error_event() {
        for stage in ["respond", "run_job"] {
            // Arrange
            let (stream, rt) = setup().await;
            rt.router.register_agent(Arc::new(PanicAgent { stage }));
            let ctx = session();

            // Act
            let err = rt.router.route(&ctx, None, "boom").await.unwrap_err();
            rt.shutdown().await;
            let events = drain_session(&stream, &ctx).await;

            // Assert
            assert!(
                matches!(&err, OrchestratorError::AgentPanicked { stage: s, .. } if *s == stage),
                "{err:?}"
            );
            let errors = of(&events, "ERROR");
            assert_eq!(errors.len(), 1, "{stage}: {:?}", types(&events));
            assert_eq!(errors[0].error_code.as_deref(), Some("AGENT_PANIC"));
            assert_eq!(errors[0].agent_id.as_deref(), Some("panic-agent"));
            assert_eq!(errors[0].payload["stage"], stage);
            let completed = of(&events, "TASK_COMPLETED");
            let last = completed.last().unwrap();
            assert_eq!(last.payload["status"], "failed", "{stage}");
            assert_eq!(last.payload["failure_code"], "AGENT_PANIC");
            assert_eq!(types(&events).last().copied(), Some("TASK_COMPLETED"));
            let failed_step = if stage == "run_job" { 0 } else { 1 };
            assert_eq!(last.payload["step"], failed_step);
        }
    }

    #[tokio::test]
    async fn a_panic_in_score_is_reported_by_route_and_the_workspace() {
        let (stream, rt) = setup().await;
        rt.router.register_agent(Arc::new(PanicAgent { stage: "score" }));
        let ctx = session();
        let err = rt.router.route(&ctx, None, "anything").await.unwrap_err();
        assert!(matches!(
            &err,
            OrchestratorError::AgentPanicked { stage: "score", .. }
        ));
        // Без сессии (выбор без событий) — та же ошибка, без паники.
        assert_eq!(rt.router.select_agent("anything", None).err(), Some(err.clone()));
        let space = crate::runtime::UserWorkerSpace::new(rt.router.clone(), ctx.clone());
        let ws_err = space.send("anything else").await.unwrap_err();
        assert_eq!(ws_err.to_string(), err.to_string());
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["ERROR", "ERROR"]);
        for e in &events {
            assert_eq!(e.error_code.as_deref(), Some("AGENT_PANIC"));
            assert_eq!(e.agent_id.as_deref(), Some("panic-agent"));
            assert_eq!(e.payload["stage"], "score");
        }
    }

    #[tokio::test]
    async fn a_huge_request_keeps_plan_and_context_payloads_small() {
        let (stream, rt) = setup().await;
        let ctx = session();
        let request = format!("hello {}", "word ".repeat(40_000));
        rt.router.route(&ctx, None, &request).await.unwrap();
        rt.shutdown().await;
        let events = drain_session(&stream, &ctx).await;
        let plan = of(&events, "TASK_PLAN_CREATED")[0];
        let query = plan.payload["steps"][0]["query"].as_str().unwrap();
        assert!(query.len() <= MAX_TEXT_BYTES + 3 && query.ends_with('…'));
        assert_eq!(
            plan.payload.get("payload_truncated"),
            None,
            "targeted truncation suffices"
        );
        for e in &events {
            let size = serde_json::to_string(&e.payload).unwrap().len();
            assert!(size <= 8 * 1024, "{} payload is {size} bytes", e.event_type);
        }
    }
}
