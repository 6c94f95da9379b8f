//! Процессорное время сервера и PostgreSQL за отрезок прогона.
//!
//! Сервер — один процесс: `utime + stime` в начале и в конце. PostgreSQL — все
//! обслуживающие процессы (backend) базы набора: `/proc/<pid>/cmdline` вида
//! `postgres: 15/main: postgres bench_reads_1m 127.0.0.1(…) idle`. Они
//! опрашиваются каждые 100 мс, потому что соединения pgbench живут только во время
//! его прогона и к концу отрезка их уже нет; у процесса, появившегося после
//! начала, отсчёт — от нуля. Фоновые процессы кластера (checkpointer, walwriter…)
//! не считаются: они не обслуживают запросы.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::super::procstat;

/// Идёт замер: фоновый опрос backend-ов.
pub struct Meter {
    server: Option<(u32, u64)>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

/// Итог отрезка, секунды процессора.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    /// Сервер.
    pub server: f64,
    /// Backend-ы PostgreSQL базы.
    pub postgres: f64,
}

/// Backend ли это базы `db` (по тексту `cmdline`).
pub fn is_backend_of(cmdline: &str, db: &str) -> bool {
    // После NUL в cmdline может быть мусор: PostgreSQL переписывает строку ps.
    let text = cmdline.split('\0').next().unwrap_or("");
    let mut words = text.split_whitespace();
    // С `cluster_name` и без него база — среди первых слов после «postgres:».
    words.next() == Some("postgres:") && words.take(4).any(|w| w == db)
}

/// Тики всех backend-ов базы `db`; `known` запоминает, какие процессы чужие.
fn backends(db: &str, known: &mut HashMap<u32, bool>) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for pid in procstat::pids() {
        let ours = *known.entry(pid).or_insert_with(|| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_backend_of(&c, db))
        });
        if ours && let Some(t) = procstat::ticks(pid) {
            out.insert(pid, t);
        }
    }
    out
}

impl Meter {
    /// Начинает отрезок: сервер `server` (если есть) и backend-ы базы `db`.
    pub fn start(server: Option<u32>, db: &str) -> Meter {
        let db = db.to_owned();
        let mut known = HashMap::new();
        let base = backends(&db, &mut known);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut last = base.clone();
            loop {
                let done = flag.load(Ordering::Relaxed);
                last.extend(backends(&db, &mut known));
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last.iter()
                .map(|(pid, t)| t.saturating_sub(base.get(pid).copied().unwrap_or(0)))
                .sum()
        });
        Meter {
            server: server.map(|pid| (pid, procstat::ticks(pid).unwrap_or(0))),
            stop,
            task,
        }
    }

    /// Заканчивает отрезок.
    pub async fn finish(self) -> Spent {
        let server = self.server.map_or(0, |(pid, t0)| {
            procstat::ticks(pid).unwrap_or(t0).saturating_sub(t0)
        });
        self.stop.store(true, Ordering::Relaxed);
        let postgres = self.task.await.unwrap_or(0);
        Spent {
            server: server as f64 / procstat::CLK_TCK,
            postgres: postgres as f64 / procstat::CLK_TCK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_backends_of_the_database() {
        let line = "postgres: 15/main: postgres bench_reads_1m 127.0.0.1(5432) idle\0\0";
        assert!(is_backend_of(line, "bench_reads_1m"));
        assert!(!is_backend_of(line, "bench_reads_5m"));
        assert!(!is_backend_of(
            "postgres: 15/main: checkpointer ",
            "bench_reads_1m"
        ));
        assert!(!is_backend_of(
            "/usr/bin/pgbench\0-c\0bench_reads_1m",
            "bench_reads_1m"
        ));
    }
}
