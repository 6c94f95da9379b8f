//! GraphQL API (SPEC §5): схема из частей по возможностям, HTTP-обработчики и
//! websocket. Части: [`query`] (история и аналитика), [`mutation`] (приём),
//! [`subscription`] (живые события), [`types`], [`loader`] (DataLoader сессий),
//! [`fast`] (быстрый путь страниц событий), [`codes`] (`extensions.code` для ошибок async-graphql), [`limits`] (предел
//! псевдонимов), [`ws`] (протокол websocket с защитами), [`graphiql`] (GraphiQL,
//! вшитый в бинарник).

pub mod codes;
pub mod fast;
pub mod graphiql;
pub mod http;
pub mod limits;
pub mod loader;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;
pub mod ws;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, MergedObject, MergedSubscription, Schema};

use crate::api::ApiContext;
use crate::api::error::ApiError;
use crate::auth::{AuthError, Authenticated};
use crate::query::Principal;

/// Корень запросов.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(query::EventQuery, query::AnalyticsQuery);

/// Корень мутаций.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(mutation::IngestMutation);

/// Корень подписок.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(subscription::EventSubscription);

/// Схема eventlog.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Наибольшая глубина запроса. Стандартный запрос интроспекции graphql-js 16
/// (`getIntrospectionQuery`: фрагмент `TypeRef` с девятью `ofType` под
/// `__schema.types.fields.args.type`) имеет глубину 14; меньший предел не даёт
/// GraphiQL и генераторам клиентов загрузить схему.
pub const MAX_DEPTH: usize = 15;
/// Наибольшая сложность запроса (по полю на единицу).
pub const MAX_COMPLEXITY: usize = 500;

/// Итог аутентификации запроса или соединения, кладётся в данные запроса.
#[derive(Debug, Clone)]
pub enum RequestAuth {
    /// Токен проверен.
    Valid(Authenticated),
    /// Токена нет.
    Missing,
    /// Токен не прошёл проверку.
    Invalid(AuthError),
}

/// Собирает схему. Без `api` — только для печати SDL (`eventlog export-schema`).
pub fn build_schema(api: Option<ApiContext>, introspection: bool) -> AppSchema {
    let mut b = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_directives(10)
    .disable_suggestions()
    // Первым: видит ошибки всех остальных расширений и ставит недостающие коды.
    .extension(codes::ErrorCodes)
    .extension(limits::AliasLimit(limits::MAX_ALIASES));
    if !introspection {
        b = b.disable_introspection();
    }
    if let Some(api) = api {
        b = b.extension(codes::ExecutionTimeout(api.limits.request_timeout));
        let loader = DataLoader::new(
            loader::SessionLoader {
                store: api.store.clone(),
            },
            tokio::spawn,
        );
        // Загрузчик создаётся на каждый запрос (см. http.rs); этот — для подписок.
        b = b.data(api).data(loader);
    }
    b.finish()
}

/// Проверенный вызывающий или UNAUTHENTICATED.
pub(crate) fn auth_state<'a>(ctx: &'a Context<'_>) -> Result<&'a Authenticated, ApiError> {
    match ctx.data_opt::<RequestAuth>() {
        Some(RequestAuth::Valid(a)) => Ok(a),
        Some(RequestAuth::Invalid(e)) => Err(ApiError::Unauthenticated(e.to_string())),
        _ => Err(ApiError::Unauthenticated("missing bearer token".into())),
    }
}

/// Принципал вызывающего.
pub(crate) fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, ApiError> {
    auth_state(ctx).map(|a| &a.principal)
}
