//! Фильтр событий SPEC §5 `EventFilter` и порядок сортировки.
//!
//! Одно определение: [`EventFilter::matches`] — проверка в памяти для живых
//! подписок; компиляция в SQL — `storage::sql::push_filter`. Тест
//! `tests/api/filter_parity.rs` сверяет оба пути на одних и тех же событиях.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::json_contains;
use crate::model::{Event, ValidationError};

/// Наибольшая длина списков `eventTypes` и `agentIds`.
pub const MAX_FILTER_LIST: usize = 100;
/// Наибольшее число ключей и элементов в образце `payloadContains`.
pub const MAX_PAYLOAD_CONTAINS_TERMS: usize = 100;

/// Порядок выдачи событий по (createdAt, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SortOrder {
    /// Сначала новые (по умолчанию).
    #[default]
    NewestFirst,
    /// Сначала старые.
    OldestFirst,
}

/// Фильтр событий. Все заданные условия объединяются через И; пустой список
/// (`eventTypes: []`) не пропускает ни одного события.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Типы событий (любой из).
    pub event_types: Option<Vec<String>>,
    /// Агенты (любой из).
    pub agent_ids: Option<Vec<String>>,
    /// Сессия.
    pub session_id: Option<Uuid>,
    /// Пользователь; для обычного пользователя чужое значение не даёт строк.
    pub user_id: Option<String>,
    /// Инструмент.
    pub tool_name: Option<String>,
    /// Код ошибки.
    pub error_code: Option<String>,
    /// Есть ли код ошибки.
    pub has_error: Option<bool>,
    /// Статус согласования.
    pub approval_status: Option<String>,
    /// Начало интервала, включительно.
    pub from: Option<DateTime<Utc>>,
    /// Конец интервала, не включая.
    pub to: Option<DateTime<Utc>>,
    /// Образец, который должна содержать нагрузка (семантика `jsonb @>`).
    pub payload_contains: Option<Value>,
}

impl EventFilter {
    /// Проверяет сам фильтр: `payloadContains` — JSON-объект, списки не длиннее
    /// [`MAX_FILTER_LIST`] (каждый элемент — параметр SQL, а у баз есть предел).
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (name, list) in [("eventTypes", &self.event_types), ("agentIds", &self.agent_ids)] {
            if list.as_ref().is_some_and(|l| l.len() > MAX_FILTER_LIST) {
                return Err(ValidationError::new(
                    name,
                    format!("at most {MAX_FILTER_LIST} values"),
                ));
            }
        }
        if let Some(p) = &self.payload_contains
            && !p.is_object()
        {
            return Err(ValidationError::new("payloadContains", "must be a JSON object"));
        }
        Ok(())
    }

    /// Проверяет размер образца `payloadContains`: не больше `max_bytes` байт
    /// сериализованного JSON и не больше [`MAX_PAYLOAD_CONTAINS_TERMS`] ключей и
    /// значений (каждый — условие SQL; на SQLite тысячи условий превышают пределы
    /// разбора, и отказ должен быть понятным, а не INTERNAL).
    pub fn check_payload_contains(&self, max_bytes: usize) -> Result<(), ValidationError> {
        fn terms(v: &Value) -> usize {
            match v {
                Value::Object(m) => m.values().map(|v| 1 + terms(v)).sum(),
                Value::Array(a) => a.iter().map(|v| 1 + terms(v)).sum(),
                _ => 0,
            }
        }
        let Some(p) = &self.payload_contains else {
            return Ok(());
        };
        let bytes = serde_json::to_string(p).map_or(usize::MAX, |s| s.len());
        if bytes > max_bytes {
            return Err(ValidationError::new(
                "payloadContains",
                format!("must be at most {max_bytes} bytes serialized, got {bytes}"),
            ));
        }
        let n = terms(p);
        if n > MAX_PAYLOAD_CONTAINS_TERMS {
            return Err(ValidationError::new(
                "payloadContains",
                format!("must have at most {MAX_PAYLOAD_CONTAINS_TERMS} keys and elements, got {n}"),
            ));
        }
        Ok(())
    }

    /// Приводит границы времени к микросекундам — точности хранения, — чтобы SQL
    /// на обеих базах и проверка в памяти сравнивали одно и то же.
    pub fn normalized(mut self) -> Self {
        self.from = self.from.map(crate::model::truncate_to_micros);
        self.to = self.to.map(crate::model::truncate_to_micros);
        self
    }

    /// Проходит ли событие фильтр (проверка в памяти, та же семантика, что и SQL).
    pub fn matches(&self, e: &Event) -> bool {
        fn any_of(list: &Option<Vec<String>>, v: Option<&str>) -> bool {
            match list {
                None => true,
                Some(list) => v.is_some_and(|v| list.iter().any(|x| x == v)),
            }
        }
        fn eq(want: &Option<String>, v: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| v == Some(w))
        }
        any_of(&self.event_types, Some(&e.event_type))
            && any_of(&self.agent_ids, e.agent_id.as_deref())
            && self.session_id.is_none_or(|s| s == e.session_id)
            && eq(&self.user_id, Some(&e.user_id))
            && eq(&self.tool_name, e.tool_name.as_deref())
            && eq(&self.error_code, e.error_code.as_deref())
            && self.has_error.is_none_or(|h| h == e.is_error())
            && eq(&self.approval_status, e.approval_status.as_deref())
            && self.from.is_none_or(|f| e.created_at >= f)
            && self.to.is_none_or(|t| e.created_at < t)
            && self.payload_contains.as_ref().is_none_or(|p| match p {
                // Нагрузка — всегда объект, поэтому сравниваем ключи без копирования.
                Value::Object(p) => p
                    .iter()
                    .all(|(k, pv)| e.payload.get(k).is_some_and(|dv| json_contains(dv, pv))),
                _ => false,
            })
    }
}
