//! `eventlog demo` — подключается после готовности агентной среды.

use anyhow::Result;
use clap::Args;

/// Аргументы `eventlog demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Запуск демо.
pub async fn run(_args: DemoArgs) -> Result<()> {
    anyhow::bail!("demo is not wired yet")
}
