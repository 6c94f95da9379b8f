//! `eventlog loadgen --target otlp`: спаны в секунду через OTLP/HTTP protobuf в
//! PostgreSQL рядом с событиями в секунду мутации `ingestEvents` — в одном прогоне,
//! на одном встроенном сервере, порядок фаз чередуется по раундам.
//!
//! Запрос OTLP — 512 спанов одной трассы агента (корень `invoke_agent`, дети
//! `execute_tool` и `chat` с атрибутами GenAI), запросы идут по `--connections`
//! соединениям HTTP/1.1 keep-alive. Ответ приходит только после записи, поэтому
//! время до последнего ответа — время до долговечности всего объёма. После каждой
//! фазы число строк сверяется с ожидаемым.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use sea_orm::ConnectionTrait;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::loadgen::LoadgenArgs;
use eventlog::config::Settings;
use eventlog::query::Role;
use eventlog::startup::Application;
use eventlog::storage::Store;

/// Событий в одном запросе мутации (её предел).
const MUTATION_BATCH: usize = 1000;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// Трасса агента из `n` спанов: корень, затем поочерёдно инструмент и вызов модели.
/// Возвращает тело запроса и число событий, которое она даёт.
fn agent_trace(n: usize) -> (Vec<u8>, usize) {
    let trace_id = Uuid::new_v4().as_bytes().to_vec();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let root_id = 1u64.to_be_bytes().to_vec();
    let mut spans = Vec::with_capacity(n);
    spans.push(Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: "invoke_agent researcher".into(),
        kind: 1,
        start_time_unix_nano: now - 60_000_000_000,
        end_time_unix_nano: now,
        attributes: vec![
            kv("gen_ai.operation.name", s("invoke_agent")),
            kv("gen_ai.agent.name", s("researcher")),
            kv("gen_ai.agent.id", s("agent-researcher")),
            kv("gen_ai.conversation.id", s(&Uuid::new_v4().to_string())),
        ],
        ..Default::default()
    });
    let mut events = 2;
    for i in 1..n as u64 {
        let start = now - 59_000_000_000 + i * 100_000_000;
        let (name, attrs) = if i % 2 == 1 {
            events += 2;
            (
                "execute_tool web_search",
                vec![
                    kv("gen_ai.operation.name", s("execute_tool")),
                    kv("gen_ai.tool.name", s("web_search")),
                    kv("gen_ai.tool.type", s("function")),
                    kv("gen_ai.tool.call.id", s(&format!("call_{i}"))),
                    kv(
                        "gen_ai.tool.call.arguments",
                        s(r#"{"query":"latest results","limit":5}"#),
                    ),
                ],
            )
        } else {
            events += 1;
            (
                "chat gpt-4o",
                vec![
                    kv("gen_ai.operation.name", s("chat")),
                    kv("gen_ai.provider.name", s("openai")),
                    kv("gen_ai.request.model", s("gpt-4o")),
                    kv("gen_ai.response.model", s("gpt-4o-2024-08-06")),
                    kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(1200)),
                    kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(180)),
                ],
            )
        };
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: root_id.clone(),
            name: name.into(),
            kind: 3,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 50_000_000,
            attributes: attrs,
            ..Default::default()
        });
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("bench-agent"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req.encode_to_vec(), events)
}

/// Тело мутации из `n` событий, похожих на события агента.
fn mutation_body(project: Uuid, n: usize) -> Vec<u8> {
    let session = Uuid::now_v7();
    let events: Vec<_> = (0..n)
        .map(|i| {
            json!({"sessionId": session, "projectId": project, "agentId": "agent-researcher",
                   "eventType": if i % 2 == 0 { "TOOL_REQUEST" } else { "MODEL_CALL" },
                   "toolName": if i % 2 == 0 { Some("web_search") } else { None },
                   "payload": {"tool_call_id": format!("call_{i}"), "input": {"query": "latest results", "limit": 5},
                               "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 180}})
        })
        .collect();
    json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }", "variables": {"e": events}})
        .to_string()
        .into_bytes()
}

/// Соединение HTTP/1.1 keep-alive: POST и чтение ответа с Content-Length.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    async fn post(
        &mut self,
        path: &str,
        token: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .context("status line")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .context("content-length")?;
                while self.buf.len() < end + 4 + len {
                    self.read_more().await?;
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok((status, body));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Прогоняет тела по `connections` соединениям; секунды до последнего ответа.
async fn drive(
    addr: SocketAddr,
    token: &str,
    path: &'static str,
    ct: &'static str,
    bodies: Vec<Vec<u8>>,
    connections: usize,
) -> Result<f64> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let queue = queue.clone();
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            loop {
                let Some(body) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let (status, resp) = conn.post(path, &token, ct, &body).await?;
                ensure!(
                    status == 200,
                    "{path}: HTTP {status}: {}",
                    String::from_utf8_lossy(&resp)
                );
                // Частичный успех (protobuf непустой) или ошибки GraphQL — провал замера.
                ensure!(
                    if ct == "application/json" {
                        !resp.windows(8).any(|w| w == b"\"errors\"")
                    } else {
                        resp.is_empty()
                    },
                    "{path}: not fully accepted: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn count(store: &Store) -> Result<i64> {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            store.connection().get_database_backend(),
            "SELECT COUNT(*) AS n FROM event_logs",
        ))
        .await?
        .context("no count row")?;
    Ok(row.try_get::<i64>("", "n")?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Замер; `args.events` — спанов (и событий мутации) на фазу.
pub async fn run(store: &Store, args: &LoadgenArgs) -> Result<()> {
    let spans_per_request = args.spans_per_request;
    let connections = args.connections.unwrap_or(4);
    let mut settings = Settings::for_database(&args.database_url);
    settings.jwt_secret = Some(format!("bench-{}", Uuid::new_v4()).into());
    settings.retention_days = 0;
    settings.no_migrate = true;
    settings.batch_size = args.batch_size;
    settings.otlp_body_limit = 64 * 1024 * 1024;
    let app = Application::build(settings)
        .await
        .context("while starting the server")?;
    let addr: SocketAddr = ([127, 0, 0, 1], app.port()).into();
    let project = Uuid::now_v7();
    let token = app
        .keys()
        .mint(
            "bench",
            Role::User,
            Some(vec![project]),
            chrono::Duration::hours(2),
        )
        .context("while minting a token")?;
    let cancel = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());

    let requests = (args.events / spans_per_request).max(1);
    let (mut span_rates, mut otlp_event_rates, mut mutation_rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let mut phases = ["otlp", "mutation"];
        if round % 2 == 1 {
            phases.reverse();
        }
        for phase in phases {
            store
                .connection()
                .execute_unprepared("TRUNCATE event_logs RESTART IDENTITY")
                .await?;
            store.connection().execute_unprepared("CHECKPOINT").await.ok();
            if phase == "otlp" {
                let (bodies, events): (Vec<_>, Vec<_>) =
                    (0..requests).map(|_| agent_trace(spans_per_request)).unzip();
                let events: usize = events.iter().sum();
                let secs = drive(
                    addr,
                    &token,
                    "/v1/traces",
                    "application/x-protobuf",
                    bodies,
                    connections,
                )
                .await?;
                let stored = count(store).await?;
                ensure!(
                    stored as usize == events,
                    "otlp: {stored} rows stored, {events} expected"
                );
                let spans = (requests * spans_per_request) as f64;
                span_rates.push(spans / secs);
                otlp_event_rates.push(events as f64 / secs);
                println!(
                    "round {round}: OTLP/HTTP protobuf  {:>8.0} spans/s  ({:>8.0} events/s, {} spans, {events} events, {secs:.2} s)",
                    spans / secs,
                    events as f64 / secs,
                    spans
                );
            } else {
                let total = requests * spans_per_request;
                let bodies: Vec<_> = (0..total.div_ceil(MUTATION_BATCH))
                    .map(|i| mutation_body(project, MUTATION_BATCH.min(total - i * MUTATION_BATCH)))
                    .collect();
                let secs = drive(addr, &token, "/graphql", "application/json", bodies, connections).await?;
                let stored = count(store).await?;
                ensure!(
                    stored as usize == total,
                    "mutation: {stored} rows stored, {total} expected"
                );
                mutation_rates.push(total as f64 / secs);
                println!(
                    "round {round}: ingestEvents         {:>8.0} events/s ({total} events in batches of {MUTATION_BATCH}, {secs:.2} s)",
                    total as f64 / secs
                );
            }
        }
    }
    println!(
        "median of {} rounds, {connections} connections, {spans_per_request} spans per OTLP request, acknowledged after commit:\n  \
         OTLP/HTTP protobuf: {:.0} spans/s ({:.0} events/s)\n  ingestEvents mutation: {:.0} events/s",
        args.rounds,
        median(span_rates),
        median(otlp_event_rates),
        median(mutation_rates)
    );
    cancel.cancel();
    server.await.context("server task")?.context("server")?;
    Ok(())
}
