//! Типы GraphQL SPEC §5: событие (с полем `session` через DataLoader), входные
//! типы фильтра и приёма, соединения для пагинации. Выходные типы аналитики и
//! сводки сессий выводятся прямо из структур `storage` (одно определение для
//! GraphQL и REST).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::loader::{SessionKey, SessionLoader};
use crate::api::error::ApiError;
use crate::model::{Event, EventDraft};
use crate::query::{EventFilter, ReadScope, SortOrder as QuerySortOrder};
use crate::storage::analytics::Bucket;
use crate::storage::events::SessionSummary;

/// Событие для GraphQL: сохранённая строка и область, в которой её прочитали
/// (по ней DataLoader считает сводку сессии только по видимым событиям).
#[derive(Clone)]
pub struct EventNode {
    pub(crate) event: Arc<Event>,
    pub(crate) scope: Arc<ReadScope>,
    /// Сводки сессий всей страницы, загруженные одним пакетом заранее (если
    /// запрос просит `session`); иначе — DataLoader.
    pub(crate) sessions: Option<Arc<HashMap<Uuid, SessionSummary>>>,
}

#[Object(name = "Event")]
impl EventNode {
    async fn id(&self) -> Uuid {
        self.event.id
    }
    /// Порядок записи (64-битное целое строкой); точка возобновления подписок.
    async fn seq(&self) -> String {
        self.event.seq.to_string()
    }
    async fn session_id(&self) -> Uuid {
        self.event.session_id
    }
    async fn user_id(&self) -> &str {
        &self.event.user_id
    }
    async fn project_id(&self) -> Uuid {
        self.event.project_id
    }
    async fn agent_id(&self) -> Option<&str> {
        self.event.agent_id.as_deref()
    }
    async fn event_type(&self) -> &str {
        &self.event.event_type
    }
    async fn payload(&self) -> Json<Value> {
        Json(Value::Object(self.event.payload.clone()))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.event.created_at
    }
    async fn error_code(&self) -> Option<&str> {
        self.event.error_code.as_deref()
    }
    async fn tool_name(&self) -> Option<&str> {
        self.event.tool_name.as_deref()
    }
    async fn approval_status(&self) -> Option<&str> {
        self.event.approval_status.as_deref()
    }
    /// Сводка сессии. На страницах — одним пакетом на страницу (заранее, по
    /// look-ahead), в подписках и `event` — через DataLoader.
    async fn session(&self, ctx: &Context<'_>) -> Result<SessionSummary> {
        if let Some(s) = self.sessions.as_ref().and_then(|m| m.get(&self.event.session_id)) {
            return Ok(s.clone());
        }
        let loader = ctx.data::<DataLoader<SessionLoader>>()?;
        let key = SessionKey {
            scope: self.scope.clone(),
            session_id: self.event.session_id,
        };
        match loader.load_one(key).await {
            Ok(Some(s)) => Ok(s),
            // Событие видно, значит и его сессия; отсутствие — гонка с удалением.
            Ok(None) => Err(ApiError::internal(&"session summary missing for a visible event").into_gql()),
            Err(e) => Err(ApiError::internal(&e).into_gql()),
        }
    }
}

/// Фильтр событий (SPEC §5 `EventFilter`).
#[derive(Debug, Clone, Default, InputObject)]
#[graphql(name = "EventFilter")]
pub struct EventFilterInput {
    pub event_types: Option<Vec<String>>,
    pub agent_ids: Option<Vec<String>>,
    pub session_id: Option<Uuid>,
    /// Только для администратора; для обычного пользователя чужое значение не даёт строк.
    pub user_id: Option<String>,
    pub tool_name: Option<String>,
    pub error_code: Option<String>,
    /// errorCode задан / не задан.
    pub has_error: Option<bool>,
    pub approval_status: Option<String>,
    /// Включительно.
    pub from: Option<DateTime<Utc>>,
    /// Не включая.
    pub to: Option<DateTime<Utc>>,
    /// События, нагрузка которых содержит этот JSON-объект (семантика jsonb @>).
    pub payload_contains: Option<Json<Value>>,
}

impl From<EventFilterInput> for EventFilter {
    fn from(f: EventFilterInput) -> Self {
        EventFilter {
            event_types: f.event_types,
            agent_ids: f.agent_ids,
            session_id: f.session_id,
            user_id: f.user_id,
            tool_name: f.tool_name,
            error_code: f.error_code,
            has_error: f.has_error,
            approval_status: f.approval_status,
            from: f.from,
            to: f.to,
            payload_contains: f.payload_contains.map(|j| j.0),
        }
        .normalized()
    }
}

/// Порядок сортировки.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SortOrder {
    NewestFirst,
    OldestFirst,
}

impl From<SortOrder> for QuerySortOrder {
    fn from(o: SortOrder) -> Self {
        match o {
            SortOrder::NewestFirst => QuerySortOrder::NewestFirst,
            SortOrder::OldestFirst => QuerySortOrder::OldestFirst,
        }
    }
}

/// Ширина корзины временного ряда.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TimeBucket {
    Minute,
    Hour,
    Day,
}

impl From<TimeBucket> for Bucket {
    fn from(b: TimeBucket) -> Self {
        match b {
            TimeBucket::Minute => Bucket::Minute,
            TimeBucket::Hour => Bucket::Hour,
            TimeBucket::Day => Bucket::Day,
        }
    }
}

/// Входное событие (SPEC §5 `EventInput`).
#[derive(Debug, Clone, InputObject)]
pub struct EventInput {
    /// Ключ идемпотентности; UUIDv7 генерируется, если нет.
    pub id: Option<Uuid>,
    pub session_id: Uuid,
    pub project_id: Uuid,
    /// Только для сервисов; остальные — пусто или свой sub.
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub event_type: String,
    /// JSON-объект; {} если нет.
    pub payload: Option<Json<Value>>,
    /// Время сервера, если нет; не более чем на 5 минут вперёд.
    pub created_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    pub tool_name: Option<String>,
    pub approval_status: Option<String>,
}

impl From<EventInput> for EventDraft {
    fn from(i: EventInput) -> Self {
        EventDraft {
            id: i.id,
            session_id: i.session_id,
            project_id: i.project_id,
            user_id: i.user_id,
            agent_id: i.agent_id,
            event_type: i.event_type,
            payload: i.payload.map(|j| j.0),
            created_at: i.created_at,
            error_code: i.error_code,
            tool_name: i.tool_name,
            approval_status: i.approval_status,
        }
    }
}

/// Итог приёма.
#[derive(Debug, Clone, SimpleObject)]
pub struct IngestResult {
    /// Размер пакета.
    pub accepted: i64,
    /// Идентификаторы в порядке входа.
    pub ids: Vec<Uuid>,
}

/// Сведения о странице.
#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// Ребро события.
#[derive(Clone, SimpleObject)]
pub struct EventEdge {
    pub cursor: String,
    pub node: EventNode,
}

/// Страница событий.
#[derive(Clone, SimpleObject)]
#[graphql(complex)]
pub struct EventConnection {
    pub edges: Vec<EventEdge>,
    pub page_info: PageInfo,
}

#[ComplexObject]
impl EventConnection {
    async fn nodes(&self) -> Vec<EventNode> {
        self.edges.iter().map(|e| e.node.clone()).collect()
    }
}

/// Ребро сессии.
#[derive(Clone, SimpleObject)]
pub struct SessionEdge {
    pub cursor: String,
    pub node: SessionSummary,
}

/// Страница сессий.
#[derive(Clone, SimpleObject)]
#[graphql(complex)]
pub struct SessionConnection {
    pub edges: Vec<SessionEdge>,
    pub page_info: PageInfo,
}

#[ComplexObject]
impl SessionConnection {
    async fn nodes(&self) -> Vec<SessionSummary> {
        self.edges.iter().map(|e| e.node.clone()).collect()
    }
}

/// Собирает PageInfo из курсоров страницы.
pub(crate) fn page_info<T>(items: &[(String, T)], has_next: bool, has_previous: bool) -> PageInfo {
    PageInfo {
        has_next_page: has_next,
        has_previous_page: has_previous,
        start_cursor: items.first().map(|(c, _)| c.clone()),
        end_cursor: items.last().map(|(c, _)| c.clone()),
    }
}
