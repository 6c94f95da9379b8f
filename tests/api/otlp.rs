//! Приём OpenTelemetry через настоящий сервер: настоящие экспортёры (Python SDK —
//! OTLP/HTTP protobuf и gRPC; JavaScript — OTLP/HTTP JSON), дети раньше родителей
//! отдельными запросами, идемпотентность, частичный успех, сжатие, пределы,
//! полная очередь и ответ только после записи.

use std::collections::BTreeMap;
use std::path::PathBuf;

use eventlog::otlp::ExportTraceServiceRequest;
use eventlog::otlp::ids;
use eventlog::query::Role;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

/// Событие как (тип, агент, инструмент, код ошибки) — то, что проверяет таблица отображения.
type Row = (String, Option<String>, Option<String>, Option<String>);

fn row(e: &Value) -> Row {
    let s = |k: &str| e[k].as_str().map(str::to_owned);
    (
        e["eventType"].as_str().unwrap().to_owned(),
        s("agentId"),
        s("toolName"),
        s("errorCode"),
    )
}

/// События прогона агента из tests/otel (agent → plan → инструменты, один падает → передача).
fn expected_agent_run() -> BTreeMap<Row, usize> {
    let r = |t: &str, a: Option<&str>, tool: Option<&str>, code: Option<&str>| -> Row {
        (
            t.into(),
            a.map(Into::into),
            tool.map(Into::into),
            code.map(Into::into),
        )
    };
    let rows = [
        r("TASK_STARTED", Some("triage"), None, None),
        r("TASK_PLAN_CREATED", Some("triage"), None, None),
        r("MODEL_CALL", Some("triage"), None, None),
        r("TOOL_REQUEST", Some("triage"), Some("search"), None),
        r("TOOL_RESULT", Some("triage"), Some("search"), None),
        r("TOOL_REQUEST", Some("triage"), Some("fetch_page"), None),
        r(
            "TOOL_RESULT",
            Some("triage"),
            Some("fetch_page"),
            Some("ValueError"),
        ),
        r("ERROR", None, None, Some("ValueError")),
        r("TOOL_REQUEST", Some("triage"), Some("transfer_to_billing"), None),
        r("TOOL_RESULT", Some("triage"), Some("transfer_to_billing"), None),
        r("AGENT_SWITCHED", Some("billing"), None, None),
        r("TASK_STARTED", Some("billing"), None, None),
        r("MODEL_CALL", Some("billing"), None, None),
        r("TASK_COMPLETED", Some("billing"), None, None),
        r("TASK_COMPLETED", Some("triage"), None, None),
    ];
    let mut m = BTreeMap::new();
    for x in rows {
        *m.entry(x).or_default() += 1;
    }
    m
}

/// Где лежат экспортёры. Если их нет, тест ставит их сам (venv в target/ и
/// `npm ci` по зафиксированному package-lock.json) — тест не пропускается молча;
/// без python3 или npm он падает с понятной причиной.
fn exporters() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("EVENTLOG_OTEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/otel-venv/bin/python"));
    let scripts = root.join("tests/otel");
    let installed = |python: &PathBuf| {
        python.exists()
            && scripts
                .join("node_modules/@opentelemetry/exporter-trace-otlp-http")
                .exists()
    };
    if !installed(&python) {
        let run = |cmd: &str, args: &[&str]| {
            let status = std::process::Command::new(cmd)
                .args(args)
                .current_dir(&root)
                .status()
                .unwrap_or_else(|e| panic!("{cmd} is needed to install the OpenTelemetry exporters: {e}"));
            assert!(status.success(), "{cmd} {args:?} failed");
        };
        if !python.exists() {
            run("python3", &["-m", "venv", "target/otel-venv"]);
            run(
                "target/otel-venv/bin/pip",
                &["install", "-q", "-r", "tests/otel/requirements.txt"],
            );
        }
        run(
            "npm",
            &[
                "ci",
                "--prefix",
                "tests/otel",
                "--no-audit",
                "--no-fund",
                "--silent",
            ],
        );
        assert!(
            installed(&python),
            "the OpenTelemetry exporters are still missing"
        );
    }
    Some((python, scripts))
}

/// Запускает экспортёр со стандартными переменными окружения; возвращает id трассы.
async fn run_exporter(
    program: &PathBuf,
    args: &[&str],
    dir: &PathBuf,
    endpoint: &str,
    token: &str,
) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("authorization=Bearer%20{token}"),
        )
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .output()
        .await
        .expect("run exporter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    // Экспортёры пишут отказы сервера в stderr, но завершаются успешно: такой вывод — провал.
    assert!(
        !stderr.contains("Failed to export") && !stderr.contains("rror"),
        "{args:?}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const EVENTS: &str =
    "query($p: UUID!, $f: EventFilter) { events(projectId: $p, filter: $f, first: 500, order: OLDEST_FIRST) {
  nodes { id sessionId userId eventType agentId toolName errorCode payload } } }";

async fn events(app: &TestApp, token: &str, p: Uuid, filter: Value) -> Vec<Value> {
    let r = app
        .graphql(Some(token), EVENTS, json!({"p": p, "f": filter}))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    r["data"]["events"]["nodes"].as_array().unwrap().clone()
}

fn multiset(evs: &[Value]) -> BTreeMap<Row, usize> {
    let mut m = BTreeMap::new();
    for e in evs {
        *m.entry(row(e)).or_default() += 1;
    }
    m
}

async fn stock_exporters_deliver_an_agent_run_to_events_analytics_and_live(b: Backend) {
    let Some((python, scripts)) = exporters() else {
        return;
    };
    // Arrange: отдельный gRPC-порт тоже включён; живая подписка открыта до экспорта.
    let app = spawn_app_with(&b, |s| s.otlp_grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let mut ws = app.ws("graphql-transport-ws", Some(&alice)).await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    ws.subscribe(
        "live",
        "subscription($p: UUID!) { events(projectId: $p) { id } }",
        json!({"p": p}),
    )
    .await;
    // Подписка регистрируется асинхронно: ждём её появления на сервере.
    crate::helpers::wait_for("the subscriber", 5, || async {
        app.stream.subscriber_count() > 0
    })
    .await;

    // Act: Python http/protobuf и gRPC на основной порт, gRPC на отдельный, JavaScript JSON.
    let grpc_port = app.grpc_addr.clone().unwrap();
    let node = PathBuf::from("node");
    let runs = [
        (
            "conv-py-http",
            run_exporter(
                &python,
                &["agent_run.py", "http/protobuf", "conv-py-http"],
                &scripts,
                &app.addr,
                &alice,
            )
            .await,
        ),
        (
            "conv-py-grpc",
            run_exporter(
                &python,
                &["agent_run.py", "grpc", "conv-py-grpc"],
                &scripts,
                &app.addr,
                &alice,
            )
            .await,
        ),
        (
            "conv-py-grpc-port",
            run_exporter(
                &python,
                &["agent_run.py", "grpc", "conv-py-grpc-port"],
                &scripts,
                &grpc_port,
                &alice,
            )
            .await,
        ),
        (
            "conv-js",
            run_exporter(&node, &["agent_run.mjs", "conv-js"], &scripts, &app.addr, &alice).await,
        ),
    ];

    // Assert: каждая трасса — ровно отображённые события в сессии своего разговора.
    let mut all_ids = std::collections::BTreeSet::new();
    for (conv, trace_id) in &runs {
        assert_eq!(trace_id.len(), 32, "{conv}: {trace_id}");
        let session = ids::conversation_session(p, "alice", conv);
        let evs = events(&app, &alice, p, json!({"sessionId": session})).await;
        assert_eq!(multiset(&evs), expected_agent_run(), "{conv}: {evs:#?}");
        for e in &evs {
            assert_eq!(
                e["payload"]["otel"]["trace_id"].as_str().unwrap_or(trace_id),
                trace_id,
                "{conv}"
            );
            assert_eq!(e["userId"], "alice");
            all_ids.insert(e["id"].as_str().unwrap().to_owned());
        }
        let call = evs.iter().find(|e| e["payload"]["model"] == "gpt-4o").unwrap();
        assert_eq!(call["payload"]["provider"], "openai");
        assert_eq!(call["payload"]["input_tokens"], 120);
        let req = evs
            .iter()
            .find(|e| e["toolName"] == "search" && e["eventType"] == "TOOL_REQUEST")
            .unwrap();
        assert_eq!(req["payload"]["input"], json!({"q": "refund policy"}));
        assert_eq!(req["payload"]["tool_call_id"], "call_1");
        let err = evs.iter().find(|e| e["eventType"] == "ERROR").unwrap();
        assert_eq!(err["payload"]["error_message"], "page not found");
    }
    assert_eq!(all_ids.len(), 4 * 15);
    let total = events(&app, &alice, p, json!({})).await;
    assert_eq!(total.len(), 4 * 15, "no other events");

    let r = app
        .graphql(
            Some(&alice),
            "query($p: UUID!) { analytics(projectId: $p) { totalEvents modelUsage { model calls inputTokens outputTokens errors } } }",
            json!({"p": p}),
        )
        .await;
    assert_eq!(
        r["data"]["analytics"]["modelUsage"],
        json!([
            {"model": "claude-sonnet", "calls": 4, "inputTokens": 320, "outputTokens": 80, "errors": 0},
            {"model": "gpt-4o", "calls": 4, "inputTokens": 480, "outputTokens": 120, "errors": 0},
        ]),
        "{r}"
    );
    let mut live = std::collections::BTreeSet::new();
    while live.len() < all_ids.len() {
        let m = ws.json(10).await;
        assert_eq!(m["type"], "next", "{m}");
        assert!(
            live.insert(m["payload"]["data"]["events"]["id"].as_str().unwrap().to_owned()),
            "duplicate {m}"
        );
    }
    assert_eq!(live, all_ids);
}
both!(stock_exporters_deliver_an_agent_run_to_events_analytics_and_live);

// ---------- запросы, собранные вручную ----------

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(trace: u8, id: u64, parent: u64, attrs: Vec<KeyValue>) -> Span {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
    Span {
        trace_id: vec![trace; 16],
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            vec![]
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: "s".into(),
        start_time_unix_nano: now - 2_000_000 + id,
        end_time_unix_nano: now - 1_000_000 + id,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn tool(trace: u8, id: u64, parent: u64, name: &str) -> Span {
    span(
        trace,
        id,
        parent,
        vec![
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", name),
        ],
    )
}

fn agent(trace: u8, id: u64, name: &str, conversation: Option<&str>) -> Span {
    let mut a = vec![
        kv("gen_ai.operation.name", "invoke_agent"),
        kv("gen_ai.agent.name", name),
    ];
    if let Some(c) = conversation {
        a.push(kv("gen_ai.conversation.id", c));
    }
    span(trace, id, 0, a)
}

async fn post(
    app: &TestApp,
    token: &str,
    extra: &[(&str, &str)],
    ct: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/v1/traces", app.addr))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.expect("send")
}

async fn post_proto(
    app: &TestApp,
    token: &str,
    req: &ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let r = post(app, token, &[], "application/x-protobuf", req.encode_to_vec()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap()
}

async fn children_first_in_separate_requests_land_in_one_session(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    // Arrange / Act: инструменты (без разговора) раньше корня с разговором, тремя запросами,
    // затем вторая трасса того же разговора.
    post_proto(&app, &alice, &request(vec![], vec![tool(1, 2, 1, "search")])).await;
    post_proto(&app, &alice, &request(vec![], vec![tool(1, 3, 1, "fetch")])).await;
    post_proto(
        &app,
        &alice,
        &request(vec![], vec![agent(1, 1, "triage", Some("conv-7"))]),
    )
    .await;
    post_proto(
        &app,
        &alice,
        &request(vec![], vec![agent(2, 9, "triage", Some("conv-7"))]),
    )
    .await;
    // Трасса, у которой разговор пришёл первым, получает сессию разговора.
    post_proto(
        &app,
        &alice,
        &request(vec![], vec![agent(3, 1, "triage", Some("conv-8"))]),
    )
    .await;
    post_proto(&app, &alice, &request(vec![], vec![tool(3, 2, 1, "search")])).await;

    // Assert
    let evs = events(&app, &alice, p, json!({})).await;
    let by_trace = |t: u8| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["payload"]["otel"]["trace_id"] == hex(&[t; 16]))
            .collect()
    };
    let trace_session = ids::trace_session(p, "alice", &[1; 16]).to_string();
    let t1 = by_trace(1);
    assert_eq!(t1.len(), 6);
    assert!(
        t1.iter().all(|e| e["sessionId"] == trace_session.as_str()),
        "{t1:#?}"
    );
    // Разговор принял сессию первой трассы: вторая трасса — туда же.
    let t2 = by_trace(2);
    assert_eq!(t2.len(), 2);
    assert!(t2.iter().all(|e| e["sessionId"] == trace_session.as_str()));
    let conv8 = ids::conversation_session(p, "alice", "conv-8").to_string();
    let t3 = by_trace(3);
    assert_eq!(t3.len(), 4);
    assert!(t3.iter().all(|e| e["sessionId"] == conv8.as_str()));
    // Инструмент после своего агента знает агента; пришедший раньше — нет (граница, docs/otlp.md).
    let tool3 = t3.iter().find(|e| e["eventType"] == "TOOL_REQUEST").unwrap();
    assert_eq!(tool3["agentId"], "triage");
    let tool1 = t1.iter().find(|e| e["eventType"] == "TOOL_REQUEST").unwrap();
    assert!(tool1["agentId"].is_null());
}
both!(children_first_in_separate_requests_land_in_one_session);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn retried_exports_add_nothing_and_tenants_do_not_collide(b: Backend) {
    let app = spawn_app(&b).await;
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = app.token("alice", Role::User, &[p]);
    let bob = app.token("bob", Role::User, &[p]);
    let carol = app.token("carol", Role::User, &[q]);
    let req = request(vec![], vec![agent(5, 1, "a", None), tool(5, 2, 1, "t")]);
    for _ in 0..3 {
        post_proto(&app, &alice, &req).await;
    }
    post_proto(&app, &bob, &req).await;
    post_proto(&app, &carol, &req).await;
    let a = events(&app, &alice, p, json!({})).await;
    assert_eq!(a.len(), 4, "retries create no duplicates");
    let bb = events(&app, &bob, p, json!({})).await;
    assert_eq!(
        bb.len(),
        4,
        "another user's identical trace is stored for that user"
    );
    assert_eq!(events(&app, &carol, q, json!({})).await.len(), 4);
    let ids_a: std::collections::BTreeSet<String> = a.iter().map(|e| e["id"].to_string()).collect();
    assert!(bb.iter().all(|e| !ids_a.contains(&e["id"].to_string())));
}
both!(retried_exports_add_nothing_and_tenants_do_not_collide);

async fn json_gzip_partial_success_auth_and_limits(b: Backend) {
    let app = spawn_app(&b).await;
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let multi = app.token("alice", Role::User, &[p, q]);
    let svc = app.token("svc", Role::Service, &[p]);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap().to_string();
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "AAECAwQFBgcICQoLDA0ODw==", "spanId": "0000000000000001", "name": "chat",
         "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": now, "endTimeUnixNano": now,
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                        {"key": "weird", "value": {}}]},
        {"traceId": "not-an-id", "spanId": "0000000000000002"},
    ]}]}]});
    // Токен с двумя проектами без заголовка: спаны отвергаются с объяснением.
    let r = post(
        &app,
        &multi,
        &[],
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "2", "{v}");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("x-eventlog-project"),
        "{v}"
    );
    // С заголовком и gzip: один спан принят, испорченный назван.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, body.to_string().as_bytes()).unwrap();
    let r = post(
        &app,
        &multi,
        &[
            ("x-eventlog-project", &q.to_string()),
            ("content-encoding", "gzip"),
        ],
        "application/json",
        gz.finish().unwrap(),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("spans[1].traceId"),
        "{v}"
    );
    let evs = events(&app, &multi, q, json!({})).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["eventType"], "MODEL_CALL");
    assert_eq!(evs[0]["payload"]["input_tokens"], 7);
    assert_eq!(
        evs[0]["payload"]["otel"]["trace_id"],
        "000102030405060708090a0b0c0d0e0f"
    );
    // Сервис без user.id — частичный успех с причиной; с enduser.id в ресурсе — принят.
    let mut req = request(vec![], vec![tool(9, 1, 0, "x")]);
    let resp = post_proto(&app, &svc, &req).await;
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("user.id"), "{}", ps.error_message);
    req.resource_spans[0].resource.as_mut().unwrap().attributes = vec![kv("enduser.id", "dave")];
    let resp = post_proto(&app, &svc, &req).await;
    assert!(resp.partial_success.is_none(), "{resp:?}");
    // Без токена — 401; чужой тип — 415; испорченный protobuf — 400; сжатая бомба — 413.
    let r = app
        .client
        .post(format!("{}/v1/traces", app.addr))
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        post(&app, &multi, &[], "text/plain", b"x".to_vec())
            .await
            .status(),
        415
    );
    assert_eq!(
        post(&app, &multi, &[], "application/x-protobuf", vec![0xff; 10])
            .await
            .status(),
        400
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &vec![b' '; 17 * 1024 * 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    let r = post(
        &app,
        &multi,
        &[("content-encoding", "gzip")],
        "application/json",
        bomb,
    )
    .await;
    assert_eq!(r.status(), 413);
}
both!(json_gzip_partial_success_auth_and_limits);

async fn a_full_queue_is_429_with_retry_after_and_accepts_nothing(b: Backend) {
    let app = spawn_app_with(&b, |s| s.queue_capacity = 4).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let spans = (1..=5).map(|i| tool(4, i, 0, "t")).collect();
    let r = post(
        &app,
        &alice,
        &[],
        "application/x-protobuf",
        request(vec![], spans).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(events(&app, &alice, p, json!({})).await.is_empty());
}
both!(a_full_queue_is_429_with_retry_after_and_accepts_nothing);

async fn no_success_is_sent_before_the_spans_are_durable(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    // Arrange: держим таблицу заблокированной из другого соединения — писатель стоит.
    let lock = TableLock::take(&app.db_url, b.is_postgres()).await;
    // Act
    let req = request(vec![], vec![tool(6, 1, 0, "t")]);
    let body = req.encode_to_vec();
    let (addr, client, token) = (app.addr.clone(), app.client.clone(), alice.clone());
    let pending = tokio::spawn(async move {
        client
            .post(format!("{addr}/v1/traces"))
            .bearer_auth(token)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // Assert: ответа нет, пока запись стоит; после снятия блокировки — успех и события видны.
    assert!(
        !pending.is_finished(),
        "a success came back before the spans were durable"
    );
    lock.release().await;
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(events(&app, &alice, p, json!({})).await.len(), 2);
}
both!(no_success_is_sent_before_the_spans_are_durable);

/// Блокировка таблицы событий из отдельного соединения: писатель не может записать,
/// пока она держится.
enum TableLock {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl TableLock {
    async fn take(url: &str, pg: bool) -> Self {
        use sqlx::Connection as _;
        if pg {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            TableLock::Pg(c)
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut c).await.unwrap();
            TableLock::Sqlite(c)
        }
    }

    async fn release(self) {
        match self {
            TableLock::Pg(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
            TableLock::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn log_records_become_log_and_error_events_in_their_trace_session(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    // Arrange: трасса агента с разговором уже пришла.
    post_proto(
        &app,
        &alice,
        &request(vec![], vec![agent(7, 1, "triage", Some("conv-logs"))]),
    )
    .await;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap().to_string();
    let body = json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
    "scopeLogs": [{"scope": {"name": "agent"}, "logRecords": [
        {"timeUnixNano": now, "severityNumber": "SEVERITY_NUMBER_WARN", "body": {"stringValue": "slow tool"},
         "traceId": hex(&[7; 16]), "spanId": "0000000000000001", "eventName": "gen_ai.tool.slow",
         "attributes": [{"key": "x", "value": {}}]},
        {"timeUnixNano": now, "severityNumber": 17, "severityText": "ERROR",
         "attributes": [{"key": "exception.type", "value": {"stringValue": "KeyError"}},
                        {"key": "exception.message", "value": {"stringValue": "missing"}},
                        {"key": "gen_ai.conversation.id", "value": {"stringValue": "conv-logs"}}]},
        {"timeUnixNano": now, "traceId": "bad"},
    ]}]}]});
    // Act
    let r = app
        .client
        .post(format!("{}/v1/logs", app.addr))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    // Assert: одна испорченная запись отвергнута, две приняты.
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], "1", "{v}");
    let session = ids::conversation_session(p, "alice", "conv-logs").to_string();
    let evs = events(&app, &alice, p, json!({"eventTypes": ["LOG", "ERROR"]})).await;
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let log = evs.iter().find(|e| e["eventType"] == "LOG").unwrap();
    assert_eq!(log["sessionId"], session.as_str());
    assert_eq!(log["agentId"], "triage");
    assert_eq!(log["payload"]["severity"], "WARN");
    assert_eq!(log["payload"]["body"], "slow tool");
    assert_eq!(log["payload"]["event_name"], "gen_ai.tool.slow");
    assert_eq!(log["payload"]["span_id"], "0000000000000001");
    let err = evs.iter().find(|e| e["eventType"] == "ERROR").unwrap();
    assert_eq!(err["errorCode"], "KeyError");
    assert_eq!(err["sessionId"], session.as_str());
    assert_eq!(err["payload"]["error_message"], "missing");
    // Повтор тех же записей (protobuf того же содержания тоже) ничего не добавляет.
    let r = app
        .client
        .post(format!("{}/v1/logs", app.addr))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        events(&app, &alice, p, json!({"eventTypes": ["LOG", "ERROR"]}))
            .await
            .len(),
        2
    );
}
both!(log_records_become_log_and_error_events_in_their_trace_session);

async fn grpc_full_queue_is_resource_exhausted_with_retry_info(b: Backend) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let app = spawn_app_with(&b, |s| s.queue_capacity = 4).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let mut client = TraceServiceClient::connect(app.addr.clone())
        .await
        .expect("gRPC connect");
    let call = |req: ExportTraceServiceRequest| {
        let mut r = tonic::Request::new(req);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {alice}").parse().unwrap());
        r
    };
    // Пять спанов дают десять событий — больше, чем вмещает очередь.
    let spans = (1..=5).map(|i| tool(8, i, 0, "t")).collect();
    let err = client.export(call(request(vec![], spans))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // google.rpc.Status с RetryInfo в деталях.
    let details = err.details();
    assert!(
        details
            .windows(b"google.rpc.RetryInfo".len())
            .any(|w| w == b"google.rpc.RetryInfo"),
        "{details:?}"
    );
    assert!(events(&app, &alice, p, json!({})).await.is_empty());
    // Помещающийся запрос принят, без частичного успеха.
    let ok = client
        .export(call(request(vec![], vec![tool(8, 9, 0, "t")])))
        .await
        .unwrap();
    assert!(ok.into_inner().partial_success.is_none());
    assert_eq!(events(&app, &alice, p, json!({})).await.len(), 2);
}
both!(grpc_full_queue_is_resource_exhausted_with_retry_info);
