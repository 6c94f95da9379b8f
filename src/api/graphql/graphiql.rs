//! GraphiQL без внешних сетей: страница, React, GraphiQL и их стили вшиты в бинарник
//! (`include_bytes!` из `assets/graphiql/`; `dist/` там — продакшн-сборки из npm,
//! которые пересобирает `assets/graphiql/update.sh`, так что `cargo build` не
//! требует Node). `GET /graphql` отдаёт страницу, `GET /graphiql/{file}` — файлы.
//!
//! Страница идёт со строгой политикой CSP (только свой источник, без встроенных
//! скриптов): то, что она работает под ней, доказывает, что ничего не грузится извне.
//! Подписки: `eventlog-graphiql.js` кладёт заголовки редактора в `connection_init`.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;

/// Политика CSP страницы. Стили `unsafe-inline` нужны React (атрибуты `style`);
/// `data:` — шрифтам и картинкам, встроенным в CSS GraphiQL.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

const INDEX: &[u8] = include_bytes!("../../../assets/graphiql/index.html");

/// Файлы под `/graphiql/`: имя, тип, содержимое.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/dist/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/graphiql/dist/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/dist/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/dist/react-dom.production.min.js"),
    ),
    (
        "eventlog-graphiql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/eventlog-graphiql.js"),
    ),
    (
        "eventlog.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/graphiql/eventlog.css"),
    ),
    (
        "LICENSES.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../../assets/graphiql/dist/LICENSES.txt"),
    ),
];

/// Страница GraphiQL (для `GET /graphql` без параметров).
pub fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /graphiql/{file}`: вшитый файл или 404 (и 404 при выключенном GraphiQL).
pub async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    if state.settings.disable_graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                // Без версии в имени: день кеша, затем перепроверка.
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
