//! SQL свёрток аналитики, общий для миграции `m20261205_000004_narrow_analytics_rollups`
//! (заполнение по уже записанным строкам) и сервера (потребитель журнала `rollups`,
//! вычитание при очистке, точное чтение аналитики). Одно определение: строка
//! `event_logs` попадает в свёртку одним и тем же выражением при заполнении, при
//! каждом шаге потребителя и при вычитании.
//!
//! Свёртки узкие: одна строка на (проект, уровень пользователя, ячейка времени,
//! разрез, значение разреза), без скрещивания измерений — так строк в окне столько,
//! сколько различных значений каждого разреза, а не их произведений.
//! - `rollup_parts` — ключ `(project_id, user_key, grain, slot, dim, k)`:
//!   `user_key` — `user_id` или `''` (все пользователи, [`crate::ALL_USERS_KEY`],
//!   читает администратор); `grain` — 0 час, 1 сутки UTC (`slot` — начало ячейки);
//!   `dim` и `k` — разрез и его значение ([`dims`]: итоги с `k = ''`, тип, код
//!   ошибки, инструмент, агент, модель). Суммы — счётчики [`COUNTED`], `n`,
//!   токены и `last_at` (последнее `created_at` группы).
//! - `rollup_session_parts` — пары (сессия, агент) по часам на обоих уровнях
//!   пользователя: `agent_id` NULL — сессия целиком. По ним считаются точные числа
//!   различных сессий, всего и по агентам (перечислением: сессий в окне в десятки
//!   раз меньше, чем событий).
//!
//! Ключ. PostgreSQL: уникальный ключ `rollup_parts` покрывающий (`INCLUDE` всех
//! сумм), и чтение окна идёт только по индексу, без обращений к строкам таблицы.
//! Поэтому `k` ограничен: значения столбцов — до 128 символов, а у моделей (строка
//! из нагрузки, длина не ограничена; запись btree — около 2,7 КБ) `k` —
//! шестнадцатеричный sha256 имени, а само имя — в `label` (вне индекса; читается
//! только для строк моделей). `UNIQUE NULLS NOT DISTINCT` для `agent_id`
//! (PostgreSQL 15+). SQLite: уникальный
//! индекс по выражению `ifnull(agent_id, X'00')` — BLOB не равен никакому тексту.

use sea_orm_migration::sea_orm::DbBackend;

/// Имя потребителя журнала, который ведёт свёртки.
pub const FOLLOWER: &str = "rollups";

/// Единица усечения времени.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trunc {
    /// Минута.
    Minute,
    /// Час.
    Hour,
    /// Сутки (UTC).
    Day,
}

/// Начало минуты, часа или суток (UTC) для столбца времени `col`. PostgreSQL —
/// `date_trunc(…, 'UTC')`; SQLite — обрезка строки фиксированного формата хранения
/// с дополнением нулями (результат в том же формате и сравнивается как время).
pub fn trunc_sql(pg: bool, unit: Trunc, col: &str) -> String {
    match (pg, unit) {
        (true, Trunc::Minute) => format!("date_trunc('minute', {col}, 'UTC')"),
        (true, Trunc::Hour) => format!("date_trunc('hour', {col}, 'UTC')"),
        (true, Trunc::Day) => format!("date_trunc('day', {col}, 'UTC')"),
        (false, Trunc::Minute) => format!("(substr({col}, 1, 16) || ':00.000000Z')"),
        (false, Trunc::Hour) => format!("(substr({col}, 1, 13) || ':00:00.000000Z')"),
        (false, Trunc::Day) => format!("(substr({col}, 1, 10) || 'T00:00:00.000000Z')"),
    }
}

/// Модель события: `payload.model`, если это строка, иначе `unknown`.
pub fn model_sql(pg: bool) -> &'static str {
    if pg {
        "COALESCE(CASE WHEN jsonb_typeof(payload->'model') = 'string' THEN payload->>'model' END, 'unknown')"
    } else {
        "COALESCE(CASE WHEN json_type(payload, '$.model') = 'text' THEN json_extract(payload, '$.model') END, 'unknown')"
    }
}

/// Выражение «целое число токенов из ключа payload или 0». В сумму идут только
/// целые JSON-числа от 0 до 10^12 − 1 (не строки, не дробные): одинаково на обеих
/// базах, и мусор клиента не переполняет BIGINT суммы.
pub fn tokens_sql(pg: bool, key: &str) -> String {
    if pg {
        // Текстовая форма jsonb-числа `100.0` — «100.0»: дробные не проходят, как и на SQLite.
        format!(
            "CASE WHEN jsonb_typeof(payload->'{key}') = 'number' \
             AND (payload->>'{key}') ~ '^[0-9]{{1,12}}$' \
             THEN CAST(payload->>'{key}' AS BIGINT) ELSE 0 END"
        )
    } else {
        format!(
            "CASE WHEN json_type(payload, '$.{key}') = 'integer' \
             AND json_extract(payload, '$.{key}') BETWEEN 0 AND 999999999999 \
             THEN json_extract(payload, '$.{key}') ELSE 0 END"
        )
    }
}

/// Проекция строки `event_logs` в форму свёртки: `project_id, user_id, session_id,
/// hour, event_type, agent_id, tool_name, error_code, approval_status, model,
/// input_tokens, output_tokens, created_at`. Модель и токены — только у MODEL_CALL
/// (у остальных NULL и 0).
pub fn row_sql(pg: bool) -> String {
    format!(
        "project_id, user_id, session_id, {hour} AS hour, event_type, agent_id, tool_name, \
         error_code, approval_status, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {model} END AS model, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {input} ELSE 0 END AS input_tokens, \
         CASE WHEN event_type = 'MODEL_CALL' THEN {output} ELSE 0 END AS output_tokens, \
         created_at",
        hour = trunc_sql(pg, Trunc::Hour, "created_at"),
        model = model_sql(pg),
        input = tokens_sql(pg, "input_tokens"),
        output = tokens_sql(pg, "output_tokens"),
    )
}

/// Прибавить строки к свёрткам (потребитель, заполнение) или вычесть (очистка).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// Прибавить.
    Add,
    /// Вычесть (строки, уже учтённые в свёртках).
    Subtract,
}

/// Инструкция upsert свёртки по строкам `event_logs`: `head`, затем условия отбора
/// строк, каждое с префиксом ` AND ` (после `WHERE 1 = 1`), затем `tail`.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// Текст до условий отбора строк.
    pub head: String,
    /// Текст после условий.
    pub tail: String,
}

impl Upsert {
    /// Инструкция целиком с условиями `conditions` (без параметров).
    pub fn with(&self, conditions: &str) -> String {
        format!("{}{conditions}{}", self.head, self.tail)
    }
}

/// Условные счётчики аналитики: имя столбца и условие на событие. Одно определение
/// для сырого пути (каждая строка с весом 1), заполнения свёрток и их чтения.
pub const COUNTED: [(&str, &str); 6] = [
    ("errors", "error_code IS NOT NULL"),
    ("calls", "event_type = 'TOOL_REQUEST'"),
    ("req", "event_type = 'APPROVAL_REQUIRED'"),
    (
        "appr",
        "event_type = 'APPROVAL_RESOLVED' AND approval_status = 'APPROVED'",
    ),
    (
        "rej",
        "event_type = 'APPROVAL_RESOLVED' AND approval_status = 'REJECTED'",
    ),
    ("tmo", "event_type = 'APPROVAL_TIMEOUT'"),
];

/// Номер разреза моделей (имя — в `label`, см. модуль).
pub const MODEL_DIM: i16 = 6;

/// Разрезы `rollup_parts`: номер `dim` и значение `k` — выражение над строкой в
/// форме [`row_sql`] (NULL — строка в разрез не входит). Номера совпадают с
/// номерами разрезов ответа чтения (4 там — временной ряд по строкам итогов).
pub fn dims(pg: bool) -> [(i16, &'static str); 6] {
    [
        (0, "''"),
        (1, "event_type"),
        (2, "error_code"),
        (3, "tool_name"),
        (5, "agent_id"),
        (
            MODEL_DIM,
            if pg {
                "encode(sha256(convert_to(model, 'UTF8')), 'hex')"
            } else {
                "model"
            },
        ),
    ]
}

/// Столбцы сумм строки свёртки (кроме `last_at`) в порядке таблицы.
pub const SUMMED: [&str; 9] = [
    "n",
    "errors",
    "calls",
    "req",
    "appr",
    "rej",
    "tmo",
    "input_tokens",
    "output_tokens",
];

/// Счётчики одной сырой строки `event_logs` в форме строки свёртки: `1 AS n` и по
/// столбцу на условие [`COUNTED`] (1 или 0).
pub fn counters_sql() -> String {
    let mut s = "1 AS n".to_owned();
    for (name, cond) in COUNTED {
        s.push_str(&format!(", CASE WHEN {cond} THEN 1 ELSE 0 END AS {name}"));
    }
    s
}

/// `CASE WHEN l.lvl = 0 THEN e.user_id ELSE '' END` — ключ уровня пользователя
/// строки, размноженной на оба уровня (`l`).
fn user_key_sql() -> String {
    format!(
        "CASE WHEN l.lvl = 0 THEN e.user_id ELSE '{}' END",
        crate::ALL_USERS_KEY
    )
}

/// Две инструкции upsert (`rollup_parts`, затем `rollup_session_parts`) по строкам
/// `event_logs`, отобранным условиями. Каждая строка размножается на оба уровня
/// пользователя (свой и «все»), на час и сутки и на разрезы, затем один GROUP BY и
/// `ON CONFLICT DO UPDATE` со сложением сумм; при вычитании суммы входят со знаком
/// минус, а `last_at` не меняется (см. docs/architecture.md, «Analytics rollups»).
pub fn upserts(backend: DbBackend, delta: Delta) -> [Upsert; 2] {
    let pg = backend == DbBackend::Postgres;
    let s = if delta == Delta::Add { "" } else { "-" };
    let levels = "(SELECT 0 AS lvl UNION ALL SELECT 1) l";
    let src = |cols: &str| format!("FROM (SELECT {cols} FROM event_logs WHERE 1 = 1");
    let key_case: String = dims(pg)
        .iter()
        .map(|(d, k)| format!(" WHEN {d} THEN {k}"))
        .collect();
    let dims = dims(pg)
        .iter()
        .map(|(d, _)| format!("SELECT {d} AS dim"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let cols = SUMMED.join(", ");
    let sums: String = SUMMED.iter().map(|c| format!("{s}SUM({c}), ")).collect();
    let parts_target = "project_id, user_key, grain, slot, dim, k";
    let sessions_target = if pg {
        "project_id, user_key, hour, session_id, agent_id"
    } else {
        "project_id, user_key, hour, session_id, ifnull(agent_id, X'00')"
    };
    let set: String = SUMMED
        .iter()
        .map(|c| format!("{c} = rollup_parts.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let last_at = match (delta, pg) {
        (Delta::Subtract, _) => "",
        (Delta::Add, true) => ", last_at = GREATEST(rollup_parts.last_at, excluded.last_at)",
        (Delta::Add, false) => ", last_at = max(rollup_parts.last_at, excluded.last_at)",
    };
    let parts = Upsert {
        head: format!(
            "INSERT INTO rollup_parts (project_id, user_key, grain, slot, dim, k, label, {cols}, last_at) \
             SELECT project_id, user_key, grain, slot, dim, k, MAX(label), {sums}MAX(created_at) \
             FROM (SELECT e.project_id, {user_key} AS user_key, g.grain, \
             CASE WHEN g.grain = 0 THEN e.hour ELSE {day} END AS slot, d.dim, \
             CASE d.dim{key_case} END AS k, CASE WHEN d.dim = {MODEL_DIM} THEN model END AS label, \
             e.{ecols}, e.created_at \
             {rows}",
            user_key = user_key_sql(),
            day = trunc_sql(pg, Trunc::Day, "e.hour"),
            ecols = SUMMED.join(", e."),
            rows = src(&format!("{}, {}", row_sql(pg), counters_sql())),
        ),
        tail: format!(
            ") e CROSS JOIN {levels} CROSS JOIN (SELECT 0 AS grain UNION ALL SELECT 1) g \
             CROSS JOIN ({dims}) d) x WHERE k IS NOT NULL \
             GROUP BY project_id, user_key, grain, slot, dim, k \
             ON CONFLICT ({parts_target}) DO UPDATE SET {set}{last_at}"
        ),
    };
    let sessions = Upsert {
        head: format!(
            "INSERT INTO rollup_session_parts (project_id, user_key, hour, session_id, agent_id, n) \
             SELECT project_id, user_key, hour, session_id, agent_id, {s}COUNT(*) \
             FROM (SELECT e.project_id, {user_key} AS user_key, e.hour, e.session_id, \
             CASE WHEN a.whole = 1 THEN NULL ELSE e.agent_id END AS agent_id, a.whole \
             {rows}",
            user_key = user_key_sql(),
            rows = src(&format!(
                "project_id, user_id, session_id, agent_id, {} AS hour",
                trunc_sql(pg, Trunc::Hour, "created_at")
            )),
        ),
        tail: format!(
            ") e CROSS JOIN {levels} CROSS JOIN (SELECT 0 AS whole UNION ALL SELECT 1) a) x \
             WHERE whole = 1 OR agent_id IS NOT NULL \
             GROUP BY project_id, user_key, hour, session_id, agent_id \
             ON CONFLICT ({sessions_target}) DO UPDATE SET n = rollup_session_parts.n + excluded.n"
        ),
    };
    [parts, sessions]
}

/// Удаление опустевших групп (`n = 0`) после вычитания порции очистки: только в
/// ячейках строк порции (`event_logs`, чьи `seq` в `purge_chunk`), по ключу индекса.
pub fn purge_empty_sql(backend: DbBackend) -> [String; 2] {
    let pg = backend == DbBackend::Postgres;
    let hour = trunc_sql(pg, Trunc::Hour, "created_at");
    let day = trunc_sql(pg, Trunc::Day, "created_at");
    let all = crate::ALL_USERS_KEY;
    let chunk = "FROM event_logs WHERE seq IN (SELECT seq FROM purge_chunk)";
    [
        format!(
            "DELETE FROM rollup_parts WHERE n = 0 AND (project_id, user_key, grain, slot) IN \
             (SELECT project_id, user_id, 0, {hour} {chunk} UNION SELECT project_id, '{all}', 0, {hour} {chunk} \
             UNION SELECT project_id, user_id, 1, {day} {chunk} UNION SELECT project_id, '{all}', 1, {day} {chunk})"
        ),
        format!(
            "DELETE FROM rollup_session_parts WHERE n = 0 AND (project_id, user_key, hour) IN \
             (SELECT project_id, user_id, {hour} {chunk} UNION SELECT project_id, '{all}', {hour} {chunk})"
        ),
    ]
}

/// Таблицы узких свёрток (уникальные ключи служат и чтению: префикс
/// `(project_id, user_key, grain, slot)` / `(project_id, user_key, hour)`).
pub(crate) fn create_sql(backend: DbBackend) -> Vec<String> {
    let sums = |int: &str| -> String { SUMMED.iter().map(|c| format!("{c} {int} NOT NULL, ")).collect() };
    if backend == DbBackend::Postgres {
        vec![
            format!(
                "CREATE TABLE rollup_parts (
                    project_id uuid NOT NULL,
                    user_key varchar(128) NOT NULL,
                    grain smallint NOT NULL,
                    slot timestamptz NOT NULL,
                    dim smallint NOT NULL,
                    k varchar(128) NOT NULL,
                    label text,
                    {}last_at timestamptz NOT NULL,
                    CONSTRAINT rollup_parts_key UNIQUE (project_id, user_key, grain, slot, dim, k)
                        INCLUDE ({}, last_at)
                )",
                sums("bigint"),
                SUMMED.join(", ")
            ),
            "CREATE TABLE rollup_session_parts (
                project_id uuid NOT NULL,
                user_key varchar(128) NOT NULL,
                hour timestamptz NOT NULL,
                session_id uuid NOT NULL,
                agent_id varchar(128),
                n bigint NOT NULL,
                CONSTRAINT rollup_session_parts_key UNIQUE NULLS NOT DISTINCT
                    (project_id, user_key, hour, session_id, agent_id)
            )"
            .to_owned(),
        ]
    } else {
        vec![
            format!(
                "CREATE TABLE rollup_parts (
                    project_id TEXT NOT NULL,
                    user_key TEXT NOT NULL,
                    grain INTEGER NOT NULL,
                    slot TEXT NOT NULL,
                    dim INTEGER NOT NULL,
                    k TEXT NOT NULL,
                    label TEXT,
                    {}last_at TEXT NOT NULL
                )",
                sums("INTEGER")
            ),
            "CREATE TABLE rollup_session_parts (
                project_id TEXT NOT NULL,
                user_key TEXT NOT NULL,
                hour TEXT NOT NULL,
                session_id TEXT NOT NULL,
                agent_id TEXT,
                n INTEGER NOT NULL
            )"
            .to_owned(),
            "CREATE UNIQUE INDEX rollup_parts_key ON rollup_parts (project_id, user_key, grain, slot, dim, k)"
                .to_owned(),
            "CREATE UNIQUE INDEX rollup_session_parts_key ON rollup_session_parts \
             (project_id, user_key, hour, session_id, ifnull(agent_id, X'00'))"
                .to_owned(),
        ]
    }
}

/// Удаление таблиц узких свёрток.
pub(crate) fn drop_sql() -> [&'static str; 2] {
    [
        "DROP TABLE IF EXISTS rollup_session_parts",
        "DROP TABLE IF EXISTS rollup_parts",
    ]
}
