//! Таблица `event_logs` (SPEC §2), таблица отказов `event_logs_rejected` и базовые индексы.
//!
//! На PostgreSQL `id` — первичный ключ uuid, `seq` — identity-колонка с уникальным
//! индексом. На SQLite `seq` — `INTEGER PRIMARY KEY AUTOINCREMENT` (псевдоним rowid:
//! номера не переиспользуются даже после удаления старых строк), а `id` — уникальный
//! текст; `ON CONFLICT (id)` работает одинаково на обеих базах.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PG_UP: &str = r#"
CREATE TABLE event_logs (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL,
    user_id varchar(128) NOT NULL,
    project_id uuid NOT NULL,
    agent_id varchar(128),
    event_type varchar(64) NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    error_code varchar(64),
    tool_name varchar(128),
    approval_status varchar(16),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT event_logs_seq_key UNIQUE (seq),
    CONSTRAINT event_logs_event_type_check CHECK (event_type ~ '^[A-Z][A-Z0-9_]{0,63}$'),
    CONSTRAINT event_logs_approval_status_check
        CHECK (approval_status IN ('PENDING', 'APPROVED', 'REJECTED', 'TIMEOUT')),
    CONSTRAINT event_logs_payload_check CHECK (jsonb_typeof(payload) = 'object')
)"#;

const SQLITE_UP: &str = r#"
CREATE TABLE event_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL CHECK (length(user_id) <= 128),
    project_id TEXT NOT NULL,
    agent_id TEXT CHECK (length(agent_id) <= 128),
    event_type TEXT NOT NULL
        CHECK (length(event_type) BETWEEN 1 AND 64 AND event_type NOT GLOB '*[^A-Z0-9_]*'
               AND substr(event_type, 1, 1) BETWEEN 'A' AND 'Z'),
    payload TEXT NOT NULL CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    created_at TEXT NOT NULL,
    error_code TEXT CHECK (length(error_code) <= 64),
    tool_name TEXT CHECK (length(tool_name) <= 128),
    approval_status TEXT
        CHECK (approval_status IN ('PENDING', 'APPROVED', 'REJECTED', 'TIMEOUT'))
)"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = manager.get_database_backend() == DbBackend::Postgres;
        let (uuid, json, ts) = if pg {
            ("uuid", "jsonb", "timestamptz")
        } else {
            ("TEXT", "TEXT", "TEXT")
        };
        let mut sql = vec![
            (if pg { PG_UP } else { SQLITE_UP }).to_owned(),
            format!(
                "CREATE TABLE event_logs_rejected (
                    id {uuid} PRIMARY KEY,
                    raw_event {json} NOT NULL,
                    error TEXT NOT NULL,
                    rejected_at {ts} NOT NULL
                )"
            ),
        ];
        // На PostgreSQL индекс проекта покрывающий: аналитика администратора читает
        // только его (index-only scan), не трогая кучу.
        let project_cols = if pg {
            "project_id, created_at, id) INCLUDE (user_id, event_type, agent_id, error_code, \
             tool_name, approval_status, session_id"
        } else {
            "project_id, created_at, id"
        };
        sql.extend(
            [
                ("idx_event_logs_session_created", "session_id, created_at, id"),
                ("idx_event_logs_user_created", "user_id, created_at"),
                ("idx_event_logs_agent", "agent_id"),
                ("idx_event_logs_event_type", "event_type"),
                ("idx_event_logs_project_created", project_cols),
                ("idx_event_logs_created", "created_at"),
            ]
            .iter()
            .map(|(name, cols)| format!("CREATE INDEX {name} ON event_logs ({cols})")),
        );
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventLogsRejected::Table).to_owned())
            .await?;
        // Индексы удаляются вместе с таблицей.
        manager
            .drop_table(Table::drop().table(EventLogs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum EventLogs {
    Table,
}

#[derive(DeriveIden)]
enum EventLogsRejected {
    Table,
}
