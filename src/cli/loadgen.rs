//! `eventlog loadgen`.

use anyhow::Result;
use clap::Args;

/// Аргументы `eventlog loadgen`.
#[derive(Debug, Args)]
pub struct LoadgenArgs {}

/// Запуск нагрузки.
pub async fn run(_args: LoadgenArgs) -> Result<()> {
    anyhow::bail!("loadgen is not wired yet")
}
