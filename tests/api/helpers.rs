//! Общие помощники интеграционных тестов: база на тест (файл SQLite или свежая
//! база PostgreSQL, удаляемая в Drop), запуск настоящего сервера на случайном
//! порту, клиенты HTTP и websocket, TCP-прокси для обрыва соединения с базой.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventlog::auth::JwtKeys;
use eventlog::config::Settings;
use eventlog::logger::ShutdownReport;
use eventlog::query::Role;
use eventlog::startup::Application;
use eventlog::storage::{PoolOptions, Store};
use eventlog::stream::StreamManager;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Секрет JWT тестовых серверов.
pub const SECRET: &str = "test-secret-for-eventlog";

/// Какая база под тестом.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Файл SQLite.
    Sqlite,
    /// PostgreSQL: URL административной базы.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL, если задан `EVENTLOG_TEST_POSTGRES_URL`.
    pub fn postgres() -> Option<Backend> {
        std::env::var("EVENTLOG_TEST_POSTGRES_URL")
            .ok()
            .map(Backend::Postgres)
    }

    /// PostgreSQL для теста, который без него не имеет смысла. Паника, а не тихий
    /// успех: тест помечен `#[ignore]`, когда переменной не было при сборке, так что
    /// сюда без неё попадают только при запуске с `--ignored` или сменой окружения
    /// после сборки.
    pub fn require_postgres() -> Backend {
        Backend::postgres().expect(
            "EVENTLOG_TEST_POSTGRES_URL is not set: this PostgreSQL test cannot run \
             (set it, e.g. postgres://postgres@127.0.0.1:5432/postgres)",
        )
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
}

/// Тест для каждой базы: `both!(name)` создаёт модуль `name` с тестами `sqlite` и
/// `postgres`. Без `EVENTLOG_TEST_POSTGRES_URL` при сборке вариант `postgres`
/// помечен `#[ignore]` с причиной (см. build.rs): итог `cargo test` показывает его
/// как «ignored», а не как пройденный; `.ci/run` падает, если хоть один пропущен.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::init_log();
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(eventlog_test_postgres),
                ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
            )]
            async fn postgres() {
                $crate::helpers::init_log();
                super::$name($crate::helpers::Backend::require_postgres()).await
            }
        }
    };
}

/// Журнал в тестах — только с `TEST_LOG`.
pub fn init_log() {
    if std::env::var("TEST_LOG").is_ok() {
        eventlog::telemetry::init("info");
    }
}

/// База одного теста; удаляется в Drop.
pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
    sqlite_file: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: &Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("eventlog-test-{}.db", Uuid::new_v4().simple()));
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    pg_admin: None,
                    sqlite_file: Some(path),
                }
            }
            Backend::Postgres(admin) => {
                let name = format!("eventlog_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(admin)
                    .await
                    .expect("connect to the admin database");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = replace_db(admin, &name);
                TestDb {
                    url,
                    pg_admin: Some((admin.clone(), name)),
                    sqlite_file: None,
                }
            }
        }
    }

    /// Отдельный пул к этой базе (для проверок мимо сервера).
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, PoolOptions::default())
            .await
            .expect("connect to test db")
    }
}

/// Заменяет имя базы в URL PostgreSQL.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{db}{query}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(path) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        if let Some((admin, name)) = self.pg_admin.take() {
            // Drop синхронный: удаляем базу в отдельном потоке со своим рантаймом.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Запущенный сервер.
pub struct TestApp {
    pub addr: String,
    /// Отдельный OTLP/gRPC-адрес, если `otlp_grpc_listen` задан.
    pub grpc_addr: Option<String>,
    pub ws_url: String,
    pub keys: JwtKeys,
    pub store: Store,
    pub stream: StreamManager,
    pub client: reqwest::Client,
    cancel: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<ShutdownReport>>>,
    /// URL базы сервера.
    pub db_url: String,
    /// База теста (у второго экземпляра на той же базе — `None`).
    pub db: Option<TestDb>,
    /// Быстрый путь GraphQL сервера (счётчик обслуженных им запросов).
    pub fast: std::sync::Arc<eventlog::api::graphql::fast::FastPath>,
}

pub async fn spawn_app(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: &Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new(backend).await;
    let url = db.url.clone();
    start_app(&url, Some(db), tweak).await
}

/// Запускает сервер на уже подготовленной базе (например, со строками, записанными
/// до новой миграции).
pub async fn spawn_app_on(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let url = db.url.clone();
    start_app(&url, Some(db), tweak).await
}

/// Ещё один экземпляр сервера на базе `url` (база принадлежит другому `TestApp`).
pub async fn spawn_instance(url: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    start_app(url, None, tweak).await
}

async fn start_app(url: &str, db: Option<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::for_database(url);
    settings.jwt_secret = Some(SECRET.to_owned().into());
    settings.flush_interval_ms = 5;
    settings.retention_days = 0;
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("build app");
    let port = app.port();
    let grpc_addr = app.grpc_port().map(|p| format!("http://127.0.0.1:{p}"));
    let keys = app.keys();
    let store = app.store();
    let stream = app.stream();
    let fast = app.fast_path();
    let cancel = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr: format!("http://127.0.0.1:{port}"),
        grpc_addr,
        ws_url: format!("ws://127.0.0.1:{port}/graphql/ws"),
        keys,
        store,
        stream,
        client: reqwest::Client::new(),
        cancel,
        handle: Some(handle),
        db_url: url.to_owned(),
        db,
        fast,
    }
}

impl TestApp {
    /// Токен с ролью и проектами, срок 1 час.
    pub fn token(&self, sub: &str, role: Role, projects: &[Uuid]) -> String {
        let projects = (!projects.is_empty()).then(|| projects.to_vec());
        self.keys
            .mint(sub, role, projects, chrono::Duration::hours(1))
            .unwrap()
    }

    /// POST /graphql; возвращает тело ответа.
    pub async fn graphql(&self, token: Option<&str>, query: &str, vars: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.addr))
            .json(&json!({"query": query, "variables": vars}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        resp.json().await.expect("json body")
    }

    /// GET по пути; (статус, тело JSON или Null).
    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.addr));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Принимает события от имени токена, дожидаясь фиксации.
    pub async fn ingest(&self, token: &str, events: Value) -> Value {
        self.graphql(
            Some(token),
            "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted ids } }",
            json!({"e": events}),
        )
        .await
    }

    /// Останавливает сервер и возвращает отчёт писателя.
    pub async fn stop(mut self) -> ShutdownReport {
        self.cancel.cancel();
        self.handle.take().unwrap().await.unwrap().unwrap()
    }

    /// Открывает websocket с протоколом `proto` и (если задан) connection_init.
    pub async fn ws(&self, proto: &str, token: Option<&str>) -> Ws {
        let mut req = self.ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", proto.parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
        let mut ws = Ws { inner: stream };
        if let Some(t) = token {
            ws.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {t}")}}))
                .await;
        }
        ws
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Клиент websocket для тестов.
pub struct Ws {
    pub inner: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

/// Что пришло по websocket.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Closed(Option<u16>, String),
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        self.inner
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    /// Следующее сообщение (ping/pong пропускаются); ждёт не дольше `secs`.
    pub async fn next(&mut self, secs: u64) -> WsEvent {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(secs), self.inner.next())
                .await
                .expect("websocket message within timeout");
            match m {
                Some(Ok(Message::Text(t))) => return WsEvent::Json(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => {
                    return WsEvent::Closed(
                        f.as_ref().map(|f| u16::from(f.code)),
                        f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return WsEvent::Closed(None, e.to_string()),
                None => return WsEvent::Closed(None, "eof".into()),
            }
        }
    }

    /// Следующее JSON-сообщение; паника при закрытии.
    pub async fn json(&mut self, secs: u64) -> Value {
        match self.next(secs).await {
            WsEvent::Json(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Подписка graphql-transport-ws с id.
    pub async fn subscribe(&mut self, id: &str, query: &str, vars: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": vars}}))
            .await;
    }
}

/// Ждёт условия с нарастающей паузой (вместо сна фиксированной длины).
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut pause = Duration::from_millis(5);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// TCP-прокси к PostgreSQL, который умеет обрывать все соединения и не пускать
/// новые (настоящий сетевой сбой, а не подмена).
pub struct FaultProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    kill: broadcast::Sender<()>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (kill, _) = broadcast::channel(4);
        let (up2, kill2) = (up.clone(), kill.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut killed = kill2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = killed.recv() => {}
                    }
                });
            }
        });
        FaultProxy { port, up, kill, task }
    }

    /// Обрывает все соединения и отказывает новым.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.kill.send(());
    }

    /// Снова пропускает соединения.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// host:port из URL PostgreSQL.
pub fn pg_host_port(url: &str) -> String {
    let after = url.split("://").nth(1).unwrap_or(url);
    let host = after.rsplit_once('@').map_or(after, |(_, h)| h);
    let host = host.split('/').next().unwrap_or(host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}
