//! Сборка SQL с параметрами для обеих баз и компиляция [`ReadScope`],
//! [`EventFilter`] и позиций курсоров в условия `WHERE`.
//!
//! Это единственный перевод фильтра и области доступа в SQL: страницы, сессии,
//! аналитика и повтор подписок берут условия только отсюда. Свой маленький
//! построитель вместо sea_query: `payloadContains` на SQLite и временные корзины
//! всё равно требуют диалектного SQL, а здесь он виден целиком.

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, Statement, Value};
use serde_json::Value as Json;
use uuid::Uuid;

use super::sessions::SummaryPredicate;
use crate::query::{EventFilter, ReadScope};

/// Формат времени в SQLite: фиксированная ширина, поэтому строки сравниваются
/// и сортируются так же, как моменты времени.
pub(crate) const SQLITE_TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// SQL-текст с привязанными значениями; плейсхолдеры в стиле нужной базы.
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
    aliases: usize,
}

impl Sql {
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::with_capacity(256),
            values: Vec::new(),
            aliases: 0,
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    /// Добавляет текст SQL как есть.
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Добавляет плейсхолдер и привязывает значение.
    pub(crate) fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        if self.is_pg() {
            self.text.push('$');
            self.text.push_str(&self.values.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Привязывает UUID: uuid на PostgreSQL, текст на SQLite.
    pub(crate) fn bind_uuid(&mut self, u: Uuid) -> &mut Self {
        if self.is_pg() {
            self.bind(u)
        } else {
            self.bind(u.to_string())
        }
    }

    /// Привязывает момент времени: timestamptz на PostgreSQL, текст фиксированной
    /// ширины на SQLite.
    pub(crate) fn bind_ts(&mut self, t: DateTime<Utc>) -> &mut Self {
        if self.is_pg() {
            self.bind(t)
        } else {
            self.bind(t.format(SQLITE_TS_FORMAT).to_string())
        }
    }

    /// Привязывает список через запятую.
    pub(crate) fn bind_list<T: Clone + Into<Value>>(&mut self, items: &[T]) -> &mut Self {
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(it.clone());
        }
        self
    }

    /// Готовая инструкция для SeaORM.
    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }

    fn next_alias(&mut self) -> String {
        self.aliases += 1;
        format!("j{}", self.aliases)
    }

    /// `project_id = ? [AND user_id = ?]` — изоляция. Вызывается в каждом запросе
    /// чтения; без неё запрос не собирается (все функции чтения принимают `ReadScope`).
    pub(crate) fn push_scope(&mut self, scope: &ReadScope) -> &mut Self {
        self.push("project_id = ").bind_uuid(scope.project_id);
        if let Some(user) = &scope.user_id {
            self.push(" AND user_id = ").bind(user.clone());
        }
        self
    }

    /// `{a}.project_id = ? AND {a}.user_key = ?` — область для строк сводок сессий
    /// (`session_summaries` под псевдонимом `a`): строки пользователя области или,
    /// для администратора, строки «все пользователи».
    pub(crate) fn push_summary_scope(&mut self, a: &str, scope: &ReadScope) -> &mut Self {
        self.push(a).push(".project_id = ").bind_uuid(scope.project_id);
        let key = scope.user_id.as_deref().unwrap_or(migration::ALL_USERS_KEY);
        self.push(" AND ")
            .push(a)
            .push(".user_key = ")
            .bind(key.to_owned())
    }

    /// Условие ` AND …` членства сессии по строке сводки `a` (см. [`SummaryPredicate`];
    /// та же семантика в памяти — `SummaryPredicate::matches`).
    pub(crate) fn push_summary_predicate(&mut self, a: &str, p: &SummaryPredicate) -> &mut Self {
        match p {
            SummaryPredicate::Any => self,
            SummaryPredicate::LastFrom(t) => {
                self.push(" AND ").push(a).push(".last_event_at >= ").bind_ts(*t)
            }
            SummaryPredicate::FirstBefore(t) => {
                self.push(" AND ").push(a).push(".first_event_at < ").bind_ts(*t)
            }
            SummaryPredicate::HasError(true) => self.push(" AND ").push(a).push(".errors > 0"),
            SummaryPredicate::HasError(false) => self
                .push(" AND ")
                .push(a)
                .push(".events > ")
                .push(a)
                .push(".errors"),
            SummaryPredicate::Agents(list) => self
                .push(" AND EXISTS (SELECT 1 FROM session_summary_agents g WHERE g.project_id = ")
                .push(a)
                .push(".project_id AND g.session_id = ")
                .push(a)
                .push(".session_id AND g.user_key = ")
                .push(a)
                .push(".user_key AND g.agent_id IN (")
                .bind_list(list)
                .push("))"),
        }
    }

    /// Условия фильтра, каждое с префиксом ` AND `.
    pub(crate) fn push_filter(&mut self, f: &EventFilter) -> &mut Self {
        fn list(sql: &mut Sql, col: &str, items: &Option<Vec<String>>) {
            match items {
                None => {}
                // Пустой список не пропускает ничего — как и `matches` в памяти.
                Some(v) if v.is_empty() => {
                    sql.push(" AND 1 = 0");
                }
                Some(v) => {
                    sql.push(" AND ").push(col).push(" IN (").bind_list(v).push(")");
                }
            }
        }
        fn eq(sql: &mut Sql, col: &str, v: &Option<String>) {
            if let Some(v) = v {
                sql.push(" AND ").push(col).push(" = ").bind(v.clone());
            }
        }
        list(self, "event_type", &f.event_types);
        list(self, "agent_id", &f.agent_ids);
        if let Some(s) = f.session_id {
            self.push(" AND session_id = ").bind_uuid(s);
        }
        eq(self, "user_id", &f.user_id);
        eq(self, "tool_name", &f.tool_name);
        eq(self, "error_code", &f.error_code);
        eq(self, "approval_status", &f.approval_status);
        match f.has_error {
            Some(true) => {
                self.push(" AND error_code IS NOT NULL");
            }
            Some(false) => {
                self.push(" AND error_code IS NULL");
            }
            None => {}
        }
        if let Some(t) = f.from {
            self.push(" AND created_at >= ").bind_ts(t);
        }
        if let Some(t) = f.to {
            self.push(" AND created_at < ").bind_ts(t);
        }
        if let Some(p) = &f.payload_contains {
            self.push(" AND ");
            if self.is_pg() {
                self.push("payload @> ").bind(p.clone());
            } else {
                self.push_contains_sqlite(Source::Root("payload"), p);
            }
        }
        self
    }

    /// ` AND {col} >= lo AND {col} < hi` — полуоткрытый интервал времени по столбцу
    /// `col`; `None` — без границы с этой стороны.
    pub(crate) fn push_range(
        &mut self,
        col: &str,
        lo: Option<DateTime<Utc>>,
        hi: Option<DateTime<Utc>>,
    ) -> &mut Self {
        if let Some(lo) = lo {
            self.push(" AND ").push(col).push(" >= ").bind_ts(lo);
        }
        if let Some(hi) = hi {
            self.push(" AND ").push(col).push(" < ").bind_ts(hi);
        }
        self
    }

    /// Семантика `jsonb @>` для SQLite через json_type/json_each (та же, что
    /// `query::json_contains` в памяти). `src` — где лежит проверяемое значение:
    /// корень JSON-текста или строка json_each с колонками type/value.
    fn push_contains_sqlite(&mut self, src: Source<'_>, pattern: &Json) {
        let (ty, text) = match &src {
            Source::Root(expr) => (format!("json_type({expr})"), (*expr).to_owned()),
            Source::Each(a) => (format!("{a}.type"), format!("{a}.value")),
        };
        let value = match &src {
            Source::Root(expr) => format!("json_extract({expr}, '$')"),
            Source::Each(a) => format!("{a}.value"),
        };
        self.push("(");
        match pattern {
            Json::Object(map) => {
                self.push(&ty).push(" = 'object'");
                for (k, v) in map {
                    let a = self.next_alias();
                    self.push(" AND EXISTS (SELECT 1 FROM json_each(")
                        .push(&text)
                        .push(") AS ")
                        .push(&a)
                        .push(" WHERE ")
                        .push(&a)
                        .push(".key = ")
                        .bind(k.clone())
                        .push(" AND ");
                    self.push_contains_sqlite(Source::Each(&a), v);
                    self.push(")");
                }
            }
            Json::Array(items) => {
                self.push(&ty).push(" = 'array'");
                for v in items {
                    let a = self.next_alias();
                    self.push(" AND EXISTS (SELECT 1 FROM json_each(")
                        .push(&text)
                        .push(") AS ")
                        .push(&a)
                        .push(" WHERE ");
                    self.push_contains_sqlite(Source::Each(&a), v);
                    self.push(")");
                }
            }
            Json::String(s) => {
                self.push(&ty)
                    .push(" = 'text' AND ")
                    .push(&value)
                    .push(" = ")
                    .bind(s.clone());
            }
            Json::Number(n) => {
                self.push(&ty)
                    .push(" IN ('integer', 'real') AND ")
                    .push(&value)
                    .push(" = ");
                match n.as_i64() {
                    Some(i) => self.bind(i),
                    None => self.bind(n.as_f64().unwrap_or(f64::NAN)),
                };
            }
            Json::Bool(b) => {
                self.push(&ty).push(if *b { " = 'true'" } else { " = 'false'" });
            }
            Json::Null => {
                self.push(&ty).push(" = 'null'");
            }
        }
        self.push(")");
    }
}

enum Source<'a> {
    Root(&'a str),
    Each(&'a str),
}
