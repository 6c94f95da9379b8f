//! Сборочный скрипт: только для тестов. Если при сборке задан
//! `EVENTLOG_TEST_POSTGRES_URL`, включает `cfg(eventlog_test_postgres)`; без него
//! PostgreSQL-варианты интеграционных тестов помечаются `#[ignore]` с причиной, и
//! итог `cargo test` честно показывает их как «ignored», а не как пройденные.
//! Смена переменной пересобирает пакет (`rerun-if-env-changed`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(eventlog_test_postgres)");
    println!("cargo::rerun-if-env-changed=EVENTLOG_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("EVENTLOG_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=eventlog_test_postgres");
    }
}
