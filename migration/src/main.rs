//! Отдельный CLI миграций (`cargo run -p migration -- up`); основной путь —
//! `eventlog migrate up|down|status`.
use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
