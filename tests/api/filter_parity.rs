//! Один фильтр — два пути: SQL (страница из базы) и `EventFilter::matches` в
//! памяти дают одинаковый ответ на одних и тех же событиях, включая
//! `payloadContains` с семантикой jsonb `@>`.

use chrono::{Duration, TimeZone, Utc};
use eventlog::logger::{EventLogger, LoggerConfig};
use eventlog::model::{Event, EventType, NewEvent};
use eventlog::query::{EventFilter, ReadScope, SortOrder};
use serde_json::json;
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestDb};

fn fixtures(project: Uuid, sessions: &[Uuid]) -> Vec<NewEvent> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let payloads = [
        json!({"a": 1, "tags": ["x", "y"], "nested": {"k": "v", "n": 2.5}}),
        json!({"a": 2, "tags": ["y"], "nested": {"k": "w"}}),
        json!({"a": "1", "flag": true, "list": [{"id": 1, "ok": false}, {"id": 2}]}),
        json!({"flag": false, "n": null, "list": [1, 2, 3]}),
        json!({}),
        json!({"key with \"quotes\"": "v", "ünï": "ü"}),
    ];
    let types = [
        EventType::ToolRequest,
        EventType::ToolResult,
        EventType::Error,
        EventType::ApprovalRequired,
    ];
    (0..48)
        .map(|i| {
            let mut e = NewEvent::new(
                sessions[i % sessions.len()],
                ["alice", "bob"][i % 2],
                project,
                types[i % 4],
            )
            .payload(payloads[i % payloads.len()].clone())
            .at(t0 + Duration::minutes(i as i64 * 7));
            if i % 3 != 0 {
                e = e.agent(format!("agent-{}", i % 4));
            }
            if i % 4 == 2 {
                e = e.error_code(format!("E{}", i % 3));
            }
            if i % 5 == 0 {
                e = e.tool(["search", "deploy"][i % 2]);
            }
            if i % 4 == 3 {
                e.approval_status = Some(["PENDING", "APPROVED"][i % 2].into());
            }
            e
        })
        .collect()
}

async fn sql_and_in_memory_filters_agree(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let project = Uuid::now_v7();
    let sessions: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let logger = EventLogger::start(store.clone(), LoggerConfig::default(), None);
    logger
        .log_batch(fixtures(project, &sessions))
        .unwrap()
        .wait()
        .await
        .unwrap();
    logger.shutdown().await;
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    let filters = vec![
        EventFilter::default(),
        EventFilter {
            event_types: s(&["ERROR", "TOOL_RESULT"]),
            ..Default::default()
        },
        EventFilter {
            event_types: s(&[]),
            ..Default::default()
        },
        EventFilter {
            agent_ids: s(&["agent-1", "agent-2"]),
            ..Default::default()
        },
        EventFilter {
            session_id: Some(sessions[1]),
            ..Default::default()
        },
        EventFilter {
            user_id: Some("bob".into()),
            ..Default::default()
        },
        EventFilter {
            tool_name: Some("search".into()),
            ..Default::default()
        },
        EventFilter {
            error_code: Some("E1".into()),
            ..Default::default()
        },
        EventFilter {
            has_error: Some(true),
            ..Default::default()
        },
        EventFilter {
            has_error: Some(false),
            agent_ids: s(&["agent-3"]),
            ..Default::default()
        },
        EventFilter {
            approval_status: Some("APPROVED".into()),
            ..Default::default()
        },
        EventFilter {
            from: Some(t0 + Duration::minutes(70)),
            to: Some(t0 + Duration::minutes(140)),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"a": 1})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"a": 1.0})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"a": "1"})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"tags": ["y"]})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"tags": ["x", "y"]})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"tags": []})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"nested": {"k": "v"}})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"nested": {"n": 2.5}})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"flag": false})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"n": null})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"list": [{"id": 2}]})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"list": [3, 1]})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"list": [{"id": 1, "ok": true}]})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"key with \"quotes\"": "v", "ünï": "ü"})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"missing": null})),
            ..Default::default()
        },
        EventFilter {
            payload_contains: Some(json!({"tags": ["y"]})),
            has_error: Some(false),
            user_id: Some("alice".into()),
            ..Default::default()
        },
    ];
    let scope = ReadScope {
        project_id: project,
        user_id: None,
    };
    let all: Vec<Event> = store
        .page(
            &scope,
            &EventFilter::default(),
            SortOrder::OldestFirst,
            500,
            0,
            None,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 48);
    for f in filters {
        let sql: Vec<Uuid> = store
            .page(&scope, &f, SortOrder::OldestFirst, 500, 0, None)
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| e.id)
            .collect();
        let mem: Vec<Uuid> = all.iter().filter(|e| f.matches(e)).map(|e| e.id).collect();
        assert_eq!(sql, mem, "filter {f:?}");
    }
}
both!(sql_and_in_memory_filters_agree);
