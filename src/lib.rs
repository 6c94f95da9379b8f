//! eventlog — сервер журналирования и аналитики событий для мультиагентных
//! ИИ-платформ, и библиотека, которая эти события производит.
//!
//! # Устройство
//!
//! Слои идут снизу вверх: `storage` → `logger` → `stream` → `api`; компоненты
//! агентной среды (`runtime`) публикуют события через `stream`.
//!
//! - [`model`] — событие и правила его полей (без ввода-вывода).
//! - [`query`] — фильтр, область доступа, курсоры: одно определение для SQL,
//!   подписок, REST и GraphQL.
//! - [`storage`] — PostgreSQL/SQLite: пакетная запись, журнал (один порядок
//!   событий для всех писателей базы), страницы, аналитика.
//! - [`logger`] — [`EventLogger`]: неблокирующая ограниченная очередь и писатель.
//! - [`stream`] — [`StreamManager`]: читатель журнала на процесс и подписки.
//! - [`redis_link`] — необязательный Redis: пробуждение экземпляров, общий кэш.
//! - [`cache`] — точный кэш аналитики, ключ которого содержит голову журнала.
//! - [`metrics`] — имена метрик и экспорт Prometheus.
//! - [`otlp`] — приём OpenTelemetry: терпимое чтение OTLP/JSON и отображение спанов
//!   и записей журнала в события каталога (без ввода-вывода).

pub mod cache;
pub mod logger;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod query;
pub mod redis_link;
pub mod storage;
pub mod stream;

pub use logger::EventLogger;
pub use stream::StreamManager;
pub mod api;
pub mod auth;
pub mod config;
pub mod runtime;
pub mod startup;
pub mod telemetry;
