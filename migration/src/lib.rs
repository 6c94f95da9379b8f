//! Миграции схемы eventlog (sea-orm-migration).
//!
//! `m20250101_000001_create_event_logs` создаёт таблицу событий `event_logs`,
//! таблицу отказов `event_logs_rejected` и индексы SPEC §2;
//! `m20250101_000002_add_query_indexes` — индексы под формы запросов API;
//! `m20261204_000001_create_event_log` — журнал фиксаций (порядок событий для
//! всех писателей) и головы проектов;
//! `m20261204_000002_reject_out_of_range_dates` переносит строки с `created_at` вне
//! [1970-01-01T00:00:00Z, сейчас + 5 минут] в таблицу отказов;
//! `m20261205_000001_create_log_followers` — позиции потребителей журнала;
//! `m20261205_000002_create_analytics_rollups` — часовые свёртки аналитики
//! (SQL свёрток — в [`rollup_sql`]).
//! `m20261205_000003_create_session_summaries` — сводки сессий (потребитель `sessions`);
//! `m20261205_000004_narrow_analytics_rollups` заменяет часовые свёртки узкими
//! (по разрезу на строку, часы и сутки; SQL — в [`rollup_sql`]).
//! `down` каждой миграции полностью отменяет её `up`.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_create_event_logs;
mod m20250101_000002_add_query_indexes;
mod m20261204_000001_create_event_log;

pub use m20261204_000001_create_event_log::LOG_LOCK_KEY;
mod m20261204_000002_reject_out_of_range_dates;

pub use m20261204_000002_reject_out_of_range_dates::REASON as OUT_OF_RANGE_DATES_REASON;
mod m20261205_000001_create_log_followers;

pub use m20261205_000001_create_log_followers::{head_position_sql, lock_log_sql};
mod m20261205_000002_create_analytics_rollups;
mod m20261205_000003_create_session_summaries;
mod m20261205_000004_narrow_analytics_rollups;
pub mod rollup_sql;

pub use m20261205_000003_create_session_summaries::{
    ALL_USERS_KEY, SESSIONS_FOLLOWER, session_summary_upserts,
};

/// Набор миграций eventlog по порядку применения.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_event_logs::Migration),
            Box::new(m20250101_000002_add_query_indexes::Migration),
            Box::new(m20261204_000001_create_event_log::Migration),
            Box::new(m20261204_000002_reject_out_of_range_dates::Migration),
            Box::new(m20261205_000001_create_log_followers::Migration),
            Box::new(m20261205_000002_create_analytics_rollups::Migration),
            Box::new(m20261205_000003_create_session_summaries::Migration),
            Box::new(m20261205_000004_narrow_analytics_rollups::Migration),
        ]
    }
}

/// Имена индексов, которые создают миграции (для тестов и `eventlog migrate status`).
pub const INDEX_NAMES: &[&str] = &[
    "idx_event_logs_session_created",
    "idx_event_logs_user_created",
    "idx_event_logs_agent",
    "idx_event_logs_event_type",
    "idx_event_logs_project_created",
    "idx_event_logs_created",
    "idx_event_logs_project_user_created",
    "idx_event_logs_project_user_type_created",
    "idx_event_logs_project_type_created",
    "idx_event_logs_project_errors",
    "idx_session_summaries_recent",
];

/// Выполняет список SQL-инструкций по одной.
async fn run_all(manager: &SchemaManager<'_>, statements: &[String]) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for sql in statements {
        conn.execute_unprepared(sql).await?;
    }
    Ok(())
}
