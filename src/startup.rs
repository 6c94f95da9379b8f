//! Сборка и запуск приложения: [`Application::build`] подключается к базе,
//! применяет миграции, ставит метрики, запускает писателя, потребителя свёрток
//! аналитики, фоновую очистку и HTTP-сервер; [`Application::run_until_stopped`] обслуживает запросы до отмены
//! и затем дописывает очередь.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use secrecy::ExposeSecret;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::{self, ApiContext, AppState};
use crate::auth::{DevSecret, DevSecretError, JwtKeys, dev_secret};
use crate::cache::AnalyticsCache;
use crate::config::Settings;
use crate::logger::ShutdownReport;
use crate::query::{CursorCodec, Role};
use crate::redis_link::RedisLink;
use crate::storage::log::RETENTION_LOCK_KEY;
use crate::storage::{PoolOptions, StorageError, Store};
use crate::stream::{StreamConfig, StreamManager};

/// Ошибка запуска.
#[derive(Debug, Error)]
pub enum StartupError {
    /// База недоступна или миграция не прошла.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Неверный URL Redis.
    #[error("invalid EVENTLOG_REDIS_URL: {0}")]
    Redis(redis::RedisError),
    /// Не удалось занять адрес.
    #[error("cannot bind {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    /// Файл секрета разработки не прочитан и не создан.
    #[error(transparent)]
    Secret(#[from] DevSecretError),
}

/// Пользователь, для которого печатается токен `user`: первый пользователь `eventlog demo`.
pub const DEMO_USER: &str = "demo-user-1";

/// Готовые токены демонстрационного проекта (когда секрет не задан).
#[derive(Debug, Clone)]
pub struct DemoTokens {
    /// Демонстрационный проект.
    pub project_id: Uuid,
    /// Файл, где хранится секрет (`None` — секрет только на этот запуск).
    pub secret_file: Option<std::path::PathBuf>,
    /// Файл секрета создан этим запуском.
    pub secret_file_created: bool,
    /// Токен пользователя [`DEMO_USER`].
    pub user: String,
    /// Токен администратора проекта.
    pub admin: String,
    /// Токен сервиса проекта.
    pub service: String,
}

/// Собранное, но ещё не запущенное приложение.
pub struct Application {
    listener: TcpListener,
    /// Отдельный порт OTLP/gRPC (`EVENTLOG_OTLP_GRPC_LISTEN`), если задан.
    grpc_listener: Option<TcpListener>,
    state: AppState,
    cancel: CancellationToken,
    tracker: TaskTracker,
    demo: Option<DemoTokens>,
}

impl Application {
    /// Подключается, мигрирует, запускает писателя и занимает адрес.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = Store::connect(
            &settings.database_url,
            PoolOptions {
                max_connections: settings.db_max_connections,
                sqlite_synchronous: settings.sqlite_synchronous,
                ..Default::default()
            },
        )
        .await?
        .with_rollup_reads(settings.analytics_rollups);
        if !settings.no_migrate {
            store.migrate_up().await?;
        }
        let metrics = crate::metrics::install();
        let (secret, demo) = match &settings.jwt_secret {
            Some(s) => (s.expose_secret().as_bytes().to_vec(), None),
            None => {
                let dev = match dev_secret::default_path(&settings.database_url) {
                    Some(path) => Some(DevSecret::load_or_create(&path)?),
                    None => None,
                };
                let (secret, project_id) = match &dev {
                    Some(d) => (d.secret.clone(), d.demo_project_id),
                    None => {
                        // PostgreSQL или SQLite в памяти: положить файл некуда, секрет на один запуск.
                        let mut buf = [0u8; 32];
                        rand::rng().fill_bytes(&mut buf);
                        (buf.to_vec(), Uuid::now_v7())
                    }
                };
                let tokens = demo_tokens(&JwtKeys::new(&secret), project_id, dev.as_ref());
                (secret, Some(tokens))
            }
        };
        let keys = JwtKeys::new(&secret);
        let redis = match &settings.redis_url {
            Some(url) => Some(RedisLink::new(url, &settings.redis_prefix).map_err(StartupError::Redis)?),
            None => None,
        };
        let stream = StreamManager::start_with(
            store.clone(),
            settings.logger_config(),
            StreamConfig {
                live_capacity: settings.live_buffer,
                live_bytes: settings.live_buffer_bytes,
                poll_interval: Duration::from_millis(settings.log_poll_ms.max(1)),
                listen_notify: settings.log_notify,
                redis: redis.clone(),
            },
        );
        // Экземпляр готов, когда его читатель журнала дочитал голову: иначе первые
        // подписки и /readyz ждали бы его.
        if tokio::time::timeout(Duration::from_secs(10), stream.sync_to_head())
            .await
            .is_err()
        {
            tracing::warn!("The log reader has not caught up yet; serving anyway.");
        }
        let api_ctx = ApiContext {
            store: store.clone(),
            repo: crate::storage::EventRepository::new(store.clone()),
            stream,
            cursors: CursorCodec::new(&secret),
            limits: Arc::new(api::limits::ApiLimits::from_settings(&settings)),
            ws: Arc::default(),
            queue_shares: Arc::default(),
            replay_shares: Arc::default(),
            cache: AnalyticsCache::new(Duration::from_secs(settings.analytics_cache_ttl), redis),
        };
        let schema = api::graphql::build_schema(Some(api_ctx.clone()), !settings.disable_introspection);
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartupError::Bind(settings.listen, e))?;
        let grpc_listener = match settings.otlp_grpc_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartupError::Bind(addr, e))?,
            ),
            None => None,
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        if settings.analytics_rollups && settings.rollup_interval_ms > 0 {
            // Потребитель свёрток на каждом экземпляре: шаги не пересекаются
            // (строка потребителя блокируется), отставание — доли секунды.
            let (store, cancel, interval) = (
                store.clone(),
                cancel.clone(),
                Duration::from_millis(settings.rollup_interval_ms),
            );
            tracker.spawn(async move { store.run_rollups(interval, cancel).await });
        }
        if settings.sessions_follow_ms > 0 {
            let (store, cancel) = (store.clone(), cancel.clone());
            let interval = Duration::from_millis(settings.sessions_follow_ms);
            tracker.spawn(async move {
                store
                    .run_follower(
                        crate::storage::sessions::FOLLOWER,
                        crate::storage::sessions::step_limit(store.is_postgres()),
                        interval,
                        crate::storage::sessions::apply,
                        cancel,
                    )
                    .await;
            });
        }
        if settings.retention_days > 0 {
            tracker.spawn(retention_loop(store, settings.retention_days, cancel.clone()));
        }
        Ok(Self {
            listener,
            grpc_listener,
            state: AppState {
                api: api_ctx,
                schema,
                keys,
                settings: Arc::new(settings),
                metrics,
                shutdown: cancel.clone(),
                connections: TaskTracker::new(),
                otlp: api::otlp::OtlpState::default(),
                fast: Arc::new(api::graphql::fast::FastPath::new()),
            },
            cancel,
            tracker,
            demo,
        })
    }

    /// Порт отдельного OTLP/gRPC-слушателя, если он задан.
    pub fn grpc_port(&self) -> Option<u16> {
        self.grpc_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Занятый порт (в тестах адрес `:0`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Токен отмены: его отмена останавливает сервер.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Готовые токены, если `EVENTLOG_JWT_SECRET` не задан (секрет из файла
    /// рядом с базой SQLite или сгенерирован на этот запуск).
    pub fn demo_tokens(&self) -> Option<&DemoTokens> {
        self.demo.as_ref()
    }

    /// Поток событий приложения (для встраивания и тестов).
    pub fn stream(&self) -> StreamManager {
        self.state.api.stream.clone()
    }

    /// Ключи JWT приложения.
    pub fn keys(&self) -> JwtKeys {
        self.state.keys.clone()
    }

    /// Быстрый путь GraphQL приложения (счётчик обслуженных запросов — для тестов).
    pub fn fast_path(&self) -> Arc<crate::api::graphql::fast::FastPath> {
        self.state.fast.clone()
    }

    /// Хранилище приложения.
    pub fn store(&self) -> Store {
        self.state.api.store.clone()
    }

    /// Обслуживает запросы до отмены токена, затем перестаёт принимать соединения,
    /// дописывает очередь писателя и ждёт фоновые задачи.
    pub async fn run_until_stopped(self) -> std::io::Result<ShutdownReport> {
        let stream = self.state.api.stream.clone();
        let connections = self.state.connections.clone();
        if let Some(grpc) = self.grpc_listener {
            let app = api::otlp::grpc_router(self.state.clone());
            let cancel = self.cancel.clone();
            tracing::info!(addr = ?grpc.local_addr().ok(), "Listening for OTLP/gRPC.");
            self.tracker.spawn(async move {
                let served = axum::serve(grpc, app)
                    .with_graceful_shutdown(async move { cancel.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "OTLP/gRPC listener failed.");
                }
            });
        }
        let router = api::router(self.state);
        tracing::info!(addr = ?self.listener.local_addr().ok(), "Listening.");
        let cancel = self.cancel.clone();
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await?;
        self.cancel.cancel();
        // websocket-соединения получили отмену и закрываются кодом 1001; ждём, пока
        // кадры закрытия уйдут (не дольше секунды на медленного клиента).
        connections.close();
        if tokio::time::timeout(Duration::from_secs(1), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "Websocket connections did not close in time."
            );
        }
        let report = stream.shutdown().await;
        self.tracker.close();
        self.tracker.wait().await;
        tracing::info!(drained = report.drained, lost = report.lost, "Stopped.");
        Ok(report)
    }
}

fn demo_tokens(keys: &JwtKeys, project_id: Uuid, dev: Option<&DevSecret>) -> DemoTokens {
    let ttl = chrono::Duration::hours(24);
    let mint = |sub: &str, role: Role, projects: Option<Vec<Uuid>>| {
        keys.mint(sub, role, projects, ttl).unwrap_or_default()
    };
    DemoTokens {
        project_id,
        secret_file: dev.map(|d| d.path.clone()),
        secret_file_created: dev.is_some_and(|d| d.created),
        user: mint(DEMO_USER, Role::User, Some(vec![project_id])),
        admin: mint("demo-admin", Role::Admin, Some(vec![project_id])),
        service: mint("demo-service", Role::Service, Some(vec![project_id])),
    }
}

/// Фоновая очистка: раз в час удаляет события старше срока порциями. На
/// PostgreSQL работает один экземпляр за раз (advisory-замок); остальные в этот
/// час пропускают очистку.
async fn retention_loop(store: Store, days: u32, cancel: CancellationToken) {
    loop {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let job = async {
            let n = store.purge_older_than(cutoff, 10_000).await?;
            // Сведения о фиксациях живут вдвое дольше событий: по ним находится
            // позиция `afterSeq` уже удалённого события.
            store
                .prune_commits(cutoff - chrono::Duration::days(i64::from(days)))
                .await?;
            Ok(n)
        };
        match store.exclusively(RETENTION_LOCK_KEY, job).await {
            Ok(Some(0)) => {}
            Ok(Some(n)) => tracing::info!(deleted = n, days, "Retention purge finished."),
            Ok(None) => tracing::debug!("Retention runs on another instance."),
            Err(e) => tracing::warn!(error = %e, "Retention purge failed; will retry."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Сигнал остановки: SIGINT или SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
