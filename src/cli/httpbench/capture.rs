//! Инструкции, которые сервер отправил базе, из журнала PostgreSQL.
//!
//! При `log_min_duration_statement = 0` PostgreSQL пишет каждую выполненную
//! инструкцию: `duration: … ms  execute <имя>: SQL` (расширенный протокол, с
//! последующей строкой `DETAIL:  parameters: $1 = '…', …`) или
//! `duration: … ms  statement: SQL` (простой). Журнал разбирается по префиксу
//! `%m [%p] %q%u@%d ` (Debian по умолчанию). Запросы разделяются маркерами —
//! инструкциями `SELECT 'httpbench-marker-N'`, которые прогон выполняет между
//! запросами к серверу по одному. Значения параметров подставляются литералами,
//! пригодными для скрипта pgbench (см. [`literal`]).

use std::sync::LazyLock;

use regex::Regex;

/// Текст маркера.
pub const MARKER: &str = "httpbench-marker-";

/// Запись журнала.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Процесс.
    pub pid: u32,
    /// База (нет у фоновых процессов).
    pub db: Option<String>,
    /// Уровень: LOG, DETAIL, ERROR…
    pub level: String,
    /// Текст (с продолжениями строк).
    pub message: String,
    /// Следующая за ней запись DETAIL того же процесса.
    pub detail: Option<String>,
}

static LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (?:(\S*)@(\S*) )?([A-Z0-9]+):  (.*)$",
    )
    .expect("регулярное выражение корректно")
});

/// Разбирает журнал; DETAIL присоединяется к предыдущей записи того же процесса.
pub fn parse_log(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    // Куда дописывать строки-продолжения: (индекс записи, в detail ли).
    let mut open: Option<(usize, bool)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('\t') {
            if let Some((i, in_detail)) = open {
                let target = if in_detail {
                    out[i].detail.get_or_insert_with(String::new)
                } else {
                    &mut out[i].message
                };
                target.push('\n');
                target.push_str(rest);
            }
            continue;
        }
        let Some(c) = LINE.captures(line) else {
            open = None;
            continue;
        };
        let pid: u32 = c[1].parse().unwrap_or(0);
        let level = c[4].to_owned();
        let message = c[5].to_owned();
        if level == "DETAIL"
            && let Some(i) = out.iter().rposition(|e| e.pid == pid)
            && out[i].detail.is_none()
        {
            out[i].detail = Some(message);
            open = Some((i, true));
            continue;
        }
        out.push(Entry {
            pid,
            db: c.get(3).map(|m| m.as_str().to_owned()),
            level,
            message,
            detail: None,
        });
        open = Some((out.len() - 1, false));
    }
    out
}

/// SQL выполненной инструкции из записи `duration: …` (без parse и bind).
fn executed_sql(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("duration: ")?;
    let (_, what) = rest.split_once(" ms  ")?;
    if let Some(sql) = what.strip_prefix("statement: ") {
        return Some(sql);
    }
    let named = what.strip_prefix("execute ")?;
    if named.starts_with("fetch from ") {
        return None;
    }
    named.split_once(": ").map(|(_, sql)| sql)
}

/// Значения из `parameters: $1 = '…', $2 = NULL` (None — NULL).
pub fn parse_parameters(detail: &str) -> Vec<Option<String>> {
    let Some(list) = detail.strip_prefix("parameters: ") else {
        return Vec::new();
    };
    let b = list.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // `$N = `
        let Some(eq) = list[i..].find(" = ") else { break };
        i += eq + 3;
        if list[i..].starts_with("NULL") {
            out.push(None);
            i += 4;
        } else if b.get(i) == Some(&b'\'') {
            i += 1;
            let mut v = String::new();
            let mut start = i;
            loop {
                match list[i..].find('\'') {
                    Some(q) if list[i + q + 1..].starts_with('\'') => {
                        v.push_str(&list[start..i + q + 1]);
                        i += q + 2;
                        start = i;
                    }
                    Some(q) => {
                        v.push_str(&list[start..i + q]);
                        i += q + 1;
                        break;
                    }
                    None => {
                        v.push_str(&list[start..]);
                        i = b.len();
                        break;
                    }
                }
            }
            out.push(Some(v));
        } else {
            break;
        }
        // `, `
        i += 2;
    }
    out
}

/// Литерал значения для скрипта pgbench. pgbench подставляет переменные
/// `:имя` даже внутри строк (в `-M prepared` — и несуществующие, с ошибкой при
/// выполнении), поэтому двоеточие записывается escape-строкой `E'…\072…'`. Тип
/// литерала — unknown, как у параметра: PostgreSQL выводит его из контекста.
pub fn literal(value: &str) -> String {
    if value.contains([':', '\\']) {
        let mut s = String::from("E'");
        for ch in value.chars() {
            match ch {
                '\\' => s.push_str("\\\\"),
                '\'' => s.push_str("\\'"),
                ':' => s.push_str("\\072"),
                c => s.push(c),
            }
        }
        s.push('\'');
        s
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Подставляет `$N` вне строк и идентификаторов в кавычках.
pub fn substitute(sql: &str, params: &[Option<String>]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, ch)) = chars.next() {
        match quote {
            Some(q) => {
                out.push(ch);
                if ch == q {
                    quote = None;
                }
            }
            None if ch == '\'' || ch == '"' => {
                quote = Some(ch);
                out.push(ch);
            }
            None if ch == '$' && chars.peek().is_some_and(|(_, c)| c.is_ascii_digit()) => {
                let mut n = 0usize;
                while let Some((_, d)) = chars.peek().copied().filter(|(_, c)| c.is_ascii_digit()) {
                    n = n * 10 + d.to_digit(10).unwrap_or(0) as usize;
                    chars.next();
                }
                match params.get(n.wrapping_sub(1)) {
                    Some(Some(v)) => out.push_str(&literal(v)),
                    Some(None) => out.push_str("NULL"),
                    None => {
                        out.push('$');
                        out.push_str(&n.to_string());
                    }
                }
            }
            None => out.push(ch),
        }
    }
    out
}

/// Инструкции запросов базы `db`: `i`-й элемент — то, что выполнено между
/// маркерами `i` и `i + 1`, с подставленными параметрами. Инструкции процесса
/// маркеров не входят. Сервер может выполнять части запроса параллельно на
/// нескольких соединениях (аналитика — две транзакции сразу): инструкции
/// сгруппированы по процессу в порядке его первой инструкции, внутри процесса —
/// по порядку, так что каждая транзакция остаётся целой при последовательном
/// выполнении.
pub fn requests(entries: &[Entry], db: &str) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<(u32, String)>> = Vec::new();
    let mut marker_pid = None;
    for e in entries {
        if e.level != "LOG" || e.db.as_deref() != Some(db) {
            continue;
        }
        let Some(sql) = executed_sql(&e.message) else {
            continue;
        };
        if sql.contains(MARKER) {
            marker_pid = Some(e.pid);
            groups.push(Vec::new());
            continue;
        }
        if Some(e.pid) == marker_pid {
            continue;
        }
        let Some(group) = groups.last_mut() else { continue };
        let params = e.detail.as_deref().map(parse_parameters).unwrap_or_default();
        group.push((e.pid, substitute(sql, &params)));
    }
    // После последнего маркера запросов нет: он закрывает предпоследний.
    groups.pop();
    groups
        .into_iter()
        .map(|group| {
            let mut pids: Vec<u32> = Vec::new();
            for (pid, _) in &group {
                if !pids.contains(pid) {
                    pids.push(*pid);
                }
            }
            // Сортировка устойчива: порядок внутри процесса сохраняется.
            let mut group = group;
            group.sort_by_key(|(pid, _)| pids.iter().position(|p| p == pid));
            group.into_iter().map(|(_, sql)| sql).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-04 18:52:51.093 UTC [100] postgres@bench LOG:  duration: 0.020 ms  statement: SELECT 'httpbench-marker-0'
2026-12-04 18:52:51.094 UTC [200] postgres@bench LOG:  duration: 0.010 ms  parse sqlx_s_1: SELECT * FROM event_logs WHERE project_id = $1
2026-12-04 18:52:51.094 UTC [200] postgres@bench LOG:  duration: 0.010 ms  bind sqlx_s_1: SELECT * FROM event_logs WHERE project_id = $1
2026-12-04 18:52:51.094 UTC [200] postgres@bench DETAIL:  parameters: $1 = 'p1'
2026-12-04 18:52:51.095 UTC [200] postgres@bench LOG:  duration: 0.300 ms  execute sqlx_s_1: SELECT *
\tFROM event_logs WHERE project_id = $1 AND created_at < $2 AND note = 'a$1' LIMIT $3
2026-12-04 18:52:51.095 UTC [200] postgres@bench DETAIL:  parameters: $1 = 'p''1', $2 = '2026-01-01 00:00:00+00', $3 = '51'
2026-12-04 18:52:51.096 UTC [300] postgres@other LOG:  duration: 0.300 ms  statement: SELECT 42
2026-12-04 18:52:51.096 UTC [2225] LOG:  checkpoint starting: time
2026-12-04 18:52:51.097 UTC [100] postgres@bench LOG:  duration: 0.020 ms  statement: SELECT 'httpbench-marker-1'
2026-12-04 18:52:51.098 UTC [201] postgres@bench LOG:  duration: 0.100 ms  execute <unnamed>: SELECT count(*) FROM t WHERE a = ANY($1) AND b IS NULL
2026-12-04 18:52:51.098 UTC [201] postgres@bench DETAIL:  parameters: $1 = '{TOOL_REQUEST}'
2026-12-04 18:52:51.098 UTC [202] postgres@bench LOG:  duration: 0.010 ms  execute <unnamed>: BEGIN
2026-12-04 18:52:51.099 UTC [201] postgres@bench LOG:  duration: 0.100 ms  execute <unnamed>: SELECT $1, $2
2026-12-04 18:52:51.099 UTC [201] postgres@bench DETAIL:  parameters: $1 = NULL, $2 = 'x, $3 = y'
2026-12-04 18:52:51.099 UTC [202] postgres@bench LOG:  duration: 0.010 ms  execute <unnamed>: COMMIT
2026-12-04 18:52:51.100 UTC [100] postgres@bench LOG:  duration: 0.020 ms  statement: SELECT 'httpbench-marker-2'
";

    #[test]
    fn splits_requests_and_substitutes_parameters() {
        let got = requests(&parse_log(LOG), "bench");
        assert_eq!(
            got,
            vec![
                vec![
                    "SELECT *\nFROM event_logs WHERE project_id = 'p''1' AND created_at < \
                     E'2026-01-01 00\\07200\\07200+00' AND note = 'a$1' LIMIT '51'"
                        .to_owned()
                ],
                vec![
                    "SELECT count(*) FROM t WHERE a = ANY('{TOOL_REQUEST}') AND b IS NULL".to_owned(),
                    "SELECT NULL, 'x, $3 = y'".to_owned(),
                    "BEGIN".to_owned(),
                    "COMMIT".to_owned(),
                ],
            ]
        );
    }

    #[test]
    fn literals_never_contain_a_colon_or_a_bare_quote() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b:c'd"), r"E'a\\b\072c\'d'");
        assert_eq!(
            parse_parameters("parameters: $1 = '', $2 = NULL"),
            vec![Some(String::new()), None]
        );
        assert_eq!(
            substitute("SELECT $10, $1", &[Some("a".into())]),
            "SELECT $10, 'a'"
        );
    }
}
