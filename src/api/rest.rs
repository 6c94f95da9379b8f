//! REST-совместимость (SPEC §6) поверх того же конвейера чтения, что и GraphQL
//! ([`super::reads`]): фильтры, изоляция и курсоры не дублируются.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::graphql::RequestAuth;
use super::graphql::http::auth_from_headers;
use super::reads::{self, EventsRequest};
use crate::query::{CursorKind, EventFilter, Principal, SortOrder};
use crate::storage::analytics::Bucket;

type Params = HashMap<String, String>;

fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    match auth_from_headers(state, headers) {
        RequestAuth::Valid(a) => Ok(a.principal),
        RequestAuth::Missing => Err(ApiError::Unauthenticated("missing bearer token".into())),
        RequestAuth::Invalid(e) => Err(ApiError::Unauthenticated(e.to_string())),
    }
}

fn uuid_param(name: &str, v: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(v).map_err(|_| ApiError::bad_input(name, "must be a UUID"))
}

fn time_param(p: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    p.get(name)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::bad_input(name, "must be an RFC 3339 date-time"))
        })
        .transpose()
}

fn int_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_input(name, "must be an integer"))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

fn page_body(page: reads::PageOut<crate::model::Event>, limit: i64, offset: i64) -> Json<Value> {
    let next = if page.has_next {
        page.items.last().map(|(c, _)| c.clone())
    } else {
        None
    };
    let items: Vec<_> = page.items.into_iter().map(|(_, e)| e).collect();
    Json(json!({"items": items, "next_cursor": next, "limit": limit, "offset": offset}))
}

/// `GET /my/projects/{project_id}/events` — сначала новые.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let principal = principal(&state, &headers)?;
    let project_id = uuid_param("project_id", &project_id)?;
    let filter = EventFilter {
        event_types: p.get("event_type").map(|v| vec![v.clone()]),
        agent_ids: p.get("agent_id").map(|v| vec![v.clone()]),
        session_id: p
            .get("session_id")
            .map(|v| uuid_param("session_id", v))
            .transpose()?,
        from: time_param(&p, "from")?,
        to: time_param(&p, "to")?,
        ..Default::default()
    }
    .normalized();
    let limit = int_param(&p, "limit", 50)?;
    let offset = int_param(&p, "offset", 0)?;
    let page = reads::events_page(
        &state.api,
        &principal,
        EventsRequest {
            kind: CursorKind::Events,
            project_id,
            filter,
            order: SortOrder::NewestFirst,
            first: limit,
            offset,
            after: p.get("cursor").map(String::as_str),
            names: ("limit", "cursor"),
            columns: crate::storage::Columns::ALL,
        },
    )
    .await?;
    Ok(page_body(page, limit, offset))
}

/// `GET /my/projects/{project_id}/events/{session_id}` — сначала старые.
pub async fn session_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project_id, session_id)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let principal = principal(&state, &headers)?;
    let project_id = uuid_param("project_id", &project_id)?;
    let session_id = uuid_param("session_id", &session_id)?;
    let limit = int_param(&p, "limit", 50)?;
    // REST держит предел 1..=500 и для этого маршрута (SPEC §6).
    if !(1..=reads::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_input(
            "limit",
            format!("must be between 1 and {}", reads::MAX_PAGE),
        ));
    }
    let page = reads::events_page(
        &state.api,
        &principal,
        EventsRequest {
            kind: CursorKind::SessionEvents,
            project_id,
            filter: crate::storage::EventRepository::session_filter(session_id),
            order: SortOrder::OldestFirst,
            first: limit,
            offset: 0,
            after: p.get("cursor").map(String::as_str),
            names: ("limit", "cursor"),
            columns: crate::storage::Columns::ALL,
        },
    )
    .await?;
    Ok(page_body(page, limit, 0))
}

/// `GET /my/projects/{project_id}/analytics`.
pub async fn analytics(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let principal = principal(&state, &headers)?;
    let project_id = uuid_param("project_id", &project_id)?;
    let bucket = match p.get("bucket").map(String::as_str) {
        None | Some("hour") => Bucket::Hour,
        Some("minute") => Bucket::Minute,
        Some("day") => Bucket::Day,
        Some(_) => return Err(ApiError::bad_input("bucket", "must be one of minute, hour, day")),
    };
    let filter = EventFilter {
        from: time_param(&p, "from")?,
        to: time_param(&p, "to")?,
        ..Default::default()
    }
    .normalized();
    let a = reads::analytics(&state.api, &principal, project_id, filter, bucket).await?;
    Ok(Json(serde_json::to_value(a).map_err(|e| ApiError::internal(&e))?))
}
