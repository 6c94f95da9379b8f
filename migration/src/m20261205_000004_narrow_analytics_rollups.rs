//! Узкие свёртки аналитики (`rollup_parts`, `rollup_session_parts`, см.
//! [`crate::rollup_sql`]) вместо широких часовых свёрток миграции
//! `m20261205_000002_create_analytics_rollups`.
//!
//! В одной транзакции: замок журнала (ни одна фиксация не появится до конца
//! миграции), удаление широких таблиц, создание узких, заполнение по всем уже
//! записанным строкам тем же SQL, что применяет потребитель `rollups`, и позиция
//! потребителя = голова журнала. Поэтому заполнение и позиция согласованы.
//!
//! `down` удаляет узкие таблицы и возвращает широкие (тем же замороженным SQL
//! миграции `…000002`), заполненные по голове журнала.

use sea_orm_migration::prelude::*;

use crate::m20261205_000002_create_analytics_rollups::v1;
use crate::rollup_sql::{self, Delta, FOLLOWER};
use crate::{head_position_sql, lock_log_sql, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Позиция потребителя `rollups` — голова журнала (строка есть после `…000002`).
fn follower_at_head(b: sea_orm_migration::sea_orm::DbBackend) -> String {
    format!(
        "UPDATE log_followers SET pos = {} WHERE name = '{FOLLOWER}'",
        head_position_sql(b)
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();
        let mut sql: Vec<String> = lock_log_sql(b).into_iter().collect();
        sql.push("DROP TABLE IF EXISTS rollup_sessions".to_owned());
        sql.push("DROP TABLE IF EXISTS rollup_events".to_owned());
        sql.extend(rollup_sql::create_sql(b));
        sql.extend(rollup_sql::upserts(b, Delta::Add).iter().map(|u| u.with("")));
        sql.push(follower_at_head(b));
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();
        let mut sql: Vec<String> = lock_log_sql(b).into_iter().collect();
        sql.extend(rollup_sql::drop_sql().map(str::to_owned));
        sql.extend(v1::create_sql(b));
        sql.extend(v1::upserts(b, Delta::Add).iter().map(|u| u.with("")));
        sql.push(follower_at_head(b));
        run_all(manager, &sql).await
    }

    // На SQLite миграции по умолчанию идут без транзакции; здесь она нужна, чтобы
    // заполнение и позиция потребителя были согласованы (см. модуль).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
