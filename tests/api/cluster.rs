//! Настоящие процессы на одной базе PostgreSQL: три `eventlog serve`, процесс
//! `eventlog demo`, встроенный `EventLogger` и долгая пишущая транзакция пишут
//! одновременно; подписчики на каждом экземпляре получают каждое событие ровно
//! один раз и в одном порядке журнала. Посреди записи один экземпляр убивается
//! `kill -9`, его подписчики продолжают на другом со своим последним seq; свой
//! Redis (не общий) останавливается и запускается снова — доставка идёт, кэш
//! восстанавливается. Только PostgreSQL (без него тест не запускается, в CI — падает).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventlog::auth::JwtKeys;
use eventlog::logger::{EventLogger, LoggerConfig};
use eventlog::model::{EventType, NewEvent};
use eventlog::query::Role;
use eventlog::storage::Store;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::helpers::{Backend, SECRET, TestDb, Ws};
use crate::stream::log_of;

const BIN: &str = env!("CARGO_BIN_EXE_eventlog");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Файл журнала процесса в каталоге временных файлов (виден при падении теста).
fn log_file(name: &str) -> Stdio {
    let path = std::env::temp_dir().join(format!("eventlog-cluster-{name}.log"));
    std::fs::File::create(path).map_or(Stdio::null(), Stdio::from)
}

/// Процесс, убиваемый в Drop (SIGKILL).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Экземпляр `eventlog serve`.
struct Server {
    proc: Proc,
    port: u16,
}

async fn start_server(db_url: &str, redis_url: &str, prefix: &str) -> Server {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("serve")
        .env("EVENTLOG_DATABASE_URL", db_url)
        .env("EVENTLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("EVENTLOG_JWT_SECRET", SECRET)
        .env("EVENTLOG_REDIS_URL", redis_url)
        .env("EVENTLOG_REDIS_PREFIX", prefix)
        .env("EVENTLOG_RETENTION_DAYS", "0")
        .env("EVENTLOG_FLUSH_INTERVAL_MS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file(&format!("serve-{port}")))
        .spawn()
        .expect("spawn eventlog serve");
    let server = Server {
        proc: Proc(child),
        port,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status().is_success()
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "eventlog serve on {port} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Свой Redis на свободном порту.
fn start_redis(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for the cluster test");
    Proc(child)
}

/// Подписчик: копит (id, seq) в фоне; переподключается по команде.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<(Uuid, i64)>>>);

impl Sink {
    fn snapshot(&self) -> Vec<(Uuid, i64)> {
        self.0.lock().unwrap().clone()
    }
}

async fn ws_connect(port: u16, token: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}/graphql/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (inner, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    let mut ws = Ws { inner };
    ws.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
        .await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    ws
}

/// Подписка на проект с `after`; события складываются в `sink`, пока сокет жив.
fn follow(port: u16, token: String, p: Uuid, after: String, sink: Sink) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ws = ws_connect(port, &token).await;
        ws.subscribe(
            "1",
            "subscription($p: UUID!, $a: String) { events(projectId: $p, afterSeq: $a) { id seq } }",
            json!({"p": p, "a": after}),
        )
        .await;
        while let Some(Ok(msg)) = ws.inner.next().await {
            let tokio_tungstenite::tungstenite::Message::Text(t) = msg else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "next" {
                continue;
            }
            let e = &v["payload"]["data"]["events"];
            assert!(e.is_object(), "subscription error: {v}");
            let id = e["id"].as_str().unwrap().parse().unwrap();
            let seq = e["seq"].as_str().unwrap().parse().unwrap();
            sink.0.lock().unwrap().push((id, seq));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_a_demo_and_an_embedded_logger_deliver_every_event_once_in_log_order() {
    crate::helpers::init_log();
    let Some(backend) = Backend::postgres() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "EVENTLOG_TEST_POSTGRES_URL must be set in CI"
        );
        return;
    };
    // Arrange: база, свой Redis, три сервера.
    let db = TestDb::new(&backend).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let redis_port = free_port();
    let mut redis = Some(start_redis(redis_port));
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let prefix = format!("eventlog-cluster-{}:", Uuid::new_v4().simple());
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start_server(&db.url, &redis_url, &prefix).await);
    }
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let keys = JwtKeys::new(SECRET.as_bytes());
    let p = Uuid::now_v7();
    let admin = keys
        .mint("root", Role::Admin, Some(vec![p]), chrono::Duration::hours(1))
        .unwrap();
    let user = keys
        .mint("u", Role::User, Some(vec![p]), chrono::Duration::hours(1))
        .unwrap();
    // Два подписчика на каждом экземпляре, с самого начала журнала.
    let sinks: Vec<(usize, Sink)> = (0..6).map(|i| (i % 3, Sink::default())).collect();
    let mut tasks: Vec<_> = sinks
        .iter()
        .map(|(i, s)| follow(ports[*i], admin.clone(), p, "0".into(), s.clone()))
        .collect();

    // Act: четыре вида писателей одновременно.
    // Экземпляр, который будет убит: писатель HTTP обходит его, как балансировщик.
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = {
        let (ports, user, dead) = (ports.clone(), user.clone(), dead.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = 0;
            for round in 0..120usize {
                let events: Vec<Value> = (0..5)
                    .map(|i| json!({"id": Uuid::now_v7(), "sessionId": Uuid::now_v7(), "projectId": p, "eventType": "TASK_PROGRESS", "payload": {"round": round, "i": i}}))
                    .collect();
                let body = json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }", "variables": {"e": events}});
                // Ответ потерян (экземпляр убит посреди запроса) — тот же пакет с теми
                // же id на другой экземпляр: повтор идемпотентен.
                for attempt in 0.. {
                    let alive = if dead.load(std::sync::atomic::Ordering::SeqCst) {
                        2
                    } else {
                        3
                    };
                    let port = ports[(round + attempt) % alive];
                    let sent_ok = client
                        .post(format!("http://127.0.0.1:{port}/graphql"))
                        .bearer_auth(&user)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(resp) = sent_ok
                        && let Ok(r) = resp.json::<Value>().await
                    {
                        assert_eq!(r["data"]["ingestEvents"]["accepted"], 5, "{r}");
                        break;
                    }
                    assert!(attempt < 5, "ingest keeps failing");
                }
                sent += 5;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sent
        })
    };
    let demo = Proc(
        Command::new(BIN)
            .args([
                "demo",
                "--duration",
                "5s",
                "--quiet",
                "--sessions",
                "3",
                "--project",
                &p.to_string(),
            ])
            .env("EVENTLOG_DATABASE_URL", &db.url)
            .env("EVENTLOG_JWT_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log_file("demo"))
            .spawn()
            .expect("spawn eventlog demo"),
    );
    let embedded = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let store = Store::connect(&url, Default::default()).await.unwrap();
            let logger = EventLogger::start(store, LoggerConfig::default(), None);
            for i in 0..100 {
                let e = NewEvent::new(Uuid::now_v7(), "embedded", p, EventType::TaskQueued)
                    .payload(json!({"i": i}));
                logger.log_event(e).unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            logger.shutdown().await
        })
    };
    let long_tx = {
        let url = db.url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query(
                "INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at) \
                 VALUES ($1, $2, 'long', $3, 'TASK_STARTED', '{}'::jsonb, now())",
            )
            .bind(Uuid::now_v7())
            .bind(Uuid::now_v7())
            .bind(p)
            .execute(&mut conn)
            .await
            .unwrap();
            // Транзакция держит журнал: доставка задерживается, но ничего не теряется.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        })
    };
    // Redis пропадает и возвращается посреди записи.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(redis.take());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis = Some(start_redis(redis_port));
    // kill -9 экземпляра 2; его подписчики продолжают на экземпляре 0 со своим seq.
    tokio::time::sleep(Duration::from_millis(500)).await;
    dead.store(true, std::sync::atomic::Ordering::SeqCst);
    let killed = servers.remove(2);
    drop(killed.proc);
    for (idx, (inst, sink)) in sinks.iter().enumerate() {
        if *inst == 2 {
            let _ = (&mut tasks[idx]).await;
            let last = sink.snapshot().last().map_or(0, |x| x.1);
            tasks[idx] = follow(ports[0], admin.clone(), p, last.to_string(), sink.clone());
        }
    }
    let sent = http.await.unwrap();
    let report = embedded.await.unwrap();
    assert_eq!(report.lost, 0);
    long_tx.await.unwrap();
    let mut demo = demo;
    let status = demo.0.wait().unwrap();
    assert!(status.success(), "eventlog demo failed: {status}");

    // Assert: эталон — журнал базы; каждый подписчик получил его в точности.
    let expected = log_of(&store, p).await;
    assert!(expected.len() > sent + 100, "writers' events are in the log");
    let deadline = Instant::now() + Duration::from_secs(30);
    for (inst, sink) in &sinks {
        while sink.snapshot().len() < expected.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got: Vec<Uuid> = sink.snapshot().into_iter().map(|x| x.0).collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "subscriber on instance {inst}: missing or duplicated events"
        );
        assert_eq!(got, expected, "subscriber on instance {inst}: not in log order");
    }

    // Кэш аналитики после возвращения Redis: ответ экземпляра 0 попадает в Redis,
    // экземпляр 1 берёт его оттуда и он равен базе.
    let q = json!({"query": "query($p: UUID!) { analytics(projectId: $p) { totalEvents } }", "variables": {"p": p}});
    let client = reqwest::Client::new();
    let ask = |port: u16| {
        let (client, q, admin) = (client.clone(), q.clone(), admin.clone());
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/graphql"))
                .bearer_auth(admin)
                .json(&q)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let redis_hits = |port: u16| {
        let client = client.clone();
        async move {
            let text = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find(|l| {
                    l.starts_with("eventlog_analytics_cache_hits_total") && l.contains("tier=\"redis\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut total = expected.len();
    loop {
        let a = ask(ports[0]).await;
        assert_eq!(a["data"]["analytics"]["totalEvents"], total, "{a}");
        let before = redis_hits(ports[1]).await;
        let b = ask(ports[1]).await;
        assert_eq!(b, a);
        if redis_hits(ports[1]).await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shared cache never recovered after Redis came back"
        );
        // Новое событие — новый ключ, чтобы промах на 1 снова пошёл в Redis.
        let r = ask_ingest(&client, ports[0], &user, p).await;
        assert!(r["errors"].is_null(), "{r}");
        total += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(servers);
    drop(redis);
}

async fn ask_ingest(client: &reqwest::Client, port: u16, token: &str, p: Uuid) -> Value {
    client
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }",
                      "variables": {"e": [{"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "TASK_PROGRESS"}]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_serve_and_demo_as_two_processes_share_one_live_log() {
    crate::helpers::init_log();
    // Arrange: `eventlog serve` — отдельный процесс на файле SQLite.
    let db = TestDb::new(&Backend::Sqlite).await;
    let store = db.store().await;
    store.migrate_up().await.unwrap();
    let server = start_server(&db.url, "redis://127.0.0.1:1", "unused:").await;
    let keys = JwtKeys::new(SECRET.as_bytes());
    let p = Uuid::now_v7();
    let admin = keys
        .mint("root", Role::Admin, Some(vec![p]), chrono::Duration::hours(1))
        .unwrap();
    let live = Sink::default();
    let task = follow(server.port, admin.clone(), p, "0".into(), live.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: `eventlog demo` — второй процесс на том же файле.
    let mut demo = Proc(
        Command::new(BIN)
            .args([
                "demo",
                "--duration",
                "3s",
                "--quiet",
                "--sessions",
                "2",
                "--project",
                &p.to_string(),
            ])
            .env("EVENTLOG_DATABASE_URL", &db.url)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log_file("sqlite-demo"))
            .spawn()
            .expect("spawn eventlog demo"),
    );
    // Пока демо пишет, подписчик на сервере уже получает его события.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.snapshot().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no demo event reached the server's subscriber live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = demo.0.try_wait().unwrap().is_none();
    assert!(
        during,
        "the first live event must arrive while the demo is still writing"
    );
    assert!(demo.0.wait().unwrap().success());

    // Assert: живой поток и повтор с "0" равны журналу базы.
    let expected = log_of(&store, p).await;
    assert!(!expected.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.snapshot().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |s: &Sink| s.snapshot().into_iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(ids(&live), expected);
    let replay = Sink::default();
    let again = follow(server.port, admin, p, "0".into(), replay.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while replay.snapshot().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&replay), expected);
    task.abort();
    again.abort();
}
