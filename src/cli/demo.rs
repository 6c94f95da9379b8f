//! `eventlog demo`: гоняет агентную среду по настоящей базе и печатает проекты и
//! готовые токены, чтобы сразу открыть GraphiQL или дашборд на этих данных.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use eventlog::auth::JwtKeys;
use eventlog::query::Role;
use eventlog::runtime::demo::{DemoConfig, run_demo};
use eventlog::storage::{PoolOptions, Store};
use eventlog::stream::{DEFAULT_LIVE_CAPACITY, StreamManager};

/// Аргументы `eventlog demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// База (та же, что у `serve`).
    #[arg(long, env = "EVENTLOG_DATABASE_URL", default_value = super::DEFAULT_DB)]
    pub database_url: String,
    /// Секрет JWT сервера; без него берётся файл секрета рядом с базой SQLite (как у
    /// `serve`), и первый проект демо — демонстрационный проект из этого файла.
    #[arg(long, env = "EVENTLOG_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<secrecy::SecretString>,
    /// Длительность.
    #[arg(long, default_value = "30s")]
    pub duration: humantime::Duration,
    /// Сообщений пользователей в секунду (каждое — 10–25 событий).
    #[arg(long, default_value_t = 6.0)]
    pub rate: f64,
    /// Зерно.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Пользователей.
    #[arg(long, default_value_t = 3)]
    pub users: usize,
    /// Проектов.
    #[arg(long, default_value_t = 2)]
    pub projects: usize,
    /// Писать в этот проект (можно несколько раз) вместо сгенерированных.
    #[arg(long = "project")]
    pub project: Vec<uuid::Uuid>,
    /// Параллельных сессий.
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Срок согласования рискованных (HIGH) инструментов — короткий, чтобы истечения были видны.
    #[arg(long, default_value = "4s")]
    pub approval_expiry: humantime::Duration,
    /// Срок согласования CRITICAL (больше 30 с, чтобы пришло предупреждение).
    #[arg(long, default_value = "33s")]
    pub long_approval_expiry: humantime::Duration,
    /// Без индикатора прогресса.
    #[arg(long)]
    pub quiet: bool,
}

/// Запуск демо.
pub async fn run(args: DemoArgs) -> Result<()> {
    let (secret, dev) = super::resolve_secret(args.jwt_secret.as_ref(), &args.database_url)?;
    let store = Store::connect(&args.database_url, PoolOptions::default())
        .await
        .context("while connecting to the database")?;
    store.migrate_up().await.context("while migrating")?;
    let stream = StreamManager::start(store, Default::default(), DEFAULT_LIVE_CAPACITY);
    let cfg = DemoConfig {
        users: args.users,
        projects: args.projects,
        project_ids: args.project.clone(),
        first_project: dev.as_ref().map(|d| d.demo_project_id),
        sessions: args.sessions,
        rate: args.rate,
        duration: *args.duration,
        seed: args.seed,
        approval_expiry: *args.approval_expiry,
        long_approval_expiry: *args.long_approval_expiry,
        ..Default::default()
    };
    let bar = (!args.quiet).then(|| {
        let bar = ProgressBar::new(cfg.duration.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let report = run_demo(stream.clone(), cfg, bar.clone())
        .await
        .context("while running the demo")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let shutdown = stream.shutdown().await;
    println!(
        "demo: {} sessions, {} messages, {} events ({} committed, {} dropped) in {:.1} s",
        report.sessions,
        report.messages,
        report.events_total,
        report.committed,
        report.dropped + shutdown.lost as u64,
        report.elapsed.as_secs_f64()
    );
    for (ty, n) in &report.events_by_type {
        println!("  {ty:<26} {n}");
    }
    let missing = report.missing_event_types();
    if !missing.is_empty() {
        println!("  (not seen in this run: {missing:?})");
    }
    let keys = JwtKeys::new(&secret);
    let ttl = chrono::Duration::hours(24);
    println!("\nprojects and ready tokens (24h):");
    for p in &report.projects {
        println!("  project {p}");
        println!(
            "    admin:           {}",
            keys.mint("demo-admin", Role::Admin, Some(vec![*p]), ttl)?
        );
    }
    for u in &report.users {
        println!(
            "  user {u:<14} {}",
            keys.mint(u, Role::User, Some(report.projects.clone()), ttl)?
        );
    }
    if let Some(d) = dev {
        println!(
            "\nThese tokens are signed with the secret in {} (mode 0600), which `eventlog serve` on the same database uses too;",
            d.path.display()
        );
        println!(
            "the first project is the demo project {} whose tokens `serve` prints.",
            d.demo_project_id
        );
    }
    Ok(())
}
