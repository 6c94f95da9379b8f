//! Команды CLI. Каждая — асинхронная функция, принимающая свои аргументы;
//! ошибки оборачиваются `anyhow` с контекстом.

pub mod demo;
pub mod httpbench;
pub mod livebench;
pub mod loadgen;
pub mod otlp_bench;
pub mod procstat;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use migration::{Migrator, MigratorTrait};
use secrecy::ExposeSecret;
use uuid::Uuid;

use eventlog::auth::{DevSecret, JwtKeys, dev_secret};
use eventlog::config::Settings;
use eventlog::query::Role;
use eventlog::startup::{Application, shutdown_signal};
use eventlog::storage::{PoolOptions, Store};

/// URL базы по умолчанию — как у `serve`.
pub const DEFAULT_DB: &str = "sqlite://eventlog.db?mode=rwc";

/// `eventlog serve`.
pub async fn run_serve(settings: Settings) -> Result<()> {
    let app = Application::build(settings.clone())
        .await
        .context("while starting the server")?;
    let port = app.port();
    println!("eventlog listening on http://{}:{port}", settings.listen.ip());
    println!("  GraphiQL:  http://{}:{port}/graphql", settings.listen.ip());
    if let Some(t) = app.demo_tokens() {
        println!();
        match &t.secret_file {
            Some(path) => println!(
                "No EVENTLOG_JWT_SECRET set: using the secret {} {} (mode 0600; `demo` and `token` use it too).",
                if t.secret_file_created {
                    "generated into"
                } else {
                    "kept in"
                },
                path.display()
            ),
            None => println!(
                "No EVENTLOG_JWT_SECRET set: generated a secret for this run only (no SQLite file to keep it beside)."
            ),
        }
        println!("Ready tokens (24h):");
        println!("  demo project id: {}", t.project_id);
        println!("  user  ({}):  {}", eventlog::startup::DEMO_USER, t.user);
        println!("  admin (demo-admin):   {}", t.admin);
        println!("  service (demo-service): {}", t.service);
        println!("Paste into GraphiQL headers as {{\"Authorization\": \"Bearer <token>\"}}.");
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutdown signal received; draining.");
        token.cancel();
    });
    let report = app.run_until_stopped().await.context("while serving")?;
    if report.lost > 0 {
        bail!(
            "{} queued events were not written before the shutdown deadline",
            report.lost
        );
    }
    Ok(())
}

/// Действие миграции.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MigrateAction {
    /// Применить все.
    Up,
    /// Откатить все.
    Down,
    /// Показать состояние.
    Status,
}

/// `eventlog migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// up | down | status.
    #[arg(value_enum)]
    pub action: MigrateAction,
    /// URL базы.
    #[arg(long, env = "EVENTLOG_DATABASE_URL", default_value = DEFAULT_DB)]
    pub database_url: String,
}

/// `eventlog migrate up|down|status`.
pub async fn run_migrate(args: MigrateArgs) -> Result<()> {
    let store = Store::connect(&args.database_url, PoolOptions::default())
        .await
        .context("while connecting to the database")?;
    let db = store.connection();
    match args.action {
        MigrateAction::Up => Migrator::up(db, None).await.context("while migrating up")?,
        MigrateAction::Down => Migrator::down(db, None).await.context("while migrating down")?,
        MigrateAction::Status => {
            let pending: Vec<String> = Migrator::get_pending_migrations(db)
                .await?
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            let applied: Vec<String> = Migrator::get_applied_migrations(db)
                .await?
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            for m in &applied {
                println!("applied  {m}");
            }
            for m in &pending {
                println!("pending  {m}");
            }
            return Ok(());
        }
    }
    println!("ok");
    Ok(())
}

/// `eventlog token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Пользователь (claim `sub`).
    #[arg(long)]
    pub sub: String,
    /// Роль.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// Проект (повторяемый).
    #[arg(long = "project")]
    pub projects: Vec<Uuid>,
    /// Срок действия, например 24h, 30m, 7d.
    #[arg(long, default_value = "24h")]
    pub ttl: humantime::Duration,
    /// Секрет; без него берётся файл секрета рядом с базой SQLite (как у `serve`).
    #[arg(long, env = "EVENTLOG_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<secrecy::SecretString>,
    /// База, рядом с которой лежит файл секрета (та же, что у `serve`).
    #[arg(long, env = "EVENTLOG_DATABASE_URL", default_value = DEFAULT_DB)]
    pub database_url: String,
}

/// Секрет JWT для `token` и `demo`: `EVENTLOG_JWT_SECRET`, иначе файл секрета рядом
/// с базой SQLite (создаётся, если его нет). Второе значение — файл, если он взят.
pub fn resolve_secret(
    explicit: Option<&secrecy::SecretString>,
    database_url: &str,
) -> Result<(Vec<u8>, Option<DevSecret>)> {
    if let Some(s) = explicit {
        return Ok((s.expose_secret().as_bytes().to_vec(), None));
    }
    let path = dev_secret::default_path(database_url).context(
        "EVENTLOG_JWT_SECRET (or --jwt-secret) is required: the database is not a SQLite file to keep a secret beside",
    )?;
    let dev = DevSecret::load_or_create(&path).context("while reading the secret file")?;
    Ok((dev.secret.clone(), Some(dev)))
}

/// `eventlog token --sub ID --role ROLE [--project UUID]... [--ttl 24h]`.
pub fn run_token(args: TokenArgs) -> Result<()> {
    let (secret, dev) = resolve_secret(args.jwt_secret.as_ref(), &args.database_url)?;
    let role = match args.role.as_str() {
        "user" => Role::User,
        "admin" => Role::Admin,
        "service" => Role::Service,
        other => bail!("--role: must be user, admin or service, got {other:?}"),
    };
    if role != Role::User && args.projects.is_empty() {
        bail!(
            "--project: at least one project is required for role {}",
            role.as_str()
        );
    }
    let projects = (!args.projects.is_empty()).then_some(args.projects);
    let ttl = chrono::Duration::from_std(*args.ttl).context("--ttl: out of range")?;
    let keys = JwtKeys::new(&secret);
    if let Some(d) = dev {
        eprintln!("signed with the secret in {}", d.path.display());
    }
    println!("{}", keys.mint(&args.sub, role, projects, ttl)?);
    Ok(())
}

/// `eventlog purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Удалить старше, например 90d.
    #[arg(long, default_value = "90d")]
    pub older_than: humantime::Duration,
    /// URL базы.
    #[arg(long, env = "EVENTLOG_DATABASE_URL", default_value = DEFAULT_DB)]
    pub database_url: String,
}

/// `eventlog purge --older-than 90d`.
pub async fn run_purge(args: PurgeArgs) -> Result<()> {
    let store = Store::connect(&args.database_url, PoolOptions::default())
        .await
        .context("while connecting to the database")?;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(*args.older_than).context("--older-than")?;
    let n = store
        .purge_older_than(cutoff, 10_000)
        .await
        .context("while purging")?;
    println!("deleted {n} events older than {cutoff}");
    Ok(())
}

/// `eventlog export-schema`.
#[derive(Debug, Args)]
pub struct ExportSchemaArgs {
    /// Куда записать SDL.
    #[arg(long, default_value = "schema.graphql")]
    pub output: PathBuf,
}

/// Пишет SDL схемы в файл.
pub fn run_export_schema(args: ExportSchemaArgs) -> Result<()> {
    let sdl = eventlog::api::graphql::build_schema(None, true).sdl();
    std::fs::write(&args.output, sdl).with_context(|| format!("while writing {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    Ok(())
}
