//! HTTP-обработчики GraphQL: `POST /graphql` (только `application/json`, один
//! запрос, без пакетов-массивов, предел тела — слоем маршрутизатора, таймаут
//! выполнения) и `GET /graphql` (GraphiQL; запросы без мутаций, мутация — 405).

use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Request, Response, Variables};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::RequestAuth;
use super::loader::SessionLoader;
use crate::api::AppState;
use crate::auth::bearer_token;

/// Аутентификация по заголовку `Authorization`.
pub(crate) fn auth_from_headers(state: &AppState, headers: &HeaderMap) -> RequestAuth {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return RequestAuth::Missing;
    };
    let verified = value
        .to_str()
        .map_err(|_| crate::auth::AuthError::Missing)
        .and_then(bearer_token)
        .and_then(|t| state.keys.verify(t));
    match verified {
        Ok(a) => RequestAuth::Valid(a),
        Err(e) => RequestAuth::Invalid(e),
    }
}

fn plain_error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    (
        status,
        Json(json!({"errors": [{"message": message, "extensions": {"code": code}}]})),
    )
        .into_response()
}

/// Медиатип ответа GraphQL over HTTP.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// Клиент просит `application/graphql-response+json` (заголовок `Accept`).
fn wants_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.split(';').next())
        .any(|m| m.trim().eq_ignore_ascii_case(GRAPHQL_RESPONSE_JSON))
}

/// Весь ответ — отказ по пределу на вызывающего (RATE_LIMITED, данных нет):
/// через сколько секунд повторить (вверх из `retryAfterMs`, не меньше 1).
fn rate_limited_retry_secs(resp: &Response) -> Option<u64> {
    let limited = resp.data == async_graphql::Value::Null
        && !resp.errors.is_empty()
        && resp
            .errors
            .iter()
            .all(|e| super::codes::code_of(e) == Some(super::codes::RATE_LIMITED));
    if !limited {
        return None;
    }
    let retry_ms = resp
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref()?.get("retryAfterMs")? {
            async_graphql::Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .max()
        .unwrap_or(1000);
    Some(retry_ms.div_ceil(1000).max(1))
}

/// Ответ в медиатипе, который просил клиент. С `application/graphql-response+json`
/// ошибка запроса (разбор, проверка, переменные) — 400 без поля `data`; с
/// `application/json` — 200, как ждут старые клиенты.
fn respond(headers: &HeaderMap, resp: Response) -> axum::response::Response {
    // RATE_LIMITED: HTTP 429 с `Retry-After` и тем же телом.
    if let Some(secs) = rate_limited_retry_secs(&resp) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(resp),
        )
            .into_response();
    }
    if !wants_graphql_response(headers) {
        return Json(resp).into_response();
    }
    let content_type = [(
        header::CONTENT_TYPE,
        "application/graphql-response+json; charset=utf-8",
    )];
    if super::codes::is_request_error(&resp) {
        let body = json!({"errors": resp.errors});
        return (StatusCode::BAD_REQUEST, content_type, body.to_string()).into_response();
    }
    match serde_json::to_string(&resp) {
        Ok(body) => (StatusCode::OK, content_type, body).into_response(),
        Err(e) => crate::api::error::ApiError::internal(&e).into_response(),
    }
}

/// Успешный ответ быстрого пути: те же заголовки и код, что у [`respond`] для
/// успешного ответа общего пути.
fn respond_body(headers: &HeaderMap, body: Vec<u8>) -> axum::response::Response {
    let content_type = if wants_graphql_response(headers) {
        "application/graphql-response+json; charset=utf-8"
    } else {
        "application/json"
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn execute(state: &AppState, headers: &HeaderMap, req: Request) -> axum::response::Response {
    let auth = auth_from_headers(state, headers);
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    // Быстрый путь страниц событий; `None` — запрос идёт общим путём.
    if state.settings.graphql_fast_path
        && let RequestAuth::Valid(a) = &auth
    {
        let fast = state.fast.try_execute(
            &state.api,
            &a.principal,
            &req.query,
            req.operation_name.as_deref(),
            &req.variables,
        );
        match tokio::time::timeout(timeout, fast).await {
            Ok(Some(body)) => return respond_body(headers, body),
            Ok(None) => {}
            Err(_) => return respond(headers, super::codes::timeout_response(timeout)),
        }
    }
    let loader = DataLoader::new(
        SessionLoader {
            store: state.api.store.clone(),
        },
        tokio::spawn,
    );
    let req = req.data(auth).data(loader);
    let resp = match tokio::time::timeout(timeout, state.schema.execute(req)).await {
        Ok(r) => r,
        Err(_) => super::codes::timeout_response(timeout),
    };
    respond(headers, resp)
}

/// `POST /graphql`.
pub async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_ct {
        return plain_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "Content-Type must be application/json",
        );
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "batch requests are not supported: send one operation per request",
        );
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("invalid GraphQL request body: {e}"),
            );
        }
    };
    execute(&state, &headers, req).await
}

/// Параметры `GET /graphql`.
#[derive(Debug, Deserialize)]
pub struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

/// `GET /graphql`: GraphiQL без параметров, иначе запрос (мутации и подписки — 405).
pub async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<GetParams>,
) -> axum::response::Response {
    let Some(query) = params.query else {
        if state.settings.disable_graphiql {
            return StatusCode::NOT_FOUND.into_response();
        }
        return super::graphiql::page();
    };
    if let Ok(doc) = async_graphql::parser::parse_query(&query) {
        let ops: Vec<OperationType> = match &doc.operations {
            DocumentOperations::Single(op) => vec![op.node.ty],
            DocumentOperations::Multiple(m) => m.values().map(|op| op.node.ty).collect(),
        };
        if ops.iter().any(|t| *t != OperationType::Query) {
            return plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_USER_INPUT",
                "mutations and subscriptions are not allowed over GET; use POST",
            );
        }
    }
    let mut req = Request::new(query);
    if let Some(op) = params.operation_name {
        req = req.operation_name(op);
    }
    if let Some(vars) = params.variables {
        match serde_json::from_str::<serde_json::Value>(&vars) {
            Ok(v) => req = req.variables(Variables::from_json(v)),
            Err(e) => {
                return plain_error(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    &format!("variables: {e}"),
                );
            }
        }
    }
    execute(&state, &headers, req).await
}
