//! Единственное место, где живут правила полей события (SPEC §2 и §5).
//!
//! Ошибка [`ValidationError`] всегда называет путь к полю (`eventType`,
//! `payload`), а вызывающий добавляет префикс пакета (`events[3].eventType`).

use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use regex::Regex;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use super::{ApprovalStatus, NewEvent, truncate_to_micros};

/// Шаблон типа события из SPEC §2.
pub const EVENT_TYPE_PATTERN: &str = "^[A-Z][A-Z0-9_]{0,63}$";
/// Максимальный размер сериализованной нагрузки, байт.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// На сколько `createdAt` может опережать часы сервера.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// Максимальная длина `user_id`, `agent_id`, `tool_name`.
pub const MAX_NAME_LEN: usize = 128;
/// Максимальная длина `error_code`.
pub const MAX_CODE_LEN: usize = 64;

static EVENT_TYPE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(EVENT_TYPE_PATTERN).expect("шаблон типа события корректен"));

/// Ошибка проверки одного поля: путь к полю и понятное сообщение.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Путь к полю, например `events[3].eventType`.
    pub path: String,
    /// Что не так.
    pub message: String,
}

impl ValidationError {
    /// Создаёт ошибку для поля `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Добавляет префикс к пути: `eventType` → `events[3].eventType`.
    pub fn at(mut self, prefix: &str) -> Self {
        self.path = format!("{prefix}.{}", self.path);
        self
    }
}

/// Входное событие в том виде, в каком его присылает клиент (GraphQL `EventInput`):
/// необязательные поля ещё не заполнены, ничего не проверено.
#[derive(Debug, Clone, Default)]
pub struct EventDraft {
    /// Ключ идемпотентности; если нет — генерируется UUIDv7.
    pub id: Option<Uuid>,
    /// Сессия.
    pub session_id: Uuid,
    /// Проект.
    pub project_id: Uuid,
    /// Владелец; решение, кем он может быть, принимает область доступа вызывающего.
    pub user_id: Option<String>,
    /// Агент.
    pub agent_id: Option<String>,
    /// Тип события.
    pub event_type: String,
    /// Нагрузка; `{}`, если не задана.
    pub payload: Option<Value>,
    /// Время события; время сервера, если не задано.
    pub created_at: Option<DateTime<Utc>>,
    /// Код ошибки.
    pub error_code: Option<String>,
    /// Инструмент.
    pub tool_name: Option<String>,
    /// Статус согласования.
    pub approval_status: Option<String>,
}

impl EventDraft {
    /// Проверяет черновик и превращает его в [`NewEvent`] владельца `user_id`.
    /// `now` — часы сервера (параметр ради тестов).
    pub fn into_new_event(self, user_id: String, now: DateTime<Utc>) -> Result<NewEvent, ValidationError> {
        let payload = match self.payload {
            None => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ValidationError::new("payload", "must be a JSON object")),
        };
        let event = NewEvent {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            session_id: self.session_id,
            user_id,
            project_id: self.project_id,
            agent_id: self.agent_id,
            event_type: self.event_type,
            payload,
            created_at: truncate_to_micros(self.created_at.unwrap_or(now)),
            error_code: self.error_code,
            tool_name: self.tool_name,
            approval_status: self.approval_status,
        };
        validate(&event, now)?;
        Ok(event)
    }
}

/// Проверяет все поля события по правилам SPEC §2/§5.
pub fn validate(event: &NewEvent, now: DateTime<Utc>) -> Result<(), ValidationError> {
    if !EVENT_TYPE_RE.is_match(&event.event_type) {
        return Err(ValidationError::new(
            "eventType",
            format!("must match {EVENT_TYPE_PATTERN}"),
        ));
    }
    check_text("userId", Some(&event.user_id), MAX_NAME_LEN, false)?;
    check_text("agentId", event.agent_id.as_deref(), MAX_NAME_LEN, false)?;
    check_text("toolName", event.tool_name.as_deref(), MAX_NAME_LEN, false)?;
    check_text("errorCode", event.error_code.as_deref(), MAX_CODE_LEN, false)?;
    if let Some(status) = &event.approval_status
        && !ApprovalStatus::ALL.contains(&status.as_str())
    {
        return Err(ValidationError::new(
            "approvalStatus",
            format!("must be one of {}", ApprovalStatus::ALL.join(", ")),
        ));
    }
    if event.created_at > now + MAX_CLOCK_SKEW {
        return Err(ValidationError::new(
            "createdAt",
            "must not be more than 5 minutes in the future",
        ));
    }
    check_payload(&event.payload)
}

/// Проверяет нагрузку: размер и отсутствие символа NUL (PostgreSQL его не хранит,
/// и лучше отказать клиенту сразу, чем отправить строку в таблицу отказов).
fn check_payload(payload: &serde_json::Map<String, Value>) -> Result<(), ValidationError> {
    let text = serde_json::to_string(payload)
        .map_err(|e| ValidationError::new("payload", format!("cannot be serialized: {e}")))?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(ValidationError::new(
            "payload",
            format!(
                "must be at most {MAX_PAYLOAD_BYTES} bytes serialized, got {}",
                text.len()
            ),
        ));
    }
    if text.contains("\\u0000") {
        return Err(ValidationError::new(
            "payload",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

fn check_text(
    field: &str,
    value: Option<&str>,
    max: usize,
    allow_empty: bool,
) -> Result<(), ValidationError> {
    let Some(v) = value else { return Ok(()) };
    if v.is_empty() && !allow_empty {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.contains('\0') {
        return Err(ValidationError::new(field, "must not contain the NUL character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft() -> EventDraft {
        EventDraft {
            session_id: Uuid::now_v7(),
            project_id: Uuid::now_v7(),
            event_type: "TOOL_REQUEST".into(),
            ..Default::default()
        }
    }

    fn err(d: EventDraft) -> ValidationError {
        d.into_new_event("u1".into(), Utc::now()).unwrap_err()
    }

    #[test]
    fn valid_draft_gets_id_time_and_empty_payload() {
        let ev = draft().into_new_event("u1".into(), Utc::now()).unwrap();
        assert_eq!(ev.id.get_version_num(), 7);
        assert!(ev.payload.is_empty());
        assert_eq!(ev.created_at.timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn each_field_rule_names_its_field() {
        let cases: Vec<(EventDraft, &str)> = vec![
            (
                EventDraft {
                    event_type: "tool".into(),
                    ..draft()
                },
                "eventType",
            ),
            (
                EventDraft {
                    event_type: "A".repeat(65),
                    ..draft()
                },
                "eventType",
            ),
            (
                EventDraft {
                    payload: Some(json!([1])),
                    ..draft()
                },
                "payload",
            ),
            (
                EventDraft {
                    payload: Some(json!({"x": "a".repeat(MAX_PAYLOAD_BYTES)})),
                    ..draft()
                },
                "payload",
            ),
            (
                EventDraft {
                    payload: Some(json!({"x": "a\u{0}b"})),
                    ..draft()
                },
                "payload",
            ),
            (
                EventDraft {
                    agent_id: Some("a".repeat(129)),
                    ..draft()
                },
                "agentId",
            ),
            (
                EventDraft {
                    agent_id: Some(String::new()),
                    ..draft()
                },
                "agentId",
            ),
            (
                EventDraft {
                    tool_name: Some("t".repeat(129)),
                    ..draft()
                },
                "toolName",
            ),
            (
                EventDraft {
                    error_code: Some("E".repeat(65)),
                    ..draft()
                },
                "errorCode",
            ),
            (
                EventDraft {
                    approval_status: Some("MAYBE".into()),
                    ..draft()
                },
                "approvalStatus",
            ),
            (
                EventDraft {
                    created_at: Some(Utc::now() + Duration::minutes(6)),
                    ..draft()
                },
                "createdAt",
            ),
        ];
        for (d, field) in cases {
            assert_eq!(err(d).path, field);
        }
    }

    #[test]
    fn boundaries_are_inclusive() {
        let ok = EventDraft {
            event_type: format!("A{}", "B".repeat(63)),
            agent_id: Some("a".repeat(128)),
            error_code: Some("E".repeat(64)),
            approval_status: Some("TIMEOUT".into()),
            created_at: Some(Utc::now() + Duration::minutes(4)),
            ..draft()
        };
        ok.into_new_event("u".into(), Utc::now()).unwrap();
    }

    #[test]
    fn prefix_names_the_index() {
        let e = err(EventDraft {
            event_type: "x".into(),
            ..draft()
        })
        .at("events[3]");
        assert_eq!(
            e.to_string(),
            "events[3].eventType: must match ^[A-Z][A-Z0-9_]{0,63}$"
        );
    }
}
