//! `/healthz` (процесс жив), `/readyz` (база отвечает, писатель не застрял,
//! читатель журнала держит темп),
//! `/metrics` (Prometheus).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// Сколько писатель может повторять одну вставку, прежде чем считаться застрявшим.
pub const WRITER_STUCK_AFTER: Duration = Duration::from_secs(30);

/// Сколько читатель журнала может не читать журнал (или ошибаться), прежде чем
/// экземпляр перестаёт быть готовым.
pub const LOG_READER_STALE_AFTER: Duration = Duration::from_secs(10);

/// `GET /healthz`.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.api.store.ping()).await,
        Ok(Ok(()))
    );
    let writer_ok = state.api.stream.logger().is_healthy(WRITER_STUCK_AFTER);
    let stream = &state.api.stream;
    let tail = stream.tail_state();
    // Читатель журнала держит темп: читал журнал недавно и не застрял на ошибках.
    let log_ok = stream.is_following(LOG_READER_STALE_AFTER);
    let status = if db_ok && writer_ok && log_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not ready" },
            "database": if db_ok { "ok" } else { "unreachable" },
            "writer": if writer_ok { "ok" } else { "stuck" },
            "log_reader": if log_ok { "ok" } else { "behind" },
            "log_position": {"commit": tail.position.commit, "seq": tail.position.seq},
            "queue_depth": state.api.stream.logger().queue_depth(),
        })),
    )
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(state.api.stream.logger().queue_depth() as f64);
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
