//! Чтение обеих кодировок и отображение спанов: терпимость JSON, совпадение с
//! protobuf, события каждого вида спана, сессии и смены агентов.

use std::collections::HashMap;

use chrono::Utc;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

use super::mapping::{self, Mapped};
use super::session::SessionMemory;
use super::{ExportTraceServiceRequest, Limits, json as otlp_json};
use crate::model::NewEvent;
use crate::query::{Principal, Role};

const TRACE_HEX: &str = "5b8efff798038103d269b633813fc60c";
const TRACE_B64: &str = "W47/95gDgQPSabYzgT/GDA==";

fn user(projects: Option<Vec<Uuid>>) -> Principal {
    Principal {
        sub: "alice".into(),
        role: Role::User,
        projects,
    }
}

fn map(req: &ExportTraceServiceRequest, principal: &Principal, memory: &mut SessionMemory) -> Mapped {
    let mut out = Mapped::default();
    let spans = mapping::collect_spans(req, principal, None, &mut out);
    let views: HashMap<_, _> = mapping::plan_traces(&spans)
        .into_iter()
        .map(|(k, p)| {
            let v = memory.observe(&k, p.conversation.as_deref(), p.nodes);
            (k, v)
        })
        .collect();
    mapping::map_spans(&spans, &views, Limits::default(), Utc::now(), &mut out);
    out
}

fn types(events: &[NewEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn json_accepts_empty_anyvalue_base64_and_hex_ids_enum_names_and_int64_strings() {
    let project = Uuid::now_v7();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "svc"}},
            {"key": "eventlog.project_id", "value": {"stringValue": project.to_string()}},
        ]},
        "unknownField": 1,
        "scopeSpans": [{"scope": {"name": "s", "version": "1"}, "spans": [
            {"traceId": TRACE_HEX, "spanId": "eee19b7ec3c1b174", "name": "chat gpt-4o",
             "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": "1700000000000000000",
             "endTimeUnixNano": 1700000000500000000u64,
             "attributes": [
                {"key": "empty", "value": {}},
                {"key": "no_value"},
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "12"}},
                {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": 5}},
                {"key": "x.unknown", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"doubleValue": "1.5"}}]}}},
             ],
             "status": {"code": "STATUS_CODE_OK"}},
            {"trace_id": TRACE_B64, "span_id": "7uGbfsPBsXQ=", "parent_span_id": "", "name": "other",
             "kind": 1, "start_time_unix_nano": 1700000000000000000u64, "status": {"code": 2, "message": "boom"},
             "attributes": [{"key": "error.type", "value": {"stringValue": "TimeoutError"}}]},
            {"traceId": "zz", "spanId": "eee19b7ec3c1b174"},
        ]}],
    }]});
    let d = otlp_json::traces(body.to_string().as_bytes()).unwrap();
    // Испорченный id отвергает один спан и называет путь.
    assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
    assert!(
        d.rejected[0].starts_with("resourceSpans[0].scopeSpans[0].spans[2].traceId"),
        "{:?}",
        d.rejected
    );
    let spans = &d.request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    // hex и base64 дают те же байты.
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(spans[0].span_id, spans[1].span_id);
    assert_eq!(spans[0].kind, 3);
    assert_eq!(spans[0].start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(spans[1].status.as_ref().unwrap().code, 2);
    let empty = spans[0].attributes.iter().find(|a| a.key == "empty").unwrap();
    assert!(empty.value.as_ref().unwrap().value.is_none());
    let kv = spans[0].attributes.iter().find(|a| a.key == "x.unknown").unwrap();
    match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
        Av::KvlistValue(l) => assert_eq!(
            l.values[0].value.as_ref().unwrap().value,
            Some(Av::DoubleValue(1.5))
        ),
        other => panic!("{other:?}"),
    }

    // Отображение: старые имена атрибутов дают модель, провайдера и токены.
    let mut mem = SessionMemory::new(16);
    let out = map(&d.request, &user(None), &mut mem);
    assert_eq!(out.rejected, 0, "{:?}", out.messages);
    let call = out.events.iter().find(|e| e.event_type == "MODEL_CALL").unwrap();
    assert_eq!(call.project_id, project);
    assert_eq!(call.payload["model"], "gpt-4o");
    assert_eq!(call.payload["provider"], "openai");
    assert_eq!(call.payload["input_tokens"], 12);
    assert_eq!(call.payload["output_tokens"], 5);
    assert_eq!(call.payload["otel"]["trace_id"], TRACE_HEX);
    assert_eq!(call.payload["otel"]["kind"], "client");
    assert_eq!(call.payload["otel"]["service_name"], "svc");
    assert_eq!(call.payload["otel"]["duration_ms"], 500.0);
    // Неизвестные атрибуты сохраняются, перенесённые в нагрузку — не дублируются.
    assert_eq!(call.payload["otel"]["attributes"]["x.unknown"]["a"], 1.5);
    assert_eq!(
        call.payload["otel"]["attributes"]["empty"],
        serde_json::Value::Null
    );
    assert!(
        call.payload["otel"]["attributes"]
            .get("gen_ai.request.model")
            .is_none()
    );
    // Спан без операции GenAI, но с ошибкой → только ERROR.
    let err = out.events.iter().find(|e| e.event_type == "ERROR").unwrap();
    assert_eq!(err.error_code.as_deref(), Some("TimeoutError"));
    assert_eq!(err.payload["error_message"], "boom");
}

#[test]
fn protobuf_and_json_of_the_same_spans_map_to_the_same_events() {
    let p = Uuid::now_v7();
    let body = json!({"resourceSpans": [{"resource": {"attributes": [
    {"key": "eventlog.project_id", "value": {"stringValue": p.to_string()}}]},
    "scopeSpans": [{"spans": [
        {"traceId": TRACE_HEX, "spanId": "0000000000000001", "name": "invoke_agent planner",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
                        {"key": "gen_ai.agent.name", "value": {"stringValue": "planner"}}]},
        {"traceId": TRACE_HEX, "spanId": "0000000000000002", "parentSpanId": "0000000000000001",
         "name": "execute_tool search", "startTimeUnixNano": "1700000000100000000",
         "endTimeUnixNano": "1700000000200000000",
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                        {"key": "gen_ai.tool.name", "value": {"stringValue": "search"}},
                        {"key": "gen_ai.tool.call.id", "value": {"stringValue": "call_1"}},
                        {"key": "gen_ai.tool.call.arguments", "value": {"stringValue": "{\"q\":\"x\"}"}}]},
    ]}]}]});
    let from_json = otlp_json::traces(body.to_string().as_bytes()).unwrap().request;
    let bytes = from_json.encode_to_vec();
    let from_proto = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    let a = map(&from_json, &user(None), &mut SessionMemory::new(16));
    let b = map(&from_proto, &user(None), &mut SessionMemory::new(16));
    assert_eq!(a.events, b.events);
    assert_eq!(
        types(&a.events),
        ["TASK_STARTED", "TOOL_REQUEST", "TOOL_RESULT", "TASK_COMPLETED"]
    );
    // Объемлющий агент — у спана инструмента без своего агента.
    let req = &a.events[1];
    assert_eq!(req.agent_id.as_deref(), Some("planner"));
    assert_eq!(req.tool_name.as_deref(), Some("search"));
    assert_eq!(req.payload["input"], json!({"q": "x"}));
    assert_eq!(req.payload["tool_call_id"], "call_1");
    // Один запрос — одна сессия; повтор даёт те же id.
    assert!(a.events.iter().all(|e| e.session_id == a.events[0].session_id));
    let again = map(&from_json, &user(None), &mut SessionMemory::new(16));
    assert_eq!(
        a.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        again.events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

#[test]
fn nested_agent_and_transfer_tool_switch_agents_in_either_arrival_order() {
    let p = Uuid::now_v7();
    let span = |id: &str, parent: &str, attrs: serde_json::Value| {
        let attrs: Vec<_> = attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect();
        json!({"traceId": TRACE_HEX, "spanId": id, "parentSpanId": parent, "name": "s",
               "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000",
               "attributes": attrs})
    };
    let req = |spans: Vec<serde_json::Value>| {
        let body = json!({"resourceSpans": [{"resource": {"attributes": [
            {"key": "eventlog.project_id", "value": {"stringValue": p.to_string()}}]},
            "scopeSpans": [{"spans": spans}]}]});
        otlp_json::traces(body.to_string().as_bytes()).unwrap().request
    };
    let outer = span(
        "0000000000000001",
        "",
        json!({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}),
    );
    let inner = span(
        "0000000000000002",
        "0000000000000001",
        json!({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing"}),
    );
    let handoff = span(
        "0000000000000003",
        "0000000000000001",
        json!({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "transfer_to_billing"}),
    );
    // Дети первыми, отдельными запросами.
    let mut mem = SessionMemory::new(16);
    let first = map(&req(vec![inner.clone(), handoff.clone()]), &user(None), &mut mem);
    let second = map(&req(vec![outer.clone()]), &user(None), &mut mem);
    let switched = |m: &Mapped| -> Vec<(Option<String>, serde_json::Value)> {
        m.events
            .iter()
            .filter(|e| e.event_type == "AGENT_SWITCHED")
            .map(|e| (e.agent_id.clone(), e.payload["reason"].clone()))
            .collect()
    };
    // Передачу отмечает инструмент; вложенный спан того же агента второй смены не даёт.
    assert_eq!(
        switched(&first),
        [(Some("billing".into()), json!("handoff_tool"))]
    );
    assert_eq!(switched(&second), []);
    // Без инструмента передачи смену даёт вложенность, в каком бы порядке ни пришли спаны.
    let mut mem = SessionMemory::new(16);
    let a = map(&req(vec![inner.clone()]), &user(None), &mut mem);
    let b = map(&req(vec![outer.clone()]), &user(None), &mut mem);
    assert_eq!(switched(&a), []);
    assert_eq!(
        switched(&b),
        [(Some("billing".into()), json!("nested_agent_span"))]
    );
    let c = map(
        &req(vec![outer.clone(), inner.clone()]),
        &user(None),
        &mut SessionMemory::new(16),
    );
    let switch_ids = |m: &Mapped| -> Vec<Uuid> {
        m.events
            .iter()
            .filter(|e| e.event_type == "AGENT_SWITCHED")
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(switch_ids(&c), switch_ids(&b));
    // Все вместе: те же события с теми же id.
    let together = map(
        &req(vec![inner, handoff, outer]),
        &user(None),
        &mut SessionMemory::new(16),
    );
    let ids = |m: &Mapped| {
        m.events
            .iter()
            .map(|e| e.id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let mut split = ids(&first);
    split.extend(ids(&second));
    assert_eq!(ids(&together), split);
}

#[test]
fn service_tokens_name_users_and_projects_must_be_allowed() {
    let p = Uuid::now_v7();
    let body = |attrs: serde_json::Value| {
        json!({"resourceSpans": [{"resource": {"attributes": [
            {"key": "eventlog.project_id", "value": {"stringValue": p.to_string()}}]},
            "scopeSpans": [{"spans": [{"traceId": TRACE_HEX, "spanId": "0000000000000001", "name": "chat",
                "startTimeUnixNano": "1700000000000000000",
                "attributes": attrs}]}]}]})
        .to_string()
    };
    let svc = Principal {
        sub: "svc".into(),
        role: Role::Service,
        projects: Some(vec![p]),
    };
    let with_user = otlp_json::traces(
        body(json!([
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "enduser.id", "value": {"stringValue": "bob"}}]))
        .as_bytes(),
    )
    .unwrap()
    .request;
    let out = map(&with_user, &svc, &mut SessionMemory::new(4));
    assert_eq!(out.events[0].user_id, "bob");
    let without = otlp_json::traces(
        body(json!([{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}])).as_bytes(),
    )
    .unwrap()
    .request;
    let out = map(&without, &svc, &mut SessionMemory::new(4));
    assert_eq!(out.rejected, 1);
    assert!(out.messages[0].contains("user.id"), "{:?}", out.messages);
    let other = user(Some(vec![Uuid::now_v7()]));
    let out = map(&with_user, &other, &mut SessionMemory::new(4));
    assert_eq!(out.rejected, 1, "{:?}", out.messages);
}

#[test]
fn oversized_attributes_are_truncated_and_flagged_not_refused() {
    let p = Uuid::now_v7();
    let big = "x".repeat(200_000);
    let mut attrs = vec![
        json!({"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}}),
        json!({"key": "gen_ai.tool.name", "value": {"stringValue": "dump"}}),
        json!({"key": "gen_ai.tool.call.result", "value": {"stringValue": big}}),
    ];
    attrs
        .extend((0..20).map(|i| json!({"key": format!("k{i}"), "value": {"stringValue": "y".repeat(9000)}})));
    let body = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "eventlog.project_id", "value": {"stringValue": p.to_string()}}]},
        "scopeSpans": [{"spans": [{"traceId": TRACE_HEX, "spanId": "0000000000000001", "name": "t",
            "startTimeUnixNano": "1700000000000000000", "attributes": attrs}]}]}]});
    let req = otlp_json::traces(body.to_string().as_bytes()).unwrap().request;
    let out = map(&req, &user(None), &mut SessionMemory::new(4));
    assert_eq!(out.rejected, 0, "{:?}", out.messages);
    let result = out.events.iter().find(|e| e.event_type == "TOOL_RESULT").unwrap();
    assert_eq!(result.payload["otel_truncated"], true);
    assert!(
        serde_json::to_vec(&result.payload).unwrap().len() <= crate::model::validation::MAX_PAYLOAD_BYTES
    );
}
