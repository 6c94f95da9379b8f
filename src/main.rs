//! Точка входа `eventlog`: разбор команд и вызов соответствующей функции.
//! `anyhow` используется только здесь и в `cli/`.

mod cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use eventlog::config::Settings;

/// Сервер журналирования и аналитики событий мультиагентных платформ.
#[derive(Debug, Parser)]
#[command(name = "eventlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Запустить сервер (команда по умолчанию).
    Serve(Box<Settings>),
    /// Миграции схемы.
    Migrate(cli::MigrateArgs),
    /// Выпустить JWT с настроенным секретом.
    Token(cli::TokenArgs),
    /// Удалить события старше срока.
    Purge(cli::PurgeArgs),
    /// Записать SDL схемы GraphQL.
    ExportSchema(cli::ExportSchemaArgs),
    /// Сгенерировать реалистичный трафик агентной средой.
    Demo(cli::demo::DemoArgs),
    /// Нагрузочный прогон записи.
    Loadgen(cli::loadgen::LoadgenArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    eventlog::telemetry::init("info,sqlx=warn");
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => Cli::parse_from(["eventlog", "serve"])
            .command
            .context("while defaulting to `serve`")?,
    };
    match command {
        Command::Serve(settings) => cli::run_serve(*settings).await,
        Command::Migrate(args) => cli::run_migrate(args).await,
        Command::Token(args) => cli::run_token(args),
        Command::Purge(args) => cli::run_purge(args).await,
        Command::ExportSchema(args) => cli::run_export_schema(args),
        Command::Demo(args) => cli::demo::run(args).await,
        Command::Loadgen(args) => cli::loadgen::run(args).await,
    }
}
