//! Отображение спанов и записей журнала OTLP в события каталога (таблица — в
//! docs/otlp.md). Чистые функции: вход — прочитанный запрос, вызывающий и то,
//! что память трасс знает о трассах; выход — проверенные события и отказы.
//!
//! Порядок работы: [`collect_spans`] назначает каждому спану проект и
//! пользователя, [`plan_traces`] собирает по трассам разговор и узлы (их
//! учитывает [`super::session::SessionMemory`]), [`map_spans`] строит события.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::attrs::{self, first_int, first_text, text};
use super::session::{Node, TraceKey, TraceView};
use super::{ExportLogsServiceRequest, ExportTraceServiceRequest, Limits, ids};
use crate::model::validation::{MAX_CODE_LEN, MAX_NAME_LEN, validate};
use crate::model::{EventType, NewEvent, truncate_to_micros};
use crate::query::{Principal, Role};

/// Атрибут ресурса с проектом.
pub const PROJECT_ATTR: &str = "eventlog.project_id";
/// Атрибуты с пользователем (для сервисных токенов), по порядку.
pub const USER_ATTRS: [&str; 2] = ["user.id", "enduser.id"];
/// Атрибуты разговора, по порядку.
pub const CONVERSATION_ATTRS: [&str; 2] = ["gen_ai.conversation.id", "session.id"];

/// Спан с назначенными проектом и пользователем.
#[derive(Debug, Clone)]
pub struct SpanInput<'a> {
    /// Проект.
    pub project_id: Uuid,
    /// Пользователь-владелец событий.
    pub user_id: String,
    /// Атрибуты ресурса.
    pub resource: &'a [KeyValue],
    /// Область инструментирования.
    pub scope: Option<&'a InstrumentationScope>,
    /// Спан.
    pub span: &'a Span,
}

impl SpanInput<'_> {
    /// Ключ трассы спана.
    pub fn key(&self) -> TraceKey {
        TraceKey {
            project_id: self.project_id,
            user_id: self.user_id.clone(),
            trace_id: self.span.trace_id.clone(),
        }
    }
}

/// Результат отображения: события (проверенные) и отказы с причинами.
#[derive(Debug, Default)]
pub struct Mapped {
    /// События в порядке (время, id).
    pub events: Vec<NewEvent>,
    /// Отвергнуто элементов (спанов или записей).
    pub rejected: usize,
    /// Причины отказов (первые несколько идут клиенту).
    pub messages: Vec<String>,
    /// Принято спанов без операции GenAI и без ошибки: событий они не дают.
    pub without_event: usize,
}

/// Проект ресурса: заголовок `x-eventlog-project`, затем атрибут ресурса
/// `eventlog.project_id`, затем единственный проект токена.
pub fn resolve_project(
    principal: &Principal,
    header: Option<Uuid>,
    resource: &[KeyValue],
) -> Result<Uuid, String> {
    if let Some(p) = header {
        return Ok(p);
    }
    if let Some(s) = text(resource, PROJECT_ATTR) {
        return Uuid::parse_str(&s).map_err(|_| format!("resource attribute {PROJECT_ATTR}: must be a UUID"));
    }
    match principal.projects.as_deref() {
        Some([only]) => Ok(*only),
        _ => Err(format!(
            "project: name it with the x-eventlog-project header or the resource attribute {PROJECT_ATTR} \
             (the token has more than one project or none)"
        )),
    }
}

/// Владелец событий элемента по таблице ролей: сервис называет пользователя
/// атрибутом `user.id` / `enduser.id` (элемента, затем ресурса), остальные пишут за себя.
pub fn resolve_user(
    principal: &Principal,
    project_id: Uuid,
    attrs: &[KeyValue],
    resource: &[KeyValue],
) -> Result<String, String> {
    let requested = match principal.role {
        Role::Service => Some(
            first_text(attrs, &USER_ATTRS)
                .or_else(|| first_text(resource, &USER_ATTRS))
                .ok_or_else(|| {
                    "user.id: service tokens must name the user (attribute user.id or enduser.id)".to_owned()
                })?,
        ),
        _ => None,
    };
    principal
        .ingest_user(project_id, requested.as_deref())
        .map_err(|e| e.to_string())
}

/// Назначает спанам проект и пользователя; спаны, которым их не назначить, отвергаются.
pub fn collect_spans<'a>(
    req: &'a ExportTraceServiceRequest,
    principal: &Principal,
    header_project: Option<Uuid>,
    out: &mut Mapped,
) -> Vec<SpanInput<'a>> {
    let mut spans = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let project = resolve_project(principal, header_project, resource);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let assigned = project
                    .clone()
                    .and_then(|p| resolve_user(principal, p, &span.attributes, resource).map(|u| (p, u)));
                match assigned {
                    Ok((project_id, user_id)) => spans.push(SpanInput {
                        project_id,
                        user_id,
                        resource,
                        scope: ss.scope.as_ref(),
                        span,
                    }),
                    Err(m) => out.reject(format!("span {}: {m}", hex(&span.span_id))),
                }
            }
        }
    }
    spans
}

/// Что запрос говорит о каждой трассе: разговор и узлы.
#[derive(Debug, Default)]
pub struct TracePlan {
    /// Идентификатор разговора, если он есть у какого-нибудь спана трассы.
    pub conversation: Option<String>,
    /// Узлы спанов трассы из запроса.
    pub nodes: Vec<Node>,
}

/// Собирает по трассам разговор и узлы.
pub fn plan_traces(spans: &[SpanInput<'_>]) -> HashMap<TraceKey, TracePlan> {
    let mut plans: HashMap<TraceKey, TracePlan> = HashMap::new();
    for s in spans {
        let plan = plans.entry(s.key()).or_default();
        if plan.conversation.is_none() {
            plan.conversation = conversation(&s.span.attributes, s.resource);
        }
        let op = Operation::of(s.span);
        plan.nodes.push(Node {
            span_id: s.span.span_id.clone(),
            parent_id: s.span.parent_span_id.clone(),
            is_agent: op == Operation::Agent,
            agent: own_agent(s.span, op),
            start: start_time(s.span),
            handoff_to: (op == Operation::Tool)
                .then(|| tool_name(s.span).strip_prefix("transfer_to_").map(str::to_owned))
                .flatten(),
        });
    }
    plans
}

fn conversation(attrs: &[KeyValue], resource: &[KeyValue]) -> Option<String> {
    first_text(attrs, &CONVERSATION_ATTRS).or_else(|| first_text(resource, &CONVERSATION_ATTRS))
}

/// Вид спана по соглашениям GenAI (и по MCP и OpenInference, где их нет).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `execute_tool`, MCP `tools/call`, OpenInference TOOL.
    Tool,
    /// `invoke_agent`, `invoke_workflow`, OpenInference AGENT.
    Agent,
    /// `plan`.
    Plan,
    /// `retrieval`, OpenInference RETRIEVER.
    Retrieval,
    /// `chat`, `text_completion`, `generate_content`, `embeddings`, OpenInference LLM/EMBEDDING.
    Model,
    /// Иное (в том числе `create_agent`).
    Other,
}

impl Operation {
    /// Вид спана по его атрибутам.
    pub fn of(span: &Span) -> Self {
        let a = &span.attributes;
        if let Some(op) = text(a, "gen_ai.operation.name") {
            return match op.as_str() {
                "execute_tool" => Self::Tool,
                "invoke_agent" | "invoke_workflow" => Self::Agent,
                "plan" => Self::Plan,
                "retrieval" => Self::Retrieval,
                "chat" | "text_completion" | "generate_content" | "embeddings" => Self::Model,
                _ => Self::Other,
            };
        }
        if text(a, "mcp.method.name").as_deref() == Some("tools/call") {
            return Self::Tool;
        }
        match text(a, "openinference.span.kind").as_deref() {
            Some("TOOL") => Self::Tool,
            Some("AGENT") => Self::Agent,
            Some("RETRIEVER") => Self::Retrieval,
            Some("LLM") | Some("EMBEDDING") => Self::Model,
            _ => Self::Other,
        }
    }
}

/// Агент, названный самим спаном: `gen_ai.agent.id`, затем `gen_ai.agent.name`.
fn own_agent(span: &Span, op: Operation) -> Option<String> {
    first_text(&span.attributes, &["gen_ai.agent.id", "gen_ai.agent.name"])
        .or_else(|| {
            (op == Operation::Agent)
                .then(|| span.name.strip_prefix("invoke_agent ").map(str::to_owned))
                .flatten()
        })
        .map(|a| clip(&a, MAX_NAME_LEN))
}

/// Имя инструмента: `gen_ai.tool.name`, `tool.name` (OpenInference), иначе из имени
/// спана (`tools/call X` у MCP, `execute_tool X`).
fn tool_name(span: &Span) -> String {
    let name = first_text(&span.attributes, &["gen_ai.tool.name", "tool.name"]).unwrap_or_else(|| {
        let n = &span.name;
        n.strip_prefix("tools/call ")
            .or_else(|| n.strip_prefix("execute_tool "))
            .unwrap_or(n)
            .to_owned()
    });
    clip(if name.is_empty() { "unknown" } else { &name }, MAX_NAME_LEN)
}

fn nanos(t: u64) -> Option<DateTime<Utc>> {
    if t == 0 {
        return None;
    }
    Utc.timestamp_opt((t / 1_000_000_000) as i64, (t % 1_000_000_000) as u32)
        .single()
        .map(truncate_to_micros)
}

fn start_time(span: &Span) -> DateTime<Utc> {
    nanos(span.start_time_unix_nano)
        .or_else(|| nanos(span.end_time_unix_nano))
        .unwrap_or_else(|| truncate_to_micros(Utc::now()))
}

fn end_time(span: &Span) -> DateTime<Utc> {
    nanos(span.end_time_unix_nano).unwrap_or_else(|| start_time(span))
}

/// Шестнадцатеричная запись id.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn clip(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

impl Mapped {
    /// Начальный результат с отказами, найденными при чтении тела.
    pub fn with_rejections(messages: Vec<String>) -> Self {
        Self {
            rejected: messages.len(),
            messages: messages.into_iter().take(10).collect(),
            ..Default::default()
        }
    }

    fn reject(&mut self, message: String) {
        self.rejected += 1;
        if self.messages.len() < 10 {
            self.messages.push(message);
        }
    }

    /// Сообщение для `partial_success.error_message` (пусто, если сказать нечего).
    pub fn message(&self, kind: &str) -> String {
        let mut parts = Vec::new();
        if self.rejected > 0 {
            parts.push(format!(
                "{} {kind} rejected: {}",
                self.rejected,
                self.messages.join("; ")
            ));
        }
        if self.without_event > 0 {
            parts.push(format!(
                "{} spans were accepted without an event (no GenAI operation, no error; see docs/otlp.md)",
                self.without_event
            ));
        }
        parts.join(". ")
    }
}

/// Строит события спанов. `views` — что память знает о трассах запроса (сессия и узлы).
pub fn map_spans(
    spans: &[SpanInput<'_>],
    views: &HashMap<TraceKey, TraceView>,
    limits: Limits,
    now: DateTime<Utc>,
    out: &mut Mapped,
) {
    let start = out.events.len();
    for s in spans {
        let key = s.key();
        let Some(view) = views.get(&key) else {
            out.reject(format!("span {}: trace is unknown", hex(&s.span.span_id)));
            continue;
        };
        let mut b = SpanMapper::new(s, view, limits);
        let events = b.events();
        match events.iter().try_for_each(|e| validate(e, now)) {
            Ok(()) if events.is_empty() => out.without_event += 1,
            Ok(()) => out.events.extend(events),
            Err(e) => out.reject(format!("span {}: {e}", hex(&s.span.span_id))),
        }
    }
    // Смены агентов по вложенности спанов агентов: внутренний агент в спане
    // другого агента. Решается по узлам трассы (этот запрос и память), id — от
    // внутреннего спана, поэтому повтор экспорта и любой порядок прихода дают одно событие.
    let mut by_trace: HashMap<&TraceKey, Vec<&SpanInput<'_>>> = HashMap::new();
    let keys: Vec<TraceKey> = spans.iter().map(SpanInput::key).collect();
    for (k, s) in keys.iter().zip(spans) {
        by_trace.entry(k).or_default().push(s);
    }
    for (key, in_request) in by_trace {
        let Some(view) = views.get(key) else { continue };
        let new: std::collections::HashSet<&[u8]> = in_request.iter().map(|s| &s.span.span_id[..]).collect();
        for inner in view.nodes.values().filter(|n| n.is_agent) {
            let Some(outer) = view.enclosing_agent(&inner.span_id) else {
                continue;
            };
            if outer.agent == inner.agent
                || !(new.contains(&inner.span_id[..]) || new.contains(&outer.span_id[..]))
            {
                continue;
            }
            // Передачу уже отметил инструмент transfer_to_<агент> того же внешнего агента.
            let announced = view.nodes.values().any(|n| {
                n.handoff_to.is_some()
                    && n.handoff_to == inner.agent
                    && view.enclosing_agent(&n.span_id).map(|a| &a.span_id) == Some(&outer.span_id)
            });
            if announced {
                continue;
            }
            let (from, to) = (outer.agent.clone().unwrap_or_default(), inner.agent.clone());
            let mut e = NewEvent::new(
                view.session_id,
                key.user_id.clone(),
                key.project_id,
                EventType::AgentSwitched,
            )
            .with_id(ids::event_id(
                key.project_id,
                &key.user_id,
                &key.trace_id,
                &inner.span_id,
                "AGENT_SWITCHED",
            ))
            .at(inner.start)
            .payload(json!({
                "from_agent_id": from,
                "to_agent_id": to,
                "agent_name": to,
                "reason": "nested_agent_span",
                "mode": "otel",
                "otel": {"trace_id": hex(&key.trace_id), "span_id": hex(&inner.span_id),
                         "parent_span_id": hex(&outer.span_id)},
            }));
            e.agent_id = to;
            if validate(&e, now).is_ok() {
                out.events.push(e);
            }
        }
    }
    out.events[start..].sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
}

/// Атрибуты, которые отображение переносит всегда (колонки, разговор, код ошибки).
const COMMON_KEYS: [&str; 6] = [
    "gen_ai.operation.name",
    "gen_ai.agent.id",
    "gen_ai.agent.name",
    "gen_ai.conversation.id",
    "error.type",
    "eventlog.event_type",
];

/// Атрибуты, которые отображение спана этого вида переносит в нагрузку.
fn copied_keys(op: Operation) -> &'static [&'static str] {
    match op {
        Operation::Tool => &[
            "gen_ai.tool.name",
            "tool.name",
            "gen_ai.tool.call.id",
            "gen_ai.tool.type",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
            "input.value",
            "output.value",
        ],
        Operation::Model => &[
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.model_name",
            "gen_ai.provider.name",
            "gen_ai.system",
            "llm.provider",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
            "gen_ai.response.finish_reasons",
        ],
        Operation::Agent => &[
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "input.value",
            "output.value",
        ],
        Operation::Plan => &["eventlog.plan.steps"],
        Operation::Retrieval => &[
            "gen_ai.retrieval.query.text",
            "gen_ai.retrieval.documents",
            "retrieval.documents",
            "gen_ai.data_source.id",
            "input.value",
        ],
        Operation::Other => &[],
    }
}

/// Строит события одного спана.
struct SpanMapper<'a, 'b> {
    s: &'b SpanInput<'a>,
    view: &'b TraceView,
    limits: Limits,
    op: Operation,
    agent: Option<String>,
    truncated: bool,
    /// Размер атрибутов спана в protobuf (оценка размера нагрузки).
    attr_bytes: usize,
}

impl<'a, 'b> SpanMapper<'a, 'b> {
    fn new(s: &'b SpanInput<'a>, view: &'b TraceView, limits: Limits) -> Self {
        let op = Operation::of(s.span);
        let agent = own_agent(s.span, op).or_else(|| {
            view.enclosing_agent(&s.span.span_id)
                .and_then(|n| n.agent.clone())
        });
        use prost::Message as _;
        let attr_bytes = s.span.attributes.iter().map(|kv| kv.encoded_len()).sum::<usize>()
            + s.span.name.len()
            + s.span.events.iter().map(|e| e.encoded_len()).sum::<usize>();
        Self {
            s,
            view,
            limits,
            op,
            agent,
            truncated: false,
            attr_bytes,
        }
    }

    fn attrs(&self) -> &'a [KeyValue] {
        &self.s.span.attributes
    }

    fn event(&self, kind: &str, at: DateTime<Utc>) -> NewEvent {
        let k = self.s.key();
        let mut e = NewEvent::new(self.view.session_id, k.user_id.clone(), k.project_id, kind)
            .with_id(ids::event_id(
                k.project_id,
                &k.user_id,
                &k.trace_id,
                &self.s.span.span_id,
                kind,
            ))
            .at(at);
        e.agent_id = self.agent.clone();
        e
    }

    fn failed(&self) -> bool {
        self.s
            .span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
            || text(self.attrs(), "error.type").is_some()
    }

    fn exception(&self) -> Option<&'a [KeyValue]> {
        self.s
            .span
            .events
            .iter()
            .find(|e| e.name == "exception")
            .map(|e| &e.attributes[..])
    }

    fn error_code(&self) -> String {
        let code = text(self.attrs(), "error.type")
            .or_else(|| self.exception().and_then(|x| text(x, "exception.type")))
            .unwrap_or_else(|| "SPAN_ERROR".to_owned());
        clip(&code, MAX_CODE_LEN)
    }

    fn duration_ms(&self) -> f64 {
        let (a, b) = (self.s.span.start_time_unix_nano, self.s.span.end_time_unix_nano);
        if b > a { (b - a) as f64 / 1e6 } else { 0.0 }
    }

    fn json(&mut self, keys: &[&str]) -> Option<Value> {
        let max = self.limits.max_attr_bytes;
        let attrs = self.attrs();
        keys.iter()
            .find_map(|k| attrs::json(attrs, k, max, &mut self.truncated))
            .map(attrs::parse_embedded)
    }

    /// Блок `otel` нагрузки; `with_attributes` — со всеми атрибутами спана.
    /// Короткий блок `otel` для событий начала спана (полный — у события конца).
    fn otel_ids(&self) -> Value {
        let sp = self.s.span;
        json!({
            "trace_id": hex(&sp.trace_id),
            "span_id": hex(&sp.span_id),
            "parent_span_id": if sp.parent_span_id.is_empty() { Value::Null } else { hex(&sp.parent_span_id).into() },
            "name": sp.name,
        })
    }

    fn otel(&mut self, with_attributes: bool) -> Value {
        let sp = self.s.span;
        let status = sp.status.as_ref();
        let kind = SpanKind::try_from(sp.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("SPAN_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| sp.kind.to_string());
        let status_code = status
            .and_then(|s| StatusCode::try_from(s.code).ok())
            .map_or("UNSET", |c| c.as_str_name().trim_start_matches("STATUS_CODE_"));
        let mut o = json!({
            "trace_id": hex(&sp.trace_id),
            "span_id": hex(&sp.span_id),
            "parent_span_id": if sp.parent_span_id.is_empty() { Value::Null } else { hex(&sp.parent_span_id).into() },
            "name": sp.name,
            "kind": kind,
            "status": {"code": status_code, "message": status.map(|s| s.message.as_str()).unwrap_or("")},
            "duration_ms": self.duration_ms(),
            "scope": self.s.scope.map(|s| json!({"name": s.name, "version": s.version})),
            "service_name": text(self.s.resource, "service.name"),
        });
        if let Some(c) = conversation(self.attrs(), self.s.resource) {
            o["conversation_id"] = c.into();
        }
        if with_attributes {
            // Только атрибуты, которые отображение не переложило в колонку или ключ
            // нагрузки: копия не раздувает строку (размер строки — цена записи).
            let max = self.limits.max_attr_bytes;
            let copied = copied_keys(self.op);
            let rest: Vec<KeyValue> = self
                .attrs()
                .iter()
                .filter(|kv| !COMMON_KEYS.contains(&kv.key.as_str()) && !copied.contains(&kv.key.as_str()))
                .cloned()
                .collect();
            if !rest.is_empty() {
                o["attributes"] = Value::Object(attrs::object(&rest, max, &mut self.truncated));
            }
        }
        o
    }

    fn finish(&self, mut e: NewEvent, payload: Value, otel: Value) -> NewEvent {
        e = e.payload(payload);
        e.payload.insert("otel".into(), otel);
        if self.truncated {
            e.payload.insert("otel_truncated".into(), Value::Bool(true));
        }
        // Слишком большая нагрузка: атрибуты спана уходят, событие помечается. Всё в
        // нагрузке взято из атрибутов (не более двух копий, экранирование JSON — до 6×),
        // так что у небольшого спана сериализацию для проверки можно пропустить.
        let budget = crate::model::validation::MAX_PAYLOAD_BYTES - 1024;
        if self.attr_bytes * 12 + 4096 > budget
            && serde_json::to_vec(&e.payload).map_or(0, |v| v.len()) > budget
        {
            if let Some(Value::Object(o)) = e.payload.get_mut("otel") {
                o.remove("attributes");
            }
            for k in ["input", "output", "documents", "body"] {
                if let Some(v) = e.payload.get_mut(k) {
                    *v = Value::String("[truncated]".into());
                }
            }
            e.payload.insert("otel_truncated".into(), Value::Bool(true));
        }
        e
    }

    fn tool_name(&self) -> String {
        tool_name(self.s.span)
    }

    /// Все события спана.
    fn events(&mut self) -> Vec<NewEvent> {
        let sp = self.s.span;
        let (start, end) = (start_time(sp), end_time(sp));
        let failed = self.failed();
        let status = if failed { "error" } else { "success" };
        let mut out = Vec::new();
        // Явный тип события из пространства eventlog.* — то, чего нет в соглашениях.
        if let Some(t) = text(self.attrs(), "eventlog.event_type") {
            out.push(self.explicit(&t, end));
        } else {
            match self.op {
                Operation::Tool => self.tool(start, end, failed, status, &mut out),
                Operation::Agent => {
                    let task = hex(&sp.span_id);
                    let otel = self.otel_ids();
                    let input = self.json(&["gen_ai.input.messages", "input.value"]);
                    let e = self.event("TASK_STARTED", start);
                    out.push(self.finish(
                        e,
                        json!({"task_id": task, "step": sp.name, "status": "started",
                        "agent_name": text(self.attrs(), "gen_ai.agent.name"), "input": input}),
                        otel,
                    ));
                    let otel = self.otel(true);
                    let output = self.json(&["gen_ai.output.messages", "output.value"]);
                    let mut e = self.event("TASK_COMPLETED", end);
                    if failed {
                        e.error_code = Some(self.error_code());
                    }
                    out.push(self.finish(
                        e,
                        json!({"task_id": task, "step": sp.name, "status": status,
                        "progress": 1.0, "duration_ms": self.duration_ms(), "output": output}),
                        otel,
                    ));
                }
                Operation::Plan => {
                    let otel = self.otel(true);
                    let steps = self
                        .json(&["eventlog.plan.steps", "gen_ai.output.messages"])
                        .unwrap_or_else(|| json!([]));
                    let e = self.event("TASK_PLAN_CREATED", end);
                    out.push(self.finish(
                        e,
                        json!({"plan_id": hex(&sp.span_id), "steps": steps,
                        "duration_ms": self.duration_ms()}),
                        otel,
                    ));
                }
                Operation::Retrieval => {
                    let otel = self.otel(true);
                    let query = self.json(&["gen_ai.retrieval.query.text", "input.value"]);
                    let documents = self.json(&["gen_ai.retrieval.documents", "retrieval.documents"]);
                    let e = self.event("CONTEXT_RETRIEVED", end);
                    out.push(self.finish(e, json!({"query": query, "documents": documents,
                        "sources": text(self.attrs(), "gen_ai.data_source.id").map(|s| vec![s]).unwrap_or_default(),
                        "duration_ms": self.duration_ms()}), otel));
                }
                Operation::Model => {
                    let a = self.attrs();
                    let model = first_text(
                        a,
                        &["gen_ai.response.model", "gen_ai.request.model", "llm.model_name"],
                    )
                    .unwrap_or_else(|| "unknown".into());
                    let payload = json!({
                        "model": model,
                        "request_model": text(a, "gen_ai.request.model"),
                        "provider": first_text(a, &["gen_ai.provider.name", "gen_ai.system", "llm.provider"]),
                        "operation": text(a, "gen_ai.operation.name"),
                        "input_tokens": first_int(a, &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"]),
                        "output_tokens": first_int(a, &["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"]),
                        "duration_ms": self.duration_ms(),
                        "finish_reasons": self.json(&["gen_ai.response.finish_reasons"]),
                    });
                    let otel = self.otel(true);
                    let mut e = self.event("MODEL_CALL", end);
                    if failed {
                        e.error_code = Some(self.error_code());
                    }
                    out.push(self.finish(e, payload, otel));
                }
                Operation::Other => {}
            }
        }
        if failed || self.exception().is_some() {
            out.push(self.error(end));
        }
        out
    }

    fn tool(
        &mut self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        failed: bool,
        status: &str,
        out: &mut Vec<NewEvent>,
    ) {
        let tool = self.tool_name();
        let a = self.attrs();
        let call_id = text(a, "gen_ai.tool.call.id");
        let tool_type = text(a, "gen_ai.tool.type");
        let input = self.json(&["gen_ai.tool.call.arguments", "input.value"]);
        let otel = self.otel_ids();
        let e = self.event("TOOL_REQUEST", start).tool(tool.clone());
        out.push(self.finish(
            e,
            json!({"tool_call_id": call_id, "tool_type": tool_type, "input": input}),
            otel,
        ));
        let output = self.json(&["gen_ai.tool.call.result", "output.value"]);
        let otel = self.otel(true);
        let mut e = self.event("TOOL_RESULT", end).tool(tool.clone());
        if failed {
            e.error_code = Some(self.error_code());
        }
        out.push(self.finish(
            e,
            json!({"tool_call_id": call_id, "status": status,
            "duration_ms": self.duration_ms(), "output": output}),
            otel,
        ));
        // Передача управления инструментом transfer_to_<агент> (OpenAI Agents SDK и др.).
        if let Some(to) = tool.strip_prefix("transfer_to_").filter(|t| !t.is_empty())
            && !failed
        {
            let otel = self.otel_ids();
            let mut e = self.event("AGENT_SWITCHED", end);
            let to = clip(to, MAX_NAME_LEN);
            e.agent_id = Some(to.clone());
            out.push(self.finish(
                e,
                json!({"from_agent_id": self.agent, "to_agent_id": to,
                "agent_name": to, "reason": "handoff_tool", "mode": "otel"}),
                otel,
            ));
        }
    }

    /// Событие явного типа: колонки и нагрузка из атрибутов `eventlog.*`.
    fn explicit(&mut self, event_type: &str, at: DateTime<Utc>) -> NewEvent {
        let a = self.attrs();
        let mut e = self.event(event_type, at);
        if let Some(x) = text(a, "eventlog.agent_id") {
            e.agent_id = Some(x);
        }
        e.tool_name = text(a, "eventlog.tool_name");
        e.approval_status = text(a, "eventlog.approval_status");
        e.error_code = text(a, "eventlog.error_code");
        let max = self.limits.max_attr_bytes;
        let mut payload = Map::new();
        for kv in a {
            if let Some(k) = kv.key.strip_prefix("eventlog.payload.")
                && let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref())
            {
                payload.insert(
                    k.to_owned(),
                    attrs::parse_embedded(attrs::value(v, max, &mut self.truncated)),
                );
            }
        }
        let otel = self.otel(true);
        self.finish(e, Value::Object(payload), otel)
    }

    fn error(&mut self, at: DateTime<Utc>) -> NewEvent {
        let x = self.exception().unwrap_or(&[]);
        let max = self.limits.max_attr_bytes;
        let status_msg = self
            .s
            .span
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty());
        let payload = json!({
            "error_message": status_msg.or_else(|| text(x, "exception.message")).map(|m| attrs::clip(&m, max, &mut self.truncated)),
            "stack_trace": text(x, "exception.stacktrace").map(|m| attrs::clip(&m, max, &mut self.truncated)),
            "error_type": text(self.attrs(), "error.type").or_else(|| text(x, "exception.type")),
            "source": self.s.span.name,
            "agent_id": self.agent,
            "tool_name": (self.op == Operation::Tool).then(|| self.tool_name()),
        });
        let otel = self.otel(false);
        let mut e = self.event("ERROR", at);
        // Как у исполнителя инструментов: ERROR без колонок агента и инструмента, за
        // ним идёт основное событие спана с тем же кодом, и аналитика не считает сбой дважды.
        e.agent_id = None;
        e.error_code = Some(self.error_code());
        self.finish(e, payload, otel)
    }
}

/// Записи журнала → события LOG (запись исключения → ERROR).
pub fn map_logs(
    req: &ExportLogsServiceRequest,
    principal: &Principal,
    header_project: Option<Uuid>,
    sessions: &mut dyn FnMut(&TraceKey, Option<&str>) -> TraceView,
    limits: Limits,
    now: DateTime<Utc>,
    out: &mut Mapped,
) {
    use prost::Message as _;
    let start = out.events.len();
    for rl in &req.resource_logs {
        let resource = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let project = resolve_project(principal, header_project, resource);
        for sl in &rl.scope_logs {
            for (i, r) in sl.log_records.iter().enumerate() {
                let assigned = project
                    .clone()
                    .and_then(|p| resolve_user(principal, p, &r.attributes, resource).map(|u| (p, u)));
                let (project_id, user_id) = match assigned {
                    Ok(x) => x,
                    Err(m) => {
                        out.reject(format!("logRecords[{i}]: {m}"));
                        continue;
                    }
                };
                let conv = conversation(&r.attributes, resource);
                let (session_id, agent_from_trace) = if r.trace_id.len() == 16 {
                    let key = TraceKey {
                        project_id,
                        user_id: user_id.clone(),
                        trace_id: r.trace_id.clone(),
                    };
                    let view = sessions(&key, conv.as_deref());
                    let agent = view.nodes.get(&r.span_id).and_then(|n| {
                        n.agent
                            .clone()
                            .or_else(|| view.enclosing_agent(&n.span_id).and_then(|a| a.agent.clone()))
                    });
                    (view.session_id, agent)
                } else if let Some(c) = &conv {
                    (ids::conversation_session(project_id, &user_id, c), None)
                } else {
                    let service = text(resource, "service.name").unwrap_or_default();
                    (
                        ids::derive(
                            "log-session",
                            &[project_id.as_bytes(), user_id.as_bytes(), service.as_bytes()],
                        ),
                        None,
                    )
                };
                let event = log_event(
                    r,
                    resource,
                    sl.scope.as_ref(),
                    project_id,
                    &user_id,
                    session_id,
                    agent_from_trace,
                    limits,
                );
                // Id записи — из её содержимого: записи журнала своего id не имеют.
                let id = ids::derive(
                    "log",
                    &[project_id.as_bytes(), user_id.as_bytes(), &r.encode_to_vec()],
                );
                let event = event.with_id(id);
                match validate(&event, now) {
                    Ok(()) => out.events.push(event),
                    Err(e) => out.reject(format!("logRecords[{i}]: {e}")),
                }
            }
        }
    }
    out.events[start..].sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
}

#[allow(clippy::too_many_arguments)]
fn log_event(
    r: &LogRecord,
    resource: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    project_id: Uuid,
    user_id: &str,
    session_id: Uuid,
    agent_from_trace: Option<String>,
    limits: Limits,
) -> NewEvent {
    let a = &r.attributes;
    let max = limits.max_attr_bytes;
    let mut truncated = false;
    let is_exception = r.event_name == "exception" || text(a, "exception.type").is_some();
    let at = nanos(r.time_unix_nano)
        .or_else(|| nanos(r.observed_time_unix_nano))
        .unwrap_or_else(|| truncate_to_micros(Utc::now()));
    let severity = if r.severity_text.is_empty() {
        opentelemetry_proto::tonic::logs::v1::SeverityNumber::try_from(r.severity_number)
            .map(|s| s.as_str_name().trim_start_matches("SEVERITY_NUMBER_").to_owned())
            .unwrap_or_default()
    } else {
        r.severity_text.clone()
    };
    let body = r
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
        .map(|v| attrs::value(v, max, &mut truncated));
    let mut payload = json!({
        "severity": severity,
        "severity_number": r.severity_number,
        "body": body,
        "event_name": if r.event_name.is_empty() { text(a, "event.name") } else { Some(r.event_name.clone()) },
        "trace_id": (!r.trace_id.is_empty()).then(|| hex(&r.trace_id)),
        "span_id": (!r.span_id.is_empty()).then(|| hex(&r.span_id)),
        "otel": {
            "scope": scope.map(|s| json!({"name": s.name, "version": s.version})),
            "service_name": text(resource, "service.name"),
            "attributes": attrs::object(a, max, &mut truncated),
        },
    });
    let kind = if is_exception {
        EventType::Error
    } else {
        EventType::Log
    };
    let mut e = NewEvent::new(session_id, user_id, project_id, kind).at(at);
    e.agent_id = first_text(a, &["gen_ai.agent.id", "gen_ai.agent.name"])
        .map(|x| clip(&x, MAX_NAME_LEN))
        .or(agent_from_trace);
    if is_exception {
        e.error_code = Some(clip(
            &text(a, "exception.type").unwrap_or_else(|| "EXCEPTION".into()),
            MAX_CODE_LEN,
        ));
        payload["error_message"] = text(a, "exception.message").into();
        payload["stack_trace"] = text(a, "exception.stacktrace")
            .map(|s| attrs::clip(&s, max, &mut truncated))
            .into();
        payload["source"] = "otel_log".into();
    }
    if truncated {
        payload["otel_truncated"] = true.into();
    }
    e.payload(payload)
}
