//! «Сырой» знаменатель: те же инструкции через `pgbench -M prepared`.
//!
//! Каждый записанный запрос сервера — свой файл скрипта (все его инструкции —
//! одна транзакция pgbench) с весом 1: запросы уже выбраны с тем же
//! распределением, что и HTTP-прогон. Значения — литералы (pgbench `\set` только
//! числовой), поэтому планировщик видит настоящие значения при каждом
//! выполнении — как сервер в первые пять выполнений подготовленной инструкции.
//! Задержки — из журнала транзакций pgbench (`--log`), по одной строке на
//! транзакцию.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

/// Наибольшее число файлов скриптов у pgbench (`MAX_SCRIPTS`).
pub const MAX_SCRIPTS: usize = 128;

/// Итог прогона pgbench.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Транзакций в секунду (без времени соединения).
    pub tps: f64,
    /// Задержки транзакций, мкс.
    pub hist: Histogram<u64>,
    /// Файлов скриптов.
    pub scripts: usize,
    /// Инструкций в транзакции, в среднем по скриптам.
    pub statements_per_tx: f64,
}

/// Пишет по файлу на запрос в `dir`; возвращает пути.
pub fn write_scripts(dir: &Path, requests: &[Vec<String>]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for (i, statements) in requests.iter().take(MAX_SCRIPTS).enumerate() {
        let path = dir.join(format!("request-{i:03}.sql"));
        let mut text = String::new();
        for s in statements {
            text.push_str(s.trim_end().trim_end_matches(';'));
            text.push_str(";\n");
        }
        std::fs::write(&path, text).with_context(|| format!("while writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// `tps = 5712.3 (without initial connection time)` из вывода pgbench.
pub fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Задержки (мкс) из журнала транзакций: `client tx latency script epoch us`.
pub fn parse_log_line(line: &str) -> Result<u64> {
    let latency = line
        .split_whitespace()
        .nth(2)
        .with_context(|| format!("pgbench log line {line:?}"))?;
    latency
        .parse()
        .with_context(|| format!("pgbench transaction not completed: {line:?}"))
}

/// Прогоняет скрипты: `connections` клиентов, `duration`.
pub async fn run(
    url: &str,
    scripts: &[PathBuf],
    connections: usize,
    duration: Duration,
    dir: &Path,
) -> Result<Raw> {
    anyhow::ensure!(!scripts.is_empty(), "no statements were captured");
    let log_dir = dir.join("log");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-n", "-M", "prepared"])
        .arg(format!("-c{connections}"))
        .arg(format!("-j{}", connections.clamp(1, 2)))
        .arg(format!("-T{}", duration.as_secs().max(1)))
        .arg("--log")
        .arg(format!("--log-prefix={}", log_dir.join("tx").display()));
    for s in scripts {
        cmd.arg("-f").arg(format!("{}@1", s.display()));
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .await
        .context("while running pgbench (is it installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{stderr}\n{stdout}", out.status);
    }
    let tps = parse_tps(&stdout).with_context(|| format!("no tps in pgbench output:\n{stdout}"))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for entry in std::fs::read_dir(&log_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            hist.record(parse_log_line(line)?.max(1))?;
        }
    }
    anyhow::ensure!(!hist.is_empty(), "pgbench logged no transactions:\n{stdout}");
    let statements = scripts
        .iter()
        .map(|p| std::fs::read_to_string(p).map(|t| t.matches(";\n").count()))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Raw {
        tps,
        hist,
        scripts: scripts.len(),
        statements_per_tx: statements.iter().sum::<usize>() as f64 / statements.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_and_log() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 1.4 ms\n\
                   initial connection time = 9.1 ms\ntps = 5712.345 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(5712.345));
        assert_eq!(parse_log_line("3 117 2480 12 1764874371 912345").unwrap(), 2480);
        assert!(parse_log_line("3 117 failed 12 1764874371 912345").is_err());
    }

    #[test]
    fn one_script_per_request_statements_terminated() {
        let dir = std::env::temp_dir().join(format!("httpbench-test-{}", uuid::Uuid::new_v4().simple()));
        let paths = write_scripts(
            &dir,
            &[
                vec!["SELECT 1".into(), "SELECT\n2;".into()],
                vec!["SELECT 3".into()],
            ],
        )
        .unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            "SELECT 1;\nSELECT\n2;\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
