//! Последователи журнала: таблица `log_followers` (имя потребителя → позиция в
//! журнале, до которой он применил события).
//!
//! Потребитель (свёртки аналитики, сводки сессий) в одной транзакции применяет
//! события диапазона позиций и сдвигает свою позицию, поэтому каждое событие
//! применяется ровно один раз. Строку потребителя вставляет миграция, создающая
//! его таблицы: она же заполняет их по уже записанным строкам и ставит позицию на
//! голову журнала под замком журнала ([`head_position_sql`], [`lock_log_sql`]).
//!
//! Позиция — номер фиксации `event_log_commits.pos` на PostgreSQL и `seq` на SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Выражение SQL: голова журнала (0 для пустого). Всё, что видно после
/// [`lock_log_sql`], имеет позицию не выше неё.
pub fn head_position_sql(backend: DbBackend) -> &'static str {
    if backend == DbBackend::Postgres {
        "COALESCE((SELECT max(pos) FROM event_log_commits), 0)"
    } else {
        "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'event_logs'), 0)"
    }
}

/// Инструкция, после которой до конца транзакции миграции ни один писатель не
/// зафиксирует событие (PostgreSQL: замок журнала; SQLite: транзакция миграции
/// сама держит базу на запись после первой записи). `None` на SQLite.
pub fn lock_log_sql(backend: DbBackend) -> Option<String> {
    (backend == DbBackend::Postgres).then(|| format!("SELECT pg_advisory_xact_lock({})", crate::LOG_LOCK_KEY))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = if manager.get_database_backend() == DbBackend::Postgres {
            "CREATE TABLE log_followers (name varchar(64) PRIMARY KEY, pos bigint NOT NULL)"
        } else {
            "CREATE TABLE log_followers (name TEXT PRIMARY KEY, pos INTEGER NOT NULL)"
        };
        run_all(manager, &[sql.to_owned()]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS log_followers".to_owned()]).await
    }
}
