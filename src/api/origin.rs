//! Источники (origin) браузерных приложений из `EVENTLOG_CORS_ORIGINS`: один список
//! для CORS на HTTP ([`cors_layer`]) и для проверки заголовка `Origin` при апгрейде
//! websocket ([`websocket_origin_allowed`]).
//!
//! Политика: запрос без `Origin` (сервисы, скрипты, curl) не затрагивается; браузерный
//! запрос с другого источника получает CORS-заголовки, только если его источник в
//! списке; websocket с чужого источника отклоняется (403) — браузер не применяет CORS
//! к websocket, поэтому без этой проверки любая страница могла бы открыть сокет.
//! Страница самого сервера (GraphiQL) — тот же источник, она разрешена всегда.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Источник в каноническом виде: без пробелов и завершающего `/`, в нижнем регистре.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Разобранный список источников.
#[derive(Debug, Clone)]
struct Allowed {
    any: bool,
    list: Vec<String>,
}

impl Allowed {
    fn new(origins: &[String]) -> Self {
        let list: Vec<String> = origins
            .iter()
            .map(|o| normalize(o))
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            any: list.iter().any(|o| o == "*"),
            list,
        }
    }

    fn contains(&self, origin: &str) -> bool {
        self.any || self.list.iter().any(|o| *o == normalize(origin))
    }
}

/// Слой CORS для списка источников: методы GET и POST, заголовки `Authorization`,
/// `Content-Type`, `Accept`; предварительный запрос кешируется браузером 10 минут.
/// Учётные данные (cookies) не разрешаются: токен идёт в заголовке.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let allowed = Allowed::new(origins);
    let allow_origin = if allowed.any {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| allowed.contains(o))
        })
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Можно ли открыть websocket с этими заголовками: нет `Origin`, источник в
/// списке или совпадает с `Host` (страница самого сервера).
pub fn websocket_origin_allowed(origins: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if Allowed::new(origins).contains(origin) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(normalize);
    let authority = normalize(origin)
        .split_once("://")
        .map(|(_, rest)| rest.to_owned());
    host.is_some() && host == authority
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn websocket_origin_rules() {
        let list = vec![
            "http://localhost:5173".to_owned(),
            "http://127.0.0.1:5173/".to_owned(),
        ];
        assert!(websocket_origin_allowed(
            &list,
            &headers(&[("host", "127.0.0.1:8080")])
        ));
        assert!(websocket_origin_allowed(
            &list,
            &headers(&[("origin", "http://127.0.0.1:5173"), ("host", "127.0.0.1:8080")])
        ));
        assert!(websocket_origin_allowed(
            &list,
            &headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")])
        ));
        assert!(!websocket_origin_allowed(
            &list,
            &headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")])
        ));
        assert!(!websocket_origin_allowed(
            &list,
            &headers(&[("origin", "null"), ("host", "127.0.0.1:8080")])
        ));
        let any = vec!["*".to_owned()];
        assert!(websocket_origin_allowed(
            &any,
            &headers(&[("origin", "https://x.example")])
        ));
    }
}
