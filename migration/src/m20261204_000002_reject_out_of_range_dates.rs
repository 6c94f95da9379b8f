//! Переносит в `event_logs_rejected` строки, чьё `created_at` вне диапазона, который
//! обе базы хранят и читают обратно: [1970-01-01T00:00:00Z, время миграции + 5 минут].
//!
//! Раньше такие даты принимались: на SQLite строка с `-10000-01-01` сохранялась, и
//! каждая страница и аналитика её проекта отвечала INTERNAL. Причина в таблице
//! отказов — [`REASON`]; `down` возвращает ровно эти строки (с прежним `seq`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Текст причины в `event_logs_rejected.error`; по нему `down` находит свои строки.
pub const REASON: &str = "createdAt: outside the accepted range [1970-01-01T00:00:00Z, now + 5 minutes]; \
     moved by migration m20261204_000002_reject_out_of_range_dates";

const PG_UP: &str = r#"
WITH moved AS (
    DELETE FROM event_logs
    WHERE created_at < TIMESTAMPTZ '1970-01-01T00:00:00Z'
       OR created_at > now() + INTERVAL '5 minutes'
    RETURNING *
)
INSERT INTO event_logs_rejected (id, raw_event, error, rejected_at)
SELECT id,
       jsonb_build_object('id', id, 'seq', seq, 'session_id', session_id, 'user_id', user_id,
           'project_id', project_id, 'agent_id', agent_id, 'event_type', event_type,
           'payload', payload, 'created_at', created_at, 'error_code', error_code,
           'tool_name', tool_name, 'approval_status', approval_status),
       $1, now()
FROM moved
"#;

const PG_DOWN: &str = r#"
WITH back AS (
    DELETE FROM event_logs_rejected WHERE error = $1 RETURNING raw_event
)
INSERT INTO event_logs (id, session_id, user_id, project_id, agent_id, event_type, payload,
                        created_at, error_code, tool_name, approval_status, seq)
OVERRIDING SYSTEM VALUE
SELECT (raw_event->>'id')::uuid, (raw_event->>'session_id')::uuid, raw_event->>'user_id',
       (raw_event->>'project_id')::uuid, raw_event->>'agent_id', raw_event->>'event_type',
       raw_event->'payload', (raw_event->>'created_at')::timestamptz, raw_event->>'error_code',
       raw_event->>'tool_name', raw_event->>'approval_status', (raw_event->>'seq')::bigint
FROM back
ON CONFLICT (id) DO NOTHING
"#;

/// Условие на SQLite: время хранится текстом `%Y-%m-%dT%H:%M:%S%.6fZ`, и текстовое
/// сравнение совпадает с временным для лет 1000–9999; годы со знаком (`-10000`,
/// `+10000`) и годы до 1000 сравниваются как меньшие `'1970…'`.
const SQLITE_OUT_OF_RANGE: &str = "created_at < '1970-01-01T00:00:00.000000Z' OR created_at > ?";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_UP,
                [REASON.into()],
            ))
            .await?;
            return Ok(());
        }
        // Одна верхняя граница для обеих инструкций.
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+5 minutes') AS hi",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("strftime returned no row".into()))?;
        let hi: String = row.try_get("", "hi")?;
        let insert = format!(
            "INSERT INTO event_logs_rejected (id, raw_event, error, rejected_at) \
             SELECT id, json_object('id', id, 'seq', seq, 'session_id', session_id, \
                 'user_id', user_id, 'project_id', project_id, 'agent_id', agent_id, \
                 'event_type', event_type, 'payload', json(payload), 'created_at', created_at, \
                 'error_code', error_code, 'tool_name', tool_name, \
                 'approval_status', approval_status), \
                 ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             FROM event_logs WHERE {SQLITE_OUT_OF_RANGE}"
        );
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            insert,
            [REASON.into(), hi.clone().into()],
        ))
        .await?;
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("DELETE FROM event_logs WHERE {SQLITE_OUT_OF_RANGE}"),
            [hi.into()],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_DOWN,
                [REASON.into()],
            ))
            .await?;
            return Ok(());
        }
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT OR IGNORE INTO event_logs (seq, id, session_id, user_id, project_id, agent_id, \
                 event_type, payload, created_at, error_code, tool_name, approval_status) \
             SELECT json_extract(raw_event, '$.seq'), json_extract(raw_event, '$.id'), \
                 json_extract(raw_event, '$.session_id'), json_extract(raw_event, '$.user_id'), \
                 json_extract(raw_event, '$.project_id'), json_extract(raw_event, '$.agent_id'), \
                 json_extract(raw_event, '$.event_type'), json_extract(raw_event, '$.payload'), \
                 json_extract(raw_event, '$.created_at'), json_extract(raw_event, '$.error_code'), \
                 json_extract(raw_event, '$.tool_name'), json_extract(raw_event, '$.approval_status') \
             FROM event_logs_rejected WHERE error = ?",
            [REASON.into()],
        ))
        .await?;
        run_all(
            manager,
            &[format!(
                "DELETE FROM event_logs_rejected WHERE error = '{}'",
                REASON.replace('\'', "''")
            )],
        )
        .await
    }
}
