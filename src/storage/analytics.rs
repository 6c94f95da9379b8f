//! Аналитика проекта (SPEC §5 `Analytics`). Всё считает база: GROUP BY и временные
//! корзины; в Rust только сортируются готовые группы (байтовый порядок строк
//! одинаков на обеих базах, а COLLATE у них разный).

use chrono::{DateTime, Utc};
use migration::rollup_sql::{self, Trunc};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::Serialize;

use super::codec::get_ts;
use super::sql::Sql;
use super::{StorageError, Store};
use crate::query::{EventFilter, ReadScope};

/// Ширина временной корзины.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Bucket {
    /// Минута.
    Minute,
    /// Час.
    Hour,
    /// Сутки (UTC).
    Day,
}

/// Число событий типа.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct EventTypeCount {
    /// Тип.
    pub event_type: String,
    /// Число.
    pub count: i64,
}

/// Активность агента.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct AgentInteraction {
    /// Агент.
    pub agent_id: String,
    /// Событий.
    pub events: i64,
    /// Различных сессий.
    pub sessions: i64,
    /// Событий TOOL_REQUEST.
    pub tool_calls: i64,
    /// Ошибок.
    pub errors: i64,
    /// Последнее событие.
    pub last_seen_at: DateTime<Utc>,
}

/// Число ошибок с кодом.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct ErrorCount {
    /// Код ошибки.
    pub error_code: String,
    /// Число.
    pub count: i64,
}

/// Статистика инструмента.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct ToolStat {
    /// Инструмент.
    pub tool_name: String,
    /// Вызовов (событий TOOL_REQUEST).
    pub calls: i64,
    /// Событий с кодом ошибки.
    pub errors: i64,
}

/// Ошибки.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct ErrorStats {
    /// Всего ошибок.
    pub total_errors: i64,
    /// Доля ошибок (0, если событий нет).
    pub error_rate: f64,
    /// По кодам: число по убыванию, затем код.
    pub by_code: Vec<ErrorCount>,
    /// По инструментам: ошибки, вызовы по убыванию, затем имя.
    pub by_tool: Vec<ToolStat>,
}

/// Точка временного ряда.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct TimelinePoint {
    /// Начало корзины (UTC).
    pub bucket_start: DateTime<Utc>,
    /// Событий.
    pub events: i64,
    /// Ошибок.
    pub errors: i64,
}

/// Согласования: считаются по типам событий APPROVAL_REQUIRED, APPROVAL_RESOLVED
/// (со статусом APPROVED/REJECTED) и APPROVAL_TIMEOUT.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct ApprovalStats {
    /// Запрошено.
    pub required: i64,
    /// Одобрено.
    pub approved: i64,
    /// Отклонено.
    pub rejected: i64,
    /// Истекло.
    pub timed_out: i64,
}

/// Использование модели: суммы по событиям MODEL_CALL одной модели.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct ModelUsage {
    /// Модель (`payload.model`; `unknown`, если ключа нет или он не строка).
    pub model: String,
    /// Вызовов (событий MODEL_CALL).
    pub calls: i64,
    /// Сумма `payload.input_tokens` (учитываются только целые JSON-числа от 0 до 10^12 − 1).
    pub input_tokens: i64,
    /// Сумма `payload.output_tokens` (то же правило).
    pub output_tokens: i64,
    /// Вызовов с кодом ошибки.
    pub errors: i64,
}

/// Аналитика проекта под фильтром.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
pub struct Analytics {
    /// Всего событий.
    pub total_events: i64,
    /// Различных сессий.
    pub sessions: i64,
    /// По типам.
    pub event_type_counts: Vec<EventTypeCount>,
    /// По агентам (только события с агентом).
    pub agent_interactions: Vec<AgentInteraction>,
    /// Ошибки.
    pub error_stats: ErrorStats,
    /// Временной ряд по возрастанию, только непустые корзины.
    pub timeline: Vec<TimelinePoint>,
    /// Согласования.
    pub approvals: ApprovalStats,
    /// Модели по событиям MODEL_CALL: вызовы по убыванию, затем имя модели.
    pub model_usage: Vec<ModelUsage>,
}

/// Счётчики одной группы до сборки ответа.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    n: i64,
    errors: i64,
    calls: i64,
}

/// Сгруппированные базой части аналитики (до сортировки и сборки).
#[derive(Debug, Default)]
pub(super) struct Parts {
    pub(super) total: i64,
    pub(super) errors: i64,
    pub(super) sessions: i64,
    pub(super) approvals: [i64; 4],
    pub(super) types: Vec<(String, i64)>,
    pub(super) codes: Vec<(String, i64)>,
    pub(super) tools: Vec<(String, Counts)>,
    pub(super) timeline: Vec<(DateTime<Utc>, Counts)>,
    pub(super) agents: Vec<AgentInteraction>,
    pub(super) models: Vec<ModelUsage>,
}

/// Суммы `n`, ошибок, вызовов инструментов и согласований с весом строки `w`
/// (`1` — сырая строка, `n` — строка свёртки); BIGINT на обеих базах.
pub(super) fn sums(w: &str) -> String {
    let mut s = format!("CAST(COALESCE(SUM({w}), 0) AS BIGINT) AS n");
    for (name, cond) in rollup_sql::COUNTED {
        s.push_str(&format!(
            ", CAST(COALESCE(SUM(CASE WHEN {cond} THEN {w} ELSE 0 END), 0) AS BIGINT) AS {name}"
        ));
    }
    s
}

pub(super) fn int(r: &QueryResult, c: &str) -> Result<i64, StorageError> {
    Ok(r.try_get::<i64>("", c)?)
}

pub(super) fn counts(r: &QueryResult) -> Result<Counts, StorageError> {
    Ok(Counts {
        n: int(r, "n")?,
        errors: int(r, "errors")?,
        calls: int(r, "calls")?,
    })
}

impl Store {
    /// Аналитика под областью и фильтром. Из часовых свёрток (плюс сырые строки на
    /// краях окна и ещё не применённые), если фильтр и корзина это позволяют
    /// ([`super::rollup_read::plan`]); иначе — по сырым строкам
    /// ([`Store::analytics_raw`]). Ответ одинаков в обоих случаях.
    pub async fn analytics(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Analytics, StorageError> {
        let plan = if self.rollup_reads {
            super::rollup_read::plan(filter, bucket)
        } else {
            None
        };
        match plan {
            Some(plan) => match self.analytics_rolled(scope, filter, bucket, plan).await? {
                Some(a) => Ok(a),
                None => self.analytics_raw(scope, filter, bucket).await,
            },
            None => self.analytics_raw(scope, filter, bucket).await,
        }
    }

    /// Аналитика только по сырым строкам `event_logs` (запасной путь и эталон для
    /// тестов свёрток). На PostgreSQL — три запроса (один проход с
    /// GROUPING SETS по типам, кодам, инструментам и корзинам; агенты; сессии),
    /// на SQLite — по запросу на разрез; запросы идут параллельно по пулу.
    /// Различные сессии считаются двухуровневой группировкой (хеш-агрегат), а не
    /// COUNT(DISTINCT), который сортирует весь срез.
    pub async fn analytics_raw(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Analytics, StorageError> {
        let b = self.backend();
        let pg = b == sea_orm::DbBackend::Postgres;
        let bucket_expr = bucket_sql(pg, bucket, "created_at");
        let slice = |sql: &mut Sql, cols: &str, extra: &str| push_slice(sql, scope, filter, cols, extra);
        let sums = sums("1");

        let db = &self.db;
        let mut parts = Parts::default();
        let agent_rows = if pg {
            let (main, agents_pg) = pg_statements(scope, filter, bucket);
            let (rows, mixed, models) = tokio::try_join!(
                self.query_with_work_mem(main),
                self.query_with_work_mem(agents_pg),
                async { Ok::<_, StorageError>(db.query_all_raw(models_statement(scope, filter, b)).await?) },
            )?;
            parts.models = model_rows(&models)?;
            let mut agent_rows = Vec::with_capacity(mixed.len());
            for r in mixed {
                if r.try_get::<i32>("", "g")? == 1 {
                    parts.sessions = int(&r, "sessions")?;
                } else if r.try_get::<Option<String>>("", "agent_id")?.is_some() {
                    agent_rows.push(r);
                }
            }
            for r in &rows {
                let g = |c: &str| -> Result<bool, StorageError> { Ok(r.try_get::<i32>("", c)? == 0) };
                if g("g_type")? {
                    parts.types.push((r.try_get("", "event_type")?, int(r, "n")?));
                } else if g("g_code")? {
                    if let Some(code) = r.try_get::<Option<String>>("", "error_code")? {
                        parts.codes.push((code, int(r, "n")?));
                    }
                } else if g("g_tool")? {
                    if let Some(tool) = r.try_get::<Option<String>>("", "tool_name")? {
                        parts.tools.push((tool, counts(r)?));
                    }
                } else if g("g_bucket")? {
                    parts.timeline.push((get_ts(r, b, "bucket")?, counts(r)?));
                } else {
                    parts.total = int(r, "n")?;
                    parts.errors = int(r, "errors")?;
                    parts.approvals = [int(r, "req")?, int(r, "appr")?, int(r, "rej")?, int(r, "tmo")?];
                }
            }
            agent_rows
        } else {
            let mut agents = Sql::new(b);
            agents.push(
                // SUM(bigint) на PostgreSQL — numeric: приводим обратно к BIGINT.
                "SELECT agent_id, COUNT(*) AS sessions, CAST(SUM(n) AS BIGINT) AS n, \
                 CAST(SUM(calls) AS BIGINT) AS calls, CAST(SUM(errors) AS BIGINT) AS errors, \
                 MAX(last_seen) AS last_seen FROM (",
            );
            slice(
                &mut agents,
                "agent_id, session_id, COUNT(*) AS n, COUNT(error_code) AS errors, \
                 SUM(CASE WHEN event_type = 'TOOL_REQUEST' THEN 1 ELSE 0 END) AS calls, MAX(created_at) AS last_seen",
                " AND agent_id IS NOT NULL GROUP BY agent_id, session_id",
            );
            agents.push(") t GROUP BY agent_id");
            let mut sessions = Sql::new(b);
            sessions.push("SELECT COUNT(*) AS sessions FROM (");
            slice(&mut sessions, "session_id", " GROUP BY session_id");
            sessions.push(") t");

            let mut totals = Sql::new(b);
            slice(&mut totals, &sums, "");
            let mut types = Sql::new(b);
            slice(&mut types, "event_type, COUNT(*) AS n", " GROUP BY event_type");
            let mut codes = Sql::new(b);
            slice(
                &mut codes,
                "error_code, COUNT(*) AS n",
                " AND error_code IS NOT NULL GROUP BY error_code",
            );
            let mut tools = Sql::new(b);
            slice(
                &mut tools,
                &format!("tool_name, {sums}"),
                " AND tool_name IS NOT NULL GROUP BY tool_name",
            );
            let mut timeline = Sql::new(b);
            slice(
                &mut timeline,
                &format!("{bucket_expr} AS bucket, {sums}"),
                " GROUP BY bucket",
            );
            let (totals, types, codes, tools, timeline, agent_rows, session_row, models) = tokio::try_join!(
                db.query_one_raw(totals.build()),
                db.query_all_raw(types.build()),
                db.query_all_raw(codes.build()),
                db.query_all_raw(tools.build()),
                db.query_all_raw(timeline.build()),
                db.query_all_raw(agents.build()),
                db.query_one_raw(sessions.build()),
                db.query_all_raw(models_statement(scope, filter, b)),
            )?;
            parts.models = model_rows(&models)?;
            let t = totals.ok_or_else(|| StorageError::Decode("no totals row".into()))?;
            parts.total = int(&t, "n")?;
            parts.errors = int(&t, "errors")?;
            parts.approvals = [
                int(&t, "req")?,
                int(&t, "appr")?,
                int(&t, "rej")?,
                int(&t, "tmo")?,
            ];
            for r in &types {
                parts.types.push((r.try_get("", "event_type")?, int(r, "n")?));
            }
            for r in &codes {
                parts.codes.push((r.try_get("", "error_code")?, int(r, "n")?));
            }
            for r in &tools {
                parts.tools.push((r.try_get("", "tool_name")?, counts(r)?));
            }
            for r in &timeline {
                parts.timeline.push((get_ts(r, b, "bucket")?, counts(r)?));
            }
            parts.sessions = session_row.map(|r| int(&r, "sessions")).transpose()?.unwrap_or(0);
            agent_rows
        };
        for r in &agent_rows {
            parts.agents.push(AgentInteraction {
                agent_id: r.try_get("", "agent_id")?,
                events: int(r, "n")?,
                sessions: int(r, "sessions")?,
                tool_calls: int(r, "calls")?,
                errors: int(r, "errors")?,
                last_seen_at: get_ts(r, b, "last_seen")?,
            });
        }
        Ok(assemble(parts))
    }
}

impl Store {
    /// Запрос аналитики на PostgreSQL с `work_mem` побольше на время транзакции:
    /// планировщик не знает число корзин времени заранее и при 4 МБ по умолчанию
    /// выбирает сортировку с записью на диск вместо хеш-агрегата.
    async fn query_with_work_mem(&self, stmt: sea_orm::Statement) -> Result<Vec<QueryResult>, StorageError> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        txn.execute_unprepared(ANALYTICS_WORK_MEM).await?;
        let rows = txn.query_all_raw(stmt).await?;
        txn.commit().await?;
        Ok(rows)
    }
}

/// Память под хеш-агрегаты одного запроса аналитики (только в его транзакции).
pub(super) const ANALYTICS_WORK_MEM: &str = "SET LOCAL work_mem = '64MB'";

/// Сортирует группы по правилам SPEC §5 (байтовый порядок строк) и собирает ответ.
pub(super) fn assemble(mut p: Parts) -> Analytics {
    p.types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    p.codes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    p.agents
        .sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.agent_id.cmp(&b.agent_id)));
    p.tools.retain(|(_, c)| c.calls > 0 || c.errors > 0);
    p.tools.sort_by(|a, b| {
        b.1.errors
            .cmp(&a.1.errors)
            .then_with(|| b.1.calls.cmp(&a.1.calls))
            .then_with(|| a.0.cmp(&b.0))
    });
    p.timeline.sort_by_key(|(t, _)| *t);
    p.models
        .sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.model.cmp(&b.model)));
    Analytics {
        total_events: p.total,
        sessions: p.sessions,
        event_type_counts: p
            .types
            .into_iter()
            .map(|(event_type, count)| EventTypeCount { event_type, count })
            .collect(),
        agent_interactions: p.agents,
        error_stats: ErrorStats {
            total_errors: p.errors,
            error_rate: if p.total == 0 {
                0.0
            } else {
                p.errors as f64 / p.total as f64
            },
            by_code: p
                .codes
                .into_iter()
                .map(|(error_code, count)| ErrorCount { error_code, count })
                .collect(),
            by_tool: p
                .tools
                .into_iter()
                .map(|(tool_name, c)| ToolStat {
                    tool_name,
                    calls: c.calls,
                    errors: c.errors,
                })
                .collect(),
        },
        timeline: p
            .timeline
            .into_iter()
            .map(|(bucket_start, c)| TimelinePoint {
                bucket_start,
                events: c.n,
                errors: c.errors,
            })
            .collect(),
        approvals: ApprovalStats {
            required: p.approvals[0],
            approved: p.approvals[1],
            rejected: p.approvals[2],
            timed_out: p.approvals[3],
        },
        model_usage: p.models,
    }
}

/// Срез под областью и фильтром: `SELECT {cols} FROM event_logs WHERE …{extra}`.
pub(super) fn push_slice(sql: &mut Sql, scope: &ReadScope, filter: &EventFilter, cols: &str, extra: &str) {
    sql.push("SELECT ")
        .push(cols)
        .push(" FROM event_logs WHERE ")
        .push_scope(scope)
        .push_filter(filter)
        .push(extra);
}

/// Инструкция `modelUsage`: группы MODEL_CALL по модели под областью и фильтром
/// (модель и токены — проекцией строки свёрток [`rollup_sql::row_sql`]).
fn models_statement(scope: &ReadScope, filter: &EventFilter, b: sea_orm::DbBackend) -> sea_orm::Statement {
    let pg = b == sea_orm::DbBackend::Postgres;
    let mut sql = Sql::new(b);
    sql.push(
        "SELECT model, COUNT(*) AS n, COUNT(error_code) AS errors, \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens FROM (",
    );
    push_slice(
        &mut sql,
        scope,
        filter,
        &rollup_sql::row_sql(pg),
        " AND event_type = 'MODEL_CALL'",
    );
    sql.push(") m GROUP BY model");
    sql.build()
}

/// Строки `modelUsage` (до сортировки).
pub(super) fn model_rows(rows: &[QueryResult]) -> Result<Vec<ModelUsage>, StorageError> {
    rows.iter()
        .map(|r| {
            Ok(ModelUsage {
                model: r.try_get("", "model")?,
                calls: int(r, "n")?,
                input_tokens: int(r, "input_tokens")?,
                output_tokens: int(r, "output_tokens")?,
                errors: int(r, "errors")?,
            })
        })
        .collect()
}

/// Две инструкции аналитики PostgreSQL: разрезы GROUPING SETS и агенты с числом сессий.
fn pg_statements(
    scope: &ReadScope,
    filter: &EventFilter,
    bucket: Bucket,
) -> (sea_orm::Statement, sea_orm::Statement) {
    let b = sea_orm::DbBackend::Postgres;
    let bucket_expr = bucket_sql(true, bucket, "created_at");
    let slice = |sql: &mut Sql, cols: &str, extra: &str| push_slice(sql, scope, filter, cols, extra);
    let mut main = Sql::new(b);
    main.push(&format!(
        "SELECT event_type, error_code, tool_name, bucket, GROUPING(event_type) AS g_type, \
         GROUPING(error_code) AS g_code, GROUPING(tool_name) AS g_tool, GROUPING(bucket) AS g_bucket, \
         {} FROM (",
        sums("1")
    ));
    slice(
        &mut main,
        &format!("event_type, error_code, tool_name, approval_status, {bucket_expr} AS bucket"),
        "",
    );
    main.push(") e GROUP BY GROUPING SETS ((event_type), (error_code), (tool_name), (bucket), ())");
    // Агенты и число сессий — одним проходом: внутренние группы по
    // (сессия, агент) и по сессии, внешняя — по агенту и признаку группировки.
    let mut agents_pg = Sql::new(b);
    agents_pg.push(
        "SELECT agent_id, g, COUNT(*) AS sessions, CAST(SUM(n) AS BIGINT) AS n, \
         CAST(SUM(calls) AS BIGINT) AS calls, CAST(SUM(errors) AS BIGINT) AS errors, \
         MAX(last_seen) AS last_seen FROM (",
    );
    slice(
        &mut agents_pg,
        "agent_id, session_id, GROUPING(agent_id) AS g, COUNT(*) AS n, COUNT(error_code) AS errors, \
         SUM(CASE WHEN event_type = 'TOOL_REQUEST' THEN 1 ELSE 0 END) AS calls, MAX(created_at) AS last_seen",
        " GROUP BY GROUPING SETS ((session_id, agent_id), (session_id))",
    );
    agents_pg.push(") t GROUP BY g, agent_id");
    (main.build(), agents_pg.build())
}

impl Store {
    /// Планы инструкций аналитики PostgreSQL (EXPLAIN ANALYZE тех же инструкций,
    /// что выполняет [`Store::analytics`], с тем же `work_mem`).
    pub async fn explain_analytics(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Vec<String>, StorageError> {
        use sea_orm::TransactionTrait;
        let (main, agents) = pg_statements(scope, filter, bucket);
        let mut plans = Vec::new();
        for mut stmt in [main, agents] {
            stmt.sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", stmt.sql);
            let txn = self.db.begin().await?;
            txn.execute_unprepared(ANALYTICS_WORK_MEM).await?;
            let rows = txn.query_all_raw(stmt).await?;
            txn.commit().await?;
            plans.push(
                rows.iter()
                    .filter_map(|r| r.try_get_by_index::<String>(0).ok())
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        Ok(plans)
    }
}

/// Выражение начала корзины для столбца времени `col` (см. [`rollup_sql::trunc_sql`]).
pub(super) fn bucket_sql(pg: bool, bucket: Bucket, col: &str) -> String {
    let unit = match bucket {
        Bucket::Minute => Trunc::Minute,
        Bucket::Hour => Trunc::Hour,
        Bucket::Day => Trunc::Day,
    };
    rollup_sql::trunc_sql(pg, unit, col)
}
