//! Путь новичка через настоящий бинарник: `eventlog serve` без `EVENTLOG_JWT_SECRET`
//! хранит сгенерированный секрет в файле рядом с базой SQLite (0600, путь в выводе),
//! печатает токены демонстрационного проекта, которые переживают перезапуск;
//! `eventlog demo` пишет в этот проект тем же секретом, `eventlog token` выпускает
//! токены, которые сервер принимает. На PostgreSQL файла нет: секрет на один запуск.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_eventlog");

/// Команда бинарника без секрета и других настроек из окружения теста.
fn command(db_url: &str) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("EVENTLOG_") {
            c.env_remove(k);
        }
    }
    c.env("EVENTLOG_DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Запущенный `eventlog serve` и то, что он напечатал до готовности.
struct Serve {
    child: Child,
    addr: String,
    out: Vec<String>,
}

impl Serve {
    fn start(db_url: &str) -> Serve {
        let mut child = command(db_url)
            .arg("serve")
            .env("EVENTLOG_LISTEN", "127.0.0.1:0")
            .env("EVENTLOG_RETENTION_DAYS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn eventlog serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let mut addr = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("serve printed no ready tokens; got {out:#?}"));
            if let Some(rest) = line.strip_prefix("eventlog listening on ") {
                addr = Some(rest.trim().to_owned());
            }
            let done = line.starts_with("Paste into GraphiQL");
            out.push(line);
            if done {
                break;
            }
        }
        Serve {
            child,
            addr: addr.expect("listening line"),
            out,
        }
    }

    /// Значение строки, начинающейся с `prefix` (последнее слово).
    fn value(&self, prefix: &str) -> String {
        self.out
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:#?}", self.out))
            .to_owned()
    }

    fn text(&self) -> String {
        self.out.join("\n")
    }

    /// SIGTERM и ожидание штатной остановки.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn graphql(addr: &str, token: &str, query: &str, vars: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{addr}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const COUNT: &str = "query($p: UUID!) { analytics(projectId: $p) { totalEvents } }";

async fn newcomer_flow_shares_one_secret_and_demo_project(b: Backend) {
    let db = TestDb::new(&b).await;
    if b.is_postgres() {
        // Рядом с PostgreSQL файла не положить: секрет на один запуск, и об этом сказано.
        let serve = Serve::start(&db.url);
        assert!(serve.text().contains("for this run only"), "{}", serve.text());
        let (p, admin) = (
            serve.value("demo project id:"),
            serve.value("admin (demo-admin):"),
        );
        let body = graphql(&serve.addr, &admin, COUNT, json!({"p": p})).await;
        assert_eq!(body["data"]["analytics"]["totalEvents"], 0, "{body}");
        let out = command(&db.url).args(["token", "--sub", "x"]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("EVENTLOG_JWT_SECRET"));
        serve.stop();
        return;
    }

    // Arrange: первый запуск создаёт файл рядом с базой.
    let db_file = db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let secret_file = format!("{db_file}.secret");
    let serve = Serve::start(&db.url);
    assert!(
        serve.text().contains(&format!("generated into {secret_file}")),
        "{}",
        serve.text()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "secret file mode");
    }
    let project = serve.value("demo project id:");
    let admin = serve.value("admin (demo-admin):");
    let user = serve.value("user  (demo-user-1):");

    // Act: demo вторым процессом в ту же базу, пока сервер работает.
    let out = command(&db.url)
        .args([
            "demo",
            "--duration",
            "2s",
            "--quiet",
            "--approval-expiry",
            "1s",
            "--long-approval-expiry",
            "2s",
        ])
        .output()
        .unwrap();
    let demo_out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "demo failed: {demo_out} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        demo_out.contains(&format!("the first project is the demo project {project}")),
        "{demo_out}"
    );
    assert!(demo_out.contains(&secret_file), "{demo_out}");

    // Assert: напечатанные serve токены видят данные demo.
    let body = graphql(&serve.addr, &admin, COUNT, json!({"p": project})).await;
    let total = body["data"]["analytics"]["totalEvents"].as_i64().unwrap_or(0);
    assert!(total > 0, "admin token sees the demo's events: {body}");
    let body = graphql(&serve.addr, &user, COUNT, json!({"p": project})).await;
    let mine = body["data"]["analytics"]["totalEvents"].as_i64().unwrap_or(-1);
    assert!(
        mine > 0 && mine <= total,
        "demo-user-1 sees its own events: {body}"
    );

    // Перезапуск: тот же проект, тот же секрет — старые токены действуют.
    serve.stop();
    let serve = Serve::start(&db.url);
    assert!(
        serve.text().contains(&format!("kept in {secret_file}")),
        "{}",
        serve.text()
    );
    assert_eq!(serve.value("demo project id:"), project);
    let body = graphql(&serve.addr, &admin, COUNT, json!({"p": project})).await;
    assert_eq!(
        body["data"]["analytics"]["totalEvents"].as_i64(),
        Some(total),
        "{body}"
    );

    // `eventlog token` подписывает тем же секретом.
    let out = command(&db.url)
        .args([
            "token",
            "--sub",
            "demo-admin",
            "--role",
            "admin",
            "--project",
            &project,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let body = graphql(&serve.addr, &minted, COUNT, json!({"p": project})).await;
    assert_eq!(
        body["data"]["analytics"]["totalEvents"].as_i64(),
        Some(total),
        "{body}"
    );
    serve.stop();
    let _ = std::fs::remove_file(&secret_file);
}
both!(newcomer_flow_shares_one_secret_and_demo_project);
