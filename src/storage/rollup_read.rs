//! Точная аналитика из узких свёрток (`rollup_parts`, `rollup_session_parts`; ведёт
//! их потребитель журнала [`super::rollups`]).
//!
//! Ответ складывается из непересекающихся частей, объединение которых — ровно
//! строки под фильтром:
//! 1. строки свёрток: целые сутки окна `[dlo, dhi)` — строками суток, целые часы
//!    `[lo, dlo)` и `[dhi, hi)` — строками часов (`lo` — `from`, округлённое вверх
//!    до часа, `hi` — `to`, округлённое вниз; `dlo`, `dhi` — то же до суток внутри
//!    `[lo, hi)`). Временной ряд по часам берёт итоги строками часов всего `[lo, hi)`.
//!    Свёртки содержат ровно события с позицией не выше позиции потребителя;
//! 2. сырые строки `event_logs` на краях окна: `[from, lo)` и `[hi, to)`;
//! 3. сырые строки внутри `[lo, hi)`, ещё не применённые ([`LogRange::unapplied`]).
//!
//! Различные сессии — перечислением пар (сессия, агент): строки часов
//! `rollup_session_parts` за `[lo, hi)` плюс пары сырых частей 2 и 3; сессия,
//! попавшая в несколько частей, считается один раз (GROUP BY).
//!
//! Позиция потребителя и все строки читаются в одном снимке (REPEATABLE READ на
//! PostgreSQL, одна транзакция чтения на SQLite): иначе потребитель мог бы сдвинуться
//! между чтением позиции и свёрток, и строки посчитались бы дважды или ни разу.
//!
//! Свёртки не скрещивают разрезы, поэтому отвечают только окну времени и
//! пользователю (уровень строк `user_key`: свой у пользователя, `userId` фильтра
//! или «все» у администратора). Остальные фильтры и корзина MINUTE читаются по
//! сырым строкам ([`plan`]).

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use migration::rollup_sql::{self, FOLLOWER, MODEL_DIM, SUMMED};
use sea_orm::{AccessMode, ConnectionTrait, IsolationLevel, QueryResult, Statement, TransactionTrait};

use super::analytics::{
    ANALYTICS_WORK_MEM, AgentInteraction, Analytics, Bucket, ModelUsage, Parts, assemble, bucket_sql, counts,
    int, push_slice,
};
use super::codec::get_ts;
use super::follow::LogRange;
use super::sql::Sql;
use super::{StorageError, Store};
use crate::query::{EventFilter, ReadScope};

/// Граница интервала времени; `None` — без границы с этой стороны.
pub type Bound = Option<DateTime<Utc>>;

/// Части окна фильтра, которые берутся из свёрток; `None` в границе — без границы
/// с этой стороны.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Начало первого целого часа (`from`, округлённое вверх).
    pub lo: Option<DateTime<Utc>>,
    /// Конец последнего целого часа (`to`, округлённое вниз).
    pub hi: Option<DateTime<Utc>>,
    /// Целые сутки внутри `[lo, hi)`: `(dlo, dhi)`; `None` — ни одних целых суток.
    pub days: Option<(Bound, Bound)>,
}

/// План чтения из свёрток или `None`, если аналитику нужно считать по сырым строкам:
/// корзина MINUTE, фильтр не только по времени и пользователю, или в окне нет ни
/// одного целого часа.
pub fn plan(filter: &EventFilter, bucket: Bucket) -> Option<Plan> {
    if bucket == Bucket::Minute
        || filter.event_types.is_some()
        || filter.agent_ids.is_some()
        || filter.has_error.is_some()
        || filter.session_id.is_some()
        || filter.payload_contains.is_some()
        || filter.tool_name.is_some()
        || filter.error_code.is_some()
        || filter.approval_status.is_some()
    {
        return None;
    }
    let lo = filter.from.map(|t| ceil_to(t, Duration::hours(1)));
    let hi = filter.to.map(|t| floor_to(t, Duration::hours(1)));
    if let (Some(lo), Some(hi)) = (lo, hi)
        && lo >= hi
    {
        return None;
    }
    let dlo = lo.map(|t| ceil_to(t, Duration::days(1)));
    let dhi = hi.map(|t| floor_to(t, Duration::days(1)));
    let days = match (dlo, dhi) {
        (Some(a), Some(b)) if a >= b => None,
        d => Some(d),
    };
    Some(Plan { lo, hi, days })
}

fn floor_to(t: DateTime<Utc>, unit: Duration) -> DateTime<Utc> {
    // Часы и сутки UTC кратны своей длине от эпохи Unix: усечение от эпохи даёт начало.
    t.duration_trunc(unit).unwrap_or(t)
}

fn ceil_to(t: DateTime<Utc>, unit: Duration) -> DateTime<Utc> {
    let f = floor_to(t, unit);
    if f == t { f } else { f + unit }
}

/// Уровень строк свёрток (`user_key`) для области и фильтра. `None` — пользователь
/// спрашивает о чужом `userId`: строк нет, ответ считается по сырым (он пуст).
fn user_key(scope: &ReadScope, filter: &EventFilter) -> Option<String> {
    match (&scope.user_id, &filter.user_id) {
        (Some(own), Some(other)) if own != other => None,
        (Some(own), _) => Some(own.clone()),
        (None, Some(user)) => Some(user.clone()),
        (None, None) => Some(migration::ALL_USERS_KEY.to_owned()),
    }
}

/// Какие разрезы берёт выборка строк `rollup_parts`.
#[derive(Debug, Clone, Copy)]
enum Dims {
    /// Все.
    All,
    /// Только итоги (`dim = 0`).
    Totals,
    /// Все, кроме итогов.
    NotTotals,
}

/// Выборки строк `rollup_parts`: (зерно, начало, конец, разрезы). Временной ряд по
/// часам требует итогов строками часов на всём `[lo, hi)`; остальное — строки суток
/// на целых сутках и строки часов по краям.
fn part_ranges(plan: Plan, bucket: Bucket) -> Vec<(i16, Bound, Bound, Dims)> {
    let (mut v, rest) = if bucket == Bucket::Hour {
        (vec![(0, plan.lo, plan.hi, Dims::Totals)], Dims::NotTotals)
    } else {
        (Vec::new(), Dims::All)
    };
    match plan.days {
        None => v.push((0, plan.lo, plan.hi, rest)),
        Some((dlo, dhi)) => {
            v.push((1, dlo, dhi, rest));
            if dlo.is_some() {
                v.push((0, plan.lo, dlo, rest));
            }
            if dhi.is_some() {
                v.push((0, dhi, plan.hi, rest));
            }
        }
    }
    v
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

/// `project_id = ? AND user_key = ?` — строки свёрток уровня `key`.
fn push_level(sql: &mut Sql, scope: &ReadScope, key: &str) {
    sql.push("project_id = ")
        .bind_uuid(scope.project_id)
        .push(" AND user_key = ")
        .bind(key.to_owned());
}

/// Инструкция разрезов аналитики: `r` — сырые части в форме строки свёртки
/// ([`rollup_sql::row_sql`] и счётчики), `p` — строки `rollup_parts`
/// ([`part_ranges`]); затем по группе на разрез. Разрез помечен столбцом `dim`:
/// 0 — итоги, 1 — типы, 2 — коды ошибок, 3 — инструменты, 4 — корзины времени,
/// 5 — агенты, 6 — модели.
fn events_statement(
    b: sea_orm::DbBackend,
    scope: &ReadScope,
    key: &str,
    bucket: Bucket,
    plan: Plan,
    slices: &[Slice],
) -> Statement {
    let pg = b == sea_orm::DbBackend::Postgres;
    let cols = SUMMED.join(", ");
    let mut sql = Sql::new(b);
    sql.push("WITH r AS MATERIALIZED (");
    let row = format!("{}, {}", rollup_sql::row_sql(pg), rollup_sql::counters_sql());
    for (i, s) in slices.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        push_raw(&mut sql, scope, s, &row);
    }
    // Строки моделей — отдельной выборкой с `label` (вне индекса); остальные на
    // PostgreSQL читаются только по покрывающему индексу.
    let null_label = if pg { "CAST(NULL AS TEXT)" } else { "NULL" };
    sql.push("), p AS MATERIALIZED (");
    let mut first = true;
    for (grain, lo, hi, dims) in part_ranges(plan, bucket) {
        let (cond, models) = match dims {
            Dims::All => (format!("dim <> {MODEL_DIM}"), true),
            Dims::Totals => ("dim = 0".to_owned(), false),
            Dims::NotTotals => (format!("dim <> 0 AND dim <> {MODEL_DIM}"), true),
        };
        let mut selects = vec![(null_label, cond)];
        if models {
            selects.push(("label", format!("dim = {MODEL_DIM}")));
        }
        for (label, cond) in selects {
            if !first {
                sql.push(" UNION ALL ");
            }
            first = false;
            sql.push(&format!(
                "SELECT dim, k, {label} AS label, slot, {cols}, last_at FROM rollup_parts WHERE "
            ));
            push_level(&mut sql, scope, key);
            sql.push(&format!(" AND grain = {grain}"))
                .push_range("slot", lo, hi)
                .push(" AND ")
                .push(&cond);
        }
    }
    sql.push(")");
    let agg = format!(
        "{}, MAX(last_at) AS last_at",
        SUMMED
            .iter()
            .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (null_text, null_ts) = if pg {
        ("CAST(NULL AS TEXT)", "CAST(NULL AS TIMESTAMPTZ)")
    } else {
        ("NULL", "NULL")
    };
    let bucket_expr = bucket_sql(pg, bucket, "slot");
    for (dim, k) in rollup_sql::dims(pg) {
        let mut selects = vec![if dim == 0 {
            (0, null_text.to_owned(), null_ts, String::new())
        } else if dim == MODEL_DIM {
            (
                dim,
                "COALESCE(MAX(label), k)".to_owned(),
                null_ts,
                " GROUP BY k".to_owned(),
            )
        } else {
            (dim, "k".to_owned(), null_ts, " GROUP BY k".to_owned())
        }];
        if dim == 0 {
            selects.push((
                4,
                null_text.to_owned(),
                bucket_expr.as_str(),
                format!(" GROUP BY {bucket_expr}"),
            ));
        }
        for (out, key_col, bucket_col, group) in selects {
            if out > 0 {
                sql.push(" UNION ALL");
            }
            sql.push(&format!(
                " SELECT CAST({out} AS BIGINT) AS dim, {key_col} AS k, {bucket_col} AS bucket, {agg} FROM \
                 (SELECT k, label, slot, {cols}, last_at FROM p WHERE dim = {dim} UNION ALL \
                 SELECT {k}, model, hour, {cols}, created_at FROM r WHERE {k} IS NOT NULL) t{group}"
            ));
        }
    }
    sql.build()
}

/// Инструкция различных сессий: всего (`g = 1`) и по агентам (`g = 0`). Источник —
/// пары (сессия, агент) строк часов `rollup_session_parts` и сырых частей.
fn sessions_statement(
    b: sea_orm::DbBackend,
    scope: &ReadScope,
    key: &str,
    plan: Plan,
    slices: &[Slice],
) -> Statement {
    let pg = b == sea_orm::DbBackend::Postgres;
    let mut sql = Sql::new(b);
    sql.push("WITH s AS MATERIALIZED (SELECT session_id, agent_id FROM rollup_session_parts WHERE ");
    push_level(&mut sql, scope, key);
    sql.push_range("hour", plan.lo, plan.hi);
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
        let Some(key) = user_key(scope, filter) else {
            return Ok(None);
        };
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
            events_statement(b, scope, &key, bucket, plan, &slices),
            sessions_statement(b, scope, &key, plan, &slices),
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
