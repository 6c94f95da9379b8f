//! Сводки сессий, которые следуют журналу: потребитель `sessions` ведёт таблицы
//! `session_summaries` и `session_summary_agents` (миграция
//! `m20261205_000003_create_session_summaries`), а страница `sessions` и
//! `Event.session` читают их вместо GROUP BY по событиям проекта.
//!
//! Точность в любой момент: позиция потребителя и сводки читаются в одном снимке
//! (REPEATABLE READ на PostgreSQL, одна транзакция чтения на SQLite), а строки,
//! которые потребитель ещё не применил ([`LogRange::unapplied`]), добавляются к
//! сводкам своих сессий в памяти (сводка ⊕ дельта). Такие сессии заново
//! сортируются в страницу; курсор (lastEventAt, sessionId) тот же.
//!
//! Фильтры: сводка отвечает точно только на «есть ли у сессии видимое событие
//! под фильтром», если это решается по её столбцам ([`plan`]); остальное идёт
//! прямым подсчётом ([`Store::sessions_page_scan`]).
//!
//! Очистка: [`purge`] в транзакции порции пересчитывает сводки затронутых сессий
//! по оставшимся применённым строкам.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, IsolationLevel, QueryResult, TransactionTrait,
};
use uuid::Uuid;

use super::codec::{get_ts, get_uuid};
use super::events::{Page, SessionSummary, page_of};
use super::follow::{self, LogRange};
use super::sql::Sql;
use super::{StorageError, Store};
use crate::query::{EventFilter, Position, ReadScope};

/// Имя потребителя журнала, который ведёт сводки сессий.
pub const FOLLOWER: &str = migration::SESSIONS_FOLLOWER;

/// Предел одного шага потребителя `sessions`: фиксаций журнала (PostgreSQL) или
/// событий (SQLite) в одной транзакции.
pub fn step_limit(_pg: bool) -> u32 {
    1000
}

/// Сколько неприменённых строк области читается для дельты. Больше — потребитель
/// сильно отстал (остановлен): чтение идёт прямым подсчётом, без дельты в памяти.
const MAX_DELTA_ROWS: usize = 20_000;

/// Условие членства сессии, которое сводка решает точно: «у сессии есть видимое
/// событие, подходящее под фильтр» ⇔ условие над её сводкой (строкой ключа
/// пользователя фильтра или области).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SummaryPredicate {
    /// Любое событие.
    Any,
    /// Только `from`: событие с `created_at >= from` есть ⇔ `last_event_at >= from`.
    LastFrom(DateTime<Utc>),
    /// Только `to`: событие с `created_at < to` есть ⇔ `first_event_at < to`.
    FirstBefore(DateTime<Utc>),
    /// `hasError`: есть ошибка ⇔ `errors > 0`; есть событие без ошибки ⇔ `events > errors`.
    HasError(bool),
    /// `agentIds`: есть событие одного из агентов ⇔ агент в множестве агентов сводки.
    Agents(Vec<String>),
}

impl SummaryPredicate {
    /// Проверка в памяти (для сессий, сводка которых собрана со строками дельты);
    /// SQL того же условия — `Sql::push_summary_predicate`.
    fn matches(&self, s: &Acc) -> bool {
        match self {
            Self::Any => true,
            Self::LastFrom(t) => s.last >= *t,
            Self::FirstBefore(t) => s.first < *t,
            Self::HasError(true) => s.errors > 0,
            Self::HasError(false) => s.events > s.errors,
            Self::Agents(list) => list.iter().any(|a| s.agents.contains(a)),
        }
    }
}

/// Как отвечать на страницу `sessions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Ответ пуст без чтения (чужой `userId` у пользователя, пустой `agentIds`).
    Empty,
    /// По сводкам.
    Summaries {
        /// Ключ строк, по которым решается членство: `userId` фильтра или ключ области.
        member_key: String,
        /// `sessionId` фильтра.
        session_id: Option<Uuid>,
        /// Условие членства.
        predicate: SummaryPredicate,
    },
}

/// План чтения `sessions` для области и фильтра; `None` — сводки не отвечают
/// точно, нужен прямой подсчёт.
///
/// `sessionId` и `userId` — ключи строк сводки. Из событийных условий допустимо
/// одно (`agentIds`, `hasError`, только `from` или только `to`): два условия должны
/// выполняться на одном событии, а сводка этого не знает. По той же причине
/// `from` вместе с `to` не отвечается (первое и последнее событие по обе стороны
/// интервала не означают события внутри).
pub(crate) fn plan(scope: &ReadScope, filter: &EventFilter) -> Option<Plan> {
    // Полная деструктуризация: новое поле фильтра не пройдёт мимо этого решения.
    let EventFilter {
        event_types,
        agent_ids,
        session_id,
        user_id,
        tool_name,
        error_code,
        has_error,
        approval_status,
        from,
        to,
        payload_contains,
    } = filter;
    if event_types.is_some()
        || tool_name.is_some()
        || error_code.is_some()
        || approval_status.is_some()
        || payload_contains.is_some()
    {
        return None;
    }
    let member_key = match (&scope.user_id, user_id) {
        // Пустой user_id не бывает; пустой ключ — строка «все пользователи».
        (_, Some(u)) if u.is_empty() => return Some(Plan::Empty),
        (Some(own), Some(u)) if own != u => return Some(Plan::Empty),
        (_, Some(u)) => u.clone(),
        (Some(own), None) => own.clone(),
        (None, None) => migration::ALL_USERS_KEY.to_owned(),
    };
    let predicate = match (agent_ids, has_error, from, to) {
        (None, None, None, None) => SummaryPredicate::Any,
        (Some(a), None, None, None) if a.is_empty() => return Some(Plan::Empty),
        (Some(a), None, None, None) => SummaryPredicate::Agents(a.clone()),
        (None, Some(e), None, None) => SummaryPredicate::HasError(*e),
        // Время с долями микросекунды база обрезает при привязке, а сравнение в
        // памяти — нет: такие границы (их не шлют клиенты) — прямым подсчётом.
        (None, None, Some(f), None) if whole_micros(f) => SummaryPredicate::LastFrom(*f),
        (None, None, None, Some(t)) if whole_micros(t) => SummaryPredicate::FirstBefore(*t),
        _ => return None,
    };
    Some(Plan::Summaries {
        member_key,
        session_id: *session_id,
        predicate,
    })
}

/// Момент без долей микросекунды (в базе он тот же, что в памяти).
fn whole_micros(t: &DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos().is_multiple_of(1000)
}

/// Сводка сессии под одним ключом (в памяти): строка таблицы, дельта или их сумма.
#[derive(Debug, Clone)]
struct Acc {
    min_user_id: String,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    events: i64,
    errors: i64,
    agents: BTreeSet<String>,
}

impl Acc {
    /// Прибавляет другую сводку той же сессии (непересекающиеся множества событий).
    fn merge(&mut self, o: &Acc) {
        // String сравнивается по байтам — как `COLLATE "C"` и BINARY в SQLite.
        if o.min_user_id < self.min_user_id {
            self.min_user_id.clone_from(&o.min_user_id);
        }
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.events += o.events;
        self.errors += o.errors;
        self.agents.extend(o.agents.iter().cloned());
    }

    fn summary(&self, session_id: Uuid) -> SessionSummary {
        SessionSummary {
            session_id,
            user_id: self.min_user_id.clone(),
            first_event_at: self.first,
            last_event_at: self.last,
            events: self.events,
            errors: self.errors,
            agent_ids: self.agents.iter().cloned().collect(),
        }
    }
}

/// Сумма двух необязательных сводок.
fn plus(a: Option<&Acc>, b: Option<&Acc>) -> Option<Acc> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let mut s = a.clone();
            s.merge(b);
            Some(s)
        }
        (a, b) => a.or(b).cloned(),
    }
}

/// Неприменённые строки области по сессиям и пользователям.
type Delta = HashMap<Uuid, HashMap<String, Acc>>;

/// Сводка дельты сессии под ключом `key` (пустой ключ — все пользователи).
fn delta_for(d: &Delta, session: &Uuid, key: &str) -> Option<Acc> {
    let users = d.get(session)?;
    if key.is_empty() {
        users.values().fold(None, |acc, u| plus(acc.as_ref(), Some(u)))
    } else {
        users.get(key).cloned()
    }
}

/// Какие сессии читать.
enum Sessions<'a> {
    All,
    One(Uuid),
    List(&'a [Uuid]),
}

impl Sessions<'_> {
    fn push(&self, sql: &mut Sql, col: &str) {
        match self {
            Sessions::All => {}
            Sessions::One(id) => {
                sql.push(" AND ").push(col).push(" = ").bind_uuid(*id);
            }
            Sessions::List(ids) => {
                sql.push(" AND ").push(col).push(" IN (");
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind_uuid(*id);
                }
                sql.push(")");
            }
        }
    }
}

/// Столбцы строки сводки `s` вместе с её агентами (массив на PostgreSQL, JSON на SQLite).
fn summary_columns(pg: bool) -> &'static str {
    if pg {
        "s.user_key, s.session_id, s.min_user_id, s.first_event_at, s.last_event_at, s.events, \
         s.errors, ARRAY(SELECT g.agent_id FROM session_summary_agents g WHERE g.project_id = \
         s.project_id AND g.session_id = s.session_id AND g.user_key = s.user_key) AS agents"
    } else {
        "s.user_key, s.session_id, s.min_user_id, s.first_event_at, s.last_event_at, s.events, \
         s.errors, (SELECT json_group_array(g.agent_id) FROM session_summary_agents g WHERE \
         g.project_id = s.project_id AND g.session_id = s.session_id AND g.user_key = s.user_key) \
         AS agents"
    }
}

/// Разбирает строку [`summary_columns`]: (ключ, сессия, сводка).
fn decode_summary(r: &QueryResult, b: sea_orm::DbBackend) -> Result<(String, Uuid, Acc), StorageError> {
    let dec = |e: sea_orm::DbErr| StorageError::Decode(e.to_string());
    let agents: Vec<String> = if b == sea_orm::DbBackend::Postgres {
        r.try_get("", "agents").map_err(dec)?
    } else {
        let text: String = r.try_get("", "agents").map_err(dec)?;
        serde_json::from_str(&text).map_err(|e| StorageError::Decode(format!("agents: {e}")))?
    };
    Ok((
        r.try_get("", "user_key").map_err(dec)?,
        get_uuid(r, b, "session_id")?,
        Acc {
            min_user_id: r.try_get("", "min_user_id").map_err(dec)?,
            first: get_ts(r, b, "first_event_at")?,
            last: get_ts(r, b, "last_event_at")?,
            events: r.try_get("", "events").map_err(dec)?,
            errors: r.try_get("", "errors").map_err(dec)?,
            agents: agents.into_iter().collect(),
        },
    ))
}

/// Ключ строк области: пользователь или «все пользователи».
fn scope_key(scope: &ReadScope) -> &str {
    scope.user_id.as_deref().unwrap_or(migration::ALL_USERS_KEY)
}

impl Store {
    /// Страница сессий, у которых есть хотя бы одно видимое событие под фильтром,
    /// по убыванию (lastEventAt, sessionId); сводка — по всем видимым событиям
    /// сессии. Где можно ([`plan`]), читает сводки по индексу; иначе — прямой
    /// подсчёт [`Store::sessions_page_scan`]. Ответ один и тот же.
    pub async fn sessions_page(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        limit: usize,
        after: Option<Position>,
    ) -> Result<Page<SessionSummary>, StorageError> {
        match plan(scope, filter) {
            Some(Plan::Empty) => Ok(Page {
                items: Vec::new(),
                has_next: false,
            }),
            Some(Plan::Summaries {
                member_key,
                session_id,
                predicate,
            }) => {
                let sessions = session_id.map_or(Sessions::All, Sessions::One);
                match self
                    .summaries_page(scope, &member_key, &sessions, &predicate, limit, after)
                    .await?
                {
                    Some(page) => Ok(page),
                    None => self.sessions_page_scan(scope, filter, limit, after).await,
                }
            }
            None => self.sessions_page_scan(scope, filter, limit, after).await,
        }
    }

    /// Сводки сессий `ids` по видимым событиям (для `Event.session`): одно
    /// индексное чтение строк сводок плюс неприменённые строки этих сессий.
    pub async fn session_summaries(
        &self,
        scope: &ReadScope,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, SessionSummary>, StorageError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let b = self.backend();
        let txn = self.snapshot().await?;
        let sessions = Sessions::List(ids);
        let Some(delta) = read_delta(&txn, scope, &sessions).await? else {
            txn.rollback().await?;
            return self.session_summaries_scan(scope, ids).await;
        };
        let mut sql = Sql::new(b);
        sql.push("SELECT ")
            .push(summary_columns(b == sea_orm::DbBackend::Postgres))
            .push(" FROM session_summaries s WHERE ")
            .push_summary_scope("s", scope);
        sessions.push(&mut sql, "s.session_id");
        let rows = txn.query_all_raw(sql.build()).await?;
        txn.rollback().await?;
        let key = scope_key(scope);
        let mut out: HashMap<Uuid, Acc> = HashMap::with_capacity(ids.len());
        for r in &rows {
            let (_, id, acc) = decode_summary(r, b)?;
            out.insert(id, acc);
        }
        for id in delta.keys() {
            if let Some(s) = plus(out.get(id), delta_for(&delta, id, key).as_ref()) {
                out.insert(*id, s);
            }
        }
        Ok(out.into_iter().map(|(id, s)| (id, s.summary(id))).collect())
    }

    /// Транзакция чтения с одним снимком для всех её инструкций.
    async fn snapshot(&self) -> Result<DatabaseTransaction, StorageError> {
        Ok(if self.is_postgres() {
            self.db
                .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                .await?
        } else {
            // SQLite (WAL): снимок берётся первым чтением и держится до конца транзакции.
            self.db.begin().await?
        })
    }

    /// План страницы `sessions` без фильтра по сводкам (EXPLAIN ANALYZE той же
    /// инструкции, что читает строки сводок): ожидается чтение индекса
    /// `idx_session_summaries_recent` по порядку, без сортировки.
    pub async fn explain_sessions_page(
        &self,
        scope: &ReadScope,
        limit: usize,
    ) -> Result<String, StorageError> {
        let stmt = self.summary_page_statement(
            scope,
            scope_key(scope),
            &Sessions::All,
            &SummaryPredicate::Any,
            limit + 1,
            None,
        );
        self.explain(stmt).await
    }

    /// Строки сводок страницы по индексу (project_id, user_key, last_event_at DESC,
    /// session_id DESC): сессии области, подходящие под условие членства по строке
    /// ключа `member_key`, строго после курсора, не больше `take`.
    fn summary_page_statement(
        &self,
        scope: &ReadScope,
        member_key: &str,
        sessions: &Sessions<'_>,
        predicate: &SummaryPredicate,
        take: usize,
        after: Option<Position>,
    ) -> sea_orm::Statement {
        let b = self.backend();
        let mut sql = Sql::new(b);
        sql.push("SELECT ")
            .push(summary_columns(b == sea_orm::DbBackend::Postgres))
            .push(" FROM session_summaries s");
        let member = if member_key == scope_key(scope) {
            "s"
        } else {
            sql.push(
                " JOIN session_summaries m ON m.project_id = s.project_id \
                 AND m.session_id = s.session_id AND m.user_key = ",
            )
            .bind(member_key.to_owned());
            "m"
        };
        sql.push(" WHERE ").push_summary_scope("s", scope);
        sessions.push(&mut sql, "s.session_id");
        sql.push_summary_predicate(member, predicate);
        if let Some(p) = after {
            sql.push(" AND (s.last_event_at, s.session_id) < (")
                .bind_ts(p.at)
                .push(", ")
                .bind_uuid(p.id)
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY s.last_event_at DESC, s.session_id DESC LIMIT {take}"
        ));
        sql.build()
    }

    /// Страница по сводкам; `None` — дельта слишком велика (нужен прямой подсчёт).
    async fn summaries_page(
        &self,
        scope: &ReadScope,
        member_key: &str,
        sessions: &Sessions<'_>,
        predicate: &SummaryPredicate,
        limit: usize,
        after: Option<Position>,
    ) -> Result<Option<Page<SessionSummary>>, StorageError> {
        let b = self.backend();
        let key = scope_key(scope);
        let txn = self.snapshot().await?;
        let Some(delta) = read_delta(&txn, scope, sessions).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let touched: Vec<Uuid> = delta.keys().copied().collect();
        // Сессии с неприменёнными строками: сводка ⊕ дельта под ключом области (для
        // ответа) и под ключом членства (для условия фильтра).
        let mut merged: Vec<SessionSummary> = Vec::new();
        if !touched.is_empty() {
            let mut sql = Sql::new(b);
            sql.push("SELECT ")
                .push(summary_columns(b == sea_orm::DbBackend::Postgres))
                .push(" FROM session_summaries s WHERE s.project_id = ")
                .bind_uuid(scope.project_id)
                .push(" AND s.user_key IN (")
                .bind(key.to_owned())
                .push(", ")
                .bind(member_key.to_owned())
                .push(")");
            Sessions::List(&touched).push(&mut sql, "s.session_id");
            let mut stored: HashMap<(String, Uuid), Acc> = HashMap::new();
            for r in txn.query_all_raw(sql.build()).await? {
                let (k, id, acc) = decode_summary(&r, b)?;
                stored.insert((k, id), acc);
            }
            for id in &touched {
                let get = |k: &str| {
                    plus(
                        stored.get(&(k.to_owned(), *id)),
                        delta_for(&delta, id, k).as_ref(),
                    )
                };
                let Some(shown) = get(key) else { continue };
                let member = if member_key == key {
                    Some(shown.clone())
                } else {
                    get(member_key)
                };
                let before_cursor = after.is_none_or(|p| (shown.last, *id) < (p.at, p.id));
                if before_cursor && member.is_some_and(|m| predicate.matches(&m)) {
                    merged.push(shown.summary(*id));
                }
            }
        }
        // Остальные сессии — по индексу; строк берётся с запасом на затронутые
        // дельтой, которые отбрасываются ниже (их свежая сводка уже в `merged`).
        let stmt = self.summary_page_statement(
            scope,
            member_key,
            sessions,
            predicate,
            limit + 1 + touched.len(),
            after,
        );
        let rows = txn.query_all_raw(stmt).await?;
        txn.rollback().await?;
        let mut items = merged;
        for r in &rows {
            let (_, id, acc) = decode_summary(r, b)?;
            if !delta.contains_key(&id) {
                items.push(acc.summary(id));
            }
        }
        items.sort_by_key(|s| std::cmp::Reverse((s.last_event_at, s.session_id)));
        items.truncate(limit + 1);
        Ok(Some(page_of(items, limit)))
    }
}

/// Позиция потребителя в транзакции чтения (без блокировки строки).
async fn read_position(txn: &DatabaseTransaction) -> Result<Option<i64>, StorageError> {
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT pos FROM log_followers WHERE name = ")
        .bind(FOLLOWER);
    let row = txn.query_one_raw(sql.build()).await?;
    Ok(row.map(|r| r.try_get::<i64>("", "pos")).transpose()?)
}

/// Неприменённые строки области (в снимке `txn`) по сессиям и пользователям.
/// `None` — их больше [`MAX_DELTA_ROWS`] или потребителя нет.
async fn read_delta(
    txn: &DatabaseTransaction,
    scope: &ReadScope,
    sessions: &Sessions<'_>,
) -> Result<Option<Delta>, StorageError> {
    let b = txn.get_database_backend();
    let Some(pos) = read_position(txn).await? else {
        return Ok(None);
    };
    let mut sql = Sql::new(b);
    sql.push("SELECT session_id, user_id, created_at, error_code, agent_id FROM event_logs WHERE ")
        .push_scope(scope);
    sessions.push(&mut sql, "session_id");
    sql.push_in_log_range(LogRange::unapplied(pos))
        .push(&format!(" LIMIT {}", MAX_DELTA_ROWS + 1));
    let rows = txn.query_all_raw(sql.build()).await?;
    if rows.len() > MAX_DELTA_ROWS {
        return Ok(None);
    }
    let mut delta = Delta::new();
    for r in &rows {
        let dec = |e: sea_orm::DbErr| StorageError::Decode(e.to_string());
        let user: String = r.try_get("", "user_id").map_err(dec)?;
        let at = get_ts(r, b, "created_at")?;
        let error = r
            .try_get::<Option<String>>("", "error_code")
            .map_err(dec)?
            .is_some();
        let agent: Option<String> = r.try_get("", "agent_id").map_err(dec)?;
        let one = Acc {
            min_user_id: user.clone(),
            first: at,
            last: at,
            events: 1,
            errors: i64::from(error),
            agents: agent.into_iter().collect(),
        };
        let users = delta.entry(get_uuid(r, b, "session_id")?).or_default();
        match users.get_mut(&user) {
            Some(acc) => acc.merge(&one),
            None => {
                users.insert(user, one);
            }
        }
    }
    Ok(Some(delta))
}

/// Применение диапазона журнала потребителем `sessions` (для
/// [`Store::run_follower`]): те же инструкции, что заполняют таблицы в миграции,
/// над строками диапазона.
pub fn apply(
    txn: &DatabaseTransaction,
    range: LogRange,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + '_>> {
    Box::pin(async move {
        let b = txn.get_database_backend();
        for (head, tail) in migration::session_summary_upserts(b) {
            let mut sql = Sql::new(b);
            sql.push(&head).push_in_log_range(range).push(&tail);
            txn.execute_raw(sql.build()).await?;
        }
        Ok(())
    })
}

/// Сессии строк порции очистки.
const PURGED_SESSIONS: &str = "(project_id, session_id) IN (SELECT project_id, session_id \
     FROM event_logs WHERE seq IN (SELECT seq FROM purge_chunk))";

/// Крюк очистки ([`follow::PurgeFn`]): сводки сессий, строки которых удаляются,
/// пересчитываются по оставшимся строкам, уже применённым потребителем (позиция
/// заблокирована до конца транзакции); сессии без таких строк исчезают.
pub(crate) fn purge(
    txn: &DatabaseTransaction,
) -> Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + '_>> {
    Box::pin(async move {
        let b = txn.get_database_backend();
        let Some(pos) = follow::lock_position(txn, FOLLOWER).await? else {
            return Ok(());
        };
        for table in ["session_summaries", "session_summary_agents"] {
            txn.execute_unprepared(&format!("DELETE FROM {table} WHERE {PURGED_SESSIONS}"))
                .await?;
        }
        for (head, tail) in migration::session_summary_upserts(b) {
            let mut sql = Sql::new(b);
            sql.push(&head)
                .push(" AND ")
                .push(PURGED_SESSIONS)
                .push(" AND seq NOT IN (SELECT seq FROM purge_chunk)")
                .push_applied(pos)
                .push(&tail);
            txn.execute_raw(sql.build()).await?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(user: Option<&str>) -> ReadScope {
        ReadScope {
            project_id: Uuid::nil(),
            user_id: user.map(str::to_owned),
        }
    }

    #[test]
    fn plan_takes_only_filters_the_summary_answers_exactly() {
        let t = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let admin = scope(None);
        let alice = scope(Some("alice"));
        let any = |member: &str| Plan::Summaries {
            member_key: member.into(),
            session_id: None,
            predicate: SummaryPredicate::Any,
        };
        assert_eq!(plan(&admin, &EventFilter::default()), Some(any("")));
        assert_eq!(plan(&alice, &EventFilter::default()), Some(any("alice")));
        let by = |u: &str| EventFilter {
            user_id: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(plan(&admin, &by("bob")), Some(any("bob")));
        assert_eq!(plan(&alice, &by("alice")), Some(any("alice")));
        assert_eq!(plan(&alice, &by("bob")), Some(Plan::Empty));
        assert_eq!(plan(&admin, &by("")), Some(Plan::Empty));
        let from = EventFilter {
            from: Some(t),
            ..Default::default()
        };
        assert!(matches!(
            plan(&admin, &from),
            Some(Plan::Summaries {
                predicate: SummaryPredicate::LastFrom(_),
                ..
            })
        ));
        let nanos = EventFilter {
            from: Some(t + chrono::Duration::nanoseconds(1)),
            ..Default::default()
        };
        assert_eq!(plan(&admin, &nanos), None);
        // Два событийных условия (на одном событии) и интервал — прямым подсчётом.
        let both = EventFilter {
            from: Some(t),
            to: Some(t),
            ..Default::default()
        };
        assert_eq!(plan(&admin, &both), None);
        let two = EventFilter {
            has_error: Some(true),
            agent_ids: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(plan(&admin, &two), None);
        let types = EventFilter {
            event_types: Some(vec!["TOOL_REQUEST".into()]),
            ..Default::default()
        };
        assert_eq!(plan(&alice, &types), None);
        let no_agents = EventFilter {
            agent_ids: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(plan(&admin, &no_agents), Some(Plan::Empty));
    }
}
