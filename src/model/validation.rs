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
/// Самое раннее допустимое `createdAt` (1970-01-01T00:00:00Z, включительно).
///
/// Обе базы хранят и читают обратно любое время в диапазоне
/// [1970-01-01T00:00:00Z, сейчас + 5 минут] без потерь; за его пределами
/// PostgreSQL отвергает строку посреди пакета (годы до −4713), а SQLite сохраняет
/// текст, который потом не разбирается при чтении.
pub const MIN_CREATED_AT: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;
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
    /// `now` — часы сервера (параметр ради тестов); `retention_days` — срок
    /// хранения (0 — без срока): событие старше него отвергается, а не принимается,
    /// чтобы через час быть удалённым очисткой.
    pub fn into_new_event(
        self,
        user_id: String,
        now: DateTime<Utc>,
        retention_days: u32,
    ) -> Result<NewEvent, ValidationError> {
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
        check_retention(event.created_at, now, retention_days)?;
        Ok(event)
    }
}

/// Проверяет, что `createdAt` лежит в [`MIN_CREATED_AT`, `now` + 5 минут].
pub fn check_created_at(created_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ValidationError> {
    if created_at < MIN_CREATED_AT {
        return Err(ValidationError::new(
            "createdAt",
            "must not be before 1970-01-01T00:00:00Z",
        ));
    }
    if created_at > now + MAX_CLOCK_SKEW {
        return Err(ValidationError::new(
            "createdAt",
            "must not be more than 5 minutes in the future",
        ));
    }
    Ok(())
}

/// Проверяет, что событие не старше срока хранения `retention_days` (0 — без срока).
pub fn check_retention(
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<(), ValidationError> {
    if retention_days == 0 {
        return Ok(());
    }
    let oldest = now - Duration::days(i64::from(retention_days));
    if created_at < oldest {
        return Err(ValidationError::new(
            "createdAt",
            format!(
                "is older than the retention period of {retention_days} days \
                 (EVENTLOG_RETENTION_DAYS): must not be before {}",
                oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    Ok(())
}

/// Проверяет повторы `id` внутри одного пакета: одинаковые повторы допустимы
/// (сохраняется одна строка), повтор с другим содержимым — ошибка с индексом
/// повтора (`events[j].id`), потому что сохранить можно только одно из двух.
pub fn check_batch_ids(events: &[NewEvent]) -> Result<(), ValidationError> {
    let mut first: std::collections::HashMap<Uuid, usize> =
        std::collections::HashMap::with_capacity(events.len());
    for (j, e) in events.iter().enumerate() {
        match first.entry(e.id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(j);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let i = *o.get();
                if events[i] != *e {
                    return Err(ValidationError::new(
                        format!("events[{j}].id"),
                        format!("repeats the id of events[{i}] with different contents"),
                    ));
                }
            }
        }
    }
    Ok(())
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
    check_created_at(event.created_at, now)?;
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
        d.into_new_event("u1".into(), Utc::now(), 0).unwrap_err()
    }

    #[test]
    fn valid_draft_gets_id_time_and_empty_payload() {
        let ev = draft().into_new_event("u1".into(), Utc::now(), 0).unwrap();
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
            (
                EventDraft {
                    created_at: Some(MIN_CREATED_AT - Duration::microseconds(1)),
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
        ok.into_new_event("u".into(), Utc::now(), 0).unwrap();
    }

    #[test]
    fn created_at_range_is_1970_to_five_minutes_ahead_and_retention_applies() {
        let now = Utc::now();
        let at = |t| EventDraft {
            created_at: Some(t),
            ..draft()
        };
        at(MIN_CREATED_AT).into_new_event("u".into(), now, 0).unwrap();
        let far_past = "-10000-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let e = at(far_past).into_new_event("u".into(), now, 0).unwrap_err();
        assert_eq!(e.path, "createdAt");
        assert!(e.message.contains("1970"), "{e}");
        // Срок хранения 30 дней: 31 день назад — отказ, 29 — принято.
        let e = at(now - Duration::days(31))
            .into_new_event("u".into(), now, 30)
            .unwrap_err();
        assert!(e.message.contains("retention"), "{e}");
        at(now - Duration::days(29))
            .into_new_event("u".into(), now, 30)
            .unwrap();
        at(now - Duration::days(31))
            .into_new_event("u".into(), now, 0)
            .unwrap();
    }

    #[test]
    fn repeated_id_in_batch_is_refused_only_when_contents_differ() {
        let a = draft().into_new_event("u".into(), Utc::now(), 0).unwrap();
        let same = vec![a.clone(), a.clone()];
        check_batch_ids(&same).unwrap();
        let mut other = a.clone();
        other.event_type = "OTHER".into();
        let e = check_batch_ids(&[a.clone(), a.clone(), other]).unwrap_err();
        assert_eq!(e.path, "events[2].id");
        assert!(e.message.contains("events[0]"), "{e}");
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
