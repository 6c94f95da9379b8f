//! Последователи журнала: потребители, которые применяют каждое событие журнала
//! ровно один раз (свёртки аналитики, сводки сессий).
//!
//! Позиция потребителя хранится в `log_followers` (номер фиксации на PostgreSQL,
//! `seq` на SQLite). Шаг [`Store::follow_step`] в одной транзакции блокирует
//! строку потребителя, берёт следующий диапазон фиксаций `(after, upto]`, вызывает
//! функцию применения и сдвигает позицию. Фиксации видимы префиксом (см.
//! [`super::log`]), поэтому диапазон, увиденный один раз, полон и не изменится:
//! событие не пропускается и не применяется дважды, сколько бы экземпляров ни
//! шагало одновременно (второй ждёт или пропускает ход, см. ниже).
//!
//! Точное чтение «агрегат + ещё не применённое» берёт позицию потребителя и
//! агрегат в одном снимке и добавляет сырые строки условия
//! [`LogRange::unapplied`] через [`Sql::push_in_log_range`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use tokio_util::sync::CancellationToken;

use super::sql::Sql;
use super::{StorageError, Store};

/// Диапазон позиций журнала `(after, upto]`; `upto = None` — до конца журнала.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRange {
    /// Позиция, после которой начинается диапазон (не включая).
    pub after: i64,
    /// Последняя позиция диапазона (включая); `None` — без верхней границы.
    pub upto: Option<i64>,
}

impl LogRange {
    /// Всё, что потребитель с позицией `pos` ещё не применил.
    pub fn unapplied(pos: i64) -> Self {
        Self {
            after: pos,
            upto: None,
        }
    }
}

/// Итог одного шага потребителя.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowOutcome {
    /// Применён диапазон; `full` — взято столько, сколько позволял предел
    /// (вероятно, есть ещё).
    Advanced {
        /// Применённый диапазон.
        range: LogRange,
        /// Диапазон упёрся в предел шага.
        full: bool,
    },
    /// Новых фиксаций нет.
    CaughtUp,
    /// Шаг делает другой экземпляр (строка потребителя заблокирована).
    Busy,
}

/// Функция применения диапазона внутри транзакции шага.
pub type ApplyFn = for<'t> fn(
    &'t DatabaseTransaction,
    LogRange,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 't>>;

/// Функция очистки потребителя: вызывается в транзакции каждой порции очистки
/// ([`Store::purge_older_than`]) до удаления строк; удаляемые `seq` лежат во
/// временной таблице `purge_chunk (seq)`. Потребитель вычитает из своего агрегата
/// те из них, что уже применил (позиция не выше его позиции, взятой через
/// [`lock_position`]; условие — [`Sql::push_applied`]).
pub type PurgeFn = for<'t> fn(
    &'t DatabaseTransaction,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 't>>;

/// Потребитель журнала: имя, предел шага по базе (`true` — PostgreSQL) и функция применения.
pub(crate) type FollowerSpec = (&'static str, fn(bool) -> u32, ApplyFn);

/// Все потребители журнала сервера: имя, предел шага (PostgreSQL, SQLite) и функция
/// применения. [`Store::catch_up_followers`] доводит их до конца журнала.
pub(crate) const FOLLOWERS: &[FollowerSpec] = &[
    (
        super::rollups::FOLLOWER,
        super::rollups::step_limit,
        super::rollups::apply,
    ),
    (
        super::sessions::FOLLOWER,
        super::sessions::step_limit,
        super::sessions::apply,
    ),
];

/// Функции очистки всех потребителей журнала (по порядку; порядок блокировок строк
/// `log_followers` — этот же, что исключает взаимные блокировки).
pub(crate) const PURGE_HOOKS: &[PurgeFn] = &[super::rollups::purge, super::sessions::purge];

impl Sql {
    /// Добавляет условие ` AND <строка event_logs лежит в диапазоне журнала>`.
    /// PostgreSQL: seq из фиксаций диапазона; SQLite: сам seq.
    pub(crate) fn push_in_log_range(&mut self, range: LogRange) -> &mut Self {
        if self.is_pg() {
            self.push(" AND seq IN (SELECT unnest(seqs) FROM event_log_commits WHERE pos > ")
                .bind(range.after);
            if let Some(u) = range.upto {
                self.push(" AND pos <= ").bind(u);
            }
            self.push(")")
        } else {
            self.push(" AND seq > ").bind(range.after);
            if let Some(u) = range.upto {
                self.push(" AND seq <= ").bind(u);
            }
            self
        }
    }

    /// Добавляет условие ` AND <строка уже применена потребителем с позицией pos>`.
    /// На PostgreSQL — как «не среди фиксаций после pos»: их мало (потребитель
    /// отстаёт на доли секунды), а фиксаций до pos — весь журнал.
    pub(crate) fn push_applied(&mut self, pos: i64) -> &mut Self {
        if self.is_pg() {
            self.push(" AND seq NOT IN (SELECT unnest(seqs) FROM event_log_commits WHERE pos > ")
                .bind(pos)
                .push(")")
        } else {
            self.push(" AND seq <= ").bind(pos)
        }
    }
}

/// Позиция потребителя `name`, заблокированная до конца транзакции `txn`
/// (для чтения или очистки, которые должны видеть агрегат и позицию согласованно).
/// `None` — потребитель не зарегистрирован.
pub async fn lock_position(txn: &DatabaseTransaction, name: &str) -> Result<Option<i64>, StorageError> {
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT pos FROM log_followers WHERE name = ").bind(name);
    if sql.is_pg() {
        sql.push(" FOR UPDATE");
    }
    let row = txn.query_one_raw(sql.build()).await?;
    Ok(row.map(|r| r.try_get::<i64>("", "pos")).transpose()?)
}

impl Store {
    /// Позиция потребителя `name` (`None` — не зарегистрирован).
    pub async fn follower_position(&self, name: &str) -> Result<Option<i64>, StorageError> {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT pos FROM log_followers WHERE name = ").bind(name);
        let row = self.db.query_one_raw(sql.build()).await?;
        Ok(row.map(|r| r.try_get::<i64>("", "pos")).transpose()?)
    }

    /// Один шаг потребителя `name`: до `max` следующих фиксаций (на SQLite — событий)
    /// применяются функцией `apply` в одной транзакции со сдвигом позиции.
    ///
    /// Ошибка `apply` откатывает всё: позиция не сдвигается, диапазон будет применён
    /// следующим шагом. Два экземпляра не применяют один диапазон: на PostgreSQL
    /// строка потребителя берётся `FOR UPDATE SKIP LOCKED` (занятая — [`FollowOutcome::Busy`]);
    /// на SQLite запись сериализуется базой, а устаревшая транзакция получает
    /// SQLITE_BUSY при записи позиции и откатывается.
    pub async fn follow_step(
        &self,
        name: &str,
        max: u32,
        apply: ApplyFn,
    ) -> Result<FollowOutcome, StorageError> {
        let b = self.backend();
        let txn = self.db.begin().await?;
        let mut sql = Sql::new(b);
        sql.push("SELECT pos FROM log_followers WHERE name = ").bind(name);
        if sql.is_pg() {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        let Some(row) = txn.query_one_raw(sql.build()).await? else {
            txn.rollback().await?;
            // Строки нет: либо потребитель занят (PostgreSQL), либо не создан миграцией.
            return match self.follower_position(name).await? {
                Some(_) => Ok(FollowOutcome::Busy),
                None => Err(StorageError::UnknownFollower(name.to_owned())),
            };
        };
        let after: i64 = row.try_get("", "pos")?;
        let mut sql = Sql::new(b);
        if sql.is_pg() {
            sql.push(
                "SELECT max(pos) AS upto, count(*) AS n FROM (SELECT pos FROM event_log_commits WHERE pos > ",
            )
            .bind(after)
            .push(&format!(" ORDER BY pos LIMIT {max}) t"));
        } else {
            sql.push("SELECT max(seq) AS upto, count(*) AS n FROM (SELECT seq FROM event_logs WHERE seq > ")
                .bind(after)
                .push(&format!(" ORDER BY seq LIMIT {max}) t"));
        }
        let row = txn
            .query_one_raw(sql.build())
            .await?
            .ok_or_else(|| StorageError::Decode("no log range row".into()))?;
        let Some(upto) = row.try_get::<Option<i64>>("", "upto")? else {
            txn.rollback().await?;
            return Ok(FollowOutcome::CaughtUp);
        };
        let n: i64 = row.try_get("", "n")?;
        let range = LogRange {
            after,
            upto: Some(upto),
        };
        apply(&txn, range).await?;
        let mut sql = Sql::new(b);
        sql.push("UPDATE log_followers SET pos = ")
            .bind(upto)
            .push(" WHERE name = ")
            .bind(name);
        txn.execute_raw(sql.build()).await?;
        txn.commit().await?;
        Ok(FollowOutcome::Advanced {
            range,
            full: n >= i64::from(max),
        })
    }

    /// Доводит всех потребителей журнала ([`FOLLOWERS`]) до конца журнала: шаги, пока
    /// каждый не ответит «дочитан». Для засева данных бенчмарка и обслуживания: после
    /// массовой загрузки чтения сразу идут по агрегатам, а не по неприменённым строкам.
    /// Занятого другим экземпляром потребителя ждёт.
    pub async fn catch_up_followers(&self) -> Result<(), StorageError> {
        let pg = self.is_postgres();
        for (name, limit, apply) in FOLLOWERS {
            loop {
                match self.follow_step(name, limit(pg), *apply).await? {
                    FollowOutcome::CaughtUp => break,
                    FollowOutcome::Busy => tokio::time::sleep(Duration::from_millis(50)).await,
                    FollowOutcome::Advanced { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// Цикл потребителя: шаги, пока есть новые фиксации, затем пауза `interval`.
    /// Ошибки пишутся в журнал и повторяются после паузы (позиция не сдвигается).
    pub async fn run_follower(
        &self,
        name: &'static str,
        max: u32,
        interval: Duration,
        apply: ApplyFn,
        cancel: CancellationToken,
    ) {
        loop {
            let pause = match self.follow_step(name, max, apply).await {
                Ok(FollowOutcome::Advanced { full: true, .. }) => Duration::ZERO,
                Ok(_) => interval,
                Err(e) => {
                    tracing::warn!(follower = name, error = %e, "Log follower step failed; will retry.");
                    interval
                }
            };
            if cancel.is_cancelled() {
                return;
            }
            if !pause.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
