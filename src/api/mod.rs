//! HTTP-слой: единственный модуль, который знает axum и async-graphql.
//!
//! - [`graphql`] — схема, `POST/GET /graphql`, websocket `/graphql/ws`;
//! - [`rest`] — маршруты совместимости SPEC §6;
//! - [`otlp`] — приём OpenTelemetry (OTLP/HTTP и OTLP/gRPC);
//! - [`health`] — `/healthz`, `/readyz`, `/metrics`;
//! - [`limits`] — пределы из настроек;
//! - [`origin`] — CORS и проверка `Origin` websocket по `EVENTLOG_CORS_ORIGINS`;
//! - [`reads`] — общий конвейер чтения (область, курсоры, пределы) для всех входов;
//! - [`error`] — [`ApiError`](error::ApiError) и его вид для клиента.

pub mod error;
pub mod graphql;
pub mod health;
pub mod limits;
pub mod origin;
pub mod otlp;
pub mod reads;
pub mod rest;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::auth::JwtKeys;
use crate::cache::AnalyticsCache;
use crate::config::Settings;
use crate::query::CursorCodec;
use crate::storage::{EventRepository, Store};
use crate::stream::StreamManager;
use graphql::AppSchema;

/// Всё, что нужно резолверам и REST: хранилище, поток, кодек курсоров.
#[derive(Clone)]
pub struct ApiContext {
    /// Хранилище (проверки здоровья, DataLoader).
    pub store: Store,
    /// Репозиторий чтения.
    pub repo: EventRepository,
    /// Поток (приём и подписки).
    pub stream: StreamManager,
    /// Кодек курсоров.
    pub cursors: CursorCodec,
    /// Пределы и правила приёма из настроек.
    pub limits: Arc<limits::ApiLimits>,
    /// Счётчики websocket-соединений и подписок (пределы на вызывающего и на сервер).
    pub ws: Arc<graphql::ws::WsRegistry>,
    /// Доли вызывающих в очереди записи.
    pub queue_shares: Arc<limits::CallerShares>,
    /// Повторы подписок каждого вызывающего, идущие сейчас.
    pub replay_shares: Arc<limits::CallerShares>,
    /// Точный кэш аналитики.
    pub cache: AnalyticsCache,
}

/// Состояние маршрутизатора.
#[derive(Clone)]
pub struct AppState {
    /// Контекст чтения и записи.
    pub api: ApiContext,
    /// Схема GraphQL.
    pub schema: AppSchema,
    /// Ключи JWT.
    pub keys: JwtKeys,
    /// Настройки.
    pub settings: Arc<Settings>,
    /// Экспортёр метрик.
    pub metrics: PrometheusHandle,
    /// Отмена при остановке сервера: websocket-соединения закрываются кодом 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Задачи websocket-соединений; `run_until_stopped` ждёт их закрытия.
    pub connections: tokio_util::task::TaskTracker,
    /// Приём OTLP (память трасс).
    pub otlp: otlp::OtlpState,
    /// Быстрый путь GraphQL (кэш планов страниц).
    pub fast: Arc<graphql::fast::FastPath>,
}

/// Собирает маршрутизатор со всеми слоями.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit;
    let cors = origin::cors_layer(&state.settings.cors_origins);
    let grpc = otlp::grpc_router(state.clone());
    let otlp_routes = otlp::routes(&state);
    Router::new()
        .route(
            "/graphql",
            get(graphql::http::graphql_get).post(graphql::http::graphql_post),
        )
        .route("/graphql/ws", get(graphql::ws::graphql_ws))
        .route("/graphiql/{file}", get(graphql::graphiql::asset))
        .route("/my/projects/{project_id}/events", get(rest::events))
        .route(
            "/my/projects/{project_id}/events/{session_id}",
            get(rest::session_events),
        )
        .route("/my/projects/{project_id}/analytics", get(rest::analytics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        // OTLP — со своим пределом тела (свой слой внутри `otlp::routes`).
        .merge(otlp_routes)
        .layer(middleware::from_fn(track_request))
        // Паника в обработчике — 500 без подробностей, а не оборванное соединение.
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        // Снаружи всех: предварительный OPTIONS отвечается здесь, до маршрутизации (иначе 405).
        .layer(cors)
        .with_state(state)
        // gRPC OTLP на основном порту (HTTP/2 без TLS); пути gRPC ни с чем не пересекаются.
        .merge(grpc)
}

/// Длительность запросов по маршрутам (`eventlog_http_request_duration_seconds`).
async fn track_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        crate::metrics::HTTP_REQUEST_DURATION,
        "route" => route,
        "status" => resp.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    resp
}
