//! Сборочный скрипт: только для тестов. Если при сборке задан
//! `EVENTLOG_TEST_POSTGRES_URL`, включает `cfg(eventlog_test_postgres)`; без него
//! PostgreSQL-варианты интеграционных тестов помечаются `#[ignore]` с причиной, и
//! итог `cargo test` честно показывает их как «ignored», а не как пройденные.
//! В CI (`CI` задана и не `false`) варианты никогда не пропускаются: без URL они
//! запускаются и падают с понятной причиной. Смена переменных пересобирает пакет
//! (`rerun-if-env-changed`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(eventlog_test_postgres)");
    println!("cargo::rerun-if-env-changed=EVENTLOG_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=build.rs");
    let has_url = std::env::var_os("EVENTLOG_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty());
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    if has_url || in_ci {
        println!("cargo::rustc-cfg=eventlog_test_postgres");
    }
}
