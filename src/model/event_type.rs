//! Справочник типов событий, которые испускают собственные компоненты сервера
//! (SPEC §3). Любая строка, подходящая под шаблон, тоже допустима.

use std::fmt;

/// Известные типы событий (каталог SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Смена агента.
    AgentSwitched,
    /// Прямой вызов агента.
    DirectAgentCall,
    /// Запрос инструмента (до запуска).
    ToolRequest,
    /// Результат инструмента.
    ToolResult,
    /// Ошибка.
    Error,
    /// Требуется согласование.
    ApprovalRequired,
    /// Согласование решено.
    ApprovalResolved,
    /// Предупреждение за 30 с до истечения согласования.
    ApprovalTimeoutWarning,
    /// Согласование истекло.
    ApprovalTimeout,
    /// Создан план задач.
    TaskPlanCreated,
    /// Задача начата.
    TaskStarted,
    /// Прогресс задачи.
    TaskProgress,
    /// Задача завершена.
    TaskCompleted,
    /// Получен контекст.
    ContextRetrieved,
    /// Задача поставлена в очередь.
    TaskQueued,
    /// Задача взята из очереди.
    TaskDequeued,
    /// Вызов модели (приём OpenTelemetry, спаны вывода).
    ModelCall,
    /// Запись журнала (приём OpenTelemetry, `/v1/logs`).
    Log,
}

impl EventType {
    /// Каталог агентной среды по порядку SPEC §3 (без [`EventType::OTLP_ONLY`]).
    pub const ALL: [EventType; 16] = [
        Self::AgentSwitched,
        Self::DirectAgentCall,
        Self::ToolRequest,
        Self::ToolResult,
        Self::Error,
        Self::ApprovalRequired,
        Self::ApprovalResolved,
        Self::ApprovalTimeoutWarning,
        Self::ApprovalTimeout,
        Self::TaskPlanCreated,
        Self::TaskStarted,
        Self::TaskProgress,
        Self::TaskCompleted,
        Self::ContextRetrieved,
        Self::TaskQueued,
        Self::TaskDequeued,
    ];

    /// Типы, которые приходят только через приём OpenTelemetry: агентная среда их
    /// не испускает, поэтому их нет в [`EventType::ALL`] (демо проверяет его целиком).
    pub const OTLP_ONLY: [EventType; 2] = [Self::ModelCall, Self::Log];

    /// Имя типа в том виде, в каком оно хранится.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentSwitched => "AGENT_SWITCHED",
            Self::DirectAgentCall => "DIRECT_AGENT_CALL",
            Self::ToolRequest => "TOOL_REQUEST",
            Self::ToolResult => "TOOL_RESULT",
            Self::Error => "ERROR",
            Self::ApprovalRequired => "APPROVAL_REQUIRED",
            Self::ApprovalResolved => "APPROVAL_RESOLVED",
            Self::ApprovalTimeoutWarning => "APPROVAL_TIMEOUT_WARNING",
            Self::ApprovalTimeout => "APPROVAL_TIMEOUT",
            Self::TaskPlanCreated => "TASK_PLAN_CREATED",
            Self::TaskStarted => "TASK_STARTED",
            Self::TaskProgress => "TASK_PROGRESS",
            Self::TaskCompleted => "TASK_COMPLETED",
            Self::ContextRetrieved => "CONTEXT_RETRIEVED",
            Self::TaskQueued => "TASK_QUEUED",
            Self::TaskDequeued => "TASK_DEQUEUED",
            Self::ModelCall => "MODEL_CALL",
            Self::Log => "LOG",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
