//! Настройки сервера из флагов и переменных окружения `EVENTLOG_*` (SPEC §8).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

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
    /// URL Redis (необязательно; зарезервировано для раздачи между экземплярами).
    #[arg(long, env = "EVENTLOG_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Срок хранения событий, дней (0 — не удалять).
    #[arg(long, env = "EVENTLOG_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
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
    /// Ёмкость живого буфера подписок, событий; отставший сильнее получает LAGGED.
    #[arg(long, env = "EVENTLOG_LIVE_BUFFER", default_value_t = 16_384)]
    pub live_buffer: usize,
    /// Сколько ждать `connection_init` на websocket, мс.
    #[arg(long, env = "EVENTLOG_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Адрес отдельного OTLP/gRPC-порта (например 127.0.0.1:4317); gRPC доступен и на основном.
    #[arg(long, env = "EVENTLOG_OTLP_GRPC_LISTEN")]
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// Предел тела OTLP-запроса после распаковки, байт.
    #[arg(long, env = "EVENTLOG_OTLP_BODY_LIMIT", default_value_t = 16 * 1024 * 1024)]
    pub otlp_body_limit: usize,
}

impl Settings {
    /// Настройки по умолчанию для базы `url` (для тестов и встраивания).
    pub fn for_database(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            listen: "127.0.0.1:0".parse().expect("адрес корректен"),
            jwt_secret: None,
            redis_url: None,
            retention_days: 90,
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
            ws_init_timeout_ms: 10_000,
            otlp_grpc_listen: None,
            otlp_body_limit: 16 * 1024 * 1024,
        }
    }

    /// Настройки писателя из этих настроек.
    pub fn logger_config(&self) -> crate::logger::LoggerConfig {
        crate::logger::LoggerConfig {
            batch_size: self.batch_size,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            queue_capacity: self.queue_capacity,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            ..Default::default()
        }
    }
}
