//! Пределы API, заданные настройками (README, docs/api.md «Limits»): что из
//! настроек нужно резолверам и REST. Собирается один раз в `startup`.

use crate::config::Settings;

/// Пределы и правила приёма, которые зависят от настроек сервера.
#[derive(Debug, Clone, Default)]
pub struct ApiLimits {
    /// Срок хранения, дней (0 — без срока): события старше него не принимаются.
    pub retention_days: u32,
}

impl ApiLimits {
    /// Пределы из настроек.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            retention_days: s.retention_days,
        }
    }
}
