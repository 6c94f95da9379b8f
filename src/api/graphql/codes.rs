//! `extensions.code` для ошибок, которые создаёт сам async-graphql (разбор,
//! проверка документа, разбор аргументов): расширение добавляет код там, где его
//! нет, на обоих транспортах (HTTP и websocket), и ничего не меняет в ошибках
//! резолверов, у которых код уже есть ([`ApiError`](crate::api::error::ApiError)).
//!
//! - разбор документа — `GRAPHQL_PARSE_FAILED`;
//! - проверка документа (неизвестные поля, глубина, сложность, псевдонимы) —
//!   `GRAPHQL_VALIDATION_FAILED`;
//! - неверное значение аргумента или переменной (в проверке документа или при
//!   разборе скаляра, например UUID) — `BAD_USER_INPUT`;
//! - прочее без кода — `INTERNAL`.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Синтаксическая ошибка документа.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Документ не прошёл проверку по схеме или пределам.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// Неверное значение аргумента или переменной.
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
/// Время выполнения истекло.
pub const TIMEOUT: &str = "TIMEOUT";
/// Превышен предел на токен.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// Фабрика расширения (ставится первым, чтобы видеть ошибки всех остальных).
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExt)
    }
}

struct ErrorCodesExt;

/// Код ошибки, если он уже есть.
pub fn code_of(e: &ServerError) -> Option<&str> {
    match e.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Ставит `code`, если кода ещё нет.
pub fn with_code(mut e: ServerError, code: &str) -> ServerError {
    if code_of(&e).is_none() {
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
    e
}

/// Ошибка значения аргумента или переменной (текст async-graphql).
fn is_input_error(e: &ServerError) -> bool {
    e.message.starts_with("Invalid value for argument")
        || e.message.starts_with("Failed to parse")
        || e.message.starts_with("Invalid value for variable")
        || e.message.starts_with("Expected input type")
}

/// Код для ошибки выполнения без кода.
fn fill_execution_codes(mut resp: Response) -> Response {
    resp.errors = std::mem::take(&mut resp.errors)
        .into_iter()
        .map(|e| {
            let code = if is_input_error(&e) {
                BAD_USER_INPUT
            } else {
                "INTERNAL"
            };
            with_code(e, code)
        })
        .collect();
    resp
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let code = if is_input_error(&e) {
                        BAD_USER_INPUT
                    } else {
                        VALIDATION_FAILED
                    };
                    with_code(e, code)
                })
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        fill_execution_codes(next.run(ctx, operation_name).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(fill_execution_codes).boxed()
    }
}

/// Предел времени выполнения запроса или мутации: одно место для обоих
/// транспортов (по websocket async-graphql выполняет операции сам, мимо
/// HTTP-обработчика). Подписки не ограничиваются: живой поток бесконечен.
pub struct ExecutionTimeout(pub std::time::Duration);

impl ExtensionFactory for ExecutionTimeout {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ExecutionTimeoutExt(self.0))
    }
}

struct ExecutionTimeoutExt(std::time::Duration);

#[async_graphql::async_trait::async_trait]
impl Extension for ExecutionTimeoutExt {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        match tokio::time::timeout(self.0, next.run(ctx, operation_name)).await {
            Ok(r) => r,
            Err(_) => timeout_response(self.0),
        }
    }
}

/// Ответ «время выполнения истекло» (`TIMEOUT`).
pub fn timeout_response(limit: std::time::Duration) -> Response {
    let mut e = ServerError::new(
        format!(
            "the operation took longer than {} ms and was stopped",
            limit.as_millis()
        ),
        None,
    );
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", TIMEOUT);
    Response::from_errors(vec![e])
}

/// Ответ — ошибка запроса (разбор, проверка, переменные), а не выполнения: данных
/// нет, и ни у одной ошибки нет пути к полю.
pub fn is_request_error(resp: &Response) -> bool {
    !resp.errors.is_empty()
        && resp.data == async_graphql::Value::Null
        && resp.errors.iter().all(|e| {
            e.path.is_empty()
                && matches!(
                    code_of(e),
                    Some(PARSE_FAILED) | Some(VALIDATION_FAILED) | Some(BAD_USER_INPUT)
                )
        })
}
