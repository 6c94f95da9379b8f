//! Аналитика на известной смеси: каждое поле `Analytics` и правила порядка.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DurationRound, TimeDelta};
use serde_json::{Value, json};

use crate::both;
use crate::fixture::{Fx, visible, world};
use crate::helpers::Backend;

const Q: &str =
    "query($p: UUID!, $f: EventFilter, $b: TimeBucket) { analytics(projectId: $p, filter: $f, bucket: $b) {
  totalEvents sessions
  eventTypeCounts { eventType count }
  agentInteractions { agentId events sessions toolCalls errors lastSeenAt }
  errorStats { totalErrors errorRate byCode { errorCode count } byTool { toolName calls errors } }
  timeline { bucketStart events errors }
  approvals { required approved rejected timedOut } } }";

/// События, сессии, вызовы, ошибки, последнее появление.
type AgentAcc = (i64, BTreeSet<uuid::Uuid>, i64, i64, chrono::DateTime<chrono::Utc>);

fn expected(evs: &[&Fx], bucket: TimeDelta) -> Value {
    let mut types: BTreeMap<&str, i64> = BTreeMap::new();
    let mut agents: BTreeMap<String, AgentAcc> = BTreeMap::new();
    let mut codes: BTreeMap<String, i64> = BTreeMap::new();
    let mut tools: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut timeline: BTreeMap<chrono::DateTime<chrono::Utc>, (i64, i64)> = BTreeMap::new();
    let sessions: BTreeSet<_> = evs.iter().map(|e| e.session).collect();
    for e in evs {
        *types.entry(e.ty).or_default() += 1;
        if let Some(a) = &e.agent {
            let x = agents
                .entry(a.clone())
                .or_insert((0, BTreeSet::new(), 0, 0, e.at));
            x.0 += 1;
            x.1.insert(e.session);
            x.2 += i64::from(e.ty == "TOOL_REQUEST");
            x.3 += i64::from(e.code.is_some());
            x.4 = x.4.max(e.at);
        }
        if let Some(c) = &e.code {
            *codes.entry(c.clone()).or_default() += 1;
        }
        if let Some(t) = e.tool {
            let x = tools.entry(t).or_default();
            x.0 += i64::from(e.ty == "TOOL_REQUEST");
            x.1 += i64::from(e.code.is_some());
        }
        let b = e.at.duration_trunc(bucket).unwrap();
        let x = timeline.entry(b).or_default();
        x.0 += 1;
        x.1 += i64::from(e.code.is_some());
    }
    let mut tc: Vec<_> = types.into_iter().collect();
    tc.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut ai: Vec<_> = agents.into_iter().collect();
    ai.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut bc: Vec<_> = codes.into_iter().collect();
    bc.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut bt: Vec<_> = tools.into_iter().filter(|(_, (c, e))| *c > 0 || *e > 0).collect();
    bt.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(b.1.0.cmp(&a.1.0)).then(a.0.cmp(b.0)));
    let total = evs.len() as i64;
    let errors = evs.iter().filter(|e| e.code.is_some()).count() as i64;
    let count = |t: &str, s: Option<&str>| {
        evs.iter()
            .filter(|e| e.ty == t && (s.is_none() || e.status == s))
            .count()
    };
    json!({
        "totalEvents": total,
        "sessions": sessions.len(),
        "eventTypeCounts": tc.iter().map(|(t, c)| json!({"eventType": t, "count": c})).collect::<Vec<_>>(),
        "agentInteractions": ai.iter().map(|(a, x)| json!({
            "agentId": a, "events": x.0, "sessions": x.1.len(), "toolCalls": x.2, "errors": x.3,
            "lastSeenAt": x.4,
        })).collect::<Vec<_>>(),
        "errorStats": {
            "totalErrors": errors,
            "errorRate": if total == 0 { 0.0 } else { errors as f64 / total as f64 },
            "byCode": bc.iter().map(|(c, n)| json!({"errorCode": c, "count": n})).collect::<Vec<_>>(),
            "byTool": bt.iter().map(|(t, (c, e))| json!({"toolName": t, "calls": c, "errors": e})).collect::<Vec<_>>(),
        },
        "timeline": timeline.iter().map(|(b, (n, e))| json!({"bucketStart": b, "events": n, "errors": e})).collect::<Vec<_>>(),
        "approvals": {
            "required": count("APPROVAL_REQUIRED", None),
            "approved": count("APPROVAL_RESOLVED", Some("APPROVED")),
            "rejected": count("APPROVAL_RESOLVED", Some("REJECTED")),
            "timedOut": count("APPROVAL_TIMEOUT", None),
        },
    })
}

/// Время в ответе сравниваем как моменты, а не как строки формата.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "errorRate" {
                    *x = json!((x.as_f64().unwrap() * 1e9).round() as i64);
                } else if matches!(k.as_str(), "lastSeenAt" | "bucketStart") {
                    let t: chrono::DateTime<chrono::Utc> = serde_json::from_value(x.clone()).unwrap();
                    *x = json!(t.timestamp_micros());
                } else {
                    normalize(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

async fn analytics_match_a_known_mix_field_by_field(b: Backend) {
    let w = world(&b).await;
    let cases = [
        (&w.admin, None, json!({}), "HOUR", TimeDelta::hours(1)),
        (
            &w.alice,
            Some("alice"),
            json!({}),
            "MINUTE",
            TimeDelta::minutes(1),
        ),
        (
            &w.admin,
            None,
            json!({"agentIds": ["agent-a", "agent-b"]}),
            "DAY",
            TimeDelta::days(1),
        ),
        (
            &w.bob,
            Some("bob"),
            json!({"hasError": true}),
            "HOUR",
            TimeDelta::hours(1),
        ),
        (
            &w.admin,
            None,
            json!({"eventTypes": ["NOPE"]}),
            "HOUR",
            TimeDelta::hours(1),
        ),
    ];
    for (token, user, filter, bucket, width) in cases {
        let r = w
            .app
            .graphql(Some(token), Q, json!({"p": w.project, "f": filter, "b": bucket}))
            .await;
        assert!(r["errors"].is_null(), "{r}");
        let f: eventlog::query::EventFilter = serde_json::from_value(json!({
            "agent_ids": filter.get("agentIds"), "has_error": filter.get("hasError"), "event_types": filter.get("eventTypes"),
        }))
        .unwrap();
        let evs: Vec<&Fx> = visible(&w, user)
            .into_iter()
            .filter(|e| {
                f.agent_ids
                    .as_ref()
                    .is_none_or(|a| e.agent.as_ref().is_some_and(|x| a.contains(x)))
                    && f.has_error.is_none_or(|h| h == e.code.is_some())
                    && f.event_types.as_ref().is_none_or(|t| t.iter().any(|x| x == e.ty))
            })
            .collect();
        let mut got = r["data"]["analytics"].clone();
        let mut want = expected(&evs, width);
        normalize(&mut got);
        normalize(&mut want);
        assert_eq!(got, want, "filter {filter} bucket {bucket}");
    }
}
both!(analytics_match_a_known_mix_field_by_field);

const MODELS: &str = "query($p: UUID!, $f: EventFilter) { analytics(projectId: $p, filter: $f) {
  modelUsage { model calls inputTokens outputTokens errors } } }";

async fn model_usage_sums_model_calls_per_model_in_order(b: Backend) {
    // Arrange: вызовы трёх моделей, ошибка, мусорные токены, вызов без модели,
    // событие другого типа с теми же ключами (не считается) и чужой пользователь.
    let app = crate::helpers::spawn_app(&b).await;
    let p = uuid::Uuid::now_v7();
    let alice = app.token("alice", eventlog::query::Role::User, &[p]);
    let bob = app.token("bob", eventlog::query::Role::User, &[p]);
    let s = uuid::Uuid::now_v7();
    let call = |payload: Value, code: Option<&str>| {
        json!({"sessionId": s, "projectId": p, "eventType": "MODEL_CALL", "agentId": "a",
               "payload": payload, "errorCode": code})
    };
    let events = json!([
        call(json!({"model": "gpt-4o", "input_tokens": 100, "output_tokens": 20}), None),
        call(json!({"model": "gpt-4o", "input_tokens": 50, "output_tokens": 5}), Some("rate_limit")),
        call(json!({"model": "claude", "input_tokens": 7, "output_tokens": 3}), None),
        call(json!({"model": "claude", "input_tokens": "9", "output_tokens": -4}), None),
        call(json!({"model": "b-model", "input_tokens": 1e30, "output_tokens": 2}), None),
        call(json!({"input_tokens": 1, "output_tokens": 2.5}), None),
        {"sessionId": s, "projectId": p, "eventType": "TOOL_REQUEST",
         "payload": {"model": "gpt-4o", "input_tokens": 1000}},
    ]);
    let r = app.ingest(&alice, events).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app
        .ingest(
            &bob,
            json!([call(json!({"model": "gpt-4o", "input_tokens": 1}), None)]),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");

    // Act
    let r = app.graphql(Some(&alice), MODELS, json!({"p": p})).await;
    let none = app
        .graphql(Some(&alice), MODELS, json!({"p": p, "f": {"hasError": true}}))
        .await;

    // Assert: вызовы по убыванию, затем модель; строки, дробные, отрицательные и огромные токены — 0.
    assert_eq!(
        r["data"]["analytics"]["modelUsage"],
        json!([
            {"model": "claude", "calls": 2, "inputTokens": 7, "outputTokens": 3, "errors": 0},
            {"model": "gpt-4o", "calls": 2, "inputTokens": 150, "outputTokens": 25, "errors": 1},
            {"model": "b-model", "calls": 1, "inputTokens": 0, "outputTokens": 2, "errors": 0},
            {"model": "unknown", "calls": 1, "inputTokens": 1, "outputTokens": 0, "errors": 0},
        ]),
        "{r}"
    );
    assert_eq!(
        none["data"]["analytics"]["modelUsage"],
        json!([{"model": "gpt-4o", "calls": 1, "inputTokens": 50, "outputTokens": 5, "errors": 1}]),
        "{none}"
    );
}
both!(model_usage_sums_model_calls_per_model_in_order);
