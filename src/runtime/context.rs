//! Контекст сессии и публикатор событий агентной среды.
//!
//! [`SessionContext`] говорит каждому компоненту, к какой сессии (пользователь,
//! проект, сессия) относится событие. [`Publisher`] — единственный путь, которым
//! компоненты среды отдают события: он оборачивает
//! [`StreamManager::broadcast_event`](crate::StreamManager::broadcast_event) и
//! считает опубликованные события по типам (это нужно демо и тестам).
//! [`AgentMode`] — режим работы (оркестрованный или прямой), который попадает в
//! нагрузку событий как ключ `mode`.
//!
//! Вызывают: все компоненты `runtime`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::StreamManager;
use crate::logger::LogError;
use crate::model::{EventType, NewEvent};

/// К какой сессии относятся события: пользователь (JWT `sub`), проект и сессия.
///
/// ```
/// use eventlog::model::EventType;
/// use eventlog::runtime::SessionContext;
/// use uuid::Uuid;
///
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let ev = ctx.event(EventType::TaskQueued);
/// assert_eq!(ev.user_id, "alice");
/// assert_eq!(ev.session_id, ctx.session_id);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionContext {
    /// Пользователь — владелец событий.
    pub user_id: String,
    /// Проект.
    pub project_id: Uuid,
    /// Сессия.
    pub session_id: Uuid,
}

impl SessionContext {
    /// Контекст существующей сессии.
    pub fn new(user_id: impl Into<String>, project_id: Uuid, session_id: Uuid) -> Self {
        Self {
            user_id: user_id.into(),
            project_id,
            session_id,
        }
    }

    /// Контекст новой сессии с идентификатором UUIDv7.
    pub fn new_session(user_id: impl Into<String>, project_id: Uuid) -> Self {
        Self::new(user_id, project_id, Uuid::now_v7())
    }

    /// Заготовка события этой сессии (остальные поля задаются построителем
    /// [`NewEvent`]).
    pub fn event(&self, event_type: EventType) -> NewEvent {
        NewEvent::new(self.session_id, self.user_id.clone(), self.project_id, event_type)
    }
}

/// Режим работы пространства пользователя; значение ключа `mode` в нагрузке.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Агента выбирает оркестратор ([`OrchestratorRouter`](super::OrchestratorRouter)).
    #[default]
    Orchestrated,
    /// Пользователь обращается к агенту напрямую.
    Direct,
}

impl AgentMode {
    /// Строковое значение (`orchestrated` или `direct`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orchestrated => "orchestrated",
            Self::Direct => "direct",
        }
    }
}

impl fmt::Display for AgentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Снимок счётчиков [`Publisher`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Принято в очередь записи, по типам каталога (в порядке [`EventType::ALL`]);
    /// типы с нулём не перечисляются.
    pub by_type: Vec<(EventType, u64)>,
    /// Событий вне каталога (компоненты среды их не испускают; для полноты).
    pub other: u64,
    /// Не принято: очередь писателя полна или логгер остановлен.
    pub dropped: u64,
}

impl PublishStats {
    /// Всего принято в очередь.
    pub fn total(&self) -> u64 {
        self.by_type.iter().map(|(_, n)| n).sum::<u64>() + self.other
    }

    /// Сколько принято событий типа `t`.
    pub fn count(&self, t: EventType) -> u64 {
        self.by_type.iter().find(|(x, _)| *x == t).map_or(0, |(_, n)| *n)
    }
}

/// Публикатор событий среды: дешёвый `Clone`-дескриптор поверх
/// [`StreamManager`], общий для компонентов, которые должны делить счётчики.
///
/// Публикация никогда не блокирует и не прерывает работу агента: если очередь
/// писателя полна или логгер остановлен, событие теряется, это пишется в журнал
/// (WARN) и учитывается в [`PublishStats::dropped`] (а логгер сам считает его в
/// метрике `eventlog_events_dropped_total`). Инструментирование не должно ронять
/// то, что оно наблюдает.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventlog::logger::LoggerConfig;
/// use eventlog::model::EventType;
/// use eventlog::runtime::{Publisher, SessionContext};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let publisher = Publisher::new(stream.clone());
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// publisher.publish(ctx.event(EventType::TaskQueued).agent("planner"));
/// assert_eq!(publisher.stats().count(EventType::TaskQueued), 1);
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Publisher {
    stream: StreamManager,
    counters: Arc<Counters>,
}

struct Counters {
    /// Индекс — позиция типа в [`EventType::ALL`].
    by_type: [AtomicU64; EventType::ALL.len()],
    other: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("stats", &self.stats()).finish()
    }
}

impl From<StreamManager> for Publisher {
    fn from(stream: StreamManager) -> Self {
        Self::new(stream)
    }
}

impl Publisher {
    /// Публикатор с собственными (нулевыми) счётчиками.
    pub fn new(stream: StreamManager) -> Self {
        Self {
            stream,
            counters: Arc::new(Counters {
                by_type: std::array::from_fn(|_| AtomicU64::new(0)),
                other: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Менеджер потока, через который идут события.
    pub fn stream(&self) -> &StreamManager {
        &self.stream
    }

    /// Отдаёт событие писателю, не блокируясь. Возвращает `true`, если событие
    /// принято в очередь; `false` — потеряно (см. описание типа).
    ///
    /// События среды не проходят проверку API, поэтому здесь — последний рубеж
    /// (см. [`enforce_event_limits`]): нагрузка не длиннее 64 КиБ, `error_code`
    /// по шаблону и не длиннее 64 символов, `agent_id`/`tool_name` не длиннее
    /// 128 символов, без символа NUL.
    pub fn publish(&self, mut event: NewEvent) -> bool {
        enforce_event_limits(&mut event);
        let idx = EventType::ALL.iter().position(|t| t.as_str() == event.event_type);
        match self.stream.broadcast_event(event) {
            Ok(()) => {
                match idx {
                    Some(i) => self.counters.by_type[i].fetch_add(1, Ordering::Relaxed),
                    None => self.counters.other.fetch_add(1, Ordering::Relaxed),
                };
                true
            }
            Err(err) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let (reason, ev) = match &err {
                    LogError::QueueFull(ev) => ("queue_full", ev),
                    LogError::Closed(ev) => ("closed", ev),
                    LogError::Invalid { event, .. } => ("invalid", event),
                };
                tracing::warn!(
                    reason,
                    event_type = %ev.event_type,
                    session_id = %ev.session_id,
                    "Runtime event was not accepted by the event logger."
                );
                false
            }
        }
    }

    /// Снимок счётчиков.
    pub fn stats(&self) -> PublishStats {
        let by_type = EventType::ALL
            .iter()
            .zip(self.counters.by_type.iter())
            .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        PublishStats {
            by_type,
            other: self.counters.other.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Предел сериализованной нагрузки события, байт (SPEC §2).
pub const MAX_EVENT_PAYLOAD_BYTES: usize = crate::model::validation::MAX_PAYLOAD_BYTES;

/// Предел `error_message` и `stack_trace` в нагрузке, байт.
pub const MAX_ERROR_TEXT_BYTES: usize = 8 * 1024;

/// Предел пользовательского текста (запрос, запрос к базе знаний) в нагрузке, байт.
pub const MAX_TEXT_BYTES: usize = 500;

/// Предел короткой строки из кода агента или инструмента (имя шага, задачи,
/// фактор риска, автор решения) в нагрузке, байт.
pub const MAX_NAME_BYTES: usize = 256;

/// Код ошибки по умолчанию, если исходный не годится даже после очистки.
const FALLBACK_ERROR_CODE: &str = "RUNTIME_ERROR";

/// Сколько байт нагрузки оставить под метки усечения (`payload_truncated`,
/// `payload_bytes`).
const TRUNCATION_MARKER_RESERVE: usize = 64;

/// Приводит `error_code` к виду колонки (`varchar(64)`): заглавные латинские
/// буквы, цифры и `_`, первая — буква, не длиннее
/// [`MAX_CODE_LEN`](crate::model::validation::MAX_CODE_LEN). Строчные буквы
/// поднимаются, прочие символы становятся `_`, ведущие не-буквы отбрасываются;
/// если ничего не осталось — `fallback`.
///
/// ```
/// use eventlog::runtime::context::sanitize_error_code;
/// assert_eq!(sanitize_error_code("upstream-unavailable", "TOOL_ERROR"), "UPSTREAM_UNAVAILABLE");
/// assert_eq!(sanitize_error_code("503", "TOOL_ERROR"), "TOOL_ERROR");
/// assert_eq!(sanitize_error_code(&"X".repeat(100), "TOOL_ERROR").len(), 64);
/// ```
pub fn sanitize_error_code(code: &str, fallback: &str) -> String {
    let max = crate::model::validation::MAX_CODE_LEN;
    let valid = code.len() <= max
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        return code.to_owned();
    }
    let cleaned: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .skip_while(|c| !c.is_ascii_uppercase())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned
    }
}

/// Строка не длиннее `max` байт (по границе символа); усечённая получает «…».
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_owned()
    } else {
        format!("{}…", truncate_str(s, max))
    }
}

/// Последний рубеж перед публикацией: приводит событие к пределам SPEC §2,
/// которые проверка API применяет к чужим событиям.
///
/// - `error_code` — [`sanitize_error_code`] (запасной код `RUNTIME_ERROR`);
/// - `agent_id`, `tool_name` — не длиннее 128 символов;
/// - символ NUL (PostgreSQL не хранит его в `jsonb`) в строках и ключах
///   нагрузки и в колонках заменяется на U+FFFD;
/// - нагрузка длиннее [`MAX_EVENT_PAYLOAD_BYTES`] ужимается: сначала длинные
///   строки (до 8 КиБ, 2 КиБ, 512 и 128 байт), затем длинные массивы и
///   объекты (до 16 элементов), в крайнем случае остаются только небольшие
///   ключи верхнего уровня. Ужатая нагрузка получает `payload_truncated: true`
///   и `payload_bytes` (исходный размер).
///
/// Компоненты среды сами усекают известные длинные поля; эта функция
/// страхует от того, что они упустили.
pub fn enforce_event_limits(event: &mut NewEvent) {
    use crate::model::validation::MAX_NAME_LEN;
    if let Some(code) = &event.error_code {
        let clean = sanitize_error_code(&scrub_nul(code), FALLBACK_ERROR_CODE);
        if &clean != code {
            event.error_code = Some(clean);
        }
    }
    for column in [&mut event.agent_id, &mut event.tool_name] {
        if let Some(v) = column
            && (v.contains('\0') || v.chars().count() > MAX_NAME_LEN)
        {
            *v = scrub_nul(v).chars().take(MAX_NAME_LEN).collect();
        }
    }
    scrub_nul_in_map(&mut event.payload);
    let size = serialized_len(&event.payload);
    if size > MAX_EVENT_PAYLOAD_BYTES {
        shrink_payload(&mut event.payload, size);
        tracing::debug!(
            event_type = %event.event_type,
            original_bytes = size,
            "Oversized runtime event payload was truncated."
        );
    }
}

fn scrub_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn scrub_nul_in_map(map: &mut Map<String, Value>) {
    if map.keys().any(|k| k.contains('\0')) {
        let old = std::mem::take(map);
        for (k, v) in old {
            map.insert(scrub_nul(&k), v);
        }
    }
    for v in map.values_mut() {
        scrub_nul_in_value(v);
    }
}

fn scrub_nul_in_value(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = scrub_nul(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul_in_value),
        Value::Object(map) => scrub_nul_in_map(map),
        _ => {}
    }
}

/// Длина сериализации без выделения памяти под текст.
fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Запись в счётчик не ошибается, а `Map<String, Value>` сериализуется всегда.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Ужимает нагрузку до [`MAX_EVENT_PAYLOAD_BYTES`] (см. [`enforce_event_limits`]).
fn shrink_payload(payload: &mut Map<String, Value>, original: usize) {
    let budget = MAX_EVENT_PAYLOAD_BYTES - TRUNCATION_MARKER_RESERVE;
    let fits = |p: &Map<String, Value>| serialized_len(p) <= budget;
    let mark = |p: &mut Map<String, Value>| {
        p.insert("payload_truncated".into(), Value::Bool(true));
        p.insert("payload_bytes".into(), json!(original));
    };
    for limit in [8 * 1024, 2 * 1024, 512, 128] {
        for v in payload.values_mut() {
            clip_strings(v, limit);
        }
        if fits(payload) {
            mark(payload);
            return;
        }
    }
    for v in payload.values_mut() {
        clip_containers(v, 16);
    }
    if !fits(payload) {
        // Крайний случай: ключи верхнего уровня по порядку, пока влезают;
        // большие значения (и огромные ключи) выбрасываются.
        let old = std::mem::take(payload);
        let mut used = 2;
        for (k, v) in old {
            let entry = serialized_len(&k) + 1 + serialized_len(&v) + 1;
            if entry <= 256 && used + entry <= budget {
                used += entry;
                payload.insert(k, v);
            }
        }
    }
    mark(payload);
}

fn clip_strings(v: &mut Value, limit: usize) {
    match v {
        Value::String(s) if s.len() > limit => *s = clip(s, limit),
        Value::Array(items) => items.iter_mut().for_each(|i| clip_strings(i, limit)),
        Value::Object(map) => map.values_mut().for_each(|i| clip_strings(i, limit)),
        _ => {}
    }
}

fn clip_containers(v: &mut Value, limit: usize) {
    match v {
        Value::Array(items) => {
            items.truncate(limit);
            items.iter_mut().for_each(|i| clip_containers(i, limit));
        }
        Value::Object(map) => {
            if map.len() > limit {
                let keep: Map<String, Value> = std::mem::take(map).into_iter().take(limit).collect();
                *map = keep;
            }
            map.values_mut().for_each(|i| clip_containers(i, limit));
        }
        _ => {}
    }
}

/// Обрезает строку до `max` байт по границе символа.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Миллисекунды длительности (насыщаясь на `u64::MAX`).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Текст паники из её полезной нагрузки.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Трасса для ключа `stack_trace`: логические кадры среды (что вызывало что) и,
/// если сбор включён (`RUST_BACKTRACE`), backtrace места, где ошибку поймали.
pub(crate) fn stack_trace(frames: &[String]) -> String {
    let mut out = frames.join("\n");
    let bt = std::backtrace::Backtrace::capture();
    if bt.status() == std::backtrace::BacktraceStatus::Captured {
        out.push_str("\ncaptured at:\n");
        out.push_str(&bt.to_string());
    }
    out
}

/// Стабильный (не зависящий от версии Rust) 64-битный хеш FNV-1a: на нём
/// построены детерминированные решения встроенных агентов, инструментов и демо.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Разделитель частей, чтобы ("ab","c") ≠ ("a","bc").
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Финальное перемешивание (splitmix64), чтобы младшие биты были равномерны.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Равномерное число в [0, 1) из хеша.
pub(crate) fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_str_respects_char_boundaries() {
        assert_eq!(truncate_str("привет", 3), "п");
        assert_eq!(truncate_str("abc", 10), "abc");
        assert_eq!(truncate_str("abc", 2), "ab");
    }

    #[test]
    fn stable_hash_is_stable_and_separates_parts() {
        assert_eq!(stable_hash(&[b"abc"]), stable_hash(&[b"abc"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        let u = unit_interval(stable_hash(&[b"x"]));
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let a: Box<dyn std::any::Any + Send> = Box::new("boom");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        let c: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(a.as_ref()), "boom");
        assert_eq!(panic_message(b.as_ref()), "bang");
        assert_eq!(panic_message(c.as_ref()), "non-string panic payload");
    }

    fn event_with(payload: Value) -> NewEvent {
        SessionContext::new_session("alice", Uuid::now_v7())
            .event(EventType::Error)
            .payload(payload)
    }

    fn size(e: &NewEvent) -> usize {
        serde_json::to_string(&e.payload).unwrap().len()
    }

    #[test]
    fn small_valid_events_are_left_untouched() {
        let original = event_with(json!({"error_message": "boom", "n": 1, "list": [1, 2, 3]}))
            .error_code("TOOL_PANIC")
            .agent("agent-1")
            .tool("calculator");
        let mut e = original.clone();
        enforce_event_limits(&mut e);
        assert_eq!(e, original);
        assert_eq!(serialized_len(&e.payload), size(&e));
    }

    #[test]
    fn oversized_strings_are_truncated_and_marked() {
        // Arrange: 200 КиБ в одной строке и много средних строк.
        let mut e = event_with(json!({
            "error_message": "m".repeat(200 * 1024),
            "source": "tool_executor",
            "nested": { "items": vec!["x".repeat(3000); 30] },
        }));
        let original = size(&e);

        // Act
        enforce_event_limits(&mut e);

        // Assert
        assert!(size(&e) <= MAX_EVENT_PAYLOAD_BYTES, "{}", size(&e));
        assert_eq!(e.payload["payload_truncated"], true);
        assert_eq!(e.payload["payload_bytes"], json!(original));
        assert_eq!(e.payload["source"], "tool_executor", "small keys survive");
        assert!(e.payload["error_message"].as_str().unwrap().ends_with('…'));
        assert_eq!(e.payload["nested"]["items"].as_array().unwrap().len(), 30);
    }

    #[test]
    fn huge_arrays_and_key_counts_are_cut_to_fit() {
        let many_keys: Map<String, Value> = (0..20_000).map(|i| (format!("key_{i:05}"), json!(i))).collect();
        let cases = [
            json!({ "steps": vec![json!({"step": 1, "name": "s"}); 50_000], "plan_id": "p" }),
            Value::Object(many_keys),
            json!({ "x".repeat(100_000): 1, "status": "error" }),
        ];
        for payload in cases {
            let mut e = event_with(payload);
            enforce_event_limits(&mut e);
            assert!(size(&e) <= MAX_EVENT_PAYLOAD_BYTES, "{}", size(&e));
            assert_eq!(e.payload["payload_truncated"], true);
        }
    }

    #[test]
    fn columns_are_brought_to_their_limits_and_nul_is_replaced() {
        let mut e = event_with(json!({"query": "a\u{0}b", "k\u{0}": ["\u{0}"]}))
            .error_code("not a valid code!")
            .agent("a".repeat(300))
            .tool("t\u{0}");
        enforce_event_limits(&mut e);
        assert_eq!(e.error_code.as_deref(), Some("NOT_A_VALID_CODE_"));
        assert_eq!(e.agent_id.as_ref().unwrap().chars().count(), 128);
        assert_eq!(e.tool_name.as_deref(), Some("t\u{FFFD}"));
        assert_eq!(e.payload["query"], "a\u{FFFD}b");
        assert_eq!(e.payload["k\u{FFFD}"], json!(["\u{FFFD}"]));
        let mut bad = event_with(json!({})).error_code("???");
        enforce_event_limits(&mut bad);
        assert_eq!(bad.error_code.as_deref(), Some("RUNTIME_ERROR"));
        let now = chrono::Utc::now();
        assert_eq!(crate::model::validation::validate(&e, now), Ok(()));
    }

    #[test]
    fn clip_marks_truncated_strings() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("привет", 3), "п…");
    }
}
