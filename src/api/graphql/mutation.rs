//! Мутация `ingestEvents`: проверка всего пакета, постановка «всё или ничего»,
//! подтверждение после фиксации по умолчанию, BACKPRESSURE при полной очереди.

use async_graphql::{Context, Object, Result};
use chrono::Utc;

use super::principal;
use super::types::{EventInput, IngestResult};
use crate::api::ApiContext;
use crate::api::error::ApiError;
use crate::logger::BatchError;
use crate::model::{EventDraft, validation};
use crate::storage::RowOwner;

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
    let mut explicit_id = Vec::with_capacity(events.len());
    // Сначала проверяется весь пакет; ни одно событие не ставится, пока не проверены все.
    for (i, input) in events.into_iter().enumerate() {
        let draft: EventDraft = input.into();
        // Занятым чужой строкой может быть только id, присланный клиентом:
        // выданные сервером UUIDv7 новые.
        explicit_id.push(draft.id.is_some());
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
            .into_new_event(user, now, api.limits.retention_days)
            .map_err(|e| ApiError::from(e.at(&format!("events[{i}]"))))?;
        batch.push(event);
    }
    validation::check_batch_ids(&batch)?;
    // Заявленные владельцы id (для проверки идемпотентности по арендатору).
    // (индекс в пакете, заявка) только для id, присланных клиентом.
    let (claimed_at, claims): (Vec<usize>, Vec<RowOwner>) = if wait_for_commit {
        batch
            .iter()
            .enumerate()
            .filter(|(i, _)| explicit_id[*i])
            .map(|(i, e)| (i, RowOwner::of(e)))
            .unzip()
    } else {
        Default::default()
    };
    if wait_for_commit {
        // Ключ идемпотентности действует в пределах проекта и пользователя: id,
        // уже занятый чужой строкой, — отказ (не «повтор»), и ничего не ставится.
        // Гонку между этой проверкой и записью ловит писатель (CommitOutcome::conflicts).
        if let Some(&k) = api.store.foreign_ids(&claims).await?.first() {
            return Err(id_taken(claimed_at[k]));
        }
    }
    let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
    let accepted = batch.len() as i64;
    // Доля вызывающего в очереди: места держатся, пока пакет не записан. Доля не
    // меньше всей очереди ничего не ограничивает — тогда отвечает сама очередь
    // (BACKPRESSURE).
    let max_share = api.limits.queue_share_per_token;
    let share = if max_share < api.stream.logger().capacity() {
        let taken = api.queue_shares.take(&principal.sub, batch.len(), max_share);
        if taken.is_none() {
            return Err(ApiError::RateLimited {
                message: format!(
                    "this token already has {} of at most {max_share} events waiting in the write \
                     queue (EVENTLOG_QUEUE_SHARE_PER_TOKEN_PERCENT); retry later",
                    api.queue_shares.used(&principal.sub)
                ),
                retry_after_ms: retry_after_ms(api, batch.len()),
            });
        }
        taken
    } else {
        None
    };
    // Места доли держит группа ожидания пакета: они освобождаются, когда пакет
    // записан (или потерян при остановке), даже если фиксации никто не ждёт.
    let queued = match share {
        Some(share) => api.stream.broadcast_events_holding(batch, Box::new(share)),
        None => api.stream.broadcast_events(batch),
    };
    let waiter = queued.map_err(|e| match e {
        BatchError::QueueFull(events) => ApiError::Backpressure {
            retry_after_ms: retry_after_ms(api, events.len()),
        },
        // Остановка сервера: клиент повторит (в том числе на другом экземпляре).
        BatchError::Closed(_) => ApiError::Backpressure { retry_after_ms: 1000 },
        BatchError::Invalid(_, e) => ApiError::from(e),
    })?;
    if wait_for_commit {
        let outcome = waiter.wait().await.map_err(|e| ApiError::internal(&e))?;
        if outcome.conflicts > 0 {
            // Гонка: чужая строка с тем же id записана между проверкой и записью;
            // писатель перенёс такие события в event_logs_rejected. Индекс
            // находим тем же запросом, что и проверка до записи.
            let first = api
                .store
                .foreign_ids(&claims)
                .await?
                .first()
                .map(|&k| claimed_at[k]);
            return Err(match first {
                Some(i) => id_taken(i),
                None => ApiError::bad_input("events", "an id of this batch is already taken"),
            });
        }
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

/// Отказ: id события `i` уже занят строкой другого проекта или пользователя.
/// Сообщение не раскрывает ничего о той строке, кроме того, что id занят.
fn id_taken(i: usize) -> ApiError {
    ApiError::bad_input(
        format!("events[{i}].id"),
        "this id is already used by another event; choose a different id",
    )
}

/// Оценка, когда в очереди освободится место: глубина очереди при ~20 000
/// событиях/с записи, не меньше 50 мс и не больше 5 с.
fn retry_after_ms(api: &ApiContext, _batch: usize) -> u64 {
    let depth = api.stream.logger().queue_depth() as u64;
    (depth / 20).clamp(50, 5000)
}
