//! Пакетная запись событий. Каждый пакет — одна инструкция (или COPY + одна
//! инструкция в одной транзакции) с `ON CONFLICT (id) DO NOTHING`; возвращаются
//! `seq` только реально вставленных строк, поэтому повторная отправка того же `id`
//! ничего не добавляет и не публикуется повторно.

use std::fmt::Write as _;

use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionTrait};
use sqlx::Row;
use uuid::Uuid;

use super::codec::get_uuid;
use super::sql::{SQLITE_TS_FORMAT, Sql};
use super::{StorageError, Store};
use crate::model::NewEvent;

/// Вставленная строка: id и выданный базой seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertedRow {
    /// Идентификатор события.
    pub id: Uuid,
    /// Порядковый номер.
    pub seq: i64,
}

/// Способ пакетной записи на PostgreSQL. Сравнивается бенчмарком
/// `cargo bench --bench ingest` (docs/performance.md); по умолчанию — самый быстрый.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgWriteMethod {
    /// `INSERT … SELECT FROM UNNEST($1::uuid[], …)` — 11 параметров-массивов на пакет.
    #[default]
    Unnest,
    /// COPY во временную таблицу, затем `INSERT … SELECT` из неё.
    CopyStaging,
    /// Многострочный `INSERT … VALUES (…), (…)`.
    MultiRow,
}

const INSERT_COLUMNS: &str = "id, session_id, user_id, project_id, agent_id, event_type, \
     payload, created_at, error_code, tool_name, approval_status";

/// Сколько строк в одной многострочной инструкции: 11 параметров на строку, предел
/// PostgreSQL — 65535 параметров, SQLite — 32766.
const MULTI_ROW_CHUNK: usize = 2000;

impl Store {
    /// Записывает пакет одной транзакцией. Уже существующие `id` пропускаются.
    /// `seqs` — номера, заранее выданные последовательностью базы
    /// ([`Store::reserve_seqs`], только PostgreSQL), по одному на событие; без них
    /// номер выдаёт identity-колонка при вставке. Возвращает вставленные строки,
    /// отсортированные по `seq`.
    pub async fn insert_batch(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
    ) -> Result<Vec<InsertedRow>, StorageError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(s) = seqs {
            debug_assert_eq!(s.len(), events.len(), "по номеру на событие");
        }
        let mut rows = if self.is_postgres() {
            match self.pg_write {
                PgWriteMethod::Unnest => self.insert_unnest(events, seqs).await?,
                PgWriteMethod::CopyStaging => self.insert_copy(events, seqs).await?,
                PgWriteMethod::MultiRow => self.insert_multi_row(events, seqs).await?,
            }
        } else {
            self.insert_multi_row(events, None).await?
        };
        // RETURNING не обещает порядок; подписчикам нужен порядок seq.
        rows.sort_unstable_by_key(|r| r.seq);
        Ok(rows)
    }

    async fn insert_unnest(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
    ) -> Result<Vec<InsertedRow>, StorageError> {
        let pool = self.db.get_postgres_connection_pool();
        let n = events.len();
        let mut ids = Vec::with_capacity(n);
        let mut sessions = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        let mut projects = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut tools = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        for e in events {
            ids.push(e.id);
            sessions.push(e.session_id);
            users.push(e.user_id.as_str());
            projects.push(e.project_id);
            agents.push(e.agent_id.as_deref());
            types.push(e.event_type.as_str());
            payloads.push(serde_json::to_string(&e.payload).unwrap_or_else(|_| "{}".into()));
            times.push(e.created_at);
            codes.push(e.error_code.as_deref());
            tools.push(e.tool_name.as_deref());
            statuses.push(e.approval_status.as_deref());
        }
        // С заранее выданными номерами seq задаётся явно (OVERRIDING SYSTEM VALUE
        // для GENERATED ALWAYS); иначе его выдаёт identity.
        let (seq_col, seq_val, seq_arr, overriding) = if seqs.is_some() {
            (", seq", ", u.seq", ", $12::bigint[]", " OVERRIDING SYSTEM VALUE")
        } else {
            ("", "", "", "")
        };
        let sql = format!(
            "INSERT INTO event_logs (id, session_id, user_id, project_id, agent_id, event_type, \
                 payload, created_at, error_code, tool_name, approval_status{seq_col}){overriding} \
             SELECT u.id, u.session_id, u.user_id, u.project_id, u.agent_id, u.event_type, \
                 u.payload::jsonb, u.created_at, u.error_code, u.tool_name, u.approval_status{seq_val} \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
                 $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[]{seq_arr}) \
                 AS u(id, session_id, user_id, project_id, agent_id, event_type, payload, \
                      created_at, error_code, tool_name, approval_status{seq_col}) \
             ON CONFLICT (id) DO NOTHING RETURNING id, seq"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .bind(sessions)
            .bind(users)
            .bind(projects)
            .bind(agents)
            .bind(types)
            .bind(payloads)
            .bind(times)
            .bind(codes)
            .bind(tools)
            .bind(statuses);
        if let Some(seqs) = seqs {
            query = query.bind(seqs.to_vec());
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter()
            .map(|r| {
                Ok(InsertedRow {
                    id: r.try_get(0)?,
                    seq: r.try_get(1)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StorageError::from)
    }

    async fn insert_copy(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
    ) -> Result<Vec<InsertedRow>, StorageError> {
        let pool = self.db.get_postgres_connection_pool();
        let mut tx = pool.begin().await?;
        // Временная таблица живёт в соединении; ON COMMIT DELETE ROWS очищает её
        // после каждой транзакции, поэтому повторное использование соединения безопасно.
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS event_logs_staging (id uuid, session_id uuid, \
             user_id text, project_id uuid, agent_id text, event_type text, payload jsonb, \
             created_at timestamptz, error_code text, tool_name text, approval_status text, \
             seq bigint) ON COMMIT DELETE ROWS",
        )
        .execute(&mut *tx)
        .await?;
        let (cols, overriding) = if seqs.is_some() {
            (format!("{INSERT_COLUMNS}, seq"), " OVERRIDING SYSTEM VALUE")
        } else {
            (INSERT_COLUMNS.to_owned(), "")
        };
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY event_logs_staging ({cols}) FROM STDIN (FORMAT csv)"
            ))
            .await?;
        copy.send(csv_rows_with_seq(events, seqs).into_bytes()).await?;
        copy.finish().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO event_logs ({cols}){overriding} SELECT {cols} \
             FROM event_logs_staging ON CONFLICT (id) DO NOTHING RETURNING id, seq"
        )))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(InsertedRow {
                    id: r.try_get(0)?,
                    seq: r.try_get(1)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StorageError::from)
    }

    async fn insert_multi_row(
        &self,
        events: &[NewEvent],
        seqs: Option<&[i64]>,
    ) -> Result<Vec<InsertedRow>, StorageError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        let mut out = Vec::with_capacity(events.len());
        for (c, chunk) in events.chunks(MULTI_ROW_CHUNK).enumerate() {
            let chunk_seqs = seqs.map(|s| &s[c * MULTI_ROW_CHUNK..c * MULTI_ROW_CHUNK + chunk.len()]);
            let mut sql = Sql::new(backend);
            sql.push("INSERT INTO event_logs (").push(INSERT_COLUMNS);
            if chunk_seqs.is_some() {
                sql.push(", seq) OVERRIDING SYSTEM VALUE VALUES ");
            } else {
                sql.push(") VALUES ");
            }
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                push_event_values(&mut sql, e, chunk_seqs.map(|s| s[i]));
            }
            sql.push(" ON CONFLICT (id) DO NOTHING RETURNING id, seq");
            for row in txn.query_all_raw(sql.build()).await? {
                out.push(InsertedRow {
                    id: get_uuid(&row, backend, "id")?,
                    seq: row.try_get("", "seq")?,
                });
            }
        }
        txn.commit().await?;
        Ok(out)
    }

    /// Переносит отвергнутое базой событие в `event_logs_rejected` с текстом ошибки.
    pub async fn insert_rejected(&self, event: &NewEvent, error: &str) -> Result<(), StorageError> {
        let raw = serde_json::to_value(event).map_err(|e| StorageError::Decode(e.to_string()))?;
        let mut sql = Sql::new(self.backend());
        sql.push("INSERT INTO event_logs_rejected (id, raw_event, error, rejected_at) VALUES (")
            .bind_uuid(Uuid::now_v7())
            .push(", ");
        if sql.is_pg() {
            // Строки с NUL PostgreSQL в jsonb не примет: экранируем их, чтобы запись
            // об отказе не отвергалась по той же причине, что и само событие.
            let text = raw.to_string().replace("\\u0000", "\\\\u0000");
            sql.push("CAST(").bind(text).push(" AS jsonb)");
        } else {
            sql.bind(raw.to_string());
        }
        sql.push(", ")
            .bind(error.replace('\0', "\\0"))
            .push(", ")
            .bind_ts(Utc::now())
            .push(")");
        self.db.execute_raw(sql.build()).await?;
        Ok(())
    }
}

/// Значения одной строки `( … )` в многострочном INSERT.
fn push_event_values(sql: &mut Sql, e: &NewEvent, seq: Option<i64>) {
    let payload = serde_json::to_string(&e.payload).unwrap_or_else(|_| "{}".into());
    sql.push("(")
        .bind_uuid(e.id)
        .push(", ")
        .bind_uuid(e.session_id)
        .push(", ")
        .bind(e.user_id.clone())
        .push(", ")
        .bind_uuid(e.project_id)
        .push(", ")
        .bind(e.agent_id.clone())
        .push(", ")
        .bind(e.event_type.clone())
        .push(", ");
    if sql.is_pg() {
        sql.push("CAST(").bind(payload).push(" AS jsonb)");
    } else {
        sql.bind(payload);
    }
    sql.push(", ")
        .bind_ts(e.created_at)
        .push(", ")
        .bind(e.error_code.clone())
        .push(", ")
        .bind(e.tool_name.clone())
        .push(", ")
        .bind(e.approval_status.clone());
    if let Some(seq) = seq {
        sql.push(", ").bind(seq);
    }
    sql.push(")");
}

/// CSV для COPY без колонки seq.
pub(crate) fn csv_rows(events: &[NewEvent]) -> String {
    csv_rows_with_seq(events, None)
}

/// CSV для COPY: каждое текстовое поле в кавычках (пустая строка остаётся пустой
/// строкой), NULL — пустое поле без кавычек; `seqs` — последняя колонка.
fn csv_rows_with_seq(events: &[NewEvent], seqs: Option<&[i64]>) -> String {
    fn field(out: &mut String, v: Option<&str>) {
        if let Some(v) = v {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        }
    }
    let mut out = String::with_capacity(events.len() * 400);
    for (i, e) in events.iter().enumerate() {
        let payload = serde_json::to_string(&e.payload).unwrap_or_else(|_| "{}".into());
        let _ = write!(out, "{},{},", e.id, e.session_id);
        field(&mut out, Some(&e.user_id));
        let _ = write!(out, ",{},", e.project_id);
        field(&mut out, e.agent_id.as_deref());
        out.push(',');
        field(&mut out, Some(&e.event_type));
        out.push(',');
        field(&mut out, Some(&payload));
        let _ = write!(out, ",{},", e.created_at.format(SQLITE_TS_FORMAT));
        field(&mut out, e.error_code.as_deref());
        out.push(',');
        field(&mut out, e.tool_name.as_deref());
        out.push(',');
        field(&mut out, e.approval_status.as_deref());
        if let Some(s) = seqs {
            let _ = write!(out, ",{}", s[i]);
        }
        out.push('\n');
    }
    out
}

impl Store {
    /// `seq` уже сохранённых событий с данными id (для восстановления после
    /// неоднозначной ошибки фиксации).
    pub async fn seqs_of(&self, ids: &[Uuid]) -> Result<Vec<InsertedRow>, StorageError> {
        let backend = self.backend();
        let mut out = Vec::with_capacity(ids.len());
        // Порциями: у баз есть предел числа параметров в одной инструкции.
        for chunk in ids.chunks(MULTI_ROW_CHUNK * 5) {
            let mut sql = Sql::new(backend);
            sql.push("SELECT id, seq FROM event_logs WHERE id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_uuid(*id);
            }
            sql.push(")");
            for r in self.db.query_all_raw(sql.build()).await? {
                out.push(InsertedRow {
                    id: get_uuid(&r, backend, "id")?,
                    seq: r.try_get("", "seq")?,
                });
            }
        }
        Ok(out)
    }
}

/// Владелец уже сохранённой строки: по нему решается, повтор ли это того же
/// события или чужой id (ключ идемпотентности действует внутри проекта и пользователя).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOwner {
    /// Идентификатор события.
    pub id: Uuid,
    /// Проект сохранённой строки.
    pub project_id: Uuid,
    /// Пользователь сохранённой строки.
    pub user_id: String,
}

impl RowOwner {
    /// Владелец, которого заявляет событие.
    pub fn of(event: &NewEvent) -> Self {
        Self {
            id: event.id,
            project_id: event.project_id,
            user_id: event.user_id.clone(),
        }
    }
}

impl Store {
    /// Владельцы уже сохранённых строк с данными id (проверка идемпотентности).
    pub async fn owners_of(&self, ids: &[Uuid]) -> Result<Vec<RowOwner>, StorageError> {
        let backend = self.backend();
        let mut out = Vec::new();
        for chunk in ids.chunks(MULTI_ROW_CHUNK * 5) {
            let mut sql = Sql::new(backend);
            sql.push("SELECT id, project_id, user_id FROM event_logs WHERE id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_uuid(*id);
            }
            sql.push(")");
            for r in self.db.query_all_raw(sql.build()).await? {
                out.push(RowOwner {
                    id: get_uuid(&r, backend, "id")?,
                    project_id: get_uuid(&r, backend, "project_id")?,
                    user_id: r.try_get("", "user_id")?,
                });
            }
        }
        Ok(out)
    }

    /// Заявки `claims` (id и его ожидаемый владелец), чей `id` уже занят строкой
    /// другого проекта или пользователя: индексы в `claims`, по возрастанию.
    pub async fn foreign_ids(&self, claims: &[RowOwner]) -> Result<Vec<usize>, StorageError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = claims.iter().map(|e| e.id).collect();
        let owners: std::collections::HashMap<Uuid, RowOwner> = self
            .owners_of(&ids)
            .await?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        Ok(claims
            .iter()
            .enumerate()
            .filter(|(_, c)| owners.get(&c.id).is_some_and(|o| o != *c))
            .map(|(i, _)| i)
            .collect())
    }
}

impl Store {
    /// «Сырой» COPY событий прямо в `event_logs` (одной командой COPY, без
    /// ON CONFLICT и без RETURNING) — базовая линия бенчмарка записи и быстрый
    /// засев данных для бенчмарка чтения. Только PostgreSQL.
    pub async fn copy_raw(&self, events: &[NewEvent]) -> Result<u64, StorageError> {
        let pool = self.db.get_postgres_connection_pool();
        let mut conn = pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY event_logs ({INSERT_COLUMNS}) FROM STDIN (FORMAT csv)"
            ))
            .await?;
        // Порциями по ~4 МБ, чтобы не держать весь CSV в памяти дважды.
        for chunk in events.chunks(10_000) {
            copy.send(csv_rows(chunk).into_bytes()).await?;
        }
        Ok(copy.finish().await?)
    }
}

impl Store {
    /// Выдаёт `n` номеров из последовательности identity-колонки `seq` одним
    /// запросом (PostgreSQL). Номера идут по возрастанию; пакеты, получившие номера
    /// раньше, имеют меньшие номера — на этом держится публикация по порядку при
    /// нескольких пакетах в полёте.
    pub async fn reserve_seqs(&self, n: usize) -> Result<Vec<i64>, StorageError> {
        let pool = self.db.get_postgres_connection_pool();
        let rows = sqlx::query(
            "SELECT nextval(pg_get_serial_sequence('event_logs', 'seq')) FROM generate_series(1, $1)",
        )
        .bind(n as i64)
        .fetch_all(pool)
        .await?;
        let mut seqs = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        seqs.sort_unstable();
        Ok(seqs)
    }
}
