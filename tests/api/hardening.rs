//! Защиты, которые async-graphql по умолчанию оставляет открытыми.

use eventlog::query::Role;
use serde_json::json;

use crate::both;
use crate::fixture::code;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

async fn limits_depth_complexity_aliases_batches_methods_types_and_size(b: Backend) {
    let app = spawn_app_with(&b, |s| s.body_limit = 64 * 1024).await;
    let p = uuid::Uuid::now_v7();
    let t = app.token("alice", Role::User, &[p]);
    let url = format!("{}/graphql", app.addr);
    // Глубина: интроспекция с вложенными ofType глубже предела.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(12),
        "}".repeat(12)
    );
    let r = app.graphql(Some(&t), &deep, json!({})).await;
    assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("nested too deep"),
        "deep query must be refused for depth: {r}"
    );
    let shallow = "{ __schema { types { fields { type { ofType { name } } } } } }";
    assert!(app.graphql(Some(&t), shallow, json!({})).await["errors"].is_null());
    // Сложность: много полей (30 аналитик по ~40 полей > 500).
    let wide = format!("{{ {} }}", (0..30).map(|i| format!("a{i}: analytics(projectId: \"{p}\") {{ totalEvents sessions eventTypeCounts {{ eventType count }} agentInteractions {{ agentId events sessions toolCalls errors lastSeenAt }} errorStats {{ totalErrors errorRate byCode {{ errorCode count }} byTool {{ toolName calls errors }} }} timeline {{ bucketStart events errors }} approvals {{ required approved rejected timedOut }} }}")).collect::<Vec<_>>().join(" "));
    let r = app.graphql(Some(&t), &wide, json!({})).await;
    assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("complex"),
        "complex query must be refused for complexity: {r}"
    );
    // Псевдонимы.
    let aliases = format!(
        "{{ {} }}",
        (0..31)
            .map(|i| format!("x{i}: __typename"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = app.graphql(Some(&t), &aliases, json!({})).await;
    assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    let few = format!(
        "{{ {} }}",
        (0..30)
            .map(|i| format!("x{i}: __typename"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(app.graphql(Some(&t), &few, json!({})).await["errors"].is_null());
    // Пакет-массив — 400.
    let r = app
        .client
        .post(&url)
        .json(&json!([{"query": "{ __typename }"}, {"query": "{ __typename }"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Не JSON — 415.
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query={__typename}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Мутация по GET — 405; запрос по GET — можно.
    let r = app
        .client
        .get(&url)
        .query(&[("query", "mutation { ingestEvents(events: []) { accepted } }")])
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = app
        .client
        .get(&url)
        .query(&[("query", "{ __typename }")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["data"]["__typename"],
        "Query"
    );
    // Тело больше предела — 413.
    let big = json!({"query": "{ __typename }", "variables": {"x": "y".repeat(70 * 1024)}});
    let r = app.client.post(&url).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // GraphiQL по GET без параметров.
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("graphiql"));
}
both!(limits_depth_complexity_aliases_batches_methods_types_and_size);

async fn graphiql_and_introspection_can_be_switched_off(b: Backend) {
    let app = spawn_app_with(&b, |s| {
        s.disable_graphiql = true;
        s.disable_introspection = true;
    })
    .await;
    let r = app
        .client
        .get(format!("{}/graphql", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .graphql(None, "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(r["data"].is_null() || r["data"]["__schema"].is_null(), "{r}");
    // Включённая по умолчанию интроспекция работает.
    let on = spawn_app(&b).await;
    let r = on
        .graphql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query");
}
both!(graphiql_and_introspection_can_be_switched_off);

async fn internal_errors_are_masked(b: Backend) {
    let app = spawn_app(&b).await;
    let p = uuid::Uuid::now_v7();
    let t = app.token("alice", Role::User, &[p]);
    // Ломаем базу под сервером: таблицы больше нет.
    use sea_orm::ConnectionTrait;
    app.store
        .connection()
        .execute_unprepared("ALTER TABLE event_logs RENAME TO event_logs_gone")
        .await
        .unwrap();
    let r = app
        .graphql(
            Some(&t),
            "query($p: UUID!) { events(projectId: $p) { nodes { id } } }",
            json!({"p": p}),
        )
        .await;
    assert_eq!(code(&r), "INTERNAL");
    let text = r.to_string().to_lowercase();
    for leak in [
        "event_logs",
        "select",
        "sqlx",
        "relation",
        "no such table",
        "postgres",
        "sqlite",
    ] {
        assert!(!text.contains(leak), "internal error leaks {leak:?}: {r}");
    }
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("internal error (id ")
    );
    let (status, body) = app.get(Some(&t), &format!("/my/projects/{p}/events")).await;
    assert_eq!(status, 500);
    assert!(!body.to_string().to_lowercase().contains("event_logs"));
}
both!(internal_errors_are_masked);
