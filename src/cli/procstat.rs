//! Процессорное время процессов из `/proc` (Linux) для замеров: `utime + stime`
//! в тиках часов ядра.

/// Тиков в секунду (`sysconf(_SC_CLK_TCK)`; на Linux x86-64 и arm64 всегда 100).
pub const CLK_TCK: f64 = 100.0;

/// Имя процесса (`comm`) и `utime + stime` из текста `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // Имя может содержать пробелы и скобки: оно между первой '(' и последней ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // Поля 14 и 15 stat (utime, stime) — 12-е и 13-е после имени.
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some((name, utime + stime))
}

/// `utime + stime` процесса `pid` (None, если процесса уже нет).
pub fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, t)| t)
}

/// Номера всех процессов системы.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_with_spaces_and_parens() {
        // Поля 3..: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime=11 stime=17 cutime=5 …
        let stat = "4242 (postgres: a) b) S 1 2 3 4 5 6 7 8 9 10 11 17 5 0 0 20 0 1 0";
        let (name, t) = parse_stat(stat).unwrap();
        assert_eq!(name, "postgres: a) b");
        assert_eq!(t, 11 + 17);
    }

    #[test]
    fn own_process_has_ticks() {
        // Нагружаем процессор, чтобы счётчик заведомо сдвинулся с нуля.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(ticks(std::process::id()).is_some_and(|t| t > 0));
        assert!(pids().contains(&std::process::id()));
    }
}
