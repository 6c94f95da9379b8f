//! Точная аналитика из часовых свёрток (`rollup_events`, `rollup_sessions`; ведёт
//! их потребитель журнала [`super::rollups`]).
//!
//! Ответ складывается из трёх непересекающихся частей, объединение которых — ровно
//! строки под фильтром:
//! 1. строки свёрток за целые часы окна `[lo, hi)` (`lo` — `from`, округлённое вверх
//!    до часа, `hi` — `to`, округлённое вниз). Свёртки содержат ровно события с
//!    позицией не выше позиции потребителя (применённые);
//! 2. сырые строки `event_logs` на краях окна: `[from, lo)` и `[hi, to)`;
//! 3. сырые строки внутри `[lo, hi)`, ещё не применённые ([`LogRange::unapplied`]).
//!
//! Позиция потребителя и все строки читаются в одном снимке (REPEATABLE READ на
//! PostgreSQL, одна транзакция чтения на SQLite): иначе потребитель мог бы сдвинуться
//! между чтением позиции и свёрток, и строки посчитались бы дважды или ни разу.
//!
//! Фильтр и область компилируются в SQL тем же [`Sql::push_scope`] и
//! [`Sql::push_filter`], что и для `event_logs`: у таблиц свёрток те же имена и
//! смысл столбцов (NULL — «нет значения»). Фильтры, которых в свёртках нет
//! (sessionId, payloadContains, toolName, errorCode, approvalStatus), и корзина
//! MINUTE читаются по сырым строкам ([`plan`]).

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use migration::rollup_sql::{self, FOLLOWER};
use sea_orm::{AccessMode, ConnectionTrait, IsolationLevel, QueryResult, Statement, TransactionTrait};

use super::analytics::{
    ANALYTICS_WORK_MEM, AgentInteraction, Analytics, Bucket, ModelUsage, Parts, assemble, bucket_sql, counts,
    int, push_slice, sums,
};
use super::codec::get_ts;
use super::follow::LogRange;
use super::sql::Sql;
use super::{StorageError, Store};
use crate::query::{EventFilter, ReadScope};

/// Целые часы окна фильтра, которые берутся из свёрток: `[lo, hi)`; `None` — без
/// границы с этой стороны.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Начало первого целого часа (`from`, округлённое вверх).
    pub lo: Option<DateTime<Utc>>,
    /// Конец последнего целого часа (`to`, округлённое вниз).
    pub hi: Option<DateTime<Utc>>,
}

/// План чтения из свёрток или `None`, если аналитику нужно считать по сырым строкам:
/// корзина MINUTE, фильтр по столбцу, которого нет в свёртках, или в окне нет ни
/// одного целого часа.
pub fn plan(filter: &EventFilter, bucket: Bucket) -> Option<Plan> {
    if bucket == Bucket::Minute
        || filter.session_id.is_some()
        || filter.payload_contains.is_some()
        || filter.tool_name.is_some()
        || filter.error_code.is_some()
        || filter.approval_status.is_some()
    {
        return None;
    }
    let lo = filter.from.map(ceil_hour);
    let hi = filter.to.map(floor_hour);
    if let (Some(lo), Some(hi)) = (lo, hi)
        && lo >= hi
    {
        return None;
    }
    Some(Plan { lo, hi })
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    // Часы UTC кратны часу от эпохи Unix: усечение от эпохи даёт начало часа.
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_hour(t);
    if f == t { f } else { f + Duration::hours(1) }
}

/// Сырой срез: фильтр (с границами края окна) и, для середины окна, условие
/// «ещё не применено».
struct Slice {
    filter: EventFilter,
    unapplied: Option<LogRange>,
}

/// Сырые части ответа при позиции потребителя `pos`: края окна и неприменённые
/// строки целых часов (см. модуль).
fn raw_slices(filter: &EventFilter, plan: Plan, pos: i64) -> Vec<Slice> {
    let mut v = Vec::with_capacity(3);
    if let (Some(from), Some(lo)) = (filter.from, plan.lo)
        && from < lo
    {
        v.push(Slice {
            filter: EventFilter {
                to: Some(lo),
                ..filter.clone()
            },
            unapplied: None,
        });
    }
    if let (Some(to), Some(hi)) = (filter.to, plan.hi)
        && hi < to
    {
        v.push(Slice {
            filter: EventFilter {
                from: Some(hi),
                ..filter.clone()
            },
            unapplied: None,
        });
    }
    v.push(Slice {
        filter: EventFilter {
            from: plan.lo,
            to: plan.hi,
            ..filter.clone()
        },
        unapplied: Some(LogRange::unapplied(pos)),
    });
    v
}

/// Срез сырых строк `SELECT {cols} FROM event_logs WHERE …` с условием «не применено».
fn push_raw(sql: &mut Sql, scope: &ReadScope, s: &Slice, cols: &str) {
    push_slice(sql, scope, &s.filter, cols, "");
    if let Some(r) = s.unapplied {
        sql.push_in_log_range(r);
    }
}

/// Инструкция разрезов аналитики: источник `src` — строки свёрток и сырые строки в
/// одной форме (сырая строка — с весом `n = 1`), затем по группе на разрез. Разрез
/// помечен столбцом `dim`: 0 — итоги, 1 — типы, 2 — коды ошибок, 3 — инструменты,
/// 4 — корзины времени, 5 — агенты, 6 — модели.
fn events_statement(
    b: sea_orm::DbBackend,
    scope: &ReadScope,
    filter: &EventFilter,
    bucket: Bucket,
    plan: Plan,
    slices: &[Slice],
) -> Statement {
    let pg = b == sea_orm::DbBackend::Postgres;
    let rolled = EventFilter {
        from: None,
        to: None,
        ..filter.clone()
    };
    let mut sql = Sql::new(b);
    sql.push(
        "WITH src AS MATERIALIZED (SELECT event_type, agent_id, tool_name, error_code, approval_status, \
         model, hour, n, input_tokens, output_tokens, last_at FROM rollup_events WHERE ",
    )
    .push_scope(scope)
    .push_filter(&rolled)
    .push_hours(plan.lo, plan.hi);
    let row = rollup_sql::row_sql(pg);
    for s in slices {
        sql.push(
            " UNION ALL SELECT event_type, agent_id, tool_name, error_code, approval_status, model, hour, \
             1 AS n, input_tokens, output_tokens, created_at AS last_at FROM (",
        );
        push_raw(&mut sql, scope, s, &row);
        sql.push(") r");
    }
    sql.push(")");
    let agg = format!(
        "{}, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, MAX(last_at) AS last_at",
        sums("n")
    );
    let (null_text, null_ts) = if pg {
        ("CAST(NULL AS TEXT)", "CAST(NULL AS TIMESTAMPTZ)")
    } else {
        ("NULL", "NULL")
    };
    let bucket_expr = bucket_sql(pg, bucket, "hour");
    let dims: [(&str, &str, &str, String); 7] = [
        (null_text, null_ts, "", String::new()),
        ("event_type", null_ts, "", " GROUP BY event_type".into()),
        (
            "error_code",
            null_ts,
            " WHERE error_code IS NOT NULL",
            " GROUP BY error_code".into(),
        ),
        (
            "tool_name",
            null_ts,
            " WHERE tool_name IS NOT NULL",
            " GROUP BY tool_name".into(),
        ),
        (null_text, &bucket_expr, "", format!(" GROUP BY {bucket_expr}")),
        (
            "agent_id",
            null_ts,
            " WHERE agent_id IS NOT NULL",
            " GROUP BY agent_id".into(),
        ),
        (
            "model",
            null_ts,
            " WHERE event_type = 'MODEL_CALL'",
            " GROUP BY model".into(),
        ),
    ];
    for (i, (k, t, cond, group)) in dims.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL");
        }
        sql.push(&format!(
            " SELECT CAST({i} AS BIGINT) AS dim, {k} AS k, {t} AS bucket, {agg} FROM src{cond}{group}"
        ));
    }
    sql.build()
}

/// Инструкция различных сессий: всего (`g = 1`) и по агентам (`g = 0`). Источник —
/// пары (сессия, агент) из `rollup_sessions` и сырых срезов.
fn sessions_statement(
    b: sea_orm::DbBackend,
    scope: &ReadScope,
    filter: &EventFilter,
    plan: Plan,
    slices: &[Slice],
) -> Statement {
    let pg = b == sea_orm::DbBackend::Postgres;
    // hasError в rollup_sessions — по счётчикам группы, а не по коду ошибки.
    let rolled = EventFilter {
        from: None,
        to: None,
        has_error: None,
        ..filter.clone()
    };
    let mut sql = Sql::new(b);
    sql.push("WITH s AS MATERIALIZED (SELECT session_id, agent_id FROM rollup_sessions WHERE ")
        .push_scope(scope)
        .push_filter(&rolled)
        .push_session_has_error(filter.has_error)
        .push_hours(plan.lo, plan.hi);
    for s in slices {
        sql.push(" UNION ALL ");
        push_raw(&mut sql, scope, s, "session_id, agent_id");
    }
    let null_text = if pg { "CAST(NULL AS TEXT)" } else { "NULL" };
    sql.push(&format!(
        ") SELECT CAST(1 AS BIGINT) AS g, {null_text} AS agent_id, COUNT(*) AS sessions \
         FROM (SELECT session_id FROM s GROUP BY session_id) t \
         UNION ALL SELECT CAST(0 AS BIGINT), agent_id, COUNT(*) \
         FROM (SELECT agent_id, session_id FROM s WHERE agent_id IS NOT NULL GROUP BY agent_id, session_id) t2 \
         GROUP BY agent_id"
    ));
    sql.build()
}

impl Store {
    /// Аналитика по плану `plan` из свёрток (см. модуль). `None` — потребитель
    /// `rollups` не зарегистрирован (миграция свёрток не применена): считать по сырым.
    pub(super) async fn analytics_rolled(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
        plan: Plan,
    ) -> Result<Option<Analytics>, StorageError> {
        let b = self.backend();
        let Some((events, sessions)) = self.rolled_rows(scope, filter, bucket, plan, false).await? else {
            return Ok(None);
        };
        let mut parts = Parts::default();
        let mut agent_sessions: HashMap<String, i64> = HashMap::new();
        for r in &sessions {
            let n = int(r, "sessions")?;
            match r.try_get::<Option<String>>("", "agent_id")? {
                Some(agent) if int(r, "g")? == 0 => {
                    agent_sessions.insert(agent, n);
                }
                _ => parts.sessions = n,
            }
        }
        for r in &events {
            let key = || -> Result<String, StorageError> { Ok(r.try_get::<String>("", "k")?) };
            match int(r, "dim")? {
                0 => {
                    parts.total = int(r, "n")?;
                    parts.errors = int(r, "errors")?;
                    parts.approvals = [int(r, "req")?, int(r, "appr")?, int(r, "rej")?, int(r, "tmo")?];
                }
                1 => parts.types.push((key()?, int(r, "n")?)),
                2 => parts.codes.push((key()?, int(r, "n")?)),
                3 => parts.tools.push((key()?, counts(r)?)),
                4 => parts.timeline.push((get_ts(r, b, "bucket")?, counts(r)?)),
                5 => {
                    let agent_id = key()?;
                    parts.agents.push(AgentInteraction {
                        sessions: agent_sessions.get(&agent_id).copied().unwrap_or(0),
                        events: int(r, "n")?,
                        tool_calls: int(r, "calls")?,
                        errors: int(r, "errors")?,
                        last_seen_at: get_ts(r, b, "last_at")?,
                        agent_id,
                    });
                }
                _ => parts.models.push(ModelUsage {
                    model: key()?,
                    calls: int(r, "n")?,
                    input_tokens: int(r, "input_tokens")?,
                    output_tokens: int(r, "output_tokens")?,
                    errors: int(r, "errors")?,
                }),
            }
        }
        Ok(Some(assemble(parts)))
    }

    /// Позиция потребителя и строки обеих инструкций в одном снимке. С `explain` —
    /// планы (`EXPLAIN (ANALYZE, BUFFERS)`, только PostgreSQL) вместо строк.
    async fn rolled_rows(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
        plan: Plan,
        explain: bool,
    ) -> Result<Option<(Vec<QueryResult>, Vec<QueryResult>)>, StorageError> {
        let b = self.backend();
        let pg = b == sea_orm::DbBackend::Postgres;
        // Снимок на всю транзакцию: на PostgreSQL — REPEATABLE READ; на SQLite чтение
        // в транзакции (WAL) видит снимок, взятый первым SELECT, до её конца.
        let txn = if pg {
            self.db
                .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                .await?
        } else {
            self.db.begin().await?
        };
        if pg {
            txn.execute_unprepared(ANALYTICS_WORK_MEM).await?;
        }
        let mut sql = Sql::new(b);
        sql.push("SELECT pos FROM log_followers WHERE name = ")
            .bind(FOLLOWER);
        let Some(row) = txn.query_one_raw(sql.build()).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let pos: i64 = row.try_get("", "pos")?;
        let slices = raw_slices(filter, plan, pos);
        let mut stmts = [
            events_statement(b, scope, filter, bucket, plan, &slices),
            sessions_statement(b, scope, filter, plan, &slices),
        ];
        if explain {
            for s in &mut stmts {
                s.sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", s.sql);
            }
        }
        let [events, sessions] = stmts;
        let events = txn.query_all_raw(events).await?;
        let sessions = txn.query_all_raw(sessions).await?;
        txn.commit().await?;
        Ok(Some((events, sessions)))
    }

    /// Планы инструкций аналитики из свёрток (PostgreSQL, `EXPLAIN (ANALYZE, BUFFERS)`
    /// тех же инструкций в том же снимке). Пусто, если фильтр читается по сырым строкам.
    pub async fn explain_analytics_rollups(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Vec<String>, StorageError> {
        let Some(plan) = plan(filter, bucket) else {
            return Ok(Vec::new());
        };
        let Some((events, sessions)) = self.rolled_rows(scope, filter, bucket, plan, true).await? else {
            return Ok(Vec::new());
        };
        Ok([events, sessions]
            .iter()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r.try_get_by_index::<String>(0).ok())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect())
    }
}
