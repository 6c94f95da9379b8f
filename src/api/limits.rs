//! Пределы API, заданные настройками (README, docs/api.md «Limits»): что из
//! настроек нужно резолверам и REST. Собирается один раз в `startup`.

use std::time::Duration;

use crate::config::Settings;

/// Пределы и правила приёма, которые зависят от настроек сервера.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Срок хранения, дней (0 — без срока): события старше него не принимаются.
    pub retention_days: u32,
    /// Предел времени выполнения запроса или мутации (HTTP и websocket);
    /// превышение — `TIMEOUT`.
    pub request_timeout: Duration,
    /// Наибольший REST `offset`.
    pub max_offset: i64,
    /// Наибольший размер образца `payloadContains`, байт.
    pub payload_contains_max_bytes: usize,
    /// websocket-соединений на сервер.
    pub ws_max_connections: usize,
    /// websocket-соединений одного вызывающего.
    pub ws_max_connections_per_token: usize,
    /// Подписок одного вызывающего на всех соединениях.
    pub ws_max_subscriptions_per_token: usize,
    /// Предел размера страницы событий, байт.
    pub max_page_bytes: usize,
    /// Наибольшее число точек временного ряда аналитики.
    pub max_timeline_points: i64,
}

impl ApiLimits {
    /// Пределы из настроек.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            retention_days: s.retention_days,
            request_timeout: Duration::from_millis(s.request_timeout_ms),
            max_offset: s.max_offset,
            payload_contains_max_bytes: s.payload_contains_max_bytes,
            ws_max_connections: s.ws_max_connections,
            ws_max_connections_per_token: s.ws_max_connections_per_token,
            ws_max_subscriptions_per_token: s.ws_max_subscriptions_per_token,
            max_page_bytes: s.max_page_bytes,
            max_timeline_points: s.max_timeline_points,
        }
    }
}
