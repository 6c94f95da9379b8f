//! Мутация `ingestEvents`: проверка всего пакета, постановка «всё или ничего»,
//! подтверждение после фиксации по умолчанию, BACKPRESSURE при полной очереди.

use async_graphql::{Context, Object, Result};
use chrono::Utc;

use super::principal;
use super::types::{EventInput, IngestResult};
use crate::api::ApiContext;
use crate::api::error::ApiError;
use crate::logger::BatchError;
use crate::model::EventDraft;

/// Наибольший пакет приёма.
pub const MAX_INGEST_BATCH: usize = 1000;

/// Приём событий.
#[derive(Default)]
pub struct IngestMutation;

#[Object]
impl IngestMutation {
    /// Принимает пакет (не более 1000 событий) целиком или отвергает целиком.
    async fn ingest_events(
        &self,
        ctx: &Context<'_>,
        events: Vec<EventInput>,
        #[graphql(default_with = "Some(true)")] wait_for_commit: Option<bool>,
    ) -> Result<IngestResult> {
        let p = principal(ctx).map_err(ApiError::into_gql)?;
        let api = ctx.data::<ApiContext>()?;
        ingest(api, p, events, wait_for_commit.unwrap_or(true))
            .await
            .map_err(ApiError::into_gql)
    }
}

/// Общая логика приёма (GraphQL; её же могут звать другие входы).
pub async fn ingest(
    api: &ApiContext,
    principal: &crate::query::Principal,
    events: Vec<EventInput>,
    wait_for_commit: bool,
) -> Result<IngestResult, ApiError> {
    if events.len() > MAX_INGEST_BATCH {
        return Err(ApiError::bad_input(
            "events",
            format!(
                "at most {MAX_INGEST_BATCH} events per batch, got {}",
                events.len()
            ),
        ));
    }
    let now = Utc::now();
    let mut batch = Vec::with_capacity(events.len());
    // Сначала проверяется весь пакет; ни одно событие не ставится, пока не проверены все.
    for (i, input) in events.into_iter().enumerate() {
        let draft: EventDraft = input.into();
        let user = principal
            .ingest_user(draft.project_id, draft.user_id.as_deref())
            .map_err(|e| match ApiError::from(e) {
                ApiError::BadUserInput { message, .. } => ApiError::BadUserInput {
                    message: format!("events[{i}].{message}"),
                    field: Some(format!("events[{i}].userId")),
                },
                ApiError::Forbidden(m) => ApiError::Forbidden(format!("events[{i}].{m}")),
                ApiError::ProjectNotAllowed => ApiError::Forbidden(format!(
                    "events[{i}].projectId: project {} is not in this token's projects",
                    draft.project_id
                )),
                other => other,
            })?;
        let event = draft
            .into_new_event(user, now)
            .map_err(|e| ApiError::from(e.at(&format!("events[{i}]"))))?;
        batch.push(event);
    }
    let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
    let accepted = batch.len() as i64;
    let waiter = api.stream.broadcast_events(batch).map_err(|e| match e {
        BatchError::QueueFull(events) => ApiError::Backpressure {
            retry_after_ms: retry_after_ms(api, events.len()),
        },
        // Остановка сервера: клиент повторит (в том числе на другом экземпляре).
        BatchError::Closed(_) => ApiError::Backpressure { retry_after_ms: 1000 },
    })?;
    if wait_for_commit {
        let outcome = waiter.wait().await.map_err(|e| ApiError::internal(&e))?;
        if outcome.rejected > 0 {
            // Остальные события пакета записаны; отвергнутые — в event_logs_rejected.
            return Err(ApiError::internal(&format!(
                "{} of {} events were rejected by the database and moved to event_logs_rejected; \
                 the rest of the batch is committed",
                outcome.rejected, accepted
            )));
        }
    }
    Ok(IngestResult { accepted, ids })
}

/// Оценка, когда в очереди освободится место: глубина очереди при ~20 000
/// событиях/с записи, не меньше 50 мс и не больше 5 с.
fn retry_after_ms(api: &ApiContext, _batch: usize) -> u64 {
    let depth = api.stream.logger().queue_depth() as u64;
    (depth / 20).clamp(50, 5000)
}
