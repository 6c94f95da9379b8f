//! Ошибки API и их вид для клиента.
//!
//! Политика: клиент получает код (`extensions.code` в GraphQL, HTTP-статус и
//! `error.code` в REST) и понятное сообщение. Внутренние ошибки (база, драйвер)
//! записываются в журнал с идентификатором, а клиенту уходит только этот
//! идентификатор: ни SQL, ни текст драйвера наружу не попадают.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;
use uuid::Uuid;

use crate::model::ValidationError;
use crate::query::{CursorError, ScopeError};
use crate::storage::StorageError;
use crate::stream::StreamError;

/// Ошибка API.
#[derive(Debug, Clone, Error)]
pub enum ApiError {
    /// Нет токена или он недействителен. GraphQL: UNAUTHENTICATED; REST: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// Токен действителен, но операция запрещена. GraphQL: FORBIDDEN; REST: 403.
    #[error("{0}")]
    Forbidden(String),
    /// Проект вне claim `projects`. GraphQL: FORBIDDEN; REST: 404 (не раскрываем, что проект есть).
    #[error("project not found or not accessible")]
    ProjectNotAllowed,
    /// Неверный ввод; `field` — имя поля или параметра. GraphQL: BAD_USER_INPUT; REST: 400.
    #[error("{message}")]
    BadUserInput {
        /// Поле или параметр.
        field: Option<String>,
        /// Сообщение (уже содержит путь к полю).
        message: String,
    },
    /// Очередь писателя не может принять пакет. GraphQL: BACKPRESSURE с `retryAfterMs`; REST: 503.
    #[error("the event queue is full; retry after {retry_after_ms} ms")]
    Backpressure {
        /// Через сколько повторить.
        retry_after_ms: u64,
    },
    /// Превышен предел на вызывающего (доля очереди записи и т. п.). GraphQL:
    /// RATE_LIMITED с `retryAfterMs`; REST: 429.
    #[error("{message}")]
    RateLimited {
        /// Какой предел и на сколько.
        message: String,
        /// Через сколько повторить.
        retry_after_ms: u64,
    },
    /// Подписчик отстал. GraphQL: LAGGED с `lastSeq`, с которого можно продолжить.
    #[error("subscriber fell behind the live buffer; resume with afterSeq {last_seq}")]
    Lagged {
        /// Последний доставленный seq.
        last_seq: i64,
    },
    /// Внутренняя ошибка; клиенту — только идентификатор. GraphQL: INTERNAL; REST: 500.
    #[error("internal error (id {0})")]
    Internal(Uuid),
}

impl ApiError {
    /// Внутренняя ошибка: записывает причину в журнал и возвращает непрозрачную.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        let id = Uuid::now_v7();
        tracing::error!(error_id = %id, cause = %cause, "Internal error.");
        ApiError::Internal(id)
    }

    /// Неверный ввод в поле `field`.
    pub fn bad_input(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError::BadUserInput {
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    /// Код ошибки для клиента.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) | ApiError::ProjectNotAllowed => "FORBIDDEN",
            ApiError::BadUserInput { .. } => "BAD_USER_INPUT",
            ApiError::Backpressure { .. } => "BACKPRESSURE",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Lagged { .. } => "LAGGED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::internal(&e)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::BadUserInput {
            message: e.to_string(),
            field: Some(e.path),
        }
    }
}

impl From<ScopeError> for ApiError {
    fn from(e: ScopeError) -> Self {
        match e {
            ScopeError::Forbidden(m) => ApiError::Forbidden(m),
            ScopeError::ProjectNotAllowed(_) => ApiError::ProjectNotAllowed,
            ScopeError::BadUser(m) => ApiError::BadUserInput {
                message: m,
                field: Some("userId".into()),
            },
        }
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Lagged { last_seq, .. } => ApiError::Lagged { last_seq },
            e @ StreamError::UnknownSeq(_) => ApiError::bad_input("afterSeq", e),
            StreamError::Storage(e) => e.into(),
        }
    }
}

/// Ошибка курсора в поле `field` (`after` или `cursor`).
pub fn cursor_error(field: &str, e: CursorError) -> ApiError {
    ApiError::bad_input(field, e)
}

impl async_graphql::ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                ApiError::Backpressure { retry_after_ms } => ext.set("retryAfterMs", *retry_after_ms),
                ApiError::RateLimited { retry_after_ms, .. } => ext.set("retryAfterMs", *retry_after_ms),
                ApiError::Lagged { last_seq } => ext.set("lastSeq", last_seq.to_string()),
                ApiError::BadUserInput { field: Some(f), .. } => ext.set("field", f.as_str()),
                _ => {}
            }
        })
    }
}

impl ApiError {
    /// Ошибка GraphQL с `extensions.code`. Явное преобразование обязательно:
    /// общий `From<Display>` из async-graphql потерял бы код.
    pub fn into_gql(self) -> async_graphql::Error {
        async_graphql::ErrorExtensions::extend(&self)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ProjectNotAllowed => StatusCode::NOT_FOUND,
            ApiError::BadUserInput { .. } => StatusCode::BAD_REQUEST,
            ApiError::Backpressure { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Lagged { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let parameter = match &self {
            ApiError::BadUserInput { field, .. } => field.clone(),
            _ => None,
        };
        let body =
            json!({"error": {"code": self.code(), "message": self.to_string(), "parameter": parameter}});
        (status, Json(body)).into_response()
    }
}
