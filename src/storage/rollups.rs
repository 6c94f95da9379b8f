//! Потребитель журнала `rollups`: ведёт узкие свёртки аналитики (`rollup_parts`,
//! `rollup_session_parts`, схема и SQL — [`migration::rollup_sql`]).
//!
//! Шаг ([`apply`]) прибавляет к свёрткам строки диапазона журнала двумя
//! инструкциями `INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE` в транзакции
//! шага [`Store::follow_step`] — вместе со сдвигом позиции, поэтому каждое событие
//! учтено ровно один раз. Очистка ([`purge`]) в своей транзакции вычитает уже
//! применённые удаляемые строки и удаляет группы, где не осталось событий.
//! Чтение — [`super::rollup_read`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use migration::rollup_sql::{self, Delta};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use tokio_util::sync::CancellationToken;

pub use migration::rollup_sql::FOLLOWER;

use super::follow::{FollowOutcome, LogRange, lock_position};
use super::sql::Sql;
use super::{StorageError, Store};

/// Предел одного шага: фиксаций на PostgreSQL (в фиксации — пакет писателя), событий на SQLite.
pub fn step_limit(pg: bool) -> u32 {
    if pg { 200 } else { 20_000 }
}

/// Применяет к свёрткам события диапазона `range` (функция шага потребителя).
pub fn apply(
    txn: &DatabaseTransaction,
    range: LogRange,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + '_>> {
    Box::pin(async move {
        let b = txn.get_database_backend();
        for up in rollup_sql::upserts(b, Delta::Add) {
            let mut sql = Sql::new(b);
            sql.push(&up.head).push_in_log_range(range).push(&up.tail);
            txn.execute_raw(sql.build()).await?;
        }
        Ok(())
    })
}

/// Вычитает из свёрток строки порции очистки (`purge_chunk`), которые потребитель уже
/// применил, и удаляет группы, в которых не осталось событий (функция очистки).
///
/// `last_at` группы не пересчитывается: очистка удаляет строки по возрастанию
/// `created_at` ([`Store::purge_older_than`]), поэтому у оставшихся событий группы
/// время не меньше удалённых, и максимум группы остаётся верным (см.
/// docs/architecture.md, «Analytics rollups»).
pub fn purge(
    txn: &DatabaseTransaction,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + '_>> {
    Box::pin(async move {
        let b = txn.get_database_backend();
        let Some(pos) = lock_position(txn, FOLLOWER).await? else {
            return Ok(());
        };
        for up in rollup_sql::upserts(b, Delta::Subtract) {
            let mut sql = Sql::new(b);
            sql.push(&up.head)
                .push(" AND seq IN (SELECT seq FROM purge_chunk)")
                .push_applied(pos)
                .push(&up.tail);
            txn.execute_raw(sql.build()).await?;
        }
        // Опустевшие группы ищем только в ячейках строк порции (по ключу индекса).
        for sql in rollup_sql::purge_empty_sql(b) {
            txn.execute_unprepared(&sql).await?;
        }
        Ok(())
    })
}

impl Store {
    /// Один шаг потребителя свёрток: до `max` фиксаций (SQLite — событий).
    pub async fn step_rollups(&self, max: u32) -> Result<FollowOutcome, StorageError> {
        self.follow_step(FOLLOWER, max, apply).await
    }

    /// Цикл потребителя свёрток до отмены `cancel` (пауза `interval`, когда журнал дочитан).
    pub async fn run_rollups(&self, interval: Duration, cancel: CancellationToken) {
        let max = step_limit(self.is_postgres());
        self.run_follower(FOLLOWER, max, interval, apply, cancel).await;
    }
}
