//! SQL свёрток аналитики, общий для миграции `m20261205_000002_create_analytics_rollups`
//! (заполнение по уже записанным строкам) и сервера (потребитель журнала `rollups`,
//! вычитание при очистке, точное чтение аналитики). Одно определение: строка
//! `event_logs` попадает в свёртку одним и тем же выражением при заполнении, при
//! каждом шаге потребителя и при вычитании.
//!
//! Таблицы (гранулярность — час UTC):
//! - `rollup_events` — ключ `(project_id, user_id, hour, event_type, agent_id,
//!   tool_name, error_code, approval_status, model)`, суммы `n`, `input_tokens`,
//!   `output_tokens` и `last_at` (последнее `created_at` группы). `model` задана
//!   только у MODEL_CALL, у остальных NULL.
//! - `rollup_sessions` — ключ `(project_id, user_id, hour, session_id, agent_id,
//!   event_type)`, суммы `n` и `errors`: по ним считаются точные числа различных
//!   сессий (всего и по агентам) под фильтрами eventTypes, agentIds, userId, hasError.
//!
//! NULL в ключе. PostgreSQL: ограничение `UNIQUE NULLS NOT DISTINCT` (PostgreSQL 15+),
//! а вместо самой модели в ключе — `model_key = sha256(model)`: строка модели
//! из нагрузки не ограничена по длине, а запись индекса btree — около 2,7 КБ.
//! SQLite: уникальный индекс по выражениям `ifnull(col, X'00')` — BLOB никогда не
//! равен тексту, поэтому NULL не совпадает ни с одним значением, в том числе с `''`.

use sea_orm_migration::sea_orm::DbBackend;

/// Имя потребителя журнала, который ведёт свёртки.
pub const FOLLOWER: &str = "rollups";

/// Единица усечения времени.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trunc {
    /// Минута.
    Minute,
    /// Час.
    Hour,
    /// Сутки (UTC).
    Day,
}

/// Начало минуты, часа или суток (UTC) для столбца времени `col`. PostgreSQL —
/// `date_trunc(…, 'UTC')`; SQLite — обрезка строки фиксированного формата хранения
/// с дополнением нулями (результат в том же формате и сравнивается как время).
pub fn trunc_sql(pg: bool, unit: Trunc, col: &str) -> String {
    match (pg, unit) {
        (true, Trunc::Minute) => format!("date_trunc('minute', {col}, 'UTC')"),
        (true, Trunc::Hour) => format!("date_trunc('hour', {col}, 'UTC')"),
        (true, Trunc::Day) => format!("date_trunc('day', {col}, 'UTC')"),
        (false, Trunc::Minute) => format!("(substr({col}, 1, 16) || ':00.000000Z')"),
        (false, Trunc::Hour) => format!("(substr({col}, 1, 13) || ':00:00.000000Z')"),
        (false, Trunc::Day) => format!("(substr({col}, 1, 10) || 'T00:00:00.000000Z')"),
    }
}

/// Модель события: `payload.model`, если это строка, иначе `unknown`.
pub fn model_sql(pg: bool) -> &'static str {
    if pg {
        "COALESCE(CASE WHEN jsonb_typeof(payload->'model') = 'string' THEN payload->>'model' END, 'unknown')"
    } else {
        "COALESCE(CASE WHEN json_type(payload, '$.model') = 'text' THEN json_extract(payload, '$.model') END, 'unknown')"
    }
}

/// Выражение «целое число токенов из ключа payload или 0». В сумму идут только
/// целые JSON-числа от 0 до 10^12 − 1 (не строки, не дробные): одинаково на обеих
/// базах, и мусор клиента не переполняет BIGINT суммы.
pub fn tokens_sql(pg: bool, key: &str) -> String {
    if pg {
        // Текстовая форма jsonb-числа `100.0` — «100.0»: дробные не проходят, как и на SQLite.
        format!(
            "CASE WHEN jsonb_typeof(payload->'{key}') = 'number' \
             AND (payload->>'{key}') ~ '^[0-9]{{1,12}}$' \
             THEN CAST(payload->>'{key}' AS BIGINT) ELSE 0 END"
        )
    } else {
        format!(
            "CASE WHEN json_type(payload, '$.{key}') = 'integer' \
             AND json_extract(payload, '$.{key}') BETWEEN 0 AND 999999999999 \
             THEN json_extract(payload, '$.{key}') ELSE 0 END"
        )
    }
}

/// Проекция строки `event_logs` в форму свёртки: `project_id, user_id, session_id,
/// hour, event_type, agent_id, tool_name, error_code, approval_status, model,
/// input_tokens, output_tokens, created_at`. Модель и токены — только у MODEL_CALL
/// (у остальных NULL и 0).
pub fn row_sql(pg: bool) -> String {
    format!(
        "project_id, user_id, session_id, {hour} AS hour, event_type, agent_id, tool_name, \
         error_code, approval_status, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {model} END AS model, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {input} ELSE 0 END AS input_tokens, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {output} ELSE 0 END AS output_tokens, \
         created_at",
        hour = trunc_sql(pg, Trunc::Hour, "created_at"),
        model = model_sql(pg),
        input = tokens_sql(pg, "input_tokens"),
        output = tokens_sql(pg, "output_tokens"),
    )
}

/// Прибавить строки к свёрткам (потребитель, заполнение) или вычесть (очистка).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// Прибавить.
    Add,
    /// Вычесть (строки, уже учтённые в свёртках).
    Subtract,
}

/// Инструкция upsert свёртки по строкам `event_logs`: `head`, затем условия отбора
/// строк, каждое с префиксом ` AND ` (после `WHERE 1 = 1`), затем `tail`.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// Текст до условий отбора строк.
    pub head: String,
    /// Текст после условий.
    pub tail: String,
}

impl Upsert {
    /// Инструкция целиком с условиями `conditions` (без параметров).
    pub fn with(&self, conditions: &str) -> String {
        format!("{}{conditions}{}", self.head, self.tail)
    }
}

/// Ключ `rollup_events` в GROUP BY (модель — полной строкой).
const EVENTS_GROUP: &str =
    "project_id, user_id, hour, event_type, agent_id, tool_name, error_code, approval_status, model";
/// Ключ `rollup_sessions`.
const SESSIONS_GROUP: &str = "project_id, user_id, hour, session_id, agent_id, event_type";

/// Две инструкции upsert (`rollup_events`, затем `rollup_sessions`) по строкам
/// `event_logs`, отобранным условиями. Каждая — один проход GROUP BY по строкам и
/// `ON CONFLICT DO UPDATE` со сложением счётчиков; при вычитании счётчики входят со
/// знаком минус, а `last_at` не меняется (см. docs/architecture.md, «Analytics rollups»).
pub fn upserts(backend: DbBackend, delta: Delta) -> [Upsert; 2] {
    let pg = backend == DbBackend::Postgres;
    let s = if delta == Delta::Add { "" } else { "-" };
    let rows = format!(" FROM (SELECT {} FROM event_logs WHERE 1 = 1", row_sql(pg));
    let (key_cols, key_vals, events_target, sessions_target) = if pg {
        (
            "model_key, model",
            "sha256(convert_to(model, 'UTF8')), model",
            "project_id, user_id, hour, event_type, agent_id, tool_name, error_code, approval_status, model_key"
                .to_owned(),
            SESSIONS_GROUP.to_owned(),
        )
    } else {
        (
            "model",
            "model",
            sqlite_target(
                "project_id, user_id, hour, event_type",
                &["agent_id", "tool_name", "error_code", "approval_status", "model"],
            ),
            sqlite_target("project_id, user_id, hour, session_id, event_type", &["agent_id"]),
        )
    };
    let last_at = match (delta, pg) {
        (Delta::Subtract, _) => "",
        (Delta::Add, true) => ", last_at = GREATEST(rollup_events.last_at, excluded.last_at)",
        (Delta::Add, false) => ", last_at = max(rollup_events.last_at, excluded.last_at)",
    };
    let events = Upsert {
        head: format!(
            "INSERT INTO rollup_events (project_id, user_id, hour, event_type, agent_id, tool_name, \
             error_code, approval_status, {key_cols}, n, input_tokens, output_tokens, last_at) \
             SELECT project_id, user_id, hour, event_type, agent_id, tool_name, error_code, \
             approval_status, {key_vals}, {s}COUNT(*), {s}SUM(input_tokens), {s}SUM(output_tokens), \
             MAX(created_at){rows}"
        ),
        tail: format!(
            ") e GROUP BY {EVENTS_GROUP} ON CONFLICT ({events_target}) DO UPDATE SET \
             n = rollup_events.n + excluded.n, \
             input_tokens = rollup_events.input_tokens + excluded.input_tokens, \
             output_tokens = rollup_events.output_tokens + excluded.output_tokens{last_at}"
        ),
    };
    let sessions = Upsert {
        head: format!(
            "INSERT INTO rollup_sessions ({SESSIONS_GROUP}, n, errors) \
             SELECT {SESSIONS_GROUP}, {s}COUNT(*), {s}COUNT(error_code){rows}"
        ),
        tail: format!(
            ") e GROUP BY {SESSIONS_GROUP} ON CONFLICT ({sessions_target}) DO UPDATE SET \
             n = rollup_sessions.n + excluded.n, errors = rollup_sessions.errors + excluded.errors"
        ),
    };
    [events, sessions]
}

/// Цель ON CONFLICT на SQLite: столбцы без NULL как есть, остальные через `ifnull(…, X'00')`
/// (те же выражения, что в уникальном индексе).
fn sqlite_target(plain: &str, nullable: &[&str]) -> String {
    let mut s = plain.to_owned();
    for c in nullable {
        s.push_str(&format!(", ifnull({c}, X'00')"));
    }
    s
}

/// Таблицы и индексы свёрток.
pub(crate) fn create_sql(backend: DbBackend) -> Vec<String> {
    if backend == DbBackend::Postgres {
        vec![
            "CREATE TABLE rollup_events (
                project_id uuid NOT NULL,
                user_id varchar(128) NOT NULL,
                hour timestamptz NOT NULL,
                event_type varchar(64) NOT NULL,
                agent_id varchar(128),
                tool_name varchar(128),
                error_code varchar(64),
                approval_status varchar(16),
                model_key bytea,
                model text,
                n bigint NOT NULL,
                input_tokens bigint NOT NULL,
                output_tokens bigint NOT NULL,
                last_at timestamptz NOT NULL,
                CONSTRAINT rollup_events_key UNIQUE NULLS NOT DISTINCT
                    (project_id, user_id, hour, event_type, agent_id, tool_name, error_code,
                     approval_status, model_key)
            )"
            .to_owned(),
            "CREATE TABLE rollup_sessions (
                project_id uuid NOT NULL,
                user_id varchar(128) NOT NULL,
                hour timestamptz NOT NULL,
                session_id uuid NOT NULL,
                agent_id varchar(128),
                event_type varchar(64) NOT NULL,
                n bigint NOT NULL,
                errors bigint NOT NULL,
                CONSTRAINT rollup_sessions_key UNIQUE NULLS NOT DISTINCT
                    (project_id, user_id, hour, session_id, agent_id, event_type)
            )"
            .to_owned(),
            "CREATE INDEX idx_rollup_events_project_hour ON rollup_events (project_id, hour)".to_owned(),
            "CREATE INDEX idx_rollup_sessions_project_hour ON rollup_sessions (project_id, hour)".to_owned(),
        ]
    } else {
        vec![
            "CREATE TABLE rollup_events (
                project_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                hour TEXT NOT NULL,
                event_type TEXT NOT NULL,
                agent_id TEXT,
                tool_name TEXT,
                error_code TEXT,
                approval_status TEXT,
                model TEXT,
                n INTEGER NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                last_at TEXT NOT NULL
            )"
            .to_owned(),
            "CREATE TABLE rollup_sessions (
                project_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                hour TEXT NOT NULL,
                session_id TEXT NOT NULL,
                agent_id TEXT,
                event_type TEXT NOT NULL,
                n INTEGER NOT NULL,
                errors INTEGER NOT NULL
            )"
            .to_owned(),
            format!(
                "CREATE UNIQUE INDEX rollup_events_key ON rollup_events ({})",
                sqlite_target(
                    "project_id, user_id, hour, event_type",
                    &["agent_id", "tool_name", "error_code", "approval_status", "model"],
                )
            ),
            format!(
                "CREATE UNIQUE INDEX rollup_sessions_key ON rollup_sessions ({})",
                sqlite_target("project_id, user_id, hour, session_id, event_type", &["agent_id"])
            ),
            "CREATE INDEX idx_rollup_events_project_hour ON rollup_events (project_id, hour)".to_owned(),
            "CREATE INDEX idx_rollup_sessions_project_hour ON rollup_sessions (project_id, hour)".to_owned(),
        ]
    }
}
