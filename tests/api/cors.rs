//! CORS и проверка `Origin` websocket по `EVENTLOG_CORS_ORIGINS`: браузерное
//! приложение с разрешённого источника вызывает `POST /graphql` (с предварительным
//! OPTIONS) и открывает websocket; чужой источник не получает ни того, ни другого;
//! запросы без `Origin` не затронуты.

use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::both;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

const APP_ORIGIN: &str = "http://localhost:5173";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/graphql", app.addr))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,content-type")
        .send()
        .await
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

async fn cors_allows_the_default_app_origins_and_no_other(b: Backend) {
    // Arrange
    let app = spawn_app(&b).await;
    let p = uuid::Uuid::now_v7();
    let token = app.token("alice", eventlog::query::Role::User, &[p]);
    let q = json!({"query": "query($p: UUID!) { events(projectId: $p) { nodes { id } } }", "variables": {"p": p}});

    // Act + Assert: предварительный запрос с разрешённых источников.
    for origin in [APP_ORIGIN, "http://127.0.0.1:5173"] {
        let resp = preflight(&app, origin).await;
        assert!(
            resp.status().is_success(),
            "preflight from {origin}: {}",
            resp.status()
        );
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        let allowed = header(&resp, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        let methods = header(&resp, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("post"), "{methods}");
    }
    // Сам запрос с разрешённого источника: ответ с заголовком CORS и данными.
    let resp = app
        .client
        .post(format!("{}/graphql", app.addr))
        .header("Origin", APP_ORIGIN)
        .bearer_auth(&token)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(APP_ORIGIN)
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["data"]["events"]["nodes"].is_array(), "{body}");

    // Чужой источник: браузер не получает разрешения ни на preflight, ни на ответ.
    let resp = preflight(&app, "https://evil.example").await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let resp = app
        .client
        .post(format!("{}/graphql", app.addr))
        .header("Origin", "https://evil.example")
        .bearer_auth(&token)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), None);

    // Без Origin (сервис, скрипт): обычный ответ без заголовков CORS.
    let resp = app
        .client
        .post(format!("{}/graphql", app.addr))
        .bearer_auth(&token)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["data"]["events"]["nodes"].is_array(), "{body}");
}
both!(cors_allows_the_default_app_origins_and_no_other);

async fn cors_origins_come_from_the_setting(b: Backend) {
    let app = spawn_app_with(&b, |s| {
        s.cors_origins = vec!["https://dash.example.com".into()];
    })
    .await;
    let resp = preflight(&app, "https://dash.example.com").await;
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("https://dash.example.com")
    );
    // Значение по умолчанию заменено, а не дополнено.
    let resp = preflight(&app, APP_ORIGIN).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}
both!(cors_origins_come_from_the_setting);

/// Апгрейд websocket с заголовком `Origin` (или без него); `Ok(())` — 101, иначе статус.
async fn ws_upgrade(app: &TestApp, origin: Option<&str>) -> Result<(), u16> {
    let mut req = app.ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected websocket error: {e}"),
    }
}

async fn websocket_checks_origin_against_the_same_list(b: Backend) {
    let app = spawn_app(&b).await;
    let own = app.addr.clone();
    assert_eq!(ws_upgrade(&app, None).await, Ok(()), "no Origin");
    assert_eq!(ws_upgrade(&app, Some(APP_ORIGIN)).await, Ok(()), "listed origin");
    assert_eq!(
        ws_upgrade(&app, Some(&own)).await,
        Ok(()),
        "the server's own page (GraphiQL)"
    );
    assert_eq!(ws_upgrade(&app, Some("https://evil.example")).await, Err(403));
    assert_eq!(ws_upgrade(&app, Some("http://localhost:5174")).await, Err(403));

    // С разрешённого источника подписка действительно работает.
    let mut req = app.ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    req.headers_mut().insert("Origin", APP_ORIGIN.parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut ws = crate::helpers::Ws { inner: stream };
    let p = uuid::Uuid::now_v7();
    let token = app.token("alice", eventlog::query::Role::User, &[p]);
    ws.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
}
both!(websocket_checks_origin_against_the_same_list);
