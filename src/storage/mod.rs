//! Хранилище событий: подключение к PostgreSQL или SQLite, миграции, пакетная
//! запись ([`write`]) и чтение ([`events`], [`analytics`]); часовые свёртки аналитики
//! ведёт потребитель журнала [`rollups`], читает [`rollup_read`].
//!
//! Все функции чтения принимают [`ReadScope`](crate::query::ReadScope): изоляция
//! компилируется в каждый запрос в [`sql`], и обойти её из API нельзя.
//! Вызывают: `logger` (запись), `stream` (повтор для подписок), `api` (чтение).

pub mod analytics;
mod codec;
pub mod entity;
mod error;
pub mod events;
pub mod follow;
pub mod log;
mod repository;
pub mod rollup_read;
pub mod rollups;
pub mod sessions;
mod sql;
pub mod write;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, SqlxPostgresConnector, SqlxSqliteConnector};
use sqlx::Connection;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

pub use codec::Columns;
pub use error::StorageError;
pub use log::{LogEntry, LogPosition, NOTIFY_CHANNEL, ProjectHead};
pub use repository::EventRepository;
pub use write::{InsertedRow, PgWriteMethod, RowOwner};

/// Столбцы события в порядке, который ожидает декодер строк.
pub(crate) const EVENT_COLUMNS: &str = "id, seq, session_id, user_id, project_id, agent_id, \
     event_type, payload, created_at, error_code, tool_name, approval_status";

/// Подключение к базе событий. Дешёвый `Clone` (внутри пул соединений).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    pg_write: PgWriteMethod,
    /// Читать аналитику из свёрток, когда фильтр это позволяет (иначе всегда по сырым строкам).
    rollup_reads: bool,
    /// Счётчик инструкций, выполненных через SeaORM (проверка DataLoader в тестах).
    statements: Arc<AtomicU64>,
}

/// Режим `PRAGMA synchronous` SQLite (`EVENTLOG_SQLITE_SYNCHRONOUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `FULL` (по умолчанию): подтверждённая фиксация переживает сбой питания и ОС
    /// (fsync WAL при каждой фиксации).
    #[default]
    Full,
    /// `NORMAL`: быстрее, но в режиме WAL последние фиксации могут пропасть при
    /// сбое питания или ОС (не при падении процесса).
    Normal,
}

impl std::str::FromStr for SqliteDurability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            other => Err(format!("expected full or normal, got {other}")),
        }
    }
}

impl std::fmt::Display for SqliteDurability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Normal => "normal",
        })
    }
}

/// Параметры пула.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Максимум соединений.
    pub max_connections: u32,
    /// Сколько ждать свободного соединения.
    pub acquire_timeout: Duration,
    /// `synchronous` для SQLite (на PostgreSQL не влияет).
    pub sqlite_synchronous: SqliteDurability,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sqlite_synchronous: SqliteDurability::Full,
        }
    }
}

/// Соединение, простоявшее в пуле дольше этого, проверяется перед выдачей.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

/// Проверка соединения перед выдачей из пула — только после простоя.
///
/// По умолчанию sqlx проверяет (`ping`: лишний обмен с базой) каждое соединение при
/// каждой выдаче: на странице событий это до трети системных вызовов и пробуждений
/// процесса базы. Соединение, которое только что вернули в пул, живо; проверять стоит
/// только простоявшие (после перезапуска базы или обрыва сети). Ошибка проверки
/// закрывает соединение, и пул выдаёт другое — как при `test_before_acquire`.
async fn ping_if_idle<C: Connection>(
    conn: &mut C,
    meta: PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for >= PING_IDLE_AFTER {
        conn.ping().await?;
    }
    Ok(true)
}

/// Настройки пула, общие для обеих баз: размер, ожидание соединения и проверка
/// только простоявших соединений ([`ping_if_idle`]).
fn pool_options<DB: sqlx::Database>(max: u32, acquire_timeout: Duration) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(async move { ping_if_idle(conn, meta).await }))
}

impl Store {
    /// Подключается по URL `postgres://…` или `sqlite://PATH?mode=rwc`.
    /// SQLite открывается в режиме WAL с `synchronous` из `opts` (по умолчанию
    /// `FULL`: «подтверждено ⇒ сохранено» и при сбое питания).
    pub async fn connect(url: &str, opts: PoolOptions) -> Result<Self, StorageError> {
        let mut db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool = pool_options::<sqlx::Postgres>(opts.max_connections, opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match opts.sqlite_synchronous {
                    SqliteDurability::Full => SqliteSynchronous::Full,
                    SqliteDurability::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(Duration::from_secs(5));
            // База в памяти живёт в одном соединении: пул из одного.
            let max = if url.contains(":memory:") {
                1
            } else {
                opts.max_connections
            };
            let pool = pool_options::<sqlx::Sqlite>(max, opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            SqlxSqliteConnector::from_sqlx_sqlite_pool(pool)
        } else {
            return Err(StorageError::UnsupportedUrl(url.to_owned()));
        };
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Ok(Self {
            db,
            pg_write: PgWriteMethod::default(),
            rollup_reads: true,
            statements,
        })
    }

    /// Выбирает способ пакетной записи на PostgreSQL (для бенчмарка).
    pub fn with_pg_write_method(mut self, m: PgWriteMethod) -> Self {
        self.pg_write = m;
        self
    }

    /// Включает или выключает чтение аналитики из свёрток (`EVENTLOG_ANALYTICS_ROLLUPS`).
    /// Выключено — аналитика всегда считается по сырым строкам; ответ тот же.
    pub fn with_rollup_reads(mut self, on: bool) -> Self {
        self.rollup_reads = on;
        self
    }

    /// Сколько инструкций выполнено через SeaORM этим пулом (чтения и SQLite-запись).
    pub fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Соединение SeaORM.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Тип базы.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Это PostgreSQL?
    pub fn is_postgres(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// Применяет все недостающие миграции. На PostgreSQL — под сессионным
    /// advisory-замком: экземпляры, стартующие одновременно, мигрируют по очереди
    /// (второй увидит, что миграции уже применены).
    pub async fn migrate_up(&self) -> Result<(), StorageError> {
        if !self.is_postgres() {
            Migrator::up(&self.db, None).await?;
            return Ok(());
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(log::MIGRATE_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
        let result = Migrator::up(&self.db, None).await;
        // Замок снимается и при ошибке; при обрыве соединения его снимет база.
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(log::MIGRATE_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
        result?;
        Ok(())
    }

    /// Выполняет `job` на одном экземпляре за раз (PostgreSQL: `pg_try_advisory_lock`
    /// на отдельном соединении; на SQLite — всегда). `None` — замок занят другим
    /// экземпляром, работа пропущена.
    pub async fn exclusively<T, F>(&self, key: i64, job: F) -> Result<Option<T>, StorageError>
    where
        F: std::future::Future<Output = Result<T, StorageError>>,
    {
        if !self.is_postgres() {
            return job.await.map(Some);
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut conn = pool.acquire().await?;
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        let result = job.await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        result.map(Some)
    }

    /// Проверяет, что база отвечает.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    /// Закрывает пул.
    pub async fn close(self) -> Result<(), StorageError> {
        self.db.close().await?;
        Ok(())
    }
}
