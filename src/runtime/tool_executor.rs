//! [`ToolExecutor`]: реестр инструментов, оценка риска, согласование рискованных
//! вызовов, таймауты и перехват паник.
//!
//! Один вызов [`ToolExecutor::call`] испускает (SPEC §3):
//! 1. `TOOL_REQUEST` до запуска: `tool_name`, `agent_id`; нагрузка `tool_type`,
//!    `input` (усечённый), `risk_level`, `risk_factors`, `tool_call_id`
//!    (+ `requires_approval`, `attempt`, если он есть во входе).
//! 2. Для риска HIGH/CRITICAL — согласование через [`ApprovalManager`]
//!    (`APPROVAL_REQUIRED` … `APPROVAL_RESOLVED`/`APPROVAL_TIMEOUT`). Инструмент
//!    запускается только после одобрения; отказ или истечение срока — вызов
//!    отклонён: `TOOL_RESULT` со `status=error` и кодом
//!    [`APPROVAL_REJECTED`](super::codes::APPROVAL_REJECTED) /
//!    [`APPROVAL_TIMEOUT`](super::codes::APPROVAL_TIMEOUT), а инструмент не
//!    исполняется. Это не исключение, поэтому `ERROR` здесь не испускается.
//! 3. Исполнение в отдельной задаче tokio с таймаутом инструмента. Ошибка,
//!    паника или таймаут — сначала `ERROR` (`error_code`; `error_message`,
//!    `stack_trace`, `source="tool_executor"`), затем `TOOL_RESULT` со
//!    `status=error` и тем же `error_code`. Паника не роняет исполнителя:
//!    её ловит `JoinError` задачи. Паника в синхронных методах инструмента
//!    (`assess_risk`, `tool_type`, `timeout`), которые идут в задаче
//!    вызывающего, тоже ловится: `ERROR` с кодом `TOOL_PANIC` (без
//!    `TOOL_REQUEST`/`TOOL_RESULT` — вызов не начался) и
//!    [`ToolExecutorError::Panicked`].
//!
//! У `ERROR` заданы колонки `tool_name` и `agent_id`. Код ошибки инструмента
//! ([`ToolError::code`]) приводится к виду колонки `error_code`
//! ([`sanitize_error_code`], запасной код
//! [`TOOL_ERROR`](super::codes::TOOL_ERROR)) — и в событиях, и в возвращаемой
//! ошибке. `error_message` и `stack_trace` усекаются до 8 КиБ, факторы риска — до
//! 32 строк по 256 байт.
//! 4. `TOOL_RESULT`: `tool_name`, `agent_id`; нагрузка `status`
//!    (`success`/`error`), `duration_ms` (время исполнения инструмента; 0, если
//!    он не запускался), `output` (усечённый), `tool_call_id`.
//!
//! # Усечение
//!
//! `input` в `TOOL_REQUEST` и `output` в `TOOL_RESULT` кладутся в нагрузку как
//! JSON, если их сериализация не длиннее [`ToolExecutorConfig::max_payload_bytes`]
//! (по умолчанию [`DEFAULT_MAX_PAYLOAD_BYTES`] = 4 КиБ). Иначе вместо значения
//! кладётся строка — первые байты сериализации (по границе символа) с «…», и
//! добавляются ключи `output_truncated: true` (`input_truncated`) и
//! `output_bytes` (`input_bytes`) — полный размер. Так событие гарантированно
//! укладывается в предел нагрузки 64 КиБ.
//!
//! Вызывают: [`OrchestratorRouter`](super::OrchestratorRouter) и любые
//! приложения, встраивающие библиотеку.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::approval::{ApprovalError, ApprovalManager, ApprovalRequest, Decision};
use super::codes;
use super::context::{
    MAX_ERROR_TEXT_BYTES, MAX_NAME_BYTES, Publisher, SessionContext, clip, millis, panic_message,
    sanitize_error_code, stack_trace, truncate_str,
};
use crate::model::EventType;

/// Таймаут инструмента по умолчанию.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Предел сериализованного `input`/`output` в нагрузке по умолчанию, байт.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4096;

/// Сколько факторов риска попадает в `risk_factors`.
const MAX_RISK_FACTORS: usize = 32;

/// Уровень риска вызова (значение `risk_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RiskLevel {
    /// Безопасно.
    Low,
    /// Умеренно.
    Medium,
    /// Высокий: нужно согласование.
    High,
    /// Критический: нужно согласование.
    Critical,
}

impl RiskLevel {
    /// Строковое значение (`LOW`, `MEDIUM`, `HIGH`, `CRITICAL`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        }
    }

    /// Нужно ли согласование (HIGH и CRITICAL).
    pub fn requires_approval(self) -> bool {
        self >= Self::High
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Оценка риска конкретного вызова: уровень и факторы (человекочитаемые причины).
///
/// ```
/// use eventlog::runtime::{RiskAssessment, RiskLevel};
/// let r = RiskAssessment::new(RiskLevel::Low).escalate(RiskLevel::High, "writes to disk");
/// assert_eq!(r.level, RiskLevel::High);
/// assert_eq!(r.factors, vec!["writes to disk".to_string()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAssessment {
    /// Уровень.
    pub level: RiskLevel,
    /// Факторы риска.
    pub factors: Vec<String>,
}

impl RiskAssessment {
    /// Оценка без факторов.
    pub fn new(level: RiskLevel) -> Self {
        Self {
            level,
            factors: Vec::new(),
        }
    }

    /// Добавляет фактор и поднимает уровень до `level`, если он выше текущего.
    pub fn escalate(mut self, level: RiskLevel, factor: impl Into<String>) -> Self {
        self.level = self.level.max(level);
        self.factors.push(factor.into());
        self
    }
}

/// Тип инструмента — значение `tool_type`, как `gen_ai.tool.type` в
/// OpenTelemetry GenAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolType {
    /// Функция, исполняемая на стороне приложения.
    Function,
    /// Расширение, обращающееся к внешним API.
    Extension,
    /// Хранилище данных (поиск, извлечение).
    Datastore,
}

impl ToolType {
    /// Строковое значение (`function`, `extension`, `datastore`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Extension => "extension",
            Self::Datastore => "datastore",
        }
    }
}

/// Ошибка, которую возвращает сам инструмент.
///
/// ```
/// use eventlog::runtime::ToolError;
/// let e = ToolError::new("UPSTREAM_UNAVAILABLE", "503 from billing").retryable();
/// assert!(e.retryable);
/// assert_eq!(e.to_string(), "UPSTREAM_UNAVAILABLE: 503 from billing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    /// Код (`error_code` событий), `^[A-Z][A-Z0-9_]*$`, до 64 символов.
    pub code: String,
    /// Сообщение.
    pub message: String,
    /// Имеет ли смысл повторить вызов.
    pub retryable: bool,
}

impl ToolError {
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

/// Инструмент, который может вызвать агент.
///
/// Исполнение возвращает `BoxFuture`, чтобы трейт оставался объектным без
/// `async_trait`. Исполнитель запускает будущее в отдельной задаче, так что
/// паника внутри не роняет вызывающего.
///
/// ```
/// use eventlog::runtime::{RiskAssessment, RiskLevel, Tool, ToolError, ToolType};
/// use futures::future::BoxFuture;
/// use serde_json::{Value, json};
///
/// struct Echo;
/// impl Tool for Echo {
///     fn name(&self) -> &str { "echo" }
///     fn tool_type(&self) -> ToolType { ToolType::Function }
///     fn assess_risk(&self, _input: &Value) -> RiskAssessment { RiskAssessment::new(RiskLevel::Low) }
///     fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
///         Box::pin(async move { Ok(json!({ "echo": input })) })
///     }
/// }
/// ```
pub trait Tool: Send + Sync + 'static {
    /// Имя (`tool_name`), уникальное в реестре.
    fn name(&self) -> &str;
    /// Тип (`tool_type`).
    fn tool_type(&self) -> ToolType;
    /// Краткое описание.
    fn description(&self) -> &str {
        ""
    }
    /// Оценивает риск вызова с этим входом.
    fn assess_risk(&self, input: &Value) -> RiskAssessment;
    /// Собственный таймаут; `None` — [`ToolExecutorConfig::default_timeout`].
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Исполняет вызов.
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>>;
}

/// Ошибка вызова через [`ToolExecutor`]. Метод [`ToolExecutorError::code`] даёт
/// `error_code`, с которым вызов записан в `TOOL_RESULT`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ToolExecutorError {
    /// Инструмента нет в реестре (событие `ERROR` с кодом `UNKNOWN_TOOL`).
    #[error("tool `{0}` is not registered")]
    UnknownTool(String),
    /// Согласование отклонено; инструмент не запускался.
    #[error("call {tool_call_id} to `{tool_name}` was rejected by {resolved_by}")]
    Rejected {
        /// Инструмент.
        tool_name: String,
        /// Вызов.
        tool_call_id: String,
        /// Кто отклонил.
        resolved_by: String,
        /// Комментарий.
        comment: Option<String>,
    },
    /// Срок согласования истёк; инструмент не запускался.
    #[error("approval for call {tool_call_id} to `{tool_name}` timed out")]
    ApprovalTimedOut {
        /// Инструмент.
        tool_name: String,
        /// Вызов.
        tool_call_id: String,
    },
    /// Менеджер согласований недоступен; инструмент не запускался.
    #[error("approval for `{tool_name}` is unavailable: {source}")]
    Approval {
        /// Инструмент.
        tool_name: String,
        /// Причина.
        source: ApprovalError,
    },
    /// Инструмент вернул ошибку.
    #[error("tool `{tool_name}` failed: {source}")]
    Failed {
        /// Инструмент.
        tool_name: String,
        /// Вызов.
        tool_call_id: String,
        /// Ошибка инструмента.
        source: ToolError,
    },
    /// Инструмент запаниковал (паника поймана).
    #[error("tool `{tool_name}` panicked: {message}")]
    Panicked {
        /// Инструмент.
        tool_name: String,
        /// Вызов.
        tool_call_id: String,
        /// Текст паники.
        message: String,
    },
    /// Инструмент не уложился в таймаут (его задача прервана).
    #[error("tool `{tool_name}` timed out after {} ms", after.as_millis())]
    TimedOut {
        /// Инструмент.
        tool_name: String,
        /// Вызов.
        tool_call_id: String,
        /// Таймаут.
        after: Duration,
    },
}

impl ToolExecutorError {
    /// Код ошибки (`error_code`).
    pub fn code(&self) -> &str {
        match self {
            Self::UnknownTool(_) => codes::UNKNOWN_TOOL,
            Self::Rejected { .. } => codes::APPROVAL_REJECTED,
            Self::ApprovalTimedOut { .. } => codes::APPROVAL_TIMEOUT,
            Self::Approval { .. } => codes::APPROVAL_UNAVAILABLE,
            Self::Failed { source, .. } => &source.code,
            Self::Panicked { .. } => codes::TOOL_PANIC,
            Self::TimedOut { .. } => codes::TOOL_TIMEOUT,
        }
    }

    /// Имеет ли смысл повторить вызов: временная ошибка инструмента, паника или
    /// таймаут. Отказ в согласовании повторять нельзя.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Failed { source, .. } => source.retryable,
            Self::Panicked { .. } | Self::TimedOut { .. } => true,
            _ => false,
        }
    }

    /// Вызов отклонён согласованием (инструмент не запускался).
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Self::Rejected { .. } | Self::ApprovalTimedOut { .. } | Self::Approval { .. }
        )
    }
}

/// Успешный результат вызова.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Идентификатор вызова (`tool_call_id`).
    pub tool_call_id: String,
    /// Результат инструмента (полный, без усечения).
    pub value: Value,
    /// Время исполнения.
    pub duration: Duration,
}

/// Настройки [`ToolExecutor`].
#[derive(Debug, Clone)]
pub struct ToolExecutorConfig {
    /// Таймаут инструментов без собственного (по умолчанию 30 с).
    pub default_timeout: Duration,
    /// Предел сериализованного `input`/`output` в нагрузке, байт (4 КиБ).
    pub max_payload_bytes: usize,
    /// Срок согласования для HIGH; `None` — срок менеджера по умолчанию.
    pub high_risk_approval_expiry: Option<Duration>,
    /// Срок согласования для CRITICAL; `None` — срок менеджера по умолчанию.
    pub critical_risk_approval_expiry: Option<Duration>,
}

impl Default for ToolExecutorConfig {
    fn default() -> Self {
        Self {
            default_timeout: DEFAULT_TOOL_TIMEOUT,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            high_risk_approval_expiry: None,
            critical_risk_approval_expiry: None,
        }
    }
}

/// Краткие сведения об инструменте реестра.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolInfo {
    /// Имя.
    pub name: String,
    /// Тип.
    pub tool_type: ToolType,
    /// Описание.
    pub description: String,
}

/// Дешёвый `Clone`-дескриптор исполнителя инструментов. Своей задачи не
/// держит: вызов идёт в задаче вызывающего, а сам инструмент — в отдельной
/// задаче tokio (ради перехвата паник и прерывания по таймауту).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use eventlog::logger::LoggerConfig;
/// use eventlog::runtime::tools::Calculator;
/// use eventlog::runtime::{ApprovalConfig, ApprovalManager, Publisher, SessionContext, ToolExecutor, ToolExecutorConfig};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use serde_json::json;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let publisher = Publisher::new(stream.clone());
/// let approvals = ApprovalManager::start(publisher.clone(), ApprovalConfig::default());
/// let tools = ToolExecutor::new(publisher, approvals, ToolExecutorConfig::default());
/// tools.register(Arc::new(Calculator));
///
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let out = tools.call(&ctx, "research-agent", "calculator", json!({"expression": "2 * (3 + 4)"})).await?;
/// assert_eq!(out.value["result"], json!(14.0));
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ToolExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    approvals: ApprovalManager,
    config: ToolExecutorConfig,
    tools: RwLock<HashMap<String, Arc<dyn Tool>>>,
}

impl fmt::Debug for ToolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.tools().into_iter().map(|t| t.name).collect();
        f.debug_struct("ToolExecutor").field("tools", &names).finish()
    }
}

/// Кто и что вызывает — для событий одного вызова.
struct CallScope<'a> {
    ctx: &'a SessionContext,
    agent_id: &'a str,
    tool_name: &'a str,
    tool_call_id: &'a str,
}

impl ToolExecutor {
    /// Исполнитель с пустым реестром.
    pub fn new(
        publisher: impl Into<Publisher>,
        approvals: ApprovalManager,
        config: ToolExecutorConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                publisher: publisher.into(),
                approvals,
                config,
                tools: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Регистрирует инструмент; возвращает прежний с тем же именем, если был.
    pub fn register(&self, tool: Arc<dyn Tool>) -> Option<Arc<dyn Tool>> {
        let mut tools = self
            .inner
            .tools
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tools.insert(tool.name().to_owned(), tool)
    }

    /// Инструмент по имени.
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        let tools = self
            .inner
            .tools
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tools.get(name).cloned()
    }

    /// Инструменты реестра, по имени.
    pub fn tools(&self) -> Vec<ToolInfo> {
        let tools = self
            .inner
            .tools
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list: Vec<ToolInfo> = tools
            .values()
            .map(|t| ToolInfo {
                name: t.name().to_owned(),
                tool_type: t.tool_type(),
                description: t.description().to_owned(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Менеджер согласований, через который идут рискованные вызовы.
    pub fn approvals(&self) -> &ApprovalManager {
        &self.inner.approvals
    }

    /// Вызывает инструмент `tool_name` от имени агента `agent_id` в сессии `ctx`
    /// (порядок событий — в описании модуля).
    pub async fn call(
        &self,
        ctx: &SessionContext,
        agent_id: &str,
        tool_name: &str,
        input: Value,
    ) -> Result<ToolOutput, ToolExecutorError> {
        let tool_call_id = format!("call_{}", Uuid::now_v7().simple());
        let scope = CallScope {
            ctx,
            agent_id,
            tool_name,
            tool_call_id: &tool_call_id,
        };
        let Some(tool) = self.tool(tool_name) else {
            let err = ToolExecutorError::UnknownTool(tool_name.to_owned());
            self.emit_error(&scope, &err, "unknown_tool", &[]);
            return Err(err);
        };

        // 1. Запрос и оценка риска. Методы инструмента идут в задаче вызывающего:
        // их паника ловится здесь, иначе она уронила бы агента.
        let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (tool.tool_type(), tool.assess_risk(&input), tool.timeout())
        }));
        let (tool_type, risk, tool_timeout) = match prepared {
            Ok(p) => p,
            Err(panic) => {
                let err = ToolExecutorError::Panicked {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                    message: panic_message(panic.as_ref()),
                };
                tracing::debug!(tool_name, %tool_call_id, error = %err, "Tool risk assessment panicked.");
                let frames = [
                    format!("panic: {err}"),
                    format!("  at Tool::assess_risk of `{tool_name}`, {tool_call_id}"),
                    format!(
                        "  in ToolExecutor::call for agent `{agent_id}`, session {}",
                        ctx.session_id
                    ),
                ];
                self.emit_error(&scope, &err, "panic", &frames);
                return Err(err);
            }
        };
        let max = self.inner.config.max_payload_bytes;
        let mut payload = Map::new();
        payload.insert("tool_type".into(), json!(tool_type.as_str()));
        put_truncated(&mut payload, "input", &input, max);
        payload.insert("risk_level".into(), json!(risk.level.as_str()));
        let factors: Vec<String> = risk
            .factors
            .iter()
            .take(MAX_RISK_FACTORS)
            .map(|f| clip(f, MAX_NAME_BYTES))
            .collect();
        payload.insert("risk_factors".into(), json!(factors));
        payload.insert("tool_call_id".into(), json!(tool_call_id));
        payload.insert("requires_approval".into(), json!(risk.level.requires_approval()));
        if let Some(attempt) = input.get("attempt") {
            payload.insert("attempt".into(), attempt.clone());
        }
        self.inner.publisher.publish(
            ctx.event(EventType::ToolRequest)
                .agent(agent_id)
                .tool(tool_name)
                .payload(Value::Object(payload)),
        );

        // 2. Согласование рискованных вызовов.
        let mut approval_wait_ms = None;
        if risk.level.requires_approval() {
            let started = Instant::now();
            let decision = self.await_approval(&scope, &risk).await;
            approval_wait_ms = Some(millis(started.elapsed()));
            let refusal = match decision {
                Ok(Decision::Approved { .. }) => None,
                Ok(Decision::Rejected { resolved_by, comment }) => Some(ToolExecutorError::Rejected {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                    resolved_by,
                    comment,
                }),
                Ok(Decision::TimedOut) => Some(ToolExecutorError::ApprovalTimedOut {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                }),
                Err(source) => Some(ToolExecutorError::Approval {
                    tool_name: tool_name.to_owned(),
                    source,
                }),
            };
            if let Some(err) = refusal {
                tracing::debug!(tool_name, %tool_call_id, code = err.code(), "Tool call refused.");
                self.emit_result_error(&scope, &err, Duration::ZERO, approval_wait_ms);
                return Err(err);
            }
        }

        // 3. Исполнение в отдельной задаче: паника превращается в JoinError, а
        // брошенный дескриптор (таймаут или отмена вызывающего) прерывает задачу.
        let timeout = tool_timeout.unwrap_or(self.inner.config.default_timeout);
        let started = Instant::now();
        let task = {
            let tool = tool.clone();
            AbortOnDropHandle::new(tokio::spawn(async move { tool.execute(input).await }))
        };
        let outcome = tokio::time::timeout(timeout, task).await;
        let duration = started.elapsed();
        let result = match outcome {
            Err(_) => Err((
                ToolExecutorError::TimedOut {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                    after: timeout,
                },
                "timeout",
            )),
            Ok(Err(join)) if join.is_panic() => Err((
                ToolExecutorError::Panicked {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                    message: panic_message(join.into_panic().as_ref()),
                },
                "panic",
            )),
            Ok(Err(_cancelled)) => Err((
                ToolExecutorError::Failed {
                    tool_name: tool_name.to_owned(),
                    tool_call_id: tool_call_id.clone(),
                    source: ToolError::new(codes::TOOL_CANCELLED, "tool task was cancelled"),
                },
                "cancelled",
            )),
            Ok(Ok(Err(mut source))) => {
                // Код инструмента идёт в колонку `error_code` (varchar(64)).
                source.code = sanitize_error_code(&source.code, codes::TOOL_ERROR);
                Err((
                    ToolExecutorError::Failed {
                        tool_name: tool_name.to_owned(),
                        tool_call_id: tool_call_id.clone(),
                        source,
                    },
                    "tool_error",
                ))
            }
            Ok(Ok(Ok(value))) => Ok(value),
        };

        // 4. Итог.
        match result {
            Ok(value) => {
                let mut payload = Map::new();
                payload.insert("status".into(), json!("success"));
                payload.insert("duration_ms".into(), json!(millis(duration)));
                put_truncated(&mut payload, "output", &value, max);
                payload.insert("tool_call_id".into(), json!(tool_call_id));
                if let Some(w) = approval_wait_ms {
                    payload.insert("approval_wait_ms".into(), json!(w));
                }
                self.inner.publisher.publish(
                    ctx.event(EventType::ToolResult)
                        .agent(agent_id)
                        .tool(tool_name)
                        .payload(Value::Object(payload)),
                );
                tracing::debug!(tool_name, %tool_call_id, duration_ms = millis(duration), "Tool call succeeded.");
                Ok(ToolOutput {
                    tool_call_id,
                    value,
                    duration,
                })
            }
            Err((err, error_type)) => {
                tracing::debug!(tool_name, %tool_call_id, code = err.code(), error = %err, "Tool call failed.");
                let frames = [
                    format!("{error_type}: {err}"),
                    format!("  at tool `{tool_name}` ({}), {tool_call_id}", tool_type.as_str()),
                    format!(
                        "  in ToolExecutor::call for agent `{agent_id}`, session {}",
                        ctx.session_id
                    ),
                ];
                self.emit_error(&scope, &err, error_type, &frames);
                self.emit_result_error(&scope, &err, duration, approval_wait_ms);
                Err(err)
            }
        }
    }

    async fn await_approval(
        &self,
        scope: &CallScope<'_>,
        risk: &crate::runtime::RiskAssessment,
    ) -> Result<Decision, ApprovalError> {
        let cfg = &self.inner.config;
        let expiry = match risk.level {
            super::RiskLevel::Critical => cfg.critical_risk_approval_expiry,
            _ => cfg.high_risk_approval_expiry,
        };
        let reason = if risk.factors.is_empty() {
            format!("{} risk tool call", risk.level.as_str())
        } else {
            clip(&risk.factors.join("; "), MAX_ERROR_TEXT_BYTES)
        };
        let mut req = ApprovalRequest::new(scope.tool_name, risk.level, reason)
            .agent(scope.agent_id)
            .tool_call(scope.tool_call_id);
        req.expires_in = expiry;
        let pending = self.inner.approvals.request(scope.ctx, req).await?;
        pending.decision().await
    }

    fn emit_error(
        &self,
        scope: &CallScope<'_>,
        err: &ToolExecutorError,
        error_type: &str,
        frames: &[String],
    ) {
        let trace = if frames.is_empty() {
            stack_trace(&[format!("{error_type}: {err}")])
        } else {
            stack_trace(frames)
        };
        self.inner.publisher.publish(
            scope
                .ctx
                .event(EventType::Error)
                // Столбцы agent_id/tool_name не ставятся: за ERROR следует TOOL_RESULT
                // с тем же error_code, и аналитика (byTool.errors, agentInteractions.errors)
                // посчитала бы один сбой дважды. Инструмент и агент — в нагрузке.
                .error_code(err.code())
                .payload(json!({
                    "error_message": clip(&err.to_string(), MAX_ERROR_TEXT_BYTES),
                    "stack_trace": clip(&trace, MAX_ERROR_TEXT_BYTES),
                    "source": "tool_executor",
                    "error_type": error_type,
                    "tool_name": scope.tool_name,
                    "tool_call_id": scope.tool_call_id,
                    "agent_id": scope.agent_id,
                })),
        );
    }

    fn emit_result_error(
        &self,
        scope: &CallScope<'_>,
        err: &ToolExecutorError,
        duration: Duration,
        approval_wait_ms: Option<u64>,
    ) {
        let mut payload = Map::new();
        payload.insert("status".into(), json!("error"));
        payload.insert("duration_ms".into(), json!(millis(duration)));
        payload.insert("output".into(), Value::Null);
        payload.insert("tool_call_id".into(), json!(scope.tool_call_id));
        payload.insert(
            "error_message".into(),
            json!(clip(&err.to_string(), MAX_ERROR_TEXT_BYTES)),
        );
        if let Some(w) = approval_wait_ms {
            payload.insert("approval_wait_ms".into(), json!(w));
        }
        self.inner.publisher.publish(
            scope
                .ctx
                .event(EventType::ToolResult)
                .agent(scope.agent_id)
                .tool(scope.tool_name)
                .error_code(err.code())
                .payload(Value::Object(payload)),
        );
    }
}

/// Кладёт `value` под ключ `key` целиком или усечённой строкой (см. описание модуля).
pub(crate) fn put_truncated(payload: &mut Map<String, Value>, key: &str, value: &Value, max: usize) {
    let text = value.to_string();
    if text.len() <= max {
        payload.insert(key.into(), value.clone());
    } else {
        let cut = format!("{}…", truncate_str(&text, max));
        payload.insert(key.into(), Value::String(cut));
        payload.insert(format!("{key}_truncated"), Value::Bool(true));
        payload.insert(format!("{key}_bytes"), json!(text.len()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::StreamManager;
    use crate::model::Event;
    use crate::runtime::ApprovalConfig;
    use crate::runtime::testkit::{drain_session, has_keys, memory_stream, session, types};

    #[derive(Clone, Copy)]
    enum Behaviour {
        Echo,
        Panic,
        Hang,
        Fail,
        Big,
        /// Паника в `assess_risk` (в задаче вызывающего).
        PanicInRisk,
        /// Ошибка с огромным сообщением и негодным кодом.
        HugeError,
    }

    /// Инструмент для тестов: считает запуски и ведёт себя как сказано.
    struct TestTool {
        name: &'static str,
        risk: RiskLevel,
        behaviour: Behaviour,
        runs: Arc<AtomicUsize>,
    }

    impl TestTool {
        fn new(name: &'static str, risk: RiskLevel, behaviour: Behaviour) -> (Arc<Self>, Arc<AtomicUsize>) {
            let runs = Arc::new(AtomicUsize::new(0));
            let tool = Arc::new(Self {
                name,
                risk,
                behaviour,
                runs: runs.clone(),
            });
            (tool, runs)
        }
    }

    impl Tool for TestTool {
        fn name(&self) -> &str {
            self.name
        }
        fn tool_type(&self) -> ToolType {
            ToolType::Function
        }
        fn assess_risk(&self, _input: &Value) -> RiskAssessment {
            if matches!(self.behaviour, Behaviour::PanicInRisk) {
                panic!("risk model exploded");
            }
            RiskAssessment::new(self.risk).escalate(self.risk, "test factor")
        }
        fn timeout(&self) -> Option<Duration> {
            Some(Duration::from_millis(200))
        }
        fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let behaviour = self.behaviour;
            Box::pin(async move {
                match behaviour {
                    Behaviour::Echo => Ok(json!({ "echo": input })),
                    Behaviour::Panic => panic!("tool exploded on purpose"),
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(Value::Null)
                    }
                    Behaviour::Fail => Err(ToolError::new("UPSTREAM_DOWN", "upstream said no").retryable()),
                    Behaviour::Big => Ok(json!({ "blob": "x".repeat(10_000) })),
                    Behaviour::PanicInRisk => Ok(Value::Null),
                    Behaviour::HugeError => Err(ToolError::new(
                        format!("upstream-{}", "x".repeat(500)),
                        "m".repeat(300_000),
                    )),
                }
            })
        }
    }

    async fn setup(config: ToolExecutorConfig) -> (StreamManager, ToolExecutor) {
        let stream = memory_stream().await;
        let publisher = Publisher::new(stream.clone());
        let approvals = ApprovalManager::start(publisher.clone(), ApprovalConfig::default());
        (stream.clone(), ToolExecutor::new(publisher, approvals, config))
    }

    /// Решает первое появившееся согласование.
    fn resolve_next(tools: &ToolExecutor, approve: bool) -> tokio::task::JoinHandle<()> {
        let approvals = tools.approvals().clone();
        tokio::spawn(async move {
            loop {
                if let Some(p) = approvals.pending().await.unwrap().first() {
                    approvals
                        .resolve(p.id, approve, "reviewer", Some("test".into()))
                        .await
                        .unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    }

    fn by_type<'a>(events: &'a [Event], t: &str) -> Vec<&'a Event> {
        events.iter().filter(|e| e.event_type == t).collect()
    }

    #[tokio::test]
    async fn low_risk_call_emits_request_then_success_result_with_catalogue_columns() {
        // Arrange
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        let (echo, runs) = TestTool::new("echo", RiskLevel::Low, Behaviour::Echo);
        tools.register(echo);
        let ctx = session();

        // Act
        let out = tools
            .call(&ctx, "agent-1", "echo", json!({"q": 1}))
            .await
            .unwrap();
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(out.value, json!({"echo": {"q": 1}}));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(types(&events), ["TOOL_REQUEST", "TOOL_RESULT"]);
        let (req, res) = (&events[0], &events[1]);
        for e in [req, res] {
            assert_eq!(e.tool_name.as_deref(), Some("echo"));
            assert_eq!(e.agent_id.as_deref(), Some("agent-1"));
            assert_eq!(e.error_code, None);
            assert_eq!(e.approval_status, None);
            assert_eq!(e.payload["tool_call_id"], json!(out.tool_call_id));
        }
        has_keys(
            req,
            &["tool_type", "input", "risk_level", "risk_factors", "tool_call_id"],
        );
        assert_eq!(req.payload["tool_type"], "function");
        assert_eq!(req.payload["input"], json!({"q": 1}));
        assert_eq!(req.payload["risk_level"], "LOW");
        assert_eq!(req.payload["risk_factors"], json!(["test factor"]));
        has_keys(res, &["status", "duration_ms", "output"]);
        assert_eq!(res.payload["status"], "success");
        assert_eq!(res.payload["output"], json!({"echo": {"q": 1}}));
    }

    #[tokio::test]
    async fn tool_panic_emits_error_and_the_executor_keeps_working() {
        // Arrange
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        tools.register(TestTool::new("bomb", RiskLevel::Low, Behaviour::Panic).0);
        tools.register(TestTool::new("echo", RiskLevel::Low, Behaviour::Echo).0);
        let ctx = session();

        // Act
        let err = tools.call(&ctx, "agent-1", "bomb", json!({})).await.unwrap_err();
        let ok = tools.call(&ctx, "agent-1", "echo", json!({})).await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert!(
            matches!(&err, ToolExecutorError::Panicked { message, .. } if message == "tool exploded on purpose")
        );
        assert_eq!(err.code(), "TOOL_PANIC");
        assert!(err.is_retryable());
        assert!(ok.is_ok());
        assert_eq!(
            types(&events),
            [
                "TOOL_REQUEST",
                "ERROR",
                "TOOL_RESULT",
                "TOOL_REQUEST",
                "TOOL_RESULT"
            ]
        );
        let error = &events[1];
        assert_eq!(error.error_code.as_deref(), Some("TOOL_PANIC"));
        // Столбцы — только error_code: TOOL_RESULT того же сбоя уже несёт инструмент
        // и агента, а ERROR с ними посчитался бы в аналитике второй раз.
        assert_eq!(error.tool_name, None);
        assert_eq!(error.agent_id, None);
        assert_eq!(error.payload["tool_name"], "bomb");
        assert_eq!(error.payload["agent_id"], "agent-1");
        has_keys(error, &["error_message", "stack_trace", "source"]);
        assert_eq!(error.payload["source"], "tool_executor");
        let trace = error.payload["stack_trace"].as_str().unwrap();
        assert!(
            trace.contains("tool exploded on purpose") && trace.contains("bomb"),
            "{trace}"
        );
        let result = &events[2];
        assert_eq!(result.error_code.as_deref(), Some("TOOL_PANIC"));
        assert_eq!(result.payload["status"], "error");
        assert_eq!(result.tool_name.as_deref(), Some("bomb"));
        assert_eq!(events[4].payload["status"], "success");
    }

    #[tokio::test]
    async fn tool_timeout_aborts_the_tool_and_reports_tool_timeout() {
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        tools.register(TestTool::new("sloth", RiskLevel::Low, Behaviour::Hang).0);
        let ctx = session();
        let started = std::time::Instant::now();
        let err = tools.call(&ctx, "agent-1", "sloth", json!({})).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(err, ToolExecutorError::TimedOut { after, .. } if after == Duration::from_millis(200))
        );
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["TOOL_REQUEST", "ERROR", "TOOL_RESULT"]);
        assert_eq!(events[1].error_code.as_deref(), Some("TOOL_TIMEOUT"));
        assert_eq!(events[2].error_code.as_deref(), Some("TOOL_TIMEOUT"));
        assert!(events[2].payload["duration_ms"].as_u64().unwrap() >= 200);
    }

    #[tokio::test]
    async fn tool_error_is_reported_with_the_tools_own_code() {
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        tools.register(TestTool::new("grumpy", RiskLevel::Medium, Behaviour::Fail).0);
        let ctx = session();
        let err = tools
            .call(&ctx, "agent-1", "grumpy", json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "UPSTREAM_DOWN");
        assert!(err.is_retryable() && !err.is_refused());
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["TOOL_REQUEST", "ERROR", "TOOL_RESULT"]);
        assert_eq!(events[0].payload["risk_level"], "MEDIUM");
        assert_eq!(events[1].error_code.as_deref(), Some("UPSTREAM_DOWN"));
        assert_eq!(events[1].payload["error_type"], "tool_error");
        assert_eq!(events[2].error_code.as_deref(), Some("UPSTREAM_DOWN"));
    }

    #[tokio::test]
    async fn high_risk_call_rejected_by_a_human_is_not_executed() {
        // Arrange
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        let (writer, runs) = TestTool::new("file_write", RiskLevel::High, Behaviour::Echo);
        tools.register(writer);
        let ctx = session();

        // Act
        let reviewer = resolve_next(&tools, false);
        let err = tools
            .call(&ctx, "code-agent", "file_write", json!({"path": "a"}))
            .await
            .unwrap_err();
        reviewer.await.unwrap();
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(runs.load(Ordering::SeqCst), 0, "a rejected tool must not run");
        assert!(matches!(&err, ToolExecutorError::Rejected { resolved_by, .. } if resolved_by == "reviewer"));
        assert!(err.is_refused() && !err.is_retryable());
        assert_eq!(
            types(&events),
            [
                "TOOL_REQUEST",
                "APPROVAL_REQUIRED",
                "APPROVAL_RESOLVED",
                "TOOL_RESULT"
            ]
        );
        assert_eq!(events[0].payload["risk_level"], "HIGH");
        assert_eq!(events[0].payload["requires_approval"], true);
        assert_eq!(
            events[1].payload["tool_call_id"],
            events[0].payload["tool_call_id"]
        );
        assert_eq!(events[1].payload["reason"], "test factor");
        assert_eq!(events[2].approval_status.as_deref(), Some("REJECTED"));
        let result = &events[3];
        assert_eq!(result.payload["status"], "error");
        assert_eq!(result.error_code.as_deref(), Some("APPROVAL_REJECTED"));
        assert_eq!(result.payload["duration_ms"], 0);
        assert!(
            by_type(&events, "ERROR").is_empty(),
            "a refusal is not an exception"
        );
    }

    #[tokio::test]
    async fn approved_critical_call_runs_after_the_decision() {
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        let (deploy, runs) = TestTool::new("deploy", RiskLevel::Critical, Behaviour::Echo);
        tools.register(deploy);
        let ctx = session();
        let reviewer = resolve_next(&tools, true);
        let out = tools
            .call(&ctx, "ops-agent", "deploy", json!({"env": "prod"}))
            .await
            .unwrap();
        reviewer.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(
            types(&events),
            [
                "TOOL_REQUEST",
                "APPROVAL_REQUIRED",
                "APPROVAL_RESOLVED",
                "TOOL_RESULT"
            ]
        );
        assert_eq!(events[2].approval_status.as_deref(), Some("APPROVED"));
        assert_eq!(events[3].payload["status"], "success");
        assert_eq!(events[3].payload["tool_call_id"], json!(out.tool_call_id));
        has_keys(&events[3], &["approval_wait_ms"]);
    }

    #[tokio::test]
    async fn approval_timeout_refuses_the_call_without_running_the_tool() {
        let (stream, tools) = setup(ToolExecutorConfig {
            high_risk_approval_expiry: Some(Duration::from_millis(50)),
            ..ToolExecutorConfig::default()
        })
        .await;
        let (writer, runs) = TestTool::new("file_write", RiskLevel::High, Behaviour::Echo);
        tools.register(writer);
        let ctx = session();
        let err = tools
            .call(&ctx, "code-agent", "file_write", json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolExecutorError::ApprovalTimedOut { .. }));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(
            types(&events),
            [
                "TOOL_REQUEST",
                "APPROVAL_REQUIRED",
                "APPROVAL_TIMEOUT",
                "TOOL_RESULT"
            ]
        );
        assert_eq!(events[3].error_code.as_deref(), Some("APPROVAL_TIMEOUT"));
    }

    #[tokio::test]
    async fn large_outputs_are_truncated_with_markers() {
        let (stream, tools) = setup(ToolExecutorConfig {
            max_payload_bytes: 100,
            ..ToolExecutorConfig::default()
        })
        .await;
        tools.register(TestTool::new("big", RiskLevel::Low, Behaviour::Big).0);
        let ctx = session();
        let out = tools
            .call(&ctx, "agent-1", "big", json!({"long": "y".repeat(500)}))
            .await
            .unwrap();
        assert_eq!(
            out.value["blob"].as_str().unwrap().len(),
            10_000,
            "the caller gets everything"
        );
        let events = drain_session(&stream, &ctx).await;
        let (req, res) = (&events[0], &events[1]);
        assert_eq!(req.payload["input_truncated"], true);
        assert!(req.payload["input_bytes"].as_u64().unwrap() > 500);
        let output = res.payload["output"].as_str().unwrap();
        assert!(output.len() <= 100 + '…'.len_utf8() && output.ends_with('…'));
        assert_eq!(res.payload["output_truncated"], true);
        assert!(res.payload["output_bytes"].as_u64().unwrap() > 10_000);
    }

    #[tokio::test]
    async fn unknown_tool_is_an_error_event_and_a_clear_error() {
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        let ctx = session();
        let err = tools.call(&ctx, "agent-1", "nope", json!({})).await.unwrap_err();
        assert_eq!(err, ToolExecutorError::UnknownTool("nope".into()));
        assert_eq!(err.to_string(), "tool `nope` is not registered");
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["ERROR"]);
        assert_eq!(events[0].error_code.as_deref(), Some("UNKNOWN_TOOL"));
    }

    #[test]
    fn registry_lists_tools_by_name_and_replaces_duplicates() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_stream, tools) = setup(ToolExecutorConfig::default()).await;
            assert!(
                tools
                    .register(TestTool::new("b", RiskLevel::Low, Behaviour::Echo).0)
                    .is_none()
            );
            assert!(
                tools
                    .register(TestTool::new("a", RiskLevel::Low, Behaviour::Echo).0)
                    .is_none()
            );
            assert!(
                tools
                    .register(TestTool::new("b", RiskLevel::Low, Behaviour::Echo).0)
                    .is_some()
            );
            let names: Vec<String> = tools.tools().into_iter().map(|t| t.name).collect();
            assert_eq!(names, ["a", "b"]);
        });
        assert!(RiskLevel::High.requires_approval() && !RiskLevel::Medium.requires_approval());
        assert_eq!(serde_json::to_value(RiskLevel::Critical).unwrap(), "CRITICAL");
    }

    #[tokio::test]
    async fn a_panic_in_assess_risk_is_an_error_event_and_the_executor_keeps_working() {
        // Arrange
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        let (risky, runs) = TestTool::new("oracle", RiskLevel::Low, Behaviour::PanicInRisk);
        tools.register(risky);
        tools.register(TestTool::new("echo", RiskLevel::Low, Behaviour::Echo).0);
        let ctx = session();

        // Act: раньше паника уходила прямо в вызывающего.
        let err = tools
            .call(&ctx, "agent-1", "oracle", json!({}))
            .await
            .unwrap_err();
        let ok = tools.call(&ctx, "agent-1", "echo", json!({"n": 1})).await;
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert!(
            matches!(&err, ToolExecutorError::Panicked { tool_name, message, .. }
                if tool_name == "oracle" && message == "risk model exploded"),
            "{err:?}"
        );
        assert_eq!(err.code(), "TOOL_PANIC");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the tool never ran");
        assert_eq!(ok.unwrap().value, json!({"echo": {"n": 1}}));
        assert_eq!(types(&events), ["ERROR", "TOOL_REQUEST", "TOOL_RESULT"]);
        let error = &events[0];
        assert_eq!(error.error_code.as_deref(), Some("TOOL_PANIC"));
        // Столбцы — только error_code (SPEC §3); инструмент и агент — в нагрузке.
        assert_eq!(error.tool_name, None);
        assert_eq!(error.agent_id, None);
        assert_eq!(error.payload["tool_name"], "oracle");
        assert_eq!(error.payload["agent_id"], "agent-1");
        has_keys(error, &["error_message", "stack_trace", "source"]);
        assert_eq!(error.payload["source"], "tool_executor");
        let trace = error.payload["stack_trace"].as_str().unwrap();
        assert!(
            trace.contains("assess_risk") && trace.contains("risk model exploded"),
            "{trace}"
        );
    }

    #[tokio::test]
    async fn a_huge_tool_error_is_truncated_and_its_code_sanitized() {
        // Arrange
        let (stream, tools) = setup(ToolExecutorConfig::default()).await;
        tools.register(TestTool::new("loud", RiskLevel::Low, Behaviour::HugeError).0);
        let ctx = session();

        // Act
        let err = tools.call(&ctx, "agent-1", "loud", json!({})).await.unwrap_err();
        let events = drain_session(&stream, &ctx).await;

        // Assert: код годится для varchar(64) и одинаков в ошибке и событиях.
        let code = err.code().to_owned();
        assert!(code.len() <= 64 && code.starts_with("UPSTREAM_X"), "{code}");
        assert!(
            code.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        );
        assert_eq!(types(&events), ["TOOL_REQUEST", "ERROR", "TOOL_RESULT"]);
        for e in &events[1..] {
            assert_eq!(e.error_code.as_deref(), Some(code.as_str()));
            let size = serde_json::to_string(&e.payload).unwrap().len();
            assert!(size <= 20 * 1024, "{} payload is {size} bytes", e.event_type);
            let message = e.payload["error_message"].as_str().unwrap();
            assert!(message.len() <= MAX_ERROR_TEXT_BYTES + 3 && message.ends_with('…'));
        }
        let trace = events[1].payload["stack_trace"].as_str().unwrap();
        assert!(trace.len() <= MAX_ERROR_TEXT_BYTES + 3);
    }

    #[test]
    fn tool_error_codes_are_sanitized_for_the_column() {
        assert_eq!(
            sanitize_error_code("UPSTREAM_DOWN", codes::TOOL_ERROR),
            "UPSTREAM_DOWN"
        );
        assert_eq!(sanitize_error_code("not found", codes::TOOL_ERROR), "NOT_FOUND");
        assert_eq!(sanitize_error_code("_x-1", codes::TOOL_ERROR), "X_1");
        assert_eq!(sanitize_error_code("", codes::TOOL_ERROR), "TOOL_ERROR");
        assert_eq!(sanitize_error_code("404", codes::TOOL_ERROR), "TOOL_ERROR");
        assert_eq!(sanitize_error_code("ошибка", codes::TOOL_ERROR), "TOOL_ERROR");
        assert_eq!(
            sanitize_error_code(&"a".repeat(200), codes::TOOL_ERROR),
            "A".repeat(64)
        );
    }
}
