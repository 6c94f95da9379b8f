//! Чтение событий: страницы с keyset-курсором, событие по id, повтор по `seq` для
//! подписок, список сессий и их сводки, удаление старых событий.
//!
//! Каждая функция принимает [`ReadScope`] и начинает `WHERE` с него.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::TransactionTrait;
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::Serialize;
use uuid::Uuid;

use super::codec::{Columns, decode_event, decode_event_columns, get_ts, get_uuid};
use super::sql::Sql;
use super::{EVENT_COLUMNS, StorageError, Store};
use crate::model::Event;
use crate::query::{EventFilter, Position, ReadScope, SortOrder};

/// Страница результата: элементы и признак следующей страницы (точный: читается
/// на одну строку больше).
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Элементы страницы.
    pub items: Vec<T>,
    /// Есть ли ещё элементы за последней.
    pub has_next: bool,
}

/// Сводка сессии по всем видимым вызывающему событиям этой сессии.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
pub struct SessionSummary {
    /// Сессия.
    pub session_id: Uuid,
    /// Владелец (наименьший `user_id`, если у сессии их несколько).
    pub user_id: String,
    /// Первое событие.
    pub first_event_at: DateTime<Utc>,
    /// Последнее событие.
    pub last_event_at: DateTime<Utc>,
    /// Число событий.
    pub events: i64,
    /// Число ошибок.
    pub errors: i64,
    /// Различные агенты, по возрастанию байтов.
    pub agent_ids: Vec<String>,
}

pub(crate) fn page_of<T>(mut items: Vec<T>, limit: usize) -> Page<T> {
    let has_next = items.len() > limit;
    items.truncate(limit);
    Page { items, has_next }
}

impl Store {
    /// Страница событий по (createdAt, id) в порядке `order` после позиции `after`,
    /// пропустив `offset` строк (REST `offset`; GraphQL передаёт 0); все столбцы.
    pub async fn page(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        order: SortOrder,
        limit: usize,
        offset: usize,
        after: Option<Position>,
    ) -> Result<Page<Event>, StorageError> {
        self.page_columns(scope, filter, order, limit, offset, after, Columns::ALL)
            .await
    }

    /// Как [`Store::page`], но читаются только столбцы `cols` (плюс `id` и
    /// `created_at`); остальные поля событий пусты.
    #[allow(clippy::too_many_arguments)]
    pub async fn page_columns(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        order: SortOrder,
        limit: usize,
        offset: usize,
        after: Option<Position>,
        cols: Columns,
    ) -> Result<Page<Event>, StorageError> {
        let stmt = self.page_statement(scope, filter, order, limit, offset, after, cols);
        let rows = self.db.query_all_raw(stmt).await?;
        let b = self.backend();
        let items = rows
            .iter()
            .map(|r| decode_event_columns(r, b, cols))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, limit))
    }

    /// План страницы (EXPLAIN ANALYZE той же инструкции, что выполняет [`Store::page`]).
    pub async fn explain_page(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        order: SortOrder,
        limit: usize,
    ) -> Result<String, StorageError> {
        self.explain(self.page_statement(scope, filter, order, limit, 0, None, Columns::ALL))
            .await
    }

    /// EXPLAIN (ANALYZE, BUFFERS) инструкции; строки плана через перевод строки.
    pub(crate) async fn explain(&self, mut stmt: sea_orm::Statement) -> Result<String, StorageError> {
        stmt.sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", stmt.sql);
        let rows = self.db.query_all_raw(stmt).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get_by_index::<String>(0).ok())
            .collect::<Vec<_>>()
            .join("\n"))
    }

    #[allow(clippy::too_many_arguments)]
    fn page_statement(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        order: SortOrder,
        limit: usize,
        offset: usize,
        after: Option<Position>,
        cols: Columns,
    ) -> sea_orm::Statement {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT ")
            .push(&cols.sql())
            .push(" FROM event_logs WHERE ")
            .push_scope(scope)
            .push_filter(filter);
        let (cmp, dir) = match order {
            SortOrder::NewestFirst => ("<", "DESC"),
            SortOrder::OldestFirst => (">", "ASC"),
        };
        if let Some(p) = after {
            // Keyset: строго после позиции в порядке сортировки — стабильно при вставках.
            sql.push(" AND (created_at, id) ")
                .push(cmp)
                .push(" (")
                .bind_ts(p.at)
                .push(", ")
                .bind_uuid(p.id)
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY created_at {dir}, id {dir} LIMIT {} OFFSET {offset}",
            limit + 1
        ));
        sql.build()
    }

    /// Событие по id, если оно видно в области.
    pub async fn event_by_id(&self, scope: &ReadScope, id: Uuid) -> Result<Option<Event>, StorageError> {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT ")
            .push(EVENT_COLUMNS)
            .push(" FROM event_logs WHERE ")
            .push_scope(scope)
            .push(" AND id = ")
            .bind_uuid(id);
        let row = self.db.query_one_raw(sql.build()).await?;
        row.map(|r| decode_event(&r, self.backend())).transpose()
    }

    /// События с `after_seq < seq <= up_to` по возрастанию `seq` — повтор для
    /// подписок (`up_to` — водяной знак опубликованного писателем).
    pub async fn events_after_seq(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        after_seq: i64,
        up_to: i64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT ")
            .push(EVENT_COLUMNS)
            .push(" FROM event_logs WHERE ")
            .push_scope(scope)
            .push_filter(filter)
            .push(" AND seq > ")
            .bind(after_seq)
            .push(" AND seq <= ")
            .bind(up_to)
            .push(&format!(" ORDER BY seq LIMIT {limit}"));
        let rows = self.db.query_all_raw(sql.build()).await?;
        let b = self.backend();
        rows.iter().map(|r| decode_event(r, b)).collect()
    }

    /// Наибольший `seq` в таблице (0, если пусто).
    pub async fn max_seq(&self) -> Result<i64, StorageError> {
        let mut sql = Sql::new(self.backend());
        sql.push("SELECT COALESCE(MAX(seq), 0) AS m FROM event_logs");
        let row = self.db.query_one_raw(sql.build()).await?;
        Ok(row.map(|r| r.try_get::<i64>("", "m")).transpose()?.unwrap_or(0))
    }

    /// Страница сессий, у которых есть хотя бы одно видимое событие под фильтром,
    /// по убыванию последней активности (lastEventAt, sessionId), — прямым
    /// подсчётом по `event_logs` (GROUP BY по проекту на каждую страницу). Это путь
    /// для фильтров, на которые сводки не отвечают точно, и эталон для тестов
    /// [`Store::sessions_page`].
    pub async fn sessions_page_scan(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        limit: usize,
        after: Option<Position>,
    ) -> Result<Page<SessionSummary>, StorageError> {
        let b = self.backend();
        let mut sql = Sql::new(b);
        // Порядок сессий — по последнему видимому событию сессии (а не только
        // подходящему под фильтр): так сводка и порядок согласованы.
        sql.push("SELECT session_id, MAX(created_at) AS last_event_at FROM event_logs WHERE ")
            .push_scope(scope)
            .push(" AND session_id IN (SELECT session_id FROM event_logs WHERE ")
            .push_scope(scope)
            .push_filter(filter)
            .push(") GROUP BY session_id");
        if let Some(p) = after {
            sql.push(" HAVING (MAX(created_at), session_id) < (")
                .bind_ts(p.at)
                .push(", ")
                .bind_uuid(p.id)
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY last_event_at DESC, session_id DESC LIMIT {}",
            limit + 1
        ));
        let rows = self.db.query_all_raw(sql.build()).await?;
        let ids = rows
            .iter()
            .map(|r| get_uuid(r, b, "session_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let page = page_of(ids, limit);
        let mut summaries = self.session_summaries_scan(scope, &page.items).await?;
        let items = page.items.iter().filter_map(|id| summaries.remove(id)).collect();
        Ok(Page {
            items,
            has_next: page.has_next,
        })
    }

    /// Сводки сессий `ids` по видимым событиям прямым подсчётом по `event_logs`
    /// (два запроса на любое число сессий); эталон для [`Store::session_summaries`].
    pub async fn session_summaries_scan(
        &self,
        scope: &ReadScope,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, SessionSummary>, StorageError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let b = self.backend();
        let in_list = |sql: &mut Sql| {
            sql.push(" AND session_id IN (");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_uuid(*id);
            }
            sql.push(")");
        };
        let mut sql = Sql::new(b);
        // Наименьший user_id — по байтам (как и порядок агентов), при любой
        // сортировке базы по умолчанию.
        let min_user = if sql.is_pg() {
            "MIN(user_id COLLATE \"C\")"
        } else {
            "MIN(user_id)"
        };
        sql.push("SELECT session_id, ")
            .push(min_user)
            .push(
                " AS user_id, MIN(created_at) AS first_event_at, MAX(created_at) AS last_event_at, \
                 COUNT(*) AS events, COUNT(error_code) AS errors FROM event_logs WHERE ",
            )
            .push_scope(scope);
        in_list(&mut sql);
        sql.push(" GROUP BY session_id");
        let mut out = HashMap::with_capacity(ids.len());
        for r in self.db.query_all_raw(sql.build()).await? {
            let id = get_uuid(&r, b, "session_id")?;
            out.insert(
                id,
                SessionSummary {
                    session_id: id,
                    user_id: r.try_get("", "user_id")?,
                    first_event_at: get_ts(&r, b, "first_event_at")?,
                    last_event_at: get_ts(&r, b, "last_event_at")?,
                    events: r.try_get("", "events")?,
                    errors: r.try_get("", "errors")?,
                    agent_ids: Vec::new(),
                },
            );
        }
        let mut sql = Sql::new(b);
        sql.push("SELECT DISTINCT session_id, agent_id FROM event_logs WHERE ")
            .push_scope(scope);
        in_list(&mut sql);
        sql.push(" AND agent_id IS NOT NULL");
        let mut agents: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
        for r in self.db.query_all_raw(sql.build()).await? {
            agents
                .entry(get_uuid(&r, b, "session_id")?)
                .or_default()
                .insert(r.try_get("", "agent_id")?);
        }
        for (id, set) in agents {
            if let Some(s) = out.get_mut(&id) {
                // BTreeSet<String> упорядочен по байтам — как требует SPEC.
                s.agent_ids = set.into_iter().collect();
            }
        }
        Ok(out)
    }

    /// Удаляет события старше `cutoff` порциями по `chunk` строк (короткие
    /// транзакции, без долгих блокировок). Возвращает число удалённых строк.
    /// В той же транзакции, что и удаление, меняется счётчик очисток в
    /// `event_log_heads`: закэшированная аналитика с удалёнными событиями больше
    /// не найдётся ни на одном экземпляре.
    pub async fn purge_older_than(&self, cutoff: DateTime<Utc>, chunk: usize) -> Result<u64, StorageError> {
        let b = self.backend();
        let pg = b == sea_orm::DbBackend::Postgres;
        let mut total = 0;
        loop {
            let txn = self.db.begin().await?;
            if pg {
                // Позиции всех потребителей — до выбора порции: ни один не применит
                // строку между выбором порции и вычитанием (SQLite: пишущая транзакция
                // и так упадёт, если после её снимка кто-то записал).
                txn.execute_unprepared("SELECT name FROM log_followers ORDER BY name FOR UPDATE")
                    .await?;
            }
            // Порция — во временной таблице: потребители журнала (свёртки, сводки)
            // вычитают ровно те строки, что удаляются ниже, в той же транзакции.
            let mut chunk_sql = Sql::new(b);
            if pg {
                chunk_sql.push("CREATE TEMP TABLE purge_chunk ON COMMIT DROP AS ");
            } else {
                txn.execute_unprepared(
                    "CREATE TEMP TABLE IF NOT EXISTS purge_chunk (seq INTEGER PRIMARY KEY)",
                )
                .await?;
                txn.execute_unprepared("DELETE FROM purge_chunk").await?;
                chunk_sql.push("INSERT INTO purge_chunk (seq) ");
            }
            chunk_sql
                .push("SELECT seq FROM event_logs WHERE created_at < ")
                .bind_ts(cutoff)
                // По возрастанию времени: у строк, что остаются, время не меньше
                // удалённых (на этом держится `last_at` свёрток, см. `rollups::purge`).
                .push(&format!(" ORDER BY created_at LIMIT {chunk}"));
            let n = txn.execute_raw(chunk_sql.build()).await?.rows_affected();
            if n > 0 {
                for hook in super::follow::PURGE_HOOKS {
                    hook(&txn).await?;
                }
                txn.execute_unprepared("DELETE FROM event_logs WHERE seq IN (SELECT seq FROM purge_chunk)")
                    .await?;
                txn.execute_unprepared("UPDATE event_log_heads SET purged = purged + 1")
                    .await?;
            }
            if !pg {
                txn.execute_unprepared("DELETE FROM purge_chunk").await?;
            }
            txn.commit().await?;
            total += n;
            if n < chunk as u64 {
                return Ok(total);
            }
        }
    }

    /// Число строк в `event_logs` (для тестов и обслуживания).
    pub async fn count_events(&self) -> Result<i64, StorageError> {
        self.count("event_logs").await
    }

    /// Число строк в `event_logs_rejected`.
    pub async fn count_rejected(&self) -> Result<i64, StorageError> {
        self.count("event_logs_rejected").await
    }

    async fn count(&self, table: &str) -> Result<i64, StorageError> {
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        let mut sql = Sql::new(self.backend());
        sql.push(&format!("SELECT COUNT(*) AS n FROM {table}"));
        let n = N::find_by_statement(sql.build())
            .one(&self.db)
            .await?
            .map_or(0, |r| r.n);
        Ok(n)
    }
}
