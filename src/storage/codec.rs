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
    decode_event_columns(row, b, Columns::ALL)
}

/// Читает строку `event_logs`, выбранную столбцами [`Columns::sql`]; невыбранные
/// поля получают пустые значения (их никто не покажет).
pub(crate) fn decode_event_columns(
    row: &QueryResult,
    b: DbBackend,
    cols: Columns,
) -> Result<Event, StorageError> {
    let payload = if !cols.has(Columns::PAYLOAD) {
        serde_json::Value::Object(serde_json::Map::new())
    } else if b == DbBackend::Postgres {
        row.try_get::<serde_json::Value>("", "payload")
            .map_err(dec("payload"))?
    } else {
        let s: String = row.try_get("", "payload").map_err(dec("payload"))?;
        serde_json::from_str(&s).map_err(dec("payload"))?
    };
    let serde_json::Value::Object(payload) = payload else {
        return Err(StorageError::Decode("payload: not an object".into()));
    };
    let opt = |c: Columns, col: &str| -> Result<Option<String>, StorageError> {
        if !cols.has(c) {
            return Ok(None);
        }
        row.try_get::<Option<String>>("", col).map_err(dec(col))
    };
    let string = |c: Columns, col: &str| -> Result<String, StorageError> {
        if !cols.has(c) {
            return Ok(String::new());
        }
        row.try_get::<String>("", col).map_err(dec(col))
    };
    let uuid = |c: Columns, col: &str| -> Result<Uuid, StorageError> {
        if !cols.has(c) {
            return Ok(Uuid::nil());
        }
        get_uuid(row, b, col)
    };
    Ok(Event {
        id: get_uuid(row, b, "id")?,
        seq: if cols.has(Columns::SEQ) {
            row.try_get("", "seq").map_err(dec("seq"))?
        } else {
            0
        },
        session_id: uuid(Columns::SESSION_ID, "session_id")?,
        user_id: string(Columns::USER_ID, "user_id")?,
        project_id: uuid(Columns::PROJECT_ID, "project_id")?,
        agent_id: opt(Columns::AGENT_ID, "agent_id")?,
        event_type: string(Columns::EVENT_TYPE, "event_type")?,
        payload,
        created_at: get_ts(row, b, "created_at")?,
        error_code: opt(Columns::ERROR_CODE, "error_code")?,
        tool_name: opt(Columns::TOOL_NAME, "tool_name")?,
        approval_status: opt(Columns::APPROVAL_STATUS, "approval_status")?,
    })
}

/// Набор столбцов события, которые читает страница. `id` и `created_at` читаются
/// всегда: из них строится курсор.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Columns(u16);

impl Columns {
    /// Только `id` и `created_at`.
    pub const KEY: Columns = Columns(0);
    /// `seq`.
    pub const SEQ: Columns = Columns(1);
    /// `session_id`.
    pub const SESSION_ID: Columns = Columns(1 << 1);
    /// `user_id`.
    pub const USER_ID: Columns = Columns(1 << 2);
    /// `project_id`.
    pub const PROJECT_ID: Columns = Columns(1 << 3);
    /// `agent_id`.
    pub const AGENT_ID: Columns = Columns(1 << 4);
    /// `event_type`.
    pub const EVENT_TYPE: Columns = Columns(1 << 5);
    /// `payload`.
    pub const PAYLOAD: Columns = Columns(1 << 6);
    /// `error_code`.
    pub const ERROR_CODE: Columns = Columns(1 << 7);
    /// `tool_name`.
    pub const TOOL_NAME: Columns = Columns(1 << 8);
    /// `approval_status`.
    pub const APPROVAL_STATUS: Columns = Columns(1 << 9);
    /// Все столбцы.
    pub const ALL: Columns = Columns((1 << 10) - 1);

    const NAMES: [(Columns, &'static str); 10] = [
        (Columns::SEQ, "seq"),
        (Columns::SESSION_ID, "session_id"),
        (Columns::USER_ID, "user_id"),
        (Columns::PROJECT_ID, "project_id"),
        (Columns::AGENT_ID, "agent_id"),
        (Columns::EVENT_TYPE, "event_type"),
        (Columns::PAYLOAD, "payload"),
        (Columns::ERROR_CODE, "error_code"),
        (Columns::TOOL_NAME, "tool_name"),
        (Columns::APPROVAL_STATUS, "approval_status"),
    ];

    /// Объединение наборов.
    #[must_use]
    pub fn with(self, other: Columns) -> Columns {
        Columns(self.0 | other.0)
    }

    /// Есть ли в наборе все столбцы `other`.
    pub fn has(self, other: Columns) -> bool {
        self.0 & other.0 == other.0
    }

    /// Столбцы, нужные полю GraphQL-типа `Event` (`session` — сводка по `session_id`).
    /// `None` — у типа нет такого поля.
    pub fn for_graphql_field(name: &str) -> Option<Columns> {
        Some(match name {
            "id" | "createdAt" | "__typename" => Columns::KEY,
            "seq" => Columns::SEQ,
            "sessionId" | "session" => Columns::SESSION_ID,
            "userId" => Columns::USER_ID,
            "projectId" => Columns::PROJECT_ID,
            "agentId" => Columns::AGENT_ID,
            "eventType" => Columns::EVENT_TYPE,
            "payload" => Columns::PAYLOAD,
            "errorCode" => Columns::ERROR_CODE,
            "toolName" => Columns::TOOL_NAME,
            "approvalStatus" => Columns::APPROVAL_STATUS,
            _ => return None,
        })
    }

    /// Столбцы, нужные выбранным полям `Event`: `selected(имя поля)` отвечает, выбрано
    /// ли поле (в `nodes` или `edges.node`).
    pub fn for_graphql_selection(selected: impl Fn(&str) -> bool) -> Columns {
        const FIELDS: [&str; 11] = [
            "seq",
            "sessionId",
            "session",
            "userId",
            "projectId",
            "agentId",
            "eventType",
            "payload",
            "errorCode",
            "toolName",
            "approvalStatus",
        ];
        FIELDS
            .into_iter()
            .filter(|f| selected(f))
            .filter_map(Columns::for_graphql_field)
            .fold(Columns::KEY, Columns::with)
    }

    /// Список столбцов для SELECT.
    pub(crate) fn sql(self) -> String {
        let mut out = String::from("id, created_at");
        for (c, name) in Self::NAMES {
            if self.has(c) {
                out.push_str(", ");
                out.push_str(name);
            }
        }
        out
    }
}
