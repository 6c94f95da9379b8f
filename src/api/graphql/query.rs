//! Запросы: `events`, `sessionEvents`, `event`, `sessions` (EventQuery) и
//! `analytics` (AnalyticsQuery).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Object, Result};
use uuid::Uuid;

use super::principal;
use super::types::{
    EventConnection, EventEdge, EventFilterInput, EventNode, SessionConnection, SessionEdge, SortOrder,
    TimeBucket, page_info,
};
use crate::api::ApiContext;
use crate::api::error::ApiError;
use crate::api::reads::{self, EventsRequest};
use crate::query::{CursorKind, EventFilter, SortOrder as QuerySortOrder};
use crate::storage::Columns;
use crate::storage::analytics::Analytics;
use crate::storage::events::SessionSummary;

/// Запросы истории событий и сессий.
#[derive(Default)]
pub struct EventQuery;

/// Загружает сводки сессий страницы одним пакетом, если запрос просит `session`
/// (так число запросов не зависит ни от размера страницы, ни от того, как
/// планировщик разложит загрузки DataLoader'а во времени).
async fn prefetch_sessions(
    ctx: &Context<'_>,
    page: &reads::PageOut<crate::model::Event>,
) -> Result<Option<Arc<HashMap<Uuid, SessionSummary>>>> {
    let la = ctx.look_ahead();
    let wanted = la.field("nodes").field("session").exists()
        || la.field("edges").field("node").field("session").exists();
    if !wanted || page.items.is_empty() {
        return Ok(None);
    }
    let mut ids: Vec<Uuid> = page.items.iter().map(|(_, e)| e.session_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let map = ctx
        .data::<ApiContext>()?
        .store
        .session_summaries(&page.scope, &ids)
        .await
        .map_err(|e| ApiError::from(e).into_gql())?;
    Ok(Some(Arc::new(map)))
}

/// Столбцы, которые нужны выбранным полям событий страницы.
fn selected_columns(ctx: &Context<'_>) -> Columns {
    let la = ctx.look_ahead();
    let nodes = la.field("nodes");
    let edge_nodes = la.field("edges").field("node");
    Columns::for_graphql_selection(|f| nodes.field(f).exists() || edge_nodes.field(f).exists())
}

fn connection(
    page: reads::PageOut<crate::model::Event>,
    sessions: Option<Arc<HashMap<Uuid, SessionSummary>>>,
) -> EventConnection {
    let scope = Arc::new(page.scope);
    let info = page_info(&page.items, page.has_next, page.has_previous);
    EventConnection {
        edges: page
            .items
            .into_iter()
            .map(|(cursor, e)| EventEdge {
                cursor,
                node: EventNode {
                    event: Arc::new(e),
                    scope: scope.clone(),
                    sessions: sessions.clone(),
                },
            })
            .collect(),
        page_info: info,
    }
}

#[Object]
impl EventQuery {
    /// События проекта под фильтром, по (createdAt, id), сначала новые по умолчанию.
    #[graphql(complexity = "super::limits::page_cost(first, 50, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        project_id: Uuid,
        filter: Option<EventFilterInput>,
        #[graphql(default_with = "Some(SortOrder::NewestFirst)")] order: Option<SortOrder>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<EventConnection> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        let page = reads::events_page(
            ctx.data::<ApiContext>()?,
            p,
            EventsRequest {
                kind: CursorKind::Events,
                project_id,
                filter: filter.map(Into::into).unwrap_or_default(),
                order: order.unwrap_or(SortOrder::NewestFirst).into(),
                first: first.unwrap_or(50).into(),
                offset: 0,
                after: after.as_deref(),
                names: ("first", "after"),
                columns: selected_columns(ctx),
            },
        )
        .await
        .map_err(ApiError::into_gql)?;
        let sessions = prefetch_sessions(ctx, &page).await?;
        Ok(connection(page, sessions))
    }

    /// События сессии, сначала старые.
    #[graphql(complexity = "super::limits::page_cost(first, 500, child_complexity)")]
    async fn session_events(
        &self,
        ctx: &Context<'_>,
        project_id: Uuid,
        session_id: Uuid,
        #[graphql(default = 500)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<EventConnection> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        let page = reads::events_page(
            ctx.data::<ApiContext>()?,
            p,
            EventsRequest {
                kind: CursorKind::SessionEvents,
                project_id,
                filter: crate::storage::EventRepository::session_filter(session_id),
                order: QuerySortOrder::OldestFirst,
                first: first.unwrap_or(500).into(),
                offset: 0,
                after: after.as_deref(),
                names: ("first", "after"),
                columns: selected_columns(ctx),
            },
        )
        .await
        .map_err(ApiError::into_gql)?;
        let sessions = prefetch_sessions(ctx, &page).await?;
        Ok(connection(page, sessions))
    }

    /// Событие по id; null, если его нет или оно не видно.
    async fn event(&self, ctx: &Context<'_>, project_id: Uuid, id: Uuid) -> Result<Option<EventNode>> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        let api = ctx.data::<ApiContext>()?;
        let scope =
            reads::scope_for(api, p, project_id, &EventFilter::default()).map_err(ApiError::into_gql)?;
        let found = api
            .repo
            .get_event(&scope, id)
            .await
            .map_err(|e| ApiError::from(e).into_gql())?;
        Ok(found.map(|e| EventNode {
            event: Arc::new(e),
            scope: Arc::new(scope),
            sessions: None,
        }))
    }

    /// Сессии с хотя бы одним видимым подходящим событием, по последней активности.
    #[graphql(
        complexity = "super::limits::SESSIONS_COST + super::limits::page_cost(first, 50, child_complexity)"
    )]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        project_id: Uuid,
        filter: Option<EventFilterInput>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<SessionConnection> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        let page = reads::sessions_page(
            ctx.data::<ApiContext>()?,
            p,
            project_id,
            filter.map(Into::into).unwrap_or_default(),
            first.unwrap_or(50).into(),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::into_gql)?;
        let info = page_info(&page.items, page.has_next, page.has_previous);
        Ok(SessionConnection {
            edges: page
                .items
                .into_iter()
                .map(|(cursor, node)| SessionEdge { cursor, node })
                .collect(),
            page_info: info,
        })
    }
}

/// Аналитика.
#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Аналитика проекта под фильтром; считается базой.
    #[graphql(complexity = "super::limits::ANALYTICS_COST + child_complexity")]
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        project_id: Uuid,
        filter: Option<EventFilterInput>,
        #[graphql(default_with = "Some(TimeBucket::Hour)")] bucket: Option<TimeBucket>,
    ) -> Result<Analytics> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        reads::analytics(
            ctx.data::<ApiContext>()?,
            p,
            project_id,
            filter.map(Into::into).unwrap_or_default(),
            bucket.unwrap_or(TimeBucket::Hour).into(),
        )
        .await
        .map_err(ApiError::into_gql)
    }
}
