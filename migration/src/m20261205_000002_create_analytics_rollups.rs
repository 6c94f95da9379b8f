//! Свёртки аналитики по часам: таблицы `rollup_events` и `rollup_sessions` (см.
//! [`crate::rollup_sql`]) и потребитель журнала `rollups`.
//!
//! В одной транзакции: замок журнала (ни одна фиксация не появится до конца
//! миграции), создание таблиц, заполнение по всем уже записанным строкам тем же SQL,
//! что применяет потребитель, и строка потребителя с позицией = голова журнала.
//! Поэтому заполнение и позиция согласованы: каждая строка либо учтена заполнением
//! (позиция не выше головы), либо будет применена потребителем.
//!
//! `down` удаляет строку потребителя и обе таблицы.
//!
//! Эти часовые свёртки по всем измерениям сразу сжимали события лишь в 1,6–1,8 раза
//! и заменены узкими свёртками миграции `m20261205_000004_narrow_analytics_rollups`;
//! их SQL заморожен здесь ([`v1`]), чтобы история миграций применялась и
//! откатывалась как прежде.

use sea_orm_migration::prelude::*;

use crate::rollup_sql::{Delta, FOLLOWER};
use crate::{head_position_sql, lock_log_sql, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();
        let mut sql: Vec<String> = lock_log_sql(b).into_iter().collect();
        sql.extend(v1::create_sql(b));
        sql.extend(v1::upserts(b, Delta::Add).iter().map(|u| u.with("")));
        sql.push(format!(
            "INSERT INTO log_followers (name, pos) VALUES ('{FOLLOWER}', {})",
            head_position_sql(b)
        ));
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                format!("DELETE FROM log_followers WHERE name = '{FOLLOWER}'"),
                "DROP TABLE IF EXISTS rollup_sessions".to_owned(),
                "DROP TABLE IF EXISTS rollup_events".to_owned(),
            ],
        )
        .await
    }

    // На SQLite миграции по умолчанию идут без транзакции; здесь она нужна, чтобы
    // заполнение и позиция потребителя были согласованы (см. модуль).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Замороженный SQL первых (широких) свёрток: таблицы `rollup_events`,
/// `rollup_sessions` и их заполнение. Нужен этой миграции и откату следующей.
pub(crate) mod v1 {
    use sea_orm_migration::sea_orm::DbBackend;

    use crate::rollup_sql::{Delta, Upsert, row_sql};

    /// Ключ `rollup_events` в GROUP BY (модель — полной строкой).
    const EVENTS_GROUP: &str =
        "project_id, user_id, hour, event_type, agent_id, tool_name, error_code, approval_status, model";
    /// Ключ `rollup_sessions`.
    const SESSIONS_GROUP: &str = "project_id, user_id, hour, session_id, agent_id, event_type";

    /// Две инструкции upsert (`rollup_events`, затем `rollup_sessions`) по строкам
    /// `event_logs`, отобранным условиями. Каждая — один проход GROUP BY по строкам и
    /// `ON CONFLICT DO UPDATE` со сложением счётчиков; при вычитании счётчики входят со
    /// знаком минус, а `last_at` не меняется (см. docs/architecture.md, «Analytics rollups»).
    pub(crate) fn upserts(backend: DbBackend, delta: Delta) -> [Upsert; 2] {
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
                "CREATE INDEX idx_rollup_sessions_project_hour ON rollup_sessions (project_id, hour)"
                    .to_owned(),
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
                "CREATE INDEX idx_rollup_sessions_project_hour ON rollup_sessions (project_id, hour)"
                    .to_owned(),
            ]
        }
    }
}
