//! Подписка `events(projectId, filter, afterSeq)`: мост из `StreamManager`.
//! Область и фильтр применяются до того, как событие попадёт в очередь
//! соединения; по истечении токена поток закрывается с UNAUTHENTICATED.

use std::sync::Arc;

use async_graphql::{Context, Result, Subscription};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::auth_state;
use super::types::{EventFilterInput, EventNode};
use crate::api::ApiContext;
use crate::api::error::ApiError;
use crate::api::reads;

/// Живые события.
#[derive(Default)]
pub struct EventSubscription;

#[Subscription]
impl EventSubscription {
    /// События проекта по мере фиксации; с `afterSeq` — сначала сохранённые после него.
    async fn events(
        &self,
        ctx: &Context<'_>,
        project_id: Uuid,
        filter: Option<EventFilterInput>,
        after_seq: Option<String>,
    ) -> Result<impl Stream<Item = Result<EventNode>> + use<>> {
        let auth = auth_state(ctx).map_err(ApiError::into_gql)?.clone();
        let api = ctx.data::<ApiContext>()?;
        let filter = filter.map(Into::into).unwrap_or_default();
        let scope =
            reads::scope_for(api, &auth.principal, project_id, &filter).map_err(ApiError::into_gql)?;
        let after = after_seq
            .map(|s| {
                s.parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| ApiError::bad_input("afterSeq", "must be a non-negative integer string"))
            })
            .transpose()
            .map_err(ApiError::into_gql)?;
        if auth.expires_at <= chrono::Utc::now() {
            return Err(ApiError::Unauthenticated("token expired".into()).into_gql());
        }
        // Позиция продолжения находится до начала потока: неизвестный seq — ошибка
        // запроса (BAD_USER_INPUT), а не тихий пропуск.
        let after = match after {
            Some(seq) => Some(
                api.stream
                    .resume_position(seq)
                    .await
                    .map_err(|e| ApiError::from(e).into_gql())?,
            ),
            None => None,
        };
        // Повтор читает базу: их число у одного вызывающего ограничено, место
        // освобождается, когда подписка переходит к живым событиям.
        let replay_hold: Option<Box<dyn Send + Sync>> = match after {
            Some(_) => {
                let max = api.limits.max_replays_per_token;
                match api.replay_shares.take(&auth.principal.sub, 1, max) {
                    Some(guard) => Some(Box::new(guard)),
                    None => {
                        return Err(ApiError::RateLimited {
                            message: format!(
                                "afterSeq: this token already has {max} replays in progress \
                                 (EVENTLOG_MAX_REPLAYS_PER_TOKEN); retry when one has caught up"
                            ),
                            retry_after_ms: 1000,
                        }
                        .into_gql());
                    }
                }
            }
            None => None,
        };
        let shared_scope = Arc::new(scope.clone());
        let mut events = Box::pin(api.stream.subscribe_from(scope, filter, after, replay_hold));
        let expires_at = auth.expires_at;
        Ok(async_stream::stream! {
            let remaining = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
            let expiry = tokio::time::sleep(remaining);
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    biased;
                    // Токен истёк: закрываем поток, клиент должен переподключиться с новым.
                    _ = &mut expiry => {
                        yield Err(ApiError::Unauthenticated("token expired".into()).into_gql());
                        return;
                    }
                    item = events.next() => match item {
                        Some(Ok(e)) => yield Ok(EventNode { event: e, scope: shared_scope.clone(), sessions: None }),
                        Some(Err(e)) => { yield Err(ApiError::from(e).into_gql()); return; }
                        None => return,
                    }
                }
            }
        })
    }
}
