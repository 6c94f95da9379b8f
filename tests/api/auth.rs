//! Отрицательные случаи JWT: каждый — UNAUTHENTICATED (REST — 401).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventlog::auth::JwtKeys;
use serde_json::json;

use crate::both;
use crate::fixture::code;
use crate::helpers::{Backend, spawn_app};

fn unsigned(header: serde_json::Value, claims: serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn every_bad_token_is_unauthenticated(b: Backend) {
    let app = spawn_app(&b).await;
    let p = uuid::Uuid::now_v7();
    let now = chrono::Utc::now().timestamp();
    let keys = &app.keys;
    let wrong = JwtKeys::new(b"another-secret");
    let ok = json!({"sub": "alice", "exp": now + 600});
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(json!({"alg": "none", "typ": "JWT"}), ok.clone()),
        ),
        ("wrong key", wrong.sign_raw(&ok).unwrap()),
        (
            "expired",
            keys.sign_raw(&json!({"sub": "alice", "exp": now - 60})).unwrap(),
        ),
        (
            "nbf in the future",
            keys.sign_raw(&json!({"sub": "alice", "exp": now + 600, "nbf": now + 300}))
                .unwrap(),
        ),
        ("no exp", keys.sign_raw(&json!({"sub": "alice"})).unwrap()),
        ("no sub", keys.sign_raw(&json!({"exp": now + 600})).unwrap()),
        (
            "unknown role",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "role": "root"}))
                .unwrap(),
        ),
        (
            "admin without projects",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "role": "admin"}))
                .unwrap(),
        ),
        (
            "service without projects",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "role": "service"}))
                .unwrap(),
        ),
        (
            "sub of the wrong type",
            keys.sign_raw(&json!({"sub": 42, "exp": now + 600})).unwrap(),
        ),
        (
            "exp of the wrong type",
            keys.sign_raw(&json!({"sub": "a", "exp": "tomorrow"})).unwrap(),
        ),
        (
            "projects of the wrong type",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "role": "admin", "projects": p.to_string()}))
                .unwrap(),
        ),
        (
            "project not a uuid",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "projects": ["x"]}))
                .unwrap(),
        ),
        (
            "role of the wrong type",
            keys.sign_raw(&json!({"sub": "a", "exp": now + 600, "role": 1}))
                .unwrap(),
        ),
        ("garbage", "not.a.jwt".into()),
    ];
    let q = "query($p: UUID!) { events(projectId: $p) { nodes { id } } }";
    for (what, token) in &cases {
        let r = app.graphql(Some(token), q, json!({"p": p})).await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{what}: {r}");
        let (status, _) = app.get(Some(token), &format!("/my/projects/{p}/events")).await;
        assert_eq!(status, 401, "{what}");
    }
    // Без токена.
    assert_eq!(
        code(&app.graphql(None, q, json!({"p": p})).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(app.get(None, &format!("/my/projects/{p}/events")).await.0, 401);
    // Сам секрет в порядке: тот же набор claims с верной подписью проходит.
    let good = keys.sign_raw(&ok).unwrap();
    assert!(app.graphql(Some(&good), q, json!({"p": p})).await["errors"].is_null());
    // Небольшой допуск часов: истёкший 2 секунды назад ещё принимается.
    let skew = keys.sign_raw(&json!({"sub": "alice", "exp": now - 2})).unwrap();
    assert!(app.graphql(Some(&skew), q, json!({"p": p})).await["errors"].is_null());
}
both!(every_bad_token_is_unauthenticated);
