//! `eventlog loadgen --target http-reads` на малом наборе: весь путь от набора
//! данных до таблицы и JSON — настоящий сервер дочерним процессом, запись
//! инструкций из журнала PostgreSQL и pgbench — и повторное использование набора.
//! Только PostgreSQL: замер и набор данных существуют только для него.

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{Backend, TestDb};

/// Журнал кластера (Debian); без доступа к нему знаменатель не считается.
const PG_LOG: &str = "/var/log/postgresql/postgresql-15-main.log";

async fn loadgen(url: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventlog"))
        .args(["loadgen", "--target", "http-reads", "--database-url", url])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run eventlog loadgen");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(eventlog_test_postgres),
    ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
)]
async fn http_reads_measures_every_shape_against_raw_sql() {
    let db = TestDb::new(&Backend::require_postgres()).await;
    let dir = std::env::temp_dir().join(format!("httpbench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let raw = std::fs::File::open(PG_LOG).is_ok();
    let (json_s, work_s) = (json.display().to_string(), dir.display().to_string());
    let mut args = vec![
        "--events",
        "6000",
        "--seed",
        "11",
        "--duration",
        "1",
        "--warmup-secs",
        "0",
        "--connections",
        "2",
        "--raw-samples",
        "4",
        "--pg-log",
        PG_LOG,
        "--work-dir",
        &work_s,
        "--json",
        &json_s,
    ];
    if !raw {
        eprintln!("{PG_LOG} is not readable: running without the pgbench denominator");
        args.push("--no-raw");
    }
    let (ok, stdout, stderr) = loadgen(&db.url, &args).await;
    assert!(ok, "loadgen failed:\n{stdout}\n{stderr}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["events"], 6000);
    assert_eq!(report["connections"], 2);
    assert!(num(&report["pair_rows_max"]) > 5.0 * num(&report["pair_rows_min"]));
    let shapes = report["shapes"].as_array().unwrap();
    let names: Vec<&str> = shapes.iter().map(|s| s["shape"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "page",
            "page-type",
            "page-ids",
            "session-events",
            "sessions",
            "analytics-7d",
            "analytics-30d"
        ]
    );
    for s in shapes {
        let name = &s["shape"];
        assert!(num(&s["requests"]) >= 1.0, "{name}: no requests");
        assert!(num(&s["req_per_s"]) > 0.0);
        assert!(num(&s["p50_ms"]) <= num(&s["p95_ms"]) && num(&s["p95_ms"]) <= num(&s["p99_ms"]));
        assert!(
            num(&s["server_cpu_ms_per_req"]) > 0.0,
            "{name}: the server spent no CPU"
        );
        if !raw {
            assert!(s["raw"].is_null());
            continue;
        }
        let r = &s["raw"];
        assert!(num(&r["req_per_s"]) > 0.0, "{name}: pgbench ran nothing");
        assert!(num(&r["p50_ms"]) <= num(&r["p95_ms"]));
        assert_eq!(r["scripts"], 4);
        let ratio = num(&s["req_per_s"]) / num(&r["req_per_s"]);
        assert!((num(&s["ratio"]) - ratio).abs() < 1e-9);
        // Аналитика: голова журнала проекта и две транзакции; страницы — одна инструкция.
        let statements = num(&r["statements_per_request"]);
        match name.as_str().unwrap() {
            "page" | "page-type" | "page-ids" | "session-events" => assert_eq!(statements, 1.0, "{name}"),
            "analytics-7d" | "analytics-30d" | "sessions" => {
                assert!(statements > 1.0, "{name}: {statements}")
            }
            other => panic!("unexpected shape {other}"),
        }
    }
    if raw {
        // Скрипты — литералы без `:` (pgbench принял бы их за переменные).
        let page = dir
            .join(db.url.rsplit('/').next().unwrap())
            .join("page")
            .join("request-000.sql");
        let sql = std::fs::read_to_string(&page).unwrap();
        let bare = sql.replace("::", "");
        assert!(
            sql.contains("FROM event_logs") && !sql.contains('$') && !bare.contains(':'),
            "{sql}"
        );
        // Запись инструкций выключена после прогона.
        let store = db.store().await;
        let pool = store.connection().get_postgres_connection_pool();
        let name = db.url.rsplit('/').next().unwrap().to_owned();
        let settings: Vec<String> = sqlx::query_scalar(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(settings.is_empty(), "left behind: {settings:?}");
        store.close().await.unwrap();
    }

    // Тот же набор не засевается заново; другой — засевается.
    let (ok, stdout, stderr) = loadgen(
        &db.url,
        &["--events", "6000", "--seed", "11", "--reuse", "--seed-only"],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("reusing"), "{stdout}");
    let (ok, stdout, stderr) = loadgen(
        &db.url,
        &["--events", "5000", "--seed", "11", "--reuse", "--seed-only"],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("reusing"), "{stdout}");
    let store = db.store().await;
    assert_eq!(store.count_events().await.unwrap(), 5000);
    store.close().await.unwrap();
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
