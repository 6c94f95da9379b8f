//! [`EventRepository`] — операции чтения под именами исходного проекта
//! (`get_events`, `get_events_by_session`, `get_analytics`, `sessions`). Каждая
//! принимает область доступа вызывающего; SQL собирается в `sql.rs`.

use uuid::Uuid;

use super::analytics::{Analytics, Bucket};
use super::events::{Page, SessionSummary};
use super::{Columns, StorageError, Store};
use crate::model::Event;
use crate::query::{EventFilter, Position, ReadScope, SortOrder};

/// Репозиторий событий поверх [`Store`]. Дешёвый `Clone`.
#[derive(Clone, Debug)]
pub struct EventRepository {
    store: Store,
}

impl EventRepository {
    /// Репозиторий над хранилищем.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Хранилище под репозиторием.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Страница событий области под фильтром по (createdAt, id).
    #[allow(clippy::too_many_arguments)]
    pub async fn get_events(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        order: SortOrder,
        limit: usize,
        offset: usize,
        after: Option<Position>,
        cols: Columns,
    ) -> Result<Page<Event>, StorageError> {
        self.store
            .page_columns(scope, filter, order, limit, offset, after, cols)
            .await
    }

    /// События сессии, сначала старые.
    pub async fn get_events_by_session(
        &self,
        scope: &ReadScope,
        session_id: Uuid,
        limit: usize,
        after: Option<Position>,
    ) -> Result<Page<Event>, StorageError> {
        let filter = Self::session_filter(session_id);
        self.store
            .page(scope, &filter, SortOrder::OldestFirst, limit, 0, after)
            .await
    }

    /// Фильтр «одна сессия» — к нему привязаны курсоры `sessionEvents`.
    pub fn session_filter(session_id: Uuid) -> EventFilter {
        EventFilter {
            session_id: Some(session_id),
            ..Default::default()
        }
    }

    /// Аналитика области под фильтром.
    pub async fn get_analytics(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Analytics, StorageError> {
        self.store.analytics(scope, filter, bucket).await
    }

    /// Страница сессий по последней активности.
    pub async fn sessions(
        &self,
        scope: &ReadScope,
        filter: &EventFilter,
        limit: usize,
        after: Option<Position>,
    ) -> Result<Page<SessionSummary>, StorageError> {
        self.store.sessions_page(scope, filter, limit, after).await
    }

    /// Событие по id, если видно.
    pub async fn get_event(&self, scope: &ReadScope, id: Uuid) -> Result<Option<Event>, StorageError> {
        self.store.event_by_id(scope, id).await
    }
}
