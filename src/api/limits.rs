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
}

impl ApiLimits {
    /// Пределы из настроек.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            retention_days: s.retention_days,
            request_timeout: Duration::from_millis(s.request_timeout_ms),
        }
    }
}
