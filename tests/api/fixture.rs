//! Известный набор событий для тестов API: два пользователя, три сессии, два
//! проекта; ожидания тесты считают сами по этим структурам, не через код сервера.

#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventlog::query::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp};

#[derive(Debug, Clone)]
pub struct Fx {
    pub id: Uuid,
    pub session: Uuid,
    pub user: &'static str,
    pub project: Uuid,
    pub agent: Option<String>,
    pub ty: &'static str,
    pub tool: Option<&'static str>,
    pub code: Option<String>,
    pub status: Option<&'static str>,
    pub at: DateTime<Utc>,
    pub payload: Value,
}

impl Fx {
    pub fn input(&self) -> Value {
        json!({
            "id": self.id, "sessionId": self.session, "projectId": self.project, "userId": self.user,
            "agentId": self.agent, "eventType": self.ty, "payload": self.payload,
            "createdAt": self.at.to_rfc3339(), "errorCode": self.code, "toolName": self.tool,
            "approvalStatus": self.status,
        })
    }
}

pub struct World {
    pub app: TestApp,
    pub project: Uuid,
    pub other_project: Uuid,
    pub sessions: Vec<Uuid>,
    pub events: Vec<Fx>,
    pub alice: String,
    pub bob: String,
    pub admin: String,
    pub service: String,
    pub t0: DateTime<Utc>,
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

/// 90 событий в проекте и 10 в другом: типы, агенты, инструменты, ошибки и
/// согласования чередуются с разными периодами.
pub fn mix(project: Uuid, other: Uuid, sessions: &[Uuid]) -> Vec<Fx> {
    let types = [
        "TOOL_REQUEST",
        "TOOL_RESULT",
        "AGENT_SWITCHED",
        "ERROR",
        "APPROVAL_REQUIRED",
        "APPROVAL_RESOLVED",
        "TASK_STARTED",
        "APPROVAL_TIMEOUT",
        "TOOL_REQUEST",
    ];
    (0..100)
        .map(|i| {
            let ty = types[i % types.len()];
            let user = if i % 3 == 0 { "bob" } else { "alice" };
            Fx {
                id: Uuid::now_v7(),
                session: sessions[i % sessions.len()],
                user,
                project: if i < 90 { project } else { other },
                agent: (i % 4 != 0).then(|| format!("agent-{}", ["b", "a", "c"][i % 3])),
                ty,
                tool: match ty {
                    "TOOL_REQUEST" | "TOOL_RESULT" | "APPROVAL_REQUIRED" => Some(["search", "deploy", "calc"][i % 3]),
                    _ => None,
                },
                code: (ty == "ERROR" || (ty == "TOOL_RESULT" && i % 2 == 0)).then(|| format!("E_{}", i % 2)),
                status: match ty {
                    "APPROVAL_REQUIRED" => Some("PENDING"),
                    "APPROVAL_RESOLVED" => Some(if i % 2 == 0 { "APPROVED" } else { "REJECTED" }),
                    "APPROVAL_TIMEOUT" => Some("TIMEOUT"),
                    _ => None,
                },
                // Шаг 7 минут 13 секунд: события попадают в разные минуты, часы и дни.
                at: t0() + Duration::seconds(i as i64 * 433) + Duration::microseconds(i as i64 * 17),
                payload: json!({"i": i, "parity": if i % 2 == 0 { "even" } else { "odd" }, "tags": [format!("t{}", i % 5)]}),
            }
        })
        .collect()
}

pub async fn world(b: &Backend) -> World {
    world_with(b, |_| {}).await
}

/// Мир на сервере с изменёнными настройками.
pub async fn world_with(b: &Backend, tweak: impl FnOnce(&mut eventlog::config::Settings)) -> World {
    let app = crate::helpers::spawn_app_with(b, tweak).await;
    let project = Uuid::now_v7();
    let other_project = Uuid::now_v7();
    let sessions: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let events = mix(project, other_project, &sessions);
    let service = app.token("ingester", Role::Service, &[project, other_project]);
    let inputs: Vec<Value> = events.iter().map(Fx::input).collect();
    let r = app.ingest(&service, Value::Array(inputs)).await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 100, "{r}");
    World {
        alice: app.token("alice", Role::User, &[]),
        bob: app.token("bob", Role::User, &[project]),
        admin: app.token("root", Role::Admin, &[project]),
        service,
        app,
        project,
        other_project,
        sessions,
        events,
        t0: t0(),
    }
}

/// Видимые пользователю `user` (None — администратору) события проекта,
/// отсортированные как NEWEST_FIRST.
pub fn visible<'a>(w: &'a World, user: Option<&str>) -> Vec<&'a Fx> {
    let mut v: Vec<&Fx> = w
        .events
        .iter()
        .filter(|e| e.project == w.project && user.is_none_or(|u| e.user == u))
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
    v
}

pub fn ids(v: &[&Fx]) -> Vec<String> {
    v.iter().map(|e| e.id.to_string()).collect()
}

pub fn node_ids(resp: &Value, field: &str) -> Vec<String> {
    resp["data"][field]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {resp}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn code(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {resp}"))
}
