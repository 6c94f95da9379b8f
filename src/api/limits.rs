//! Пределы API, заданные настройками (README, docs/api.md «Limits»): что из
//! настроек нужно резолверам и REST. Собирается один раз в `startup`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Сколько ещё не записанных событий одного вызывающего может быть в очереди.
    pub queue_share_per_token: usize,
    /// Сколько повторов подписок (`afterSeq`) одного вызывающего идут одновременно.
    pub max_replays_per_token: usize,
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
            max_replays_per_token: s.max_replays_per_token.max(1),
            queue_share_per_token: (s.queue_capacity.max(1)
                * usize::from(s.queue_share_per_token_percent.clamp(1, 100)))
            .div_ceil(100),
        }
    }
}

/// Счётчик на вызывающего (JWT `sub`): сколько событий он держит в очереди записи
/// или сколько повторов подписок у него идёт. Один шумный клиент не может занять
/// всю очередь или все соединения с базой и оставить остальным BACKPRESSURE.
#[derive(Debug, Default)]
pub struct CallerShares {
    per_caller: Mutex<HashMap<String, usize>>,
}

impl CallerShares {
    /// Занимает `n` мест вызывающего `sub`, если его доля `max` позволяет. Места
    /// освобождаются, когда возвращённая [`ShareGuard`] уничтожается (пакет записан
    /// или потерян).
    pub fn take(self: &Arc<Self>, sub: &str, n: usize, max: usize) -> Option<ShareGuard> {
        let mut map = self.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        let used = map.get(sub).copied().unwrap_or(0);
        if used + n > max {
            return None;
        }
        map.insert(sub.to_owned(), used + n);
        Some(ShareGuard {
            shares: self.clone(),
            sub: sub.to_owned(),
            n,
        })
    }

    /// Сколько мест сейчас занимает `sub`.
    pub fn used(&self, sub: &str) -> usize {
        self.per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sub)
            .copied()
            .unwrap_or(0)
    }
}

/// Занятые места вызывающего в очереди; уничтожение возвращает их.
#[derive(Debug)]
pub struct ShareGuard {
    shares: Arc<CallerShares>,
    sub: String,
    n: usize,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut map = self
            .shares
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = map.get_mut(&self.sub) {
            *used = used.saturating_sub(self.n);
            if *used == 0 {
                map.remove(&self.sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_per_caller_and_return_on_drop() {
        let shares = Arc::new(CallerShares::default());
        let a1 = shares.take("a", 3, 5).unwrap();
        assert!(shares.take("a", 3, 5).is_none());
        let b = shares.take("b", 5, 5).unwrap();
        let a2 = shares.take("a", 2, 5).unwrap();
        assert_eq!(shares.used("a"), 5);
        drop(a1);
        assert_eq!(shares.used("a"), 2);
        drop((a2, b));
        assert_eq!(shares.used("a"), 0);
        assert_eq!(shares.used("b"), 0);
    }
}
