//! GraphiQL без интернета: страница ссылается только на файлы самого сервера, идёт
//! со строгой CSP, и каждый файл отдаётся из бинарника. Отрисовку, запрос и подписку
//! в настоящем браузере проверяет `frontend-examples/tests` (его запускает `.ci/run`).

use serde_json::json;

use crate::both;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

async fn graphiql_is_served_from_the_binary_with_no_external_url(b: Backend) {
    let app = spawn_app(&b).await;
    let r = app
        .client
        .get(format!("{}/graphql", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    // Ни одного внешнего адреса: ни CDN, ни шрифтов.
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let srcs: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/graphiql/"))
        .collect();
    assert!(srcs.len() >= 6, "page references its assets: {srcs:?}");
    for src in srcs {
        let r = app.client.get(format!("{}{src}", app.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{src}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = if src.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(ct.starts_with(expected), "{src}: {ct}");
        let body = r.bytes().await.unwrap();
        assert!(body.len() > 100, "{src} is not empty");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("unpkg.com") && !text.contains("sourceMappingURL"),
            "{src}"
        );
    }
    let r = app
        .client
        .get(format!("{}/graphiql/nope.js", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
both!(graphiql_is_served_from_the_binary_with_no_external_url);

async fn graphiql_assets_are_off_with_graphiql(b: Backend) {
    let app = spawn_app_with(&b, |s| s.disable_graphiql = true).await;
    let r = app
        .client
        .get(format!("{}/graphiql/graphiql.min.js", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
both!(graphiql_assets_are_off_with_graphiql);

/// `getIntrospectionQuery()` graphql-js 16 со всеми флагами — его шлёт GraphiQL.
const INTROSPECTION: &str = r#"query IntrospectionQuery { __schema { description queryType { name kind } mutationType { name kind } subscriptionType { name kind } types { ...FullType } directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } } } } fragment FullType on __Type { kind name description specifiedByURL fields(includeDeprecated: true) { name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields(includeDeprecated: true) { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } } fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue isDeprecated deprecationReason } fragment TypeRef on __Type { kind name ofType { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind } } } } } } } } } }"#;

async fn the_standard_introspection_query_passes_the_limits(b: Backend) {
    let app = spawn_app(&b).await;
    let r = app.graphql(None, INTROSPECTION, json!({})).await;
    assert!(
        r["errors"].is_null(),
        "GraphiQL must be able to load the schema: {r}"
    );
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query");
}
both!(the_standard_introspection_query_passes_the_limits);
