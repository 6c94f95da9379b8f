//! Пределы, которые считают работу, а не поля (issue 11, п. 6): цена аналитики и
//! больших страниц, REST `offset`, размер `payloadContains`, пределы websocket на
//! вызывающего и на сервер — и то, что другой вызывающий при этом не страдает.

use std::time::{Duration, Instant};

use eventlog::query::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::fixture::code;
use crate::helpers::{Backend, TestApp, WsEvent, spawn_app, spawn_app_with};

fn analytics_x(p: Uuid, n: usize) -> String {
    format!(
        "{{ {} }}",
        (0..n)
            .map(|i| format!("a{i}: analytics(projectId: \"{p}\") {{ totalEvents }}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

async fn expensive_fields_cost_what_they_do_and_offset_and_patterns_are_bounded(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let admin = app.token("root", Role::Admin, &[p]);
    // Аналитика стоит 100: четыре в запросе — можно, пять (и уж тем более 29) — нет.
    let r = app.graphql(Some(&admin), &analytics_x(p, 4), json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    for n in [5, 29] {
        let r = app.graphql(Some(&admin), &analytics_x(p, n), json!({})).await;
        assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{n} analytics: {r}");
    }
    // Большая страница стоит пропорционально строкам: одна sessionEvents(first: 5000)
    // со всеми полями — можно, три таких в одном запросе — нет.
    let s = Uuid::now_v7();
    let fields = "edges { cursor node { id seq sessionId userId projectId agentId eventType payload createdAt errorCode toolName approvalStatus } } pageInfo { hasNextPage endCursor }";
    let one =
        format!("{{ sessionEvents(projectId: \"{p}\", sessionId: \"{s}\", first: 5000) {{ {fields} }} }}");
    let r = app.graphql(Some(&admin), &one, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let three = format!(
        "{{ {} }}",
        (0..3)
            .map(|i| format!(
                "s{i}: sessionEvents(projectId: \"{p}\", sessionId: \"{s}\", first: 5000) {{ {fields} }}"
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = app.graphql(Some(&admin), &three, json!({})).await;
    assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    // REST offset: не больше 10 000.
    let (status, body) = app
        .get(Some(&admin), &format!("/my/projects/{p}/events?offset=10001"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "offset", "{body}");
    let (status, _) = app
        .get(Some(&admin), &format!("/my/projects/{p}/events?offset=10000"))
        .await;
    assert_eq!(status, 200);
    // payloadContains: 5000 ключей — BAD_USER_INPUT (на SQLite раньше INTERNAL).
    let q = "query($p: UUID!, $f: EventFilter) { events(projectId: $p, filter: $f) { nodes { id } } }";
    let huge: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("k{i}"), json!(i))).collect();
    let r = app
        .graphql(Some(&admin), q, json!({"p": p, "f": {"payloadContains": huge}}))
        .await;
    assert_eq!(
        code(&r),
        "BAD_USER_INPUT",
        "{}",
        &r.to_string()[..300.min(r.to_string().len())]
    );
    assert_eq!(r["errors"][0]["extensions"]["field"], "filter.payloadContains");
    // Мало байт, но много условий — тоже отказ; 100 — можно.
    let many: serde_json::Map<String, Value> = (0..101).map(|i| (format!("{i}"), json!(1))).collect();
    let r = app
        .graphql(Some(&admin), q, json!({"p": p, "f": {"payloadContains": many}}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let ok: serde_json::Map<String, Value> = (0..100).map(|i| (format!("{i}"), json!(1))).collect();
    let r = app
        .graphql(Some(&admin), q, json!({"p": p, "f": {"payloadContains": ok}}))
        .await;
    assert!(r["errors"].is_null(), "{r}");
}
both!(expensive_fields_cost_what_they_do_and_offset_and_patterns_are_bounded);

const SUB: &str = "subscription($p: UUID!) { events(projectId: $p) { id eventType } }";

async fn acked(app: &TestApp, token: &str) -> crate::helpers::Ws {
    let mut ws = app.ws("graphql-transport-ws", Some(token)).await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    ws
}

async fn a_caller_at_its_caps_does_not_slow_down_another(b: Backend) {
    // Arrange: пределы на вызывающего — 2 соединения и 3 подписки.
    let app = spawn_app_with(&b, |s| {
        s.ws_max_connections_per_token = 2;
        s.ws_max_subscriptions_per_token = 3;
    })
    .await;
    let p = Uuid::now_v7();
    let a = app.token("noisy", Role::User, &[p]);
    let bt = app.token("quiet", Role::User, &[p]);
    // Act: A занимает всё, что ему положено, и просит больше.
    let mut a1 = acked(&app, &a).await;
    let _a2 = acked(&app, &a).await;
    let mut a3 = app.ws("graphql-transport-ws", Some(&a)).await;
    match a3.next(5).await {
        WsEvent::Closed(Some(4429), reason) => assert!(reason.contains("RATE_LIMITED"), "{reason}"),
        other => panic!("third connection of one token must be closed with 4429, got {other:?}"),
    }
    for i in 0..3 {
        a1.subscribe(&format!("a{i}"), SUB, json!({"p": p})).await;
    }
    a1.subscribe("a3", SUB, json!({"p": p})).await;
    let m = a1.json(5).await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["id"], "a3");
    assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
    // Assert: B подключается, подписывается, пишет и читает как обычно.
    let started = Instant::now();
    let mut b1 = acked(&app, &bt).await;
    b1.subscribe("b0", SUB, json!({"p": p})).await;
    let _b2 = acked(&app, &bt).await;
    let r = app
        .ingest(
            &bt,
            json!([{"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "QUIET"}]),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let m = b1.json(5).await;
    assert_eq!(m["payload"]["data"]["events"]["eventType"], "QUIET", "{m}");
    let page = app
        .graphql(
            Some(&bt),
            "query($p: UUID!) { events(projectId: $p) { nodes { id } } }",
            json!({"p": p}),
        )
        .await;
    assert!(page["errors"].is_null(), "{page}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "token B took {:?} while A was at its caps",
        started.elapsed()
    );
    // Закрытая подписка A освобождает место.
    a1.send(json!({"id": "a0", "type": "complete"})).await;
    a1.subscribe("a4", SUB, json!({"p": p})).await;
    // Событие только что записано и не относится к A (user видит свои события):
    // подписка не получит ничего, но и ошибки нет.
    let r = app
        .ingest(
            &a,
            json!([{"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "MINE"}]),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = a1.json(5).await;
        if m["type"] == "next" {
            got.push(m["id"].as_str().unwrap().to_owned());
        } else if m["type"] == "complete" && m["id"] == "a0" {
            continue;
        } else {
            panic!("unexpected message {m}");
        }
        if got.len() == 3 {
            break;
        }
    }
    got.sort();
    assert_eq!(got, vec!["a1", "a2", "a4"], "a4 must run after a0 completed");
}
both!(a_caller_at_its_caps_does_not_slow_down_another);

async fn the_server_wide_websocket_cap_answers_429_before_the_upgrade(b: Backend) {
    let app = spawn_app_with(&b, |s| s.ws_max_connections = 2).await;
    let p = Uuid::now_v7();
    let t = app.token("u", Role::User, &[p]);
    let first = acked(&app, &t).await;
    let _second = acked(&app, &t).await;
    let r = app
        .client
        .get(format!("{}/graphql/ws", app.addr))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "graphql-transport-ws")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    // Закрытое соединение освобождает место.
    drop(first);
    crate::helpers::wait_for("a free websocket slot", 5, || async {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            app.ws_url.as_str(),
        )
        .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.is_ok()
    })
    .await;
}
both!(the_server_wide_websocket_cap_answers_429_before_the_upgrade);

async fn a_page_at_the_size_cap_is_shorter_with_a_working_cursor(b: Backend) {
    // Arrange: предел 10 000 байт, события по ~3 КБ.
    let app = spawn_app_with(&b, |s| s.max_page_bytes = 10_000).await;
    let p = Uuid::now_v7();
    let t = app.token("alice", Role::User, &[p]);
    let session = Uuid::now_v7();
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let batch: Vec<Value> = (0..10)
        .map(|i| {
            json!({"sessionId": session, "projectId": p, "eventType": "BIG",
                   "createdAt": (start + chrono::Duration::seconds(i)).to_rfc3339(),
                   "payload": {"i": i, "blob": "x".repeat(3000)}})
        })
        .collect();
    let r = app.ingest(&t, Value::Array(batch)).await;
    assert!(r["errors"].is_null(), "{r}");
    let q = "query($p: UUID!, $s: UUID!, $after: String) { sessionEvents(projectId: $p, sessionId: $s, first: 10, after: $after) { nodes { payload } pageInfo { hasNextPage endCursor } } }";
    // Act: обход по курсору.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let r = app
            .graphql(Some(&t), q, json!({"p": p, "s": session, "after": after}))
            .await;
        assert!(r["errors"].is_null(), "{r}");
        let conn = &r["data"]["sessionEvents"];
        let nodes = conn["nodes"].as_array().unwrap();
        // Assert: каждая страница в пределе (короче first), но не пустая.
        assert!(
            !nodes.is_empty() && nodes.len() <= 3,
            "page of {} events",
            nodes.len()
        );
        seen.extend(nodes.iter().map(|n| n["payload"]["i"].as_i64().unwrap()));
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
        assert!(pages < 10, "cursor does not advance");
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>(), "every event once, in order");
    assert!(pages >= 4);
    // REST идёт по тому же конвейеру.
    let (status, body) = app
        .get(Some(&t), &format!("/my/projects/{p}/events?limit=10"))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["items"].as_array().unwrap().len() <= 3,
        "{}",
        body["items"].as_array().unwrap().len()
    );
    assert!(body["next_cursor"].is_string());
}
both!(a_page_at_the_size_cap_is_shorter_with_a_working_cursor);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_recorder_upkeep_runs_without_scrapes() {
    let _app = spawn_app(&Backend::Sqlite).await;
    let before = eventlog::metrics::upkeep_runs();
    crate::helpers::wait_for("a metrics upkeep run", 15, || async {
        eventlog::metrics::upkeep_runs() > before
    })
    .await;
}

async fn the_timeline_is_capped_before_and_after_the_query(b: Backend) {
    let app = spawn_app_with(&b, |s| s.max_timeline_points = 100).await;
    let p = Uuid::now_v7();
    let t = app.token("root", Role::Admin, &[p]);
    let q = "query($p: UUID!, $f: EventFilter, $b: TimeBucket) { analytics(projectId: $p, filter: $f, bucket: $b) { timeline { bucketStart events } } }";
    // С нижней границей: 3 часа по минутам — 181 точка > 100, отказ без запроса к базе.
    let from = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    let r = app
        .graphql(Some(&t), q, json!({"p": p, "f": {"from": from}, "b": "MINUTE"}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["field"], "bucket", "{r}");
    let r = app
        .graphql(Some(&t), q, json!({"p": p, "f": {"from": from}, "b": "HOUR"}))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    // Без границы: 150 событий в разные минуты — 150 точек по данным, отказ; по часам — можно.
    let start = chrono::Utc::now() - chrono::Duration::days(2);
    let batch: Vec<Value> = (0..150)
        .map(|i| {
            json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "TICK",
                   "createdAt": (start + chrono::Duration::minutes(i)).to_rfc3339()})
        })
        .collect();
    assert!(app.ingest(&t, Value::Array(batch)).await["errors"].is_null());
    let r = app.graphql(Some(&t), q, json!({"p": p, "b": "MINUTE"})).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let r = app.graphql(Some(&t), q, json!({"p": p, "b": "HOUR"})).await;
    assert!(r["errors"].is_null(), "{r}");
    // 150 минут от произвольной минуты — 3 или 4 часовые корзины.
    let hours = r["data"]["analytics"]["timeline"].as_array().unwrap().len();
    assert!((3..=4).contains(&hours), "{hours} hourly points");
    // REST — тот же конвейер.
    let (status, body) = app
        .get(Some(&t), &format!("/my/projects/{p}/analytics?bucket=minute"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "bucket");
}
both!(the_timeline_is_capped_before_and_after_the_query);

async fn one_token_cannot_take_more_than_its_share_of_the_write_queue(b: Backend) {
    // Ёмкость очереди 10, доля вызывающего 50 % — 5 событий.
    let app = spawn_app_with(&b, |s| {
        s.queue_capacity = 10;
        s.queue_share_per_token_percent = 50;
    })
    .await;
    let p = Uuid::now_v7();
    let a = app.token("noisy", Role::User, &[p]);
    let bt = app.token("quiet", Role::User, &[p]);
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|_| json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "E"}))
                .collect(),
        )
    };
    let resp = app
        .client
        .post(format!("{}/graphql", app.addr))
        .bearer_auth(&a)
        .json(&json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }", "variables": {"e": batch(6)}}))
        .send()
        .await
        .unwrap();
    // HTTP 429 с Retry-After, тело — обычный ответ GraphQL с кодом.
    assert_eq!(resp.status(), 429);
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let r: Value = resp.json().await.unwrap();
    assert_eq!(code(&r), "RATE_LIMITED", "{r}");
    assert!(
        r["errors"][0]["extensions"]["retryAfterMs"].as_u64().is_some(),
        "{r}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    let r = app.ingest(&bt, batch(5)).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.ingest(&a, batch(5)).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.store.count_events().await.unwrap(), 10);
}
both!(one_token_cannot_take_more_than_its_share_of_the_write_queue);

/// Код ошибки сообщения подписки (`error` или `next` с errors).
fn ws_error_code(m: &Value) -> String {
    let err = if m["payload"].is_array() {
        &m["payload"][0]
    } else {
        &m["payload"]["errors"][0]
    };
    err["extensions"]["code"].as_str().unwrap_or_default().to_owned()
}

async fn replays_in_progress_are_capped_per_token(b: Backend) {
    // Arrange: один повтор на вызывающего; история, которая не помещается в буферы
    // сокета, пока клиент не читает (3000 событий по 4 КиБ).
    let app = spawn_app_with(&b, |s| s.max_replays_per_token = 1).await;
    let p = Uuid::now_v7();
    let a = app.token("a", Role::User, &[p]);
    let other = app.token("b", Role::User, &[p]);
    for _ in 0..3 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "TASK_PROGRESS", "payload": {"i": i, "blob": "x".repeat(4096)}}))
            .collect();
        let r = app.ingest(&a, Value::Array(batch)).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    let replay = "subscription($p: UUID!) { events(projectId: $p, afterSeq: \"0\") { id payload } }";
    let mut first = acked(&app, &a).await;
    first.subscribe("1", replay, json!({"p": p})).await;
    assert_eq!(first.json(10).await["type"], "next");

    // Act + Assert: второй повтор того же токена — RATE_LIMITED, другой токен — можно.
    let mut second = acked(&app, &a).await;
    second.subscribe("1", replay, json!({"p": p})).await;
    let m = second.json(10).await;
    assert_eq!(ws_error_code(&m), "RATE_LIMITED", "{m}");
    let mut b_ws = acked(&app, &other).await;
    b_ws.subscribe(
        "1",
        "subscription($p: UUID!) { events(projectId: $p, afterSeq: \"0\") { id } }",
        json!({"p": p}),
    )
    .await;
    // У «b» нет своих событий: повтор пуст, ошибки нет в течение секунды.
    let quiet = tokio::time::timeout(Duration::from_secs(1), b_ws.next(2)).await;
    assert!(quiet.is_err(), "token b must be able to replay: {quiet:?}");
    // Первый повтор дочитан — место освободилось.
    for _ in 1..3000 {
        let m = first.json(20).await;
        assert_eq!(m["type"], "next", "{m}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut third = acked(&app, &a).await;
        third.subscribe("1", replay, json!({"p": p})).await;
        let m = third.json(10).await;
        if m["type"] == "next" {
            break;
        }
        assert_eq!(ws_error_code(&m), "RATE_LIMITED", "{m}");
        assert!(Instant::now() < deadline, "the replay slot was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
both!(replays_in_progress_are_capped_per_token);
