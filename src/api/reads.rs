//! Общий конвейер чтения для GraphQL, REST и подписок: проверка `first`/`limit`,
//! область доступа вызывающего, разбор и выдача курсоров. Ни GraphQL, ни REST не
//! повторяют эту логику — оба зовут функции отсюда.

use uuid::Uuid;

use super::ApiContext;
use super::error::{ApiError, cursor_error};
use crate::model::Event;
use crate::query::{CursorKind, EventFilter, Position, Principal, QueryBinding, ReadScope, SortOrder};
use crate::storage::Columns;
use crate::storage::analytics::{Analytics, Bucket};
use crate::storage::events::SessionSummary;

/// Пределы `first` (SPEC §5).
pub const MAX_PAGE: i64 = 500;
/// Предел `first` для `sessionEvents`.
pub const MAX_SESSION_PAGE: i64 = 5000;

/// Запрос страницы событий.
#[derive(Debug, Clone)]
pub struct EventsRequest<'a> {
    /// Вид запроса (к нему привязан курсор).
    pub kind: CursorKind,
    /// Проект.
    pub project_id: Uuid,
    /// Фильтр.
    pub filter: EventFilter,
    /// Порядок.
    pub order: SortOrder,
    /// Размер страницы, как прислал клиент.
    pub first: i64,
    /// Пропуск строк (REST `offset`).
    pub offset: i64,
    /// Курсор.
    pub after: Option<&'a str>,
    /// Имена полей для сообщений об ошибках: (`first`|`limit`, `after`|`cursor`).
    pub names: (&'a str, &'a str),
    /// Какие столбцы нужны ответу (GraphQL — по выбранным полям, REST — все).
    pub columns: Columns,
}

/// Страница с курсорами.
#[derive(Debug, Clone)]
pub struct PageOut<T> {
    /// Область, в которой читали (для DataLoader сессий).
    pub scope: ReadScope,
    /// Элементы с курсорами.
    pub items: Vec<(String, T)>,
    /// Есть ли следующая страница.
    pub has_next: bool,
    /// Была ли страница перед этой (задан курсор или смещение).
    pub has_previous: bool,
}

fn check_first(field: &str, first: i64, max: i64) -> Result<usize, ApiError> {
    if !(1..=max).contains(&first) {
        return Err(ApiError::bad_input(field, format!("must be between 1 and {max}")));
    }
    Ok(first as usize)
}

/// Проверяет фильтр (в том числе размер `payloadContains` по пределу сервера) и
/// возвращает область чтения проекта.
pub fn scope_for(
    ctx: &ApiContext,
    principal: &Principal,
    project_id: Uuid,
    filter: &EventFilter,
) -> Result<ReadScope, ApiError> {
    filter.validate().map_err(|e| e.at("filter"))?;
    filter
        .check_payload_contains(ctx.limits.payload_contains_max_bytes)
        .map_err(|e| e.at("filter"))?;
    Ok(principal.read_scope(project_id)?)
}

/// Страница событий (`events`, `sessionEvents`, REST).
pub async fn events_page(
    ctx: &ApiContext,
    principal: &Principal,
    req: EventsRequest<'_>,
) -> Result<PageOut<Event>, ApiError> {
    let max = if req.kind == CursorKind::SessionEvents {
        MAX_SESSION_PAGE
    } else {
        MAX_PAGE
    };
    let limit = check_first(req.names.0, req.first, max)?;
    if req.offset < 0 {
        return Err(ApiError::bad_input("offset", "must be at least 0"));
    }
    if req.offset > ctx.limits.max_offset {
        return Err(ApiError::bad_input(
            "offset",
            format!(
                "must be at most {} (EVENTLOG_MAX_OFFSET); page further with the cursor",
                ctx.limits.max_offset
            ),
        ));
    }
    let scope = scope_for(ctx, principal, req.project_id, &req.filter)?;
    let binding = QueryBinding::new(req.kind, &scope, req.order, Some(&req.filter), "");
    let after = req
        .after
        .map(|c| ctx.cursors.decode(binding, c))
        .transpose()
        .map_err(|e| cursor_error(req.names.1, e))?;
    let mut page = ctx
        .repo
        .get_events(
            &scope,
            &req.filter,
            req.order,
            limit,
            req.offset as usize,
            after,
            req.columns,
        )
        .await?;
    // Предел размера ответа: страница короче, но курсор последнего элемента
    // продолжает ровно с места обрезки. Нагрузка считается, только если её читали
    // (ответ без `payload` мал при любых нагрузках).
    let kept = within_bytes(&page.items, ctx.limits.max_page_bytes);
    if kept < page.items.len() {
        page.items.truncate(kept);
        page.has_next = true;
    }
    let items = page
        .items
        .into_iter()
        .map(|e| {
            let c = ctx.cursors.encode(
                binding,
                Position {
                    at: e.created_at,
                    id: e.id,
                },
            );
            (c, e)
        })
        .collect();
    Ok(PageOut {
        scope,
        items,
        has_next: page.has_next,
        has_previous: after.is_some() || req.offset > 0,
    })
}

/// Оценка размера события в ответе, байт: нагрузка плюс поля и разметка.
const EVENT_OVERHEAD_BYTES: usize = 512;

/// Сколько первых событий помещается в `max_bytes` (не меньше одного, чтобы
/// постраничный обход всегда продвигался).
fn within_bytes(items: &[Event], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (i, e) in items.iter().enumerate() {
        let payload: usize = e
            .payload
            .iter()
            .map(|(k, v)| k.len() + 4 + approx_json_len(v))
            .sum();
        total = total.saturating_add(payload + EVENT_OVERHEAD_BYTES);
        if total > max_bytes && i > 0 {
            return i;
        }
    }
    items.len()
}

/// Приблизительный размер значения в JSON без сериализации (без выделения памяти):
/// строки и ключи — их длина плюс кавычки, числа — 8, разметка — по байту.
fn approx_json_len(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| approx_json_len(x) + 1).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| k.len() + 4 + approx_json_len(x))
                .sum::<usize>()
        }
    }
}

/// Страница сессий.
pub async fn sessions_page(
    ctx: &ApiContext,
    principal: &Principal,
    project_id: Uuid,
    filter: EventFilter,
    first: i64,
    after: Option<&str>,
) -> Result<PageOut<SessionSummary>, ApiError> {
    let limit = check_first("first", first, MAX_PAGE)?;
    let scope = scope_for(ctx, principal, project_id, &filter)?;
    let binding = QueryBinding::new(
        CursorKind::Sessions,
        &scope,
        SortOrder::NewestFirst,
        Some(&filter),
        "",
    );
    let after = after
        .map(|c| ctx.cursors.decode(binding, c))
        .transpose()
        .map_err(|e| cursor_error("after", e))?;
    let page = ctx.repo.sessions(&scope, &filter, limit, after).await?;
    let items = page
        .items
        .into_iter()
        .map(|s| {
            let c = ctx.cursors.encode(
                binding,
                Position {
                    at: s.last_event_at,
                    id: s.session_id,
                },
            );
            (c, s)
        })
        .collect();
    Ok(PageOut {
        scope,
        items,
        has_next: page.has_next,
        has_previous: after.is_some(),
    })
}

/// Аналитика проекта.
pub async fn analytics(
    ctx: &ApiContext,
    principal: &Principal,
    project_id: Uuid,
    filter: EventFilter,
    bucket: Bucket,
) -> Result<Analytics, ApiError> {
    let scope = scope_for(ctx, principal, project_id, &filter)?;
    let max = ctx.limits.max_timeline_points;
    // До запроса, если задана нижняя граница: число корзин считается без базы, и
    // запрос месяцев по минутам не выполняется вовсе.
    if let Some(from) = filter.from {
        let to = filter
            .to
            .unwrap_or_else(|| chrono::Utc::now() + crate::model::validation::MAX_CLOCK_SKEW);
        let width = bucket_seconds(bucket);
        let points = ((to - from).num_seconds().max(0) + width - 1) / width + 1;
        if points > max {
            return Err(timeline_too_long(max));
        }
    }
    let a = analytics_cached(ctx, &scope, project_id, &filter, bucket).await?;
    // Без нижней границы число точек видно только по данным: ответ всё равно
    // ограничен, хотя база уже посчитала корзины.
    if a.timeline.len() as i64 > max {
        return Err(timeline_too_long(max));
    }
    Ok(a)
}

/// Аналитика через кэш (если он включён).
async fn analytics_cached(
    ctx: &ApiContext,
    scope: &ReadScope,
    project_id: Uuid,
    filter: &EventFilter,
    bucket: Bucket,
) -> Result<Analytics, ApiError> {
    if !ctx.cache.is_enabled() {
        return Ok(ctx.repo.get_analytics(scope, filter, bucket).await?);
    }
    // Голова журнала проекта читается до расчёта: ответ не старше неё, поэтому
    // под этим ключом он точен (см. `cache`).
    let head = ctx.store.project_head(project_id).await?;
    let key = ctx.cache.key(scope, filter, bucket, head);
    if let Some(hit) = ctx.cache.get(&key).await {
        return Ok(hit.as_ref().clone());
    }
    let fresh = ctx.repo.get_analytics(scope, filter, bucket).await?;
    ctx.cache.put(key, std::sync::Arc::new(fresh.clone())).await;
    Ok(fresh)
}

/// Ширина корзины, секунд.
fn bucket_seconds(bucket: Bucket) -> i64 {
    match bucket {
        Bucket::Minute => 60,
        Bucket::Hour => 3600,
        Bucket::Day => 86_400,
    }
}

fn timeline_too_long(max: i64) -> ApiError {
    ApiError::bad_input(
        "bucket",
        format!(
            "the timeline would have more than {max} points (EVENTLOG_MAX_TIMELINE_POINTS); \
             narrow filter.from/filter.to or use a wider bucket"
        ),
    )
}
