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

use sea_orm_migration::prelude::*;

use crate::rollup_sql::{self, Delta, FOLLOWER};
use crate::{head_position_sql, lock_log_sql, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();
        let mut sql: Vec<String> = lock_log_sql(b).into_iter().collect();
        sql.extend(rollup_sql::create_sql(b));
        sql.extend(rollup_sql::upserts(b, Delta::Add).iter().map(|u| u.with("")));
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
