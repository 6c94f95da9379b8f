//! Сводки сессий: `session_summaries` и `session_summary_agents`, потребитель
//! журнала `sessions`.
//!
//! Строка сводки — на (проект, сессия, ключ пользователя): ключ — `user_id` для
//! строки одного пользователя и пустая строка ([`ALL_USERS_KEY`]; пустой `user_id`
//! запрещён проверкой события) для строки всех пользователей, которую читает
//! администратор. Поэтому страница `sessions` без фильтра и у пользователя, и у
//! администратора — чтение индекса `idx_session_summaries_recent` по порядку.
//! Агенты сессии — отдельной таблицей: объединение множеств при применении
//! диапазона — просто `INSERT … ON CONFLICT DO NOTHING`.
//!
//! Одни и те же инструкции ([`session_summary_upserts`]) заполняют таблицы здесь
//! (по всем строкам) и применяют диапазоны журнала в потребителе `sessions`
//! (условие диапазона дописывает приложение). На PostgreSQL текстовые ключи — с
//! `COLLATE "C"`: «наименьший `user_id`» — по байтам, как и порядок агентов.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::{head_position_sql, lock_log_sql, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Имя потребителя журнала, который ведёт сводки.
pub const SESSIONS_FOLLOWER: &str = "sessions";

/// Ключ строки сводки «все пользователи сессии» (пустой `user_id` невозможен).
pub const ALL_USERS_KEY: &str = "";

/// Инструкции, которые добавляют к сводкам строки `event_logs`: каждая — пара
/// (начало, хвост), между которыми вставляется условие на строки вида
/// ` AND …` (пустое — все строки). Начало кончается на `WHERE 1 = 1`.
///
/// Строки одного пользователя и всех пользователей: минимум/максимум времени,
/// суммы событий и ошибок, наименьший `user_id`; агенты — объединением.
pub fn session_summary_upserts(backend: DbBackend) -> Vec<(String, String)> {
    let pg = backend == DbBackend::Postgres;
    let (least, greatest, collate) = if pg {
        ("LEAST", "GREATEST", " COLLATE \"C\"")
    } else {
        // В SQLite min/max с двумя аргументами — скалярные; сравнение текста — BINARY.
        ("min", "max", "")
    };
    let summary = |key: &str, min_user: &str, group: &str| {
        (
            format!(
                "INSERT INTO session_summaries (project_id, session_id, user_key, first_event_at, \
                 last_event_at, events, errors, min_user_id) \
                 SELECT project_id, session_id, {key}, MIN(created_at), MAX(created_at), COUNT(*), \
                 COUNT(error_code), {min_user} FROM event_logs WHERE 1 = 1"
            ),
            format!(
                " GROUP BY {group} ON CONFLICT (project_id, session_id, user_key) DO UPDATE SET \
                 first_event_at = {least}(session_summaries.first_event_at, excluded.first_event_at), \
                 last_event_at = {greatest}(session_summaries.last_event_at, excluded.last_event_at), \
                 events = session_summaries.events + excluded.events, \
                 errors = session_summaries.errors + excluded.errors, \
                 min_user_id = {least}(session_summaries.min_user_id, excluded.min_user_id)"
            ),
        )
    };
    let agents = |key: &str| {
        (
            format!(
                "INSERT INTO session_summary_agents (project_id, session_id, user_key, agent_id) \
                 SELECT DISTINCT project_id, session_id, {key}, agent_id FROM event_logs \
                 WHERE 1 = 1 AND agent_id IS NOT NULL"
            ),
            " ON CONFLICT DO NOTHING".to_owned(),
        )
    };
    let all = format!("'{ALL_USERS_KEY}'");
    vec![
        summary("user_id", "user_id", "project_id, session_id, user_id"),
        summary(&all, &format!("MIN(user_id{collate})"), "project_id, session_id"),
        agents("user_id"),
        agents(&all),
    ]
}

fn create_tables(pg: bool) -> Vec<String> {
    let (uuid, ts, text, int) = if pg {
        ("uuid", "timestamptz", "varchar(128) COLLATE \"C\"", "bigint")
    } else {
        ("TEXT", "TEXT", "TEXT", "INTEGER")
    };
    vec![
        format!(
            "CREATE TABLE session_summaries (
                project_id {uuid} NOT NULL,
                session_id {uuid} NOT NULL,
                user_key {text} NOT NULL,
                first_event_at {ts} NOT NULL,
                last_event_at {ts} NOT NULL,
                events {int} NOT NULL,
                errors {int} NOT NULL,
                min_user_id {text} NOT NULL,
                PRIMARY KEY (project_id, session_id, user_key)
            )"
        ),
        // Страница `sessions`: строки ключа по убыванию (lastEventAt, sessionId).
        "CREATE INDEX idx_session_summaries_recent ON session_summaries \
         (project_id, user_key, last_event_at DESC, session_id DESC)"
            .to_owned(),
        format!(
            "CREATE TABLE session_summary_agents (
                project_id {uuid} NOT NULL,
                session_id {uuid} NOT NULL,
                user_key {text} NOT NULL,
                agent_id {text} NOT NULL,
                PRIMARY KEY (project_id, session_id, user_key, agent_id)
            )"
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let pg = backend == DbBackend::Postgres;
        // Под замком журнала: заполнение по видимым строкам и позиция потребителя
        // (голова журнала) согласованы — ни одна строка не пропущена и не учтена дважды.
        let mut sql: Vec<String> = lock_log_sql(backend).into_iter().collect();
        sql.extend(create_tables(pg));
        sql.extend(
            session_summary_upserts(backend)
                .into_iter()
                .map(|(head, tail)| head + &tail),
        );
        sql.push(format!(
            "INSERT INTO log_followers (name, pos) VALUES ('{SESSIONS_FOLLOWER}', {})",
            head_position_sql(backend)
        ));
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                format!("DELETE FROM log_followers WHERE name = '{SESSIONS_FOLLOWER}'"),
                "DROP TABLE IF EXISTS session_summary_agents".to_owned(),
                "DROP TABLE IF EXISTS session_summaries".to_owned(),
            ],
        )
        .await
    }

    fn use_transaction(&self) -> Option<bool> {
        // SQLite: заполнение и позиция — в одной транзакции (на PostgreSQL и так).
        Some(true)
    }
}
