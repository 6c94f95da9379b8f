//! Журнал событий: один полный порядок всех зафиксированных событий, одинаковый
//! для всех процессов и экземпляров, которые пишут в одну базу.
//!
//! Позиция события в журнале — [`LogPosition`] `(commit, seq)`, сравнение
//! лексикографическое. На PostgreSQL `commit` — номер фиксации из
//! `event_log_commits` (выдаётся под advisory-замком, который держится до COMMIT;
//! см. миграцию `m20261204_000001_create_event_log`), на SQLite `commit == seq`
//! (писатели сериализуются базой, rowid выдаётся в порядке фиксации).
//!
//! Главное свойство: фиксации видимы читателям префиксом. Поэтому голова
//! журнала ([`Store::log_head`]), прочитанная из базы, — водяной знак: ни одно
//! событие с позицией не выше неё больше не появится. Читатели следуют журналу
//! по позиции ([`Store::read_log`]) и получают каждое событие ровно один раз.
//!
//! Вызывают: `stream` (хвост журнала и повтор подписок), `cache` (голова проекта),
//! будущие потребители журнала (свёртки аналитики).

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::codec::decode_event;
use super::sql::Sql;
use super::{EVENT_COLUMNS, StorageError, Store};
use crate::model::Event;
use crate::query::{EventFilter, ReadScope};

/// Ключ advisory-замка журнала на PostgreSQL (тот же, что в миграции).
pub const LOG_LOCK_KEY: i64 = migration::LOG_LOCK_KEY;
/// Ключ advisory-замка миграций: экземпляры, стартующие вместе, не гоняются.
pub const MIGRATE_LOCK_KEY: i64 = LOG_LOCK_KEY + 1;
/// Ключ advisory-замка фоновой очистки: она идёт на одном экземпляре за раз.
pub const RETENTION_LOCK_KEY: i64 = LOG_LOCK_KEY + 2;
/// Канал `NOTIFY`, в который триггер журнала сообщает о каждой фиксации.
pub const NOTIFY_CHANNEL: &str = "eventlog_log";

/// Позиция в журнале. Порядок — сначала номер фиксации, затем `seq` внутри неё.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// Номер фиксации (на SQLite совпадает с `seq`).
    pub commit: i64,
    /// `seq` события внутри фиксации.
    pub seq: i64,
}

impl LogPosition {
    /// Начало журнала: раньше любого события.
    pub const START: LogPosition = LogPosition { commit: 0, seq: 0 };
}

/// Событие вместе с его позицией в журнале.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Позиция.
    pub position: LogPosition,
    /// Событие.
    pub event: Event,
}

/// Голова журнала проекта: ключ точного кэша аналитики.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProjectHead {
    /// Номер последней фиксации с событиями проекта (0 — событий не было).
    pub pos: i64,
    /// Сколько раз очистка удаляла события (любого проекта) с момента создания строки.
    pub purged: i64,
}

impl Store {
    /// Голова журнала: позиция последнего зафиксированного события
    /// ([`LogPosition::START`] для пустого журнала). Всё, что появится позже,
    /// получит позицию выше.
    pub async fn log_head(&self) -> Result<LogPosition, StorageError> {
        let mut sql = Sql::new(self.backend());
        if sql.is_pg() {
            sql.push(
                "SELECT pos, seqs[array_length(seqs, 1)] AS seq FROM event_log_commits \
                 ORDER BY pos DESC LIMIT 1",
            );
            let row = self.db.query_one_raw(sql.build()).await?;
            Ok(match row {
                Some(r) => LogPosition {
                    commit: r.try_get("", "pos")?,
                    seq: r.try_get("", "seq")?,
                },
                None => LogPosition::START,
            })
        } else {
            // sqlite_sequence хранит наибольший когда-либо выданный rowid и меняется
            // в той же транзакции, что и вставка: видимое значение зафиксировано.
            sql.push("SELECT seq FROM sqlite_sequence WHERE name = 'event_logs'");
            let row = self.db.query_one_raw(sql.build()).await?;
            let seq: i64 = row.map(|r| r.try_get("", "seq")).transpose()?.unwrap_or(0);
            Ok(LogPosition { commit: seq, seq })
        }
    }

    /// До `limit` событий всех проектов после позиции `after`, в порядке журнала.
    /// Это чтение хвоста: один читатель на процесс раздаёт их подписчикам.
    pub async fn read_log(&self, after: LogPosition, limit: usize) -> Result<Vec<LogEntry>, StorageError> {
        self.log_range(None, after, None, limit).await
    }

    /// До `limit` событий области `scope` под фильтром `filter` с позициями в
    /// `(after, up_to]`, в порядке журнала: повтор подписки с `afterSeq`.
    pub async fn replay_log(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        after: LogPosition,
        up_to: LogPosition,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.log_range(Some((scope, filter)), after, Some(up_to), limit)
            .await
    }

    async fn log_range(
        &self,
        scoped: Option<(&ReadScope, &EventFilter)>,
        after: LogPosition,
        up_to: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let backend = self.backend();
        let mut sql = Sql::new(backend);
        if sql.is_pg() {
            sql.push("SELECT c.pos AS log_pos, ").push(EVENT_COLUMNS);
            // Без области читаем фиксации порцией: их не больше, чем строк в ответе.
            // Фиксация `after.commit`, прочитанная до конца (её наибольший seq не выше
            // `after.seq`), отбрасывается по `seq_range`, не разворачивая массив: иначе
            // каждый опрос хвоста заново разворачивал бы последнюю фиксацию — после
            // пакетной загрузки это десятки тысяч seq на каждый опрос каждого экземпляра.
            let unread = |sql: &mut Sql, alias: &str| {
                sql.push(&format!("({alias}pos > "))
                    .bind(after.commit)
                    .push(&format!(" OR ({alias}pos = "))
                    .bind(after.commit)
                    .push(&format!(" AND upper({alias}seq_range) > "))
                    .bind(after.seq.saturating_add(1))
                    .push("))");
            };
            if scoped.is_none() {
                sql.push(" FROM (SELECT pos, seqs FROM event_log_commits WHERE ");
                unread(&mut sql, "");
                sql.push(&format!(" ORDER BY pos LIMIT {limit}) c"));
            } else {
                sql.push(" FROM event_log_commits c");
            }
            sql.push(
                " CROSS JOIN LATERAL unnest(c.seqs) AS s(cseq) \
                 JOIN event_logs ON event_logs.seq = s.cseq WHERE c.pos >= ",
            )
            .bind(after.commit);
            if scoped.is_some() {
                sql.push(" AND ");
                unread(&mut sql, "c.");
            }
            sql.push(" AND (c.pos, s.cseq) > (")
                .bind(after.commit)
                .push(", ")
                .bind(after.seq)
                .push(")");
            if let Some(u) = up_to {
                sql.push(" AND (c.pos, s.cseq) <= (")
                    .bind(u.commit)
                    .push(", ")
                    .bind(u.seq)
                    .push(")");
            }
            if let Some((scope, filter)) = scoped {
                sql.push(" AND ").push_scope(scope).push_filter(filter);
            }
            sql.push(&format!(" ORDER BY c.pos, s.cseq LIMIT {limit}"));
        } else {
            sql.push("SELECT seq AS log_pos, ")
                .push(EVENT_COLUMNS)
                .push(" FROM event_logs WHERE seq > ")
                .bind(after.seq);
            if let Some(u) = up_to {
                sql.push(" AND seq <= ").bind(u.seq);
            }
            if let Some((scope, filter)) = scoped {
                sql.push(" AND ").push_scope(scope).push_filter(filter);
            }
            sql.push(&format!(" ORDER BY seq LIMIT {limit}"));
        }
        let rows = self.db.query_all_raw(sql.build()).await?;
        rows.iter()
            .map(|r| {
                let event = decode_event(r, backend)?;
                let commit: i64 = r.try_get("", "log_pos")?;
                Ok(LogEntry {
                    position: LogPosition {
                        commit,
                        seq: event.seq,
                    },
                    event,
                })
            })
            .collect()
    }

    /// Позиция события с данным `seq`, даже если оно уже удалено очисткой или не
    /// видно вызывающему (позиция ничего не раскрывает о содержимом). `None` —
    /// такой seq не был зафиксирован (или сведения о его фиксации уже удалены).
    pub async fn position_of_seq(&self, seq: i64) -> Result<Option<LogPosition>, StorageError> {
        if seq <= 0 {
            return Ok(Some(LogPosition::START));
        }
        let mut sql = Sql::new(self.backend());
        if sql.is_pg() {
            sql.push("SELECT pos FROM event_log_commits WHERE seq_range @> ")
                .bind(seq)
                .push("::bigint AND ")
                .bind(seq)
                .push(" = ANY(seqs) ORDER BY pos LIMIT 1");
            let row = self.db.query_one_raw(sql.build()).await?;
            Ok(row
                .map(|r| r.try_get::<i64>("", "pos"))
                .transpose()?
                .map(|commit| LogPosition { commit, seq }))
        } else {
            // На SQLite позиция — сам seq; годится любой уже выданный номер.
            let head = self.log_head().await?;
            Ok((seq <= head.seq).then_some(LogPosition { commit: seq, seq }))
        }
    }

    /// Голова журнала проекта (для ключа кэша аналитики).
    pub async fn project_head(&self, project_id: Uuid) -> Result<ProjectHead, StorageError> {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT pos, purged FROM event_log_heads WHERE project_id = ")
            .bind_uuid(project_id);
        let row = self.db.query_one_raw(sql.build()).await?;
        Ok(match row {
            Some(r) => ProjectHead {
                pos: r.try_get("", "pos")?,
                purged: r.try_get("", "purged")?,
            },
            None => ProjectHead::default(),
        })
    }

    /// Удаляет сведения о фиксациях старше `cutoff` (PostgreSQL): они нужны только
    /// чтобы найти позицию давно удалённого события по `afterSeq`.
    pub async fn prune_commits(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, StorageError> {
        if !self.is_postgres() {
            return Ok(0);
        }
        let mut sql = Sql::new(self.backend());
        sql.push("DELETE FROM event_log_commits WHERE committed_at < ")
            .bind_ts(cutoff)
            .push(" AND pos < (SELECT max(pos) FROM event_log_commits)");
        Ok(self.db.execute_raw(sql.build()).await?.rows_affected())
    }
}
