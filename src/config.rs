//! Настройки сервера из флагов и переменных окружения `EVENTLOG_*` (SPEC §8).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use crate::storage::SqliteDurability;

/// Настройки `eventlog serve`. Тесты строят их напрямую через [`Settings::for_database`].
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// URL базы: `sqlite://PATH?mode=rwc` или `postgres://…`.
    #[arg(
        long,
        env = "EVENTLOG_DATABASE_URL",
        default_value = "sqlite://eventlog.db?mode=rwc"
    )]
    pub database_url: String,
    /// Адрес HTTP-сервера.
    #[arg(long, env = "EVENTLOG_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Секрет HS256 для JWT; без него сервер генерирует секрет на один запуск и печатает готовые токены.
    #[arg(long, env = "EVENTLOG_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// URL Redis (необязательно): пробуждение читателей журнала на всех экземплярах
    /// и общий кэш аналитики. Без него — `NOTIFY` (PostgreSQL), опрос и кэш в процессе.
    #[arg(long, env = "EVENTLOG_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Префикс ключей и каналов Redis: несколько развёртываний делят один Redis.
    #[arg(long, env = "EVENTLOG_REDIS_PREFIX", default_value = "eventlog:")]
    pub redis_prefix: String,
    /// Срок жизни записи кэша аналитики, секунд (0 — кэш выключен). Ограничивает
    /// только срок жизни: ответ из кэша всегда точен.
    #[arg(long, env = "EVENTLOG_ANALYTICS_CACHE_TTL", default_value_t = 300)]
    pub analytics_cache_ttl: u64,
    /// Интервал опроса журнала, мс: столько в худшем случае ждёт живое событие,
    /// уведомление о котором потерялось.
    #[arg(long, env = "EVENTLOG_LOG_POLL_MS", default_value_t = 100)]
    pub log_poll_ms: u64,
    /// Слушать `NOTIFY eventlog_log` на PostgreSQL (`false` — только опрос и Redis).
    #[arg(long, env = "EVENTLOG_LOG_NOTIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_notify: bool,
    /// Пауза потребителя журнала `sessions` (сводки сессий), мс, когда он догнал
    /// журнал (0 — потребитель не запускается; чтения остаются точными, но дельта
    /// неприменённых строк растёт).
    #[arg(long, env = "EVENTLOG_SESSIONS_FOLLOW_MS", default_value_t = 200)]
    pub sessions_follow_ms: u64,
    /// Срок хранения событий, дней (0 — не удалять).
    #[arg(long, env = "EVENTLOG_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Пауза потребителя свёрток аналитики, когда журнал дочитан, мс (0 — потребитель
    /// на этом экземпляре не запускается; аналитика остаётся точной, но читает больше
    /// сырых строк).
    #[arg(long, env = "EVENTLOG_ROLLUP_INTERVAL_MS", default_value_t = 200)]
    pub rollup_interval_ms: u64,
    /// Аналитика из свёрток: потребитель свёрток работает, и чтения берут из них то,
    /// на что свёртки отвечают. По умолчанию выключено: поддержание узких свёрток стоит
    /// базе процессорного времени на каждое событие (docs/performance.md, «Analytics from
    /// narrow rollups»), а выигрыш нужен не всем. Ответы одинаковы в обоих режимах.
    #[arg(long, env = "EVENTLOG_ANALYTICS_ROLLUPS", default_value_t = false, action = clap::ArgAction::Set)]
    pub analytics_rollups: bool,
    /// Размер пакета записи.
    #[arg(long, env = "EVENTLOG_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,
    /// Интервал добора пакета, мс.
    #[arg(long, env = "EVENTLOG_FLUSH_INTERVAL_MS", default_value_t = 20)]
    pub flush_interval_ms: u64,
    /// Ёмкость очереди писателя, событий.
    #[arg(long, env = "EVENTLOG_QUEUE_CAPACITY", default_value_t = 65_536)]
    pub queue_capacity: usize,
    /// Не применять миграции при запуске.
    #[arg(long, env = "EVENTLOG_NO_MIGRATE", default_value_t = false)]
    pub no_migrate: bool,
    /// Отключить GraphiQL на `GET /graphql`.
    #[arg(long, env = "EVENTLOG_DISABLE_GRAPHIQL", default_value_t = false)]
    pub disable_graphiql: bool,
    /// Отключить интроспекцию GraphQL.
    #[arg(long, env = "EVENTLOG_DISABLE_INTROSPECTION", default_value_t = false)]
    pub disable_introspection: bool,
    /// Предел тела запроса, байт.
    #[arg(long, env = "EVENTLOG_BODY_LIMIT", default_value_t = 10 * 1024 * 1024)]
    pub body_limit: usize,
    /// Таймаут выполнения одного GraphQL-запроса, мс.
    #[arg(long, env = "EVENTLOG_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Срок дописывания очереди при остановке, мс.
    #[arg(long, env = "EVENTLOG_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
    /// Максимум соединений пула базы.
    #[arg(long, env = "EVENTLOG_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Предел очереди писателя в байтах (оценка памяти событий); полная — BACKPRESSURE.
    #[arg(long, env = "EVENTLOG_QUEUE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub queue_bytes: usize,
    /// Предел живого буфера подписок в байтах; отставший сильнее получает LAGGED.
    #[arg(long, env = "EVENTLOG_LIVE_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub live_buffer_bytes: usize,
    /// Ёмкость живого буфера подписок, событий; отставший сильнее получает LAGGED.
    #[arg(long, env = "EVENTLOG_LIVE_BUFFER", default_value_t = 16_384)]
    pub live_buffer: usize,
    /// Сколько ждать `connection_init` на websocket, мс.
    #[arg(long, env = "EVENTLOG_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// `PRAGMA synchronous` для SQLite: `full` (по умолчанию; подтверждение переживает
    /// сбой питания) или `normal` (быстрее; последние подтверждённые события могут
    /// пропасть при сбое ОС или питания).
    #[arg(long, env = "EVENTLOG_SQLITE_SYNCHRONOUS", default_value_t = SqliteDurability::Full)]
    pub sqlite_synchronous: SqliteDurability,
    /// Наибольший REST `offset` (глубже — курсор).
    #[arg(long, env = "EVENTLOG_MAX_OFFSET", default_value_t = 10_000)]
    pub max_offset: i64,
    /// Наибольший размер образца `payloadContains`, байт сериализованного JSON.
    #[arg(long, env = "EVENTLOG_PAYLOAD_CONTAINS_MAX_BYTES", default_value_t = 4096)]
    pub payload_contains_max_bytes: usize,
    /// Наибольшее число websocket-соединений на сервер.
    #[arg(long, env = "EVENTLOG_WS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub ws_max_connections: usize,
    /// Наибольшее число websocket-соединений одного вызывающего (JWT `sub`).
    #[arg(long, env = "EVENTLOG_WS_MAX_CONNECTIONS_PER_TOKEN", default_value_t = 16)]
    pub ws_max_connections_per_token: usize,
    /// Наибольшее число одновременных подписок одного вызывающего (JWT `sub`) на
    /// всех его соединениях.
    #[arg(long, env = "EVENTLOG_WS_MAX_SUBSCRIPTIONS_PER_TOKEN", default_value_t = 200)]
    pub ws_max_subscriptions_per_token: usize,
    /// Предел размера одной страницы событий, байт (оценка по нагрузке и полям):
    /// страница, достигшая его, короче `first`, с `hasNextPage: true` и рабочим курсором.
    #[arg(long, env = "EVENTLOG_MAX_PAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_page_bytes: usize,
    /// Наибольшее число точек `analytics.timeline` (по умолчанию 20 000: две недели минут).
    #[arg(long, env = "EVENTLOG_MAX_TIMELINE_POINTS", default_value_t = 20_000)]
    pub max_timeline_points: i64,
    /// Какую долю очереди записи (в процентах ёмкости) могут занимать ещё не
    /// записанные события одного вызывающего (JWT `sub`); сверх — RATE_LIMITED.
    #[arg(long, env = "EVENTLOG_QUEUE_SHARE_PER_TOKEN_PERCENT", default_value_t = 50)]
    pub queue_share_per_token_percent: u8,
    /// Сколько подписок одного вызывающего могут одновременно повторять историю
    /// (`afterSeq`); сверх — RATE_LIMITED (повтор читает базу, живые — нет).
    #[arg(long, env = "EVENTLOG_MAX_REPLAYS_PER_TOKEN", default_value_t = 4)]
    pub max_replays_per_token: usize,
    /// Источники (origin) браузерных приложений, которым разрешены CORS и websocket,
    /// через запятую; `*` — любой. Запросы без `Origin` (сервисы, скрипты) не затронуты.
    #[arg(
        long,
        env = "EVENTLOG_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = DEFAULT_CORS_ORIGINS
    )]
    pub cors_origins: Vec<String>,
    /// Адрес отдельного OTLP/gRPC-порта (например 127.0.0.1:4317); gRPC доступен и на основном.
    #[arg(long, env = "EVENTLOG_OTLP_GRPC_LISTEN")]
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// Предел тела OTLP-запроса после распаковки, байт.
    #[arg(long, env = "EVENTLOG_OTLP_BODY_LIMIT", default_value_t = 16 * 1024 * 1024)]
    pub otlp_body_limit: usize,
    /// Быстрый путь GraphQL для страниц событий (`false` — всё через общий исполнитель).
    #[arg(long, env = "EVENTLOG_GRAPHQL_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphql_fast_path: bool,
}

/// Источники по умолчанию: dev-серверы примеров из `frontend-examples/`.
pub const DEFAULT_CORS_ORIGINS: &str = "http://localhost:5173,http://127.0.0.1:5173";

impl Settings {
    /// Настройки по умолчанию для базы `url` (для тестов и встраивания).
    pub fn for_database(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            listen: "127.0.0.1:0".parse().expect("адрес корректен"),
            jwt_secret: None,
            redis_url: None,
            redis_prefix: "eventlog:".into(),
            analytics_cache_ttl: 300,
            log_poll_ms: 100,
            log_notify: true,
            sessions_follow_ms: 200,
            retention_days: 90,
            rollup_interval_ms: 200,
            analytics_rollups: false,
            batch_size: 1000,
            flush_interval_ms: 20,
            queue_capacity: 65_536,
            no_migrate: false,
            disable_graphiql: false,
            disable_introspection: false,
            body_limit: 10 * 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            db_max_connections: 16,
            live_buffer: 16_384,
            queue_bytes: 256 * 1024 * 1024,
            live_buffer_bytes: 64 * 1024 * 1024,
            ws_init_timeout_ms: 10_000,
            sqlite_synchronous: SqliteDurability::Full,
            max_offset: 10_000,
            payload_contains_max_bytes: 4096,
            ws_max_connections: 10_000,
            ws_max_connections_per_token: 16,
            ws_max_subscriptions_per_token: 200,
            max_page_bytes: 8 * 1024 * 1024,
            max_timeline_points: 20_000,
            queue_share_per_token_percent: 50,
            max_replays_per_token: 4,
            cors_origins: DEFAULT_CORS_ORIGINS.split(',').map(str::to_owned).collect(),
            otlp_grpc_listen: None,
            otlp_body_limit: 16 * 1024 * 1024,
            graphql_fast_path: true,
        }
    }

    /// Настройки писателя из этих настроек.
    pub fn logger_config(&self) -> crate::logger::LoggerConfig {
        crate::logger::LoggerConfig {
            batch_size: self.batch_size,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            queue_capacity: self.queue_capacity,
            queue_bytes: self.queue_bytes,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            ..Default::default()
        }
    }
}
