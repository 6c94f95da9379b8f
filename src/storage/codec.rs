//! Разбор строк результата в [`Event`] с учётом диалекта: на SQLite UUID, время
//! и JSON хранятся текстом.

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, QueryResult};
use uuid::Uuid;

use super::StorageError;
use crate::model::Event;

fn dec<E: std::fmt::Display>(col: &str) -> impl FnOnce(E) -> StorageError + '_ {
    move |e| StorageError::Decode(format!("{col}: {e}"))
}

/// Читает UUID из колонки.
pub(crate) fn get_uuid(row: &QueryResult, b: DbBackend, col: &str) -> Result<Uuid, StorageError> {
    if b == DbBackend::Postgres {
        row.try_get::<Uuid>("", col).map_err(dec(col))
    } else {
        let s: String = row.try_get("", col).map_err(dec(col))?;
        Uuid::parse_str(&s).map_err(dec(col))
    }
}

/// Читает момент времени из колонки.
pub(crate) fn get_ts(row: &QueryResult, b: DbBackend, col: &str) -> Result<DateTime<Utc>, StorageError> {
    if b == DbBackend::Postgres {
        row.try_get::<DateTime<Utc>>("", col).map_err(dec(col))
    } else {
        let s: String = row.try_get("", col).map_err(dec(col))?;
        parse_sqlite_ts(&s).map_err(dec(col))
    }
}

/// Разбирает время, записанное в SQLite в формате `SQLITE_TS_FORMAT`.
pub(crate) fn parse_sqlite_ts(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Читает строку `event_logs`, выбранную столбцами `EVENT_COLUMNS`.
pub(crate) fn decode_event(row: &QueryResult, b: DbBackend) -> Result<Event, StorageError> {
    let payload = if b == DbBackend::Postgres {
        row.try_get::<serde_json::Value>("", "payload")
            .map_err(dec("payload"))?
    } else {
        let s: String = row.try_get("", "payload").map_err(dec("payload"))?;
        serde_json::from_str(&s).map_err(dec("payload"))?
    };
    let serde_json::Value::Object(payload) = payload else {
        return Err(StorageError::Decode("payload: not an object".into()));
    };
    let opt = |col: &str| -> Result<Option<String>, StorageError> {
        row.try_get::<Option<String>>("", col).map_err(dec(col))
    };
    Ok(Event {
        id: get_uuid(row, b, "id")?,
        seq: row.try_get("", "seq").map_err(dec("seq"))?,
        session_id: get_uuid(row, b, "session_id")?,
        user_id: row.try_get("", "user_id").map_err(dec("user_id"))?,
        project_id: get_uuid(row, b, "project_id")?,
        agent_id: opt("agent_id")?,
        event_type: row.try_get("", "event_type").map_err(dec("event_type"))?,
        payload,
        created_at: get_ts(row, b, "created_at")?,
        error_code: opt("error_code")?,
        tool_name: opt("tool_name")?,
        approval_status: opt("approval_status")?,
    })
}
