//! Аналитика проекта (SPEC §5 `Analytics`). Всё считает база: GROUP BY и временные
//! корзины; в Rust только сортируются готовые группы (байтовый порядок строк
//! одинаков на обеих базах, а COLLATE у них разный).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::Serialize;

use super::codec::get_ts;
use super::sql::Sql;
use super::{StorageError, Store};
use crate::query::{EventFilter, ReadScope};

/// Ширина временной корзины.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Bucket {
    /// Минута.
    Minute,
    /// Час.
    Hour,
    /// Сутки (UTC).
    Day,
}

/// Число событий типа.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
pub struct EventTypeCount {
    /// Тип.
    pub event_type: String,
    /// Число.
    pub count: i64,
}

/// Активность агента.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
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
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
pub struct ErrorCount {
    /// Код ошибки.
    pub error_code: String,
    /// Число.
    pub count: i64,
}

/// Статистика инструмента.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
pub struct ToolStat {
    /// Инструмент.
    pub tool_name: String,
    /// Вызовов (событий TOOL_REQUEST).
    pub calls: i64,
    /// Событий с кодом ошибки.
    pub errors: i64,
}

/// Ошибки.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
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
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
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
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
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

/// Аналитика проекта под фильтром.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject)]
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
}

impl Store {
    /// Считает аналитику в базе. Запросы независимы и идут параллельно по пулу.
    pub async fn analytics(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Analytics, StorageError> {
        let b = self.backend();
        let base = |select: &str, extra_where: &str, tail: &str| {
            let mut sql = Sql::new(b);
            sql.push("SELECT ")
                .push(select)
                .push(" FROM event_logs WHERE ")
                .push_scope(scope)
                .push_filter(filter)
                .push(extra_where)
                .push(tail);
            sql.build()
        };
        let bucket_expr = bucket_sql(b == sea_orm::DbBackend::Postgres, bucket);
        let totals = base(
            "COUNT(*) AS total, COUNT(DISTINCT session_id) AS sessions, COUNT(error_code) AS errors, \
             COALESCE(SUM(CASE WHEN event_type = 'APPROVAL_REQUIRED' THEN 1 ELSE 0 END), 0) AS req, \
             COALESCE(SUM(CASE WHEN event_type = 'APPROVAL_RESOLVED' AND approval_status = 'APPROVED' THEN 1 ELSE 0 END), 0) AS appr, \
             COALESCE(SUM(CASE WHEN event_type = 'APPROVAL_RESOLVED' AND approval_status = 'REJECTED' THEN 1 ELSE 0 END), 0) AS rej, \
             COALESCE(SUM(CASE WHEN event_type = 'APPROVAL_TIMEOUT' THEN 1 ELSE 0 END), 0) AS tmo",
            "",
            "",
        );
        let types = base("event_type, COUNT(*) AS n", "", " GROUP BY event_type");
        let agents = base(
            "agent_id, COUNT(*) AS n, COUNT(DISTINCT session_id) AS sessions, \
             SUM(CASE WHEN event_type = 'TOOL_REQUEST' THEN 1 ELSE 0 END) AS calls, \
             COUNT(error_code) AS errors, MAX(created_at) AS last_seen",
            " AND agent_id IS NOT NULL",
            " GROUP BY agent_id",
        );
        let codes = base(
            "error_code, COUNT(*) AS n",
            " AND error_code IS NOT NULL",
            " GROUP BY error_code",
        );
        let tools = base(
            "tool_name, SUM(CASE WHEN event_type = 'TOOL_REQUEST' THEN 1 ELSE 0 END) AS calls, \
             COUNT(error_code) AS errors",
            " AND tool_name IS NOT NULL",
            " GROUP BY tool_name",
        );
        let timeline = base(
            &format!("{bucket_expr} AS bucket, COUNT(*) AS n, COUNT(error_code) AS errors"),
            "",
            " GROUP BY bucket ORDER BY bucket",
        );
        let db = &self.db;
        let (totals, types, agents, codes, tools, timeline) = tokio::try_join!(
            db.query_one_raw(totals),
            db.query_all_raw(types),
            db.query_all_raw(agents),
            db.query_all_raw(codes),
            db.query_all_raw(tools),
            db.query_all_raw(timeline),
        )?;
        let totals = totals.ok_or_else(|| StorageError::Decode("no totals row".into()))?;
        let i = |r: &QueryResult, c: &str| -> Result<i64, StorageError> { Ok(r.try_get::<i64>("", c)?) };
        let total_events = i(&totals, "total")?;
        let total_errors = i(&totals, "errors")?;

        let mut event_type_counts = types
            .iter()
            .map(|r| {
                Ok(EventTypeCount {
                    event_type: r.try_get("", "event_type")?,
                    count: i(r, "n")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        event_type_counts.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.event_type.cmp(&b.event_type))
        });

        let mut agent_interactions = agents
            .iter()
            .map(|r| {
                Ok(AgentInteraction {
                    agent_id: r.try_get("", "agent_id")?,
                    events: i(r, "n")?,
                    sessions: i(r, "sessions")?,
                    tool_calls: i(r, "calls")?,
                    errors: i(r, "errors")?,
                    last_seen_at: get_ts(r, b, "last_seen")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        agent_interactions.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.agent_id.cmp(&b.agent_id)));

        let mut by_code = codes
            .iter()
            .map(|r| {
                Ok(ErrorCount {
                    error_code: r.try_get("", "error_code")?,
                    count: i(r, "n")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        by_code.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.error_code.cmp(&b.error_code))
        });

        let mut by_tool = tools
            .iter()
            .map(|r| {
                Ok(ToolStat {
                    tool_name: r.try_get("", "tool_name")?,
                    calls: i(r, "calls")?,
                    errors: i(r, "errors")?,
                })
            })
            .filter(|t: &Result<ToolStat, StorageError>| {
                t.as_ref().map_or(true, |t| t.calls > 0 || t.errors > 0)
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        by_tool.sort_by(|a, b| {
            b.errors
                .cmp(&a.errors)
                .then_with(|| b.calls.cmp(&a.calls))
                .then_with(|| a.tool_name.cmp(&b.tool_name))
        });

        let timeline = timeline
            .iter()
            .map(|r| {
                Ok(TimelinePoint {
                    bucket_start: get_ts(r, b, "bucket")?,
                    events: i(r, "n")?,
                    errors: i(r, "errors")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;

        Ok(Analytics {
            total_events,
            sessions: i(&totals, "sessions")?,
            event_type_counts,
            agent_interactions,
            error_stats: ErrorStats {
                total_errors,
                error_rate: if total_events == 0 {
                    0.0
                } else {
                    total_errors as f64 / total_events as f64
                },
                by_code,
                by_tool,
            },
            timeline,
            approvals: ApprovalStats {
                required: i(&totals, "req")?,
                approved: i(&totals, "appr")?,
                rejected: i(&totals, "rej")?,
                timed_out: i(&totals, "tmo")?,
            },
        })
    }
}

/// Выражение начала корзины: `date_trunc(…, 'UTC')` на PostgreSQL; на SQLite — обрезка
/// строки фиксированного формата с дополнением нулями (тот же формат, что и хранение).
fn bucket_sql(pg: bool, bucket: Bucket) -> &'static str {
    match (pg, bucket) {
        (true, Bucket::Minute) => "date_trunc('minute', created_at, 'UTC')",
        (true, Bucket::Hour) => "date_trunc('hour', created_at, 'UTC')",
        (true, Bucket::Day) => "date_trunc('day', created_at, 'UTC')",
        (false, Bucket::Minute) => "(substr(created_at, 1, 16) || ':00.000000Z')",
        (false, Bucket::Hour) => "(substr(created_at, 1, 13) || ':00:00.000000Z')",
        (false, Bucket::Day) => "(substr(created_at, 1, 10) || 'T00:00:00.000000Z')",
    }
}
