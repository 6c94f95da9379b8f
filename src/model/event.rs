//! Типы события: [`NewEvent`] — то, что ставится в очередь записи, и [`Event`] —
//! сохранённая строка таблицы `event_logs` вместе с `seq`, выданным базой.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::EventType;

/// Статус согласования (колонка `approval_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApprovalStatus {
    /// Ожидает решения.
    Pending,
    /// Одобрено.
    Approved,
    /// Отклонено.
    Rejected,
    /// Истёк срок ожидания.
    Timeout,
}

impl ApprovalStatus {
    /// Все допустимые значения в том виде, в каком они хранятся в базе.
    pub const ALL: [&'static str; 4] = ["PENDING", "APPROVED", "REJECTED", "TIMEOUT"];

    /// Строковое значение колонки.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Timeout => "TIMEOUT",
        }
    }
}

/// Обрезает время до микросекунд: столько хранит `timestamptz`, и столько же
/// должно быть в памяти, чтобы живые события совпадали с прочитанными из базы.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Новое событие, ещё не записанное в базу (без `seq`).
///
/// Конструктор заполняет `id` (UUIDv7), `created_at` (текущее время, микросекунды)
/// и пустой объект `payload`; остальное задаётся методами-построителями.
///
/// ```
/// use eventlog::model::{EventType, NewEvent};
/// use uuid::Uuid;
/// let ev = NewEvent::new(Uuid::now_v7(), "alice", Uuid::now_v7(), EventType::ToolRequest)
///     .agent("planner")
///     .tool("web_search")
///     .payload(serde_json::json!({"risk_level": "LOW"}));
/// assert_eq!(ev.event_type, "TOOL_REQUEST");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Идентификатор и ключ идемпотентности.
    pub id: Uuid,
    /// Сессия.
    pub session_id: Uuid,
    /// Пользователь (JWT `sub`), которому принадлежит событие.
    pub user_id: String,
    /// Проект.
    pub project_id: Uuid,
    /// Агент, если есть.
    pub agent_id: Option<String>,
    /// Тип события, `^[A-Z][A-Z0-9_]{0,63}$`.
    pub event_type: String,
    /// Полезная нагрузка — всегда JSON-объект.
    pub payload: Map<String, Value>,
    /// Время события (UTC, микросекунды).
    pub created_at: DateTime<Utc>,
    /// Код ошибки; задан ⇔ событие — ошибка.
    pub error_code: Option<String>,
    /// Имя инструмента.
    pub tool_name: Option<String>,
    /// Статус согласования.
    pub approval_status: Option<String>,
}

impl NewEvent {
    /// Создаёт событие с новым UUIDv7, текущим временем и пустой нагрузкой.
    pub fn new(
        session_id: Uuid,
        user_id: impl Into<String>,
        project_id: Uuid,
        event_type: impl Into<EventTypeName>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            session_id,
            user_id: user_id.into(),
            project_id,
            agent_id: None,
            event_type: event_type.into().0,
            payload: Map::new(),
            created_at: truncate_to_micros(Utc::now()),
            error_code: None,
            tool_name: None,
            approval_status: None,
        }
    }

    /// Задаёт агента.
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Задаёт инструмент.
    pub fn tool(mut self, tool_name: impl Into<String>) -> Self {
        self.tool_name = Some(tool_name.into());
        self
    }

    /// Задаёт код ошибки (событие становится ошибкой).
    pub fn error_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self
    }

    /// Задаёт статус согласования.
    pub fn approval(mut self, status: ApprovalStatus) -> Self {
        self.approval_status = Some(status.as_str().to_owned());
        self
    }

    /// Задаёт нагрузку. Значение, не являющееся объектом, кладётся под ключ `value`.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = match payload {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        self
    }

    /// Задаёт явный идентификатор (ключ идемпотентности).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Задаёт время события (обрезается до микросекунд).
    pub fn at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = truncate_to_micros(created_at);
        self
    }

    /// Превращает в сохранённое событие с выданным базой `seq`.
    pub fn into_event(self, seq: i64) -> Event {
        Event {
            id: self.id,
            seq,
            session_id: self.session_id,
            user_id: self.user_id,
            project_id: self.project_id,
            agent_id: self.agent_id,
            event_type: self.event_type,
            payload: self.payload,
            created_at: self.created_at,
            error_code: self.error_code,
            tool_name: self.tool_name,
            approval_status: self.approval_status,
        }
    }
}

/// Имя типа события: строка или значение справочника [`EventType`].
#[derive(Debug, Clone)]
pub struct EventTypeName(pub String);

impl From<EventType> for EventTypeName {
    fn from(t: EventType) -> Self {
        Self(t.as_str().to_owned())
    }
}
impl From<&str> for EventTypeName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
impl From<String> for EventTypeName {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Сохранённое событие — строка `event_logs` вместе с `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Идентификатор.
    pub id: Uuid,
    /// Порядковый номер записи, выданный базой; точка возобновления подписок.
    pub seq: i64,
    /// Сессия.
    pub session_id: Uuid,
    /// Пользователь-владелец.
    pub user_id: String,
    /// Проект.
    pub project_id: Uuid,
    /// Агент.
    pub agent_id: Option<String>,
    /// Тип события.
    pub event_type: String,
    /// Нагрузка (JSON-объект).
    pub payload: Map<String, Value>,
    /// Время события.
    pub created_at: DateTime<Utc>,
    /// Код ошибки.
    pub error_code: Option<String>,
    /// Инструмент.
    pub tool_name: Option<String>,
    /// Статус согласования.
    pub approval_status: Option<String>,
}

impl Event {
    /// Является ли событие ошибкой (единственное определение: задан `error_code`).
    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }
}
