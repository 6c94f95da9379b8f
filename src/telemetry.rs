//! Журналирование через tracing. Уровень задаёт `RUST_LOG` (по умолчанию `info`).

use tracing_subscriber::EnvFilter;

/// Ставит подписчика tracing для процесса (повторный вызов ничего не делает).
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
