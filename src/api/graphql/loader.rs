//! DataLoader сводок сессий для `Event.session`: ключи одной страницы собираются
//! в один пакет, и на каждую область доступа уходит один вызов
//! `Store::session_summaries` (два SQL-запроса), а не запрос на событие.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::query::ReadScope;
use crate::storage::Store;
use crate::storage::events::SessionSummary;

/// Ключ: область (сводка считается только по видимым событиям) и сессия.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Область вызывающего.
    pub scope: Arc<ReadScope>,
    /// Сессия.
    pub session_id: Uuid,
}

/// Загрузчик сводок.
pub struct SessionLoader {
    /// Хранилище.
    pub store: Store,
}

impl Loader<SessionKey> for SessionLoader {
    type Value = SessionSummary;
    type Error = Arc<String>;

    async fn load(&self, keys: &[SessionKey]) -> Result<HashMap<SessionKey, SessionSummary>, Self::Error> {
        let mut by_scope: HashMap<Arc<ReadScope>, Vec<Uuid>> = HashMap::new();
        for k in keys {
            by_scope.entry(k.scope.clone()).or_default().push(k.session_id);
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (scope, ids) in by_scope {
            let found = self
                .store
                .session_summaries(&scope, &ids)
                .await
                .map_err(|e| Arc::new(e.to_string()))?;
            for (id, s) in found {
                out.insert(
                    SessionKey {
                        scope: scope.clone(),
                        session_id: id,
                    },
                    s,
                );
            }
        }
        Ok(out)
    }
}
