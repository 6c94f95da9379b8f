//! Имена метрик и однократная установка экспортёра Prometheus.
//!
//! Рекордер глобален для процесса: [`install`] ставит его один раз и отдаёт один и
//! тот же [`PrometheusHandle`] всем экземплярам приложения (в тестах их много).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Глубина очереди писателя (событий).
pub const QUEUE_DEPTH: &str = "eventlog_queue_depth";
/// Длительность одной пакетной вставки, секунды.
pub const BATCH_INSERT_DURATION: &str = "eventlog_batch_insert_duration_seconds";
/// Записано событий.
pub const EVENTS_WRITTEN: &str = "eventlog_events_written_total";
/// Неудачных попыток вставки.
pub const INSERT_ERRORS: &str = "eventlog_insert_errors_total";
/// Повторов вставки после временной ошибки.
pub const INSERT_RETRIES: &str = "eventlog_insert_retries_total";
/// Событий, не принятых в полную очередь или потерянных при остановке.
pub const EVENTS_DROPPED: &str = "eventlog_events_dropped_total";
/// Событий, перенесённых в `event_logs_rejected`.
pub const EVENTS_REJECTED: &str = "eventlog_events_rejected_total";
/// Событий, чей id уже занят строкой другого проекта или пользователя
/// (перенесены в `event_logs_rejected`).
pub const EVENTS_ID_CONFLICTS: &str = "eventlog_events_id_conflicts_total";
/// Активных подписчиков живых событий.
pub const SUBSCRIBERS: &str = "eventlog_subscribers";
/// Длительность HTTP-запросов, секунды (метки `route`, `status`).
pub const HTTP_REQUEST_DURATION: &str = "eventlog_http_request_duration_seconds";

/// Попаданий в кэш аналитики (метка `tier`: `local` или `redis`).
pub const CACHE_HITS: &str = "eventlog_analytics_cache_hits_total";
/// Промахов кэша аналитики.
pub const CACHE_MISSES: &str = "eventlog_analytics_cache_misses_total";
/// Запросов GraphQL, обслуженных быстрым путём страниц событий.
pub const GRAPHQL_FAST_PATH: &str = "eventlog_graphql_fast_path_total";
/// Событий, прочитанных читателем журнала (всех писателей базы).
pub const LOG_EVENTS_READ: &str = "eventlog_log_events_read_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Как часто поток обслуживания сводит образцы гистограмм.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

static UPKEEP_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Сколько раз прошло обслуживание рекордера (для проверки, что оно идёт).
pub fn upkeep_runs() -> u64 {
    UPKEEP_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ставит рекордер Prometheus (один раз на процесс) и возвращает его handle.
/// Если рекордер уже поставлен кем-то ещё, возвращает отдельный handle без
/// глобальной установки: `/metrics` тогда покажет пустой набор, но сервер работает.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("корзины гистограммы не пусты");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            // Обслуживание рекордера: без него образцы гистограмм копятся в памяти,
            // пока кто-нибудь не запросит /metrics. Рекордер один на процесс, и
            // поток тоже один, на всё время жизни процесса.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                        UPKEEP_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            // Счётчики видны в /metrics с нуля, а не с первого события.
            for name in [
                EVENTS_WRITTEN,
                INSERT_ERRORS,
                INSERT_RETRIES,
                EVENTS_DROPPED,
                EVENTS_REJECTED,
                EVENTS_ID_CONFLICTS,
                CACHE_MISSES,
                LOG_EVENTS_READ,
                GRAPHQL_FAST_PATH,
            ] {
                metrics::counter!(name).increment(0);
            }
            metrics::gauge!(QUEUE_DEPTH).set(0.0);
            metrics::gauge!(SUBSCRIBERS).set(0.0);
            handle
        })
        .clone()
}
