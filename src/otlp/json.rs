//! Терпимое чтение OTLP/JSON в те же сообщения, что даёт protobuf.
//!
//! Принимается всё, что шлют реальные экспортёры и что допускает отображение
//! protobuf в JSON: ключи в lowerCamelCase и в snake_case; идентификаторы в hex
//! (как требует OTLP) и в base64 (стандартное отображение `bytes`); перечисления
//! числом и именем (`SPAN_KIND_SERVER`); 64-битные числа числом и строкой; пустой
//! `AnyValue` (`{}`) — атрибут без значения; неизвестные поля пропускаются.
//! Испорченный спан (неверный id) отвергается один, с путём в сообщении; испорченное
//! тело целиком (не JSON, не объект) — ошибка всего запроса.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event as SpanEvent, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};
use thiserror::Error;

use super::{ExportLogsServiceRequest, ExportTraceServiceRequest};

/// Тело запроса не читается как OTLP/JSON.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Прочитанный запрос и сообщения об отвергнутых при чтении элементах.
#[derive(Debug, Default)]
pub struct Decoded<T> {
    /// Запрос без отвергнутых элементов.
    pub request: T,
    /// Что отвергнуто и почему (путь к полю и причина).
    pub rejected: Vec<String>,
}

/// Читает `ExportTraceServiceRequest` из JSON.
pub fn traces(body: &[u8]) -> Result<Decoded<ExportTraceServiceRequest>, DecodeError> {
    let root = parse_root(body)?;
    let mut rejected = Vec::new();
    let mut request = ExportTraceServiceRequest::default();
    for (i, rs) in list(&root, "resourceSpans", "resource_spans").iter().enumerate() {
        let mut out = ResourceSpans {
            resource: field(rs, "resource", "resource").map(resource),
            schema_url: string(rs, "schemaUrl", "schema_url"),
            ..Default::default()
        };
        for (j, ss) in list(rs, "scopeSpans", "scope_spans").iter().enumerate() {
            let mut scope_out = ScopeSpans {
                scope: field(ss, "scope", "scope").map(scope),
                schema_url: string(ss, "schemaUrl", "schema_url"),
                ..Default::default()
            };
            for (k, sp) in list(ss, "spans", "spans").iter().enumerate() {
                match span(sp) {
                    Ok(s) => scope_out.spans.push(s),
                    Err(e) => rejected.push(format!("resourceSpans[{i}].scopeSpans[{j}].spans[{k}].{e}")),
                }
            }
            out.scope_spans.push(scope_out);
        }
        request.resource_spans.push(out);
    }
    Ok(Decoded { request, rejected })
}

/// Читает `ExportLogsServiceRequest` из JSON.
pub fn logs(body: &[u8]) -> Result<Decoded<ExportLogsServiceRequest>, DecodeError> {
    let root = parse_root(body)?;
    let mut rejected = Vec::new();
    let mut request = ExportLogsServiceRequest::default();
    for (i, rl) in list(&root, "resourceLogs", "resource_logs").iter().enumerate() {
        let mut out = ResourceLogs {
            resource: field(rl, "resource", "resource").map(resource),
            schema_url: string(rl, "schemaUrl", "schema_url"),
            ..Default::default()
        };
        for (j, sl) in list(rl, "scopeLogs", "scope_logs").iter().enumerate() {
            let mut scope_out = ScopeLogs {
                scope: field(sl, "scope", "scope").map(scope),
                schema_url: string(sl, "schemaUrl", "schema_url"),
                ..Default::default()
            };
            for (k, lr) in list(sl, "logRecords", "log_records").iter().enumerate() {
                match log_record(lr) {
                    Ok(r) => scope_out.log_records.push(r),
                    Err(e) => rejected.push(format!("resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}].{e}")),
                }
            }
            out.scope_logs.push(scope_out);
        }
        request.resource_logs.push(out);
    }
    Ok(Decoded { request, rejected })
}

fn parse_root(body: &[u8]) -> Result<Value, DecodeError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError(format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(DecodeError("body must be a JSON object".into()));
    }
    Ok(v)
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(camel).or_else(|| o.get(snake)).filter(|x| !x.is_null())
}

fn list<'a>(v: &'a Value, camel: &str, snake: &str) -> &'a [Value] {
    field(v, camel, snake)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn string(v: &Value, camel: &str, snake: &str) -> String {
    field(v, camel, snake)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// 64-битное беззнаковое: число или строка с числом; отсутствие — 0.
fn u64_of(v: &Value, camel: &str, snake: &str) -> Result<u64, String> {
    match field(v, camel, snake) {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| format!("{camel}: must be a non-negative integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("{camel}: must be a non-negative integer")),
        Some(_) => Err(format!("{camel}: must be a number or a string")),
    }
}

/// Перечисление числом или именем.
fn enum_of(v: &Value, camel: &str, snake: &str, by_name: fn(&str) -> Option<i32>) -> Result<i32, String> {
    match field(v, camel, snake) {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|x| i32::try_from(x).ok())
            .ok_or_else(|| format!("{camel}: must be an integer")),
        Some(Value::String(s)) => by_name(s)
            .or_else(|| s.parse().ok())
            .ok_or_else(|| format!("{camel}: unknown value {s:?}")),
        Some(_) => Err(format!("{camel}: must be a number or a name")),
    }
}

/// Идентификатор трассы (16 байт) или спана (8 байт): hex или base64; пусто — нет id.
fn id_of(v: &Value, camel: &str, snake: &str, len: usize) -> Result<Vec<u8>, String> {
    let s = match field(v, camel, snake) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(format!("{camel}: must be a string")),
    };
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = if s.len() == len * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex(s)
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
            .ok()
    };
    match bytes {
        Some(b) if b.len() == len => Ok(b),
        _ => Err(format!(
            "{camel}: must be {len} bytes as {} hex digits or base64",
            len * 2
        )),
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn resource(v: &Value) -> Resource {
    Resource {
        attributes: attributes(v),
        ..Default::default()
    }
}

fn scope(v: &Value) -> InstrumentationScope {
    InstrumentationScope {
        name: string(v, "name", "name"),
        version: string(v, "version", "version"),
        attributes: attributes(v),
        ..Default::default()
    }
}

fn attributes(v: &Value) -> Vec<KeyValue> {
    list(v, "attributes", "attributes")
        .iter()
        .filter_map(key_value)
        .collect()
}

/// Пара ключ–значение; без ключа — пропускается, без значения — пустое значение.
fn key_value(v: &Value) -> Option<KeyValue> {
    let key = field(v, "key", "key")?.as_str()?.to_owned();
    Some(KeyValue {
        key,
        value: field(v, "value", "value").map(any_value),
        ..Default::default()
    })
}

/// `AnyValue`: пустой объект или неизвестный вид — значение без содержимого.
fn any_value(v: &Value) -> AnyValue {
    let Some(o) = v.as_object() else {
        return AnyValue { value: None };
    };
    AnyValue { value: any_inner(o) }
}

fn any_inner(o: &Map<String, Value>) -> Option<Av> {
    let get = |camel: &str, snake: &str| o.get(camel).or_else(|| o.get(snake)).filter(|x| !x.is_null());
    if let Some(s) = get("stringValue", "string_value") {
        return Some(Av::StringValue(
            s.as_str().map_or_else(|| s.to_string(), str::to_owned),
        ));
    }
    if let Some(b) = get("boolValue", "bool_value") {
        return b
            .as_bool()
            .or_else(|| b.as_str().and_then(|s| s.parse().ok()))
            .map(Av::BoolValue);
    }
    if let Some(i) = get("intValue", "int_value") {
        return match i {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .map(Av::IntValue);
    }
    if let Some(d) = get("doubleValue", "double_value") {
        return match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .map(Av::DoubleValue);
    }
    if let Some(a) = get("arrayValue", "array_value") {
        return Some(Av::ArrayValue(ArrayValue {
            values: list(a, "values", "values").iter().map(any_value).collect(),
        }));
    }
    if let Some(kv) = get("kvlistValue", "kvlist_value") {
        return Some(Av::KvlistValue(KeyValueList {
            values: list(kv, "values", "values")
                .iter()
                .filter_map(key_value)
                .collect(),
        }));
    }
    if let Some(b) = get("bytesValue", "bytes_value") {
        return b
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .map(Av::BytesValue);
    }
    None
}

fn span(v: &Value) -> Result<Span, String> {
    let trace_id = id_of(v, "traceId", "trace_id", 16)?;
    let span_id = id_of(v, "spanId", "span_id", 8)?;
    if trace_id.is_empty() || span_id.is_empty() {
        return Err(if trace_id.is_empty() { "traceId" } else { "spanId" }.to_owned() + ": is required");
    }
    let status = match field(v, "status", "status") {
        None => None,
        Some(s) => Some(Status {
            message: string(s, "message", "message"),
            code: enum_of(s, "code", "code", |n| {
                StatusCode::from_str_name(n).map(|c| c as i32)
            })
            .map_err(|e| format!("status.{e}"))?,
        }),
    };
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id: id_of(v, "parentSpanId", "parent_span_id", 8)?,
        trace_state: string(v, "traceState", "trace_state"),
        flags: u32::try_from(u64_of(v, "flags", "flags")?).unwrap_or(0),
        name: string(v, "name", "name"),
        kind: enum_of(v, "kind", "kind", |n| {
            SpanKind::from_str_name(n).map(|k| k as i32)
        })?,
        start_time_unix_nano: u64_of(v, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: u64_of(v, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(v),
        events: list(v, "events", "events")
            .iter()
            .map(|e| {
                Ok(SpanEvent {
                    time_unix_nano: u64_of(e, "timeUnixNano", "time_unix_nano")?,
                    name: string(e, "name", "name"),
                    attributes: attributes(e),
                    dropped_attributes_count: 0,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|e| format!("events.{e}"))?,
        status,
        ..Default::default()
    })
}

fn log_record(v: &Value) -> Result<LogRecord, String> {
    Ok(LogRecord {
        time_unix_nano: u64_of(v, "timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: u64_of(v, "observedTimeUnixNano", "observed_time_unix_nano")?,
        severity_number: enum_of(v, "severityNumber", "severity_number", |n| {
            SeverityNumber::from_str_name(n).map(|s| s as i32)
        })?,
        severity_text: string(v, "severityText", "severity_text"),
        body: field(v, "body", "body").map(any_value),
        attributes: attributes(v),
        flags: u32::try_from(u64_of(v, "flags", "flags")?).unwrap_or(0),
        trace_id: id_of(v, "traceId", "trace_id", 16)?,
        span_id: id_of(v, "spanId", "span_id", 8)?,
        event_name: string(v, "eventName", "event_name"),
        ..Default::default()
    })
}
