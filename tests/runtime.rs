//! Интеграционные тесты агентной среды через публичный API библиотеки: настоящий
//! SQLite за `StreamManager`, живые подписки и чтение записанного из хранилища.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventlog::StreamManager;
use eventlog::logger::LoggerConfig;
use eventlog::model::{Event, EventType};
use eventlog::query::{EventFilter, ReadScope};
use eventlog::runtime::tools::{Deploy, FlakyService};
use eventlog::runtime::{
    AgentRuntime, ApprovalConfig, ApprovalId, ApprovalManager, DemoConfig, Publisher, RiskAssessment,
    RiskLevel, RuntimeConfig, SessionContext, Tool, ToolError, ToolExecutor, ToolExecutorConfig,
    ToolExecutorError, ToolType, UserWorkerSpace, run_demo,
};
use eventlog::storage::{PoolOptions, Store};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

/// SQLite в памяти за `StreamManager`. Таймауты писателя и пула огромны, чтобы
/// тест с остановленными часами tokio не получил ложных срабатываний, пока SQLite
/// работает в своём потоке.
async fn memory_stream() -> StreamManager {
    let store = Store::connect(
        "sqlite::memory:",
        PoolOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(86_400),
            ..Default::default()
        },
    )
    .await
    .expect("SQLite in memory opens");
    store.migrate_up().await.expect("migrations apply");
    let config = LoggerConfig {
        flush_interval: Duration::from_millis(2),
        insert_timeout: Duration::from_secs(86_400),
        shutdown_timeout: Duration::from_secs(86_400),
        ..LoggerConfig::default()
    };
    StreamManager::start(store, config, 16_384)
}

/// Все записанные события сессии в порядке seq.
async fn stored_session(stream: &StreamManager, ctx: &SessionContext) -> Vec<Event> {
    let scope = ReadScope {
        project_id: ctx.project_id,
        user_id: None,
    };
    let filter = EventFilter {
        session_id: Some(ctx.session_id),
        ..EventFilter::default()
    };
    stream
        .store()
        .events_after_seq(&scope, &filter, 0, i64::MAX, 10_000)
        .await
        .expect("events read back")
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn orchestrated_message_with_a_risky_tool_is_stored_in_order_and_streamed_live() {
    // Arrange
    let stream = memory_stream().await;
    let runtime = AgentRuntime::start(stream.clone(), RuntimeConfig::default());
    let ctx = SessionContext::new_session("alice", Uuid::now_v7());
    let live = stream.subscribe(
        ReadScope {
            project_id: ctx.project_id,
            user_id: Some("alice".into()),
        },
        EventFilter {
            session_id: Some(ctx.session_id),
            ..EventFilter::default()
        },
        None,
    );
    let mut live = Box::pin(live);
    let space = UserWorkerSpace::new(runtime.router.clone(), ctx.clone());

    // Act: сообщение пользователя; человек одобряет запись файла, увидев запрос вживую.
    let work = tokio::spawn({
        let space = space.clone();
        async move { space.send("Fix the bug in the parser").await }
    });
    let mut seen: Vec<Arc<Event>> = Vec::new();
    // До последнего TASK_COMPLETED плана (progress = 1).
    while !seen
        .last()
        .is_some_and(|e| e.event_type == "TASK_COMPLETED" && e.payload["progress"] == 1.0)
    {
        let next = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("live event arrives")
            .expect("stream open")
            .expect("no lag");
        if next.event_type == EventType::ApprovalRequired.as_str() {
            let id: ApprovalId = next.payload["approval_id"].as_str().unwrap().parse().unwrap();
            runtime
                .approvals
                .resolve(id, true, "bob", Some("patch looks right".into()))
                .await
                .unwrap();
        }
        seen.push(next);
    }
    let reply = work.await.unwrap().unwrap();
    runtime.shutdown().await;
    stream.shutdown().await;
    let stored = stored_session(&stream, &ctx).await;

    // Assert: полная последовательность, записанная по порядку…
    assert_eq!(reply.agent_id, "code-agent");
    assert_eq!(
        types(&stored),
        [
            "AGENT_SWITCHED",
            "TASK_PLAN_CREATED",
            // шаг 0: контекст
            "TASK_STARTED",
            "TASK_PROGRESS",
            "CONTEXT_RETRIEVED",
            "TASK_COMPLETED",
            // шаг 1: тесты через шину
            "TASK_STARTED",
            "TASK_PROGRESS",
            "TASK_QUEUED",
            "TASK_DEQUEUED",
            "TASK_COMPLETED",
            // шаг 2: рискованный инструмент и согласование
            "TASK_STARTED",
            "TASK_PROGRESS",
            "TOOL_REQUEST",
            "APPROVAL_REQUIRED",
            "APPROVAL_RESOLVED",
            "TOOL_RESULT",
            "TASK_COMPLETED",
            // шаг 3: ответ
            "TASK_STARTED",
            "TASK_COMPLETED",
        ]
    );
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(stored.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    assert!(
        stored
            .iter()
            .all(|e| e.user_id == "alice" && e.project_id == ctx.project_id)
    );
    let tool_request = &stored[13];
    assert_eq!(tool_request.tool_name.as_deref(), Some("file_write"));
    assert_eq!(tool_request.agent_id.as_deref(), Some("code-agent"));
    assert_eq!(tool_request.payload["risk_level"], "HIGH");
    let required = &stored[14];
    assert_eq!(required.tool_name.as_deref(), Some("file_write"));
    assert_eq!(required.approval_status.as_deref(), Some("PENDING"));
    assert_eq!(required.agent_id.as_deref(), Some("code-agent"));
    let resolved = &stored[15];
    assert_eq!(resolved.approval_status.as_deref(), Some("APPROVED"));
    assert_eq!(resolved.tool_name.as_deref(), Some("file_write"));
    assert_eq!(resolved.payload["resolved_by"], "bob");
    let tool_result = &stored[16];
    assert_eq!(tool_result.payload["status"], "success");
    assert_eq!(tool_result.error_code, None);
    assert_eq!(tool_result.tool_name.as_deref(), Some("file_write"));
    assert_eq!(tool_result.agent_id.as_deref(), Some("code-agent"));
    // …и доставленная живому подписчику та же, с теми же seq.
    let live_ids: Vec<(Uuid, i64)> = seen.iter().map(|e| (e.id, e.seq)).collect();
    let stored_ids: Vec<(Uuid, i64)> = stored.iter().map(|e| (e.id, e.seq)).collect();
    assert_eq!(live_ids, stored_ids);
}

/// Инструмент, который отвечает огромной ошибкой с негодным кодом.
struct LoudTool;

impl Tool for LoudTool {
    fn name(&self) -> &str {
        "loud"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Extension
    }
    fn assess_risk(&self, _input: &Value) -> RiskAssessment {
        RiskAssessment::new(RiskLevel::Low).escalate(RiskLevel::Low, "f".repeat(100_000))
    }
    fn execute(&self, _input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async {
            Err(ToolError::new(
                format!("upstream exploded: {}", "z".repeat(1000)),
                "e".repeat(300 * 1024),
            ))
        })
    }
}

#[tokio::test]
async fn oversized_user_text_and_tool_errors_are_stored_within_the_payload_limit() {
    // Arrange: предел input/output исполнителя нарочно огромный, чтобы сработал
    // и последний рубеж — общий предел нагрузки при публикации.
    let stream = memory_stream().await;
    let mut cfg = RuntimeConfig::default();
    cfg.tools.max_payload_bytes = 1024 * 1024;
    let runtime = AgentRuntime::start(stream.clone(), cfg);
    runtime.tools.register(Arc::new(LoudTool));
    let ctx = SessionContext::new_session("alice", Uuid::now_v7());
    let space = UserWorkerSpace::new(runtime.router.clone(), ctx.clone());
    let request = format!("Research {}", "benchmarks ".repeat(200 * 1024 / 11));
    assert!(request.len() >= 200 * 1024);

    // Act
    space.send(&request).await.unwrap();
    space.call_agent("research-agent", &request).await.unwrap();
    let err = runtime
        .tools
        .call(&ctx, "research-agent", "loud", json!({ "q": request }))
        .await
        .unwrap_err();
    runtime.shutdown().await;
    stream.shutdown().await;
    let stored = stored_session(&stream, &ctx).await;

    // Assert: всё опубликованное записано…
    assert_eq!(stored.len() as u64, runtime.publisher.stats().total());
    assert_eq!(runtime.publisher.stats().dropped, 0);
    // …и каждое событие в пределах SPEC §2.
    let code_ok = |c: &str| {
        c.len() <= 64
            && c.starts_with(|ch: char| ch.is_ascii_uppercase())
            && c.chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
    };
    for e in &stored {
        let size = serde_json::to_string(&e.payload).unwrap().len();
        assert!(size <= 64 * 1024, "{} payload is {size} bytes", e.event_type);
        if let Some(code) = &e.error_code {
            assert!(code_ok(code), "{code}");
        }
    }
    // Огромные input/output ужаты последним рубежом и помечены.
    let marked: Vec<&Event> = stored
        .iter()
        .filter(|e| e.payload.get("payload_truncated") == Some(&json!(true)))
        .collect();
    assert!(
        marked.iter().any(|e| e.event_type == "TOOL_REQUEST")
            && marked.iter().any(|e| e.event_type == "TOOL_RESULT"),
        "{:?}",
        marked.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    // План: `steps[].query` усечён прицельно.
    for plan in stored.iter().filter(|e| e.event_type == "TASK_PLAN_CREATED") {
        let query = plan.payload["steps"][0]["query"].as_str().unwrap();
        assert!(query.len() < 1024, "{}", query.len());
    }
    // Ошибка инструмента: код очищен, сообщение и трасса усечены, запись есть.
    assert!(code_ok(err.code()) && err.code().starts_with("UPSTREAM_EXPLODED_"));
    let error = stored
        .iter()
        .find(|e| e.event_type == "ERROR")
        .expect("the tool error is stored");
    assert_eq!(error.error_code.as_deref(), Some(err.code()));
    assert_eq!(error.payload["tool_name"], "loud");
    assert_eq!(error.payload["agent_id"], "research-agent");
    assert!(error.payload["error_message"].as_str().unwrap().len() <= 8 * 1024 + 3);
    assert!(error.payload["stack_trace"].as_str().unwrap().len() <= 8 * 1024 + 3);
    let result = stored.last().unwrap();
    assert_eq!(result.event_type, "TOOL_RESULT");
    assert_eq!(result.error_code.as_deref(), Some(err.code()));
}

#[tokio::test]
async fn approval_timers_follow_the_paused_tokio_clock_and_refuse_the_call() {
    // Arrange: подготовка базы — на идущих часах, дальше часы стоят.
    let stream = memory_stream().await;
    let publisher = Publisher::new(stream.clone());
    let approvals = ApprovalManager::start(publisher.clone(), ApprovalConfig::default());
    let tools = ToolExecutor::new(
        publisher,
        approvals,
        ToolExecutorConfig {
            critical_risk_approval_expiry: Some(Duration::from_secs(45)),
            ..ToolExecutorConfig::default()
        },
    );
    tools.register(Arc::new(Deploy));
    let ctx = SessionContext::new_session("alice", Uuid::now_v7());
    tokio::time::pause();
    let start = tokio::time::Instant::now();

    // Act
    let err = tools
        .call(
            &ctx,
            "ops-agent",
            "deploy",
            json!({"service": "payments", "environment": "production"}),
        )
        .await
        .unwrap_err();
    let waited = start.elapsed();
    tokio::time::resume();
    stream.shutdown().await;
    let stored = stored_session(&stream, &ctx).await;

    // Assert
    assert!(matches!(err, ToolExecutorError::ApprovalTimedOut { .. }));
    assert!(
        waited >= Duration::from_secs(45) && waited < Duration::from_secs(46),
        "{waited:?}"
    );
    assert_eq!(
        types(&stored),
        [
            "TOOL_REQUEST",
            "APPROVAL_REQUIRED",
            "APPROVAL_TIMEOUT_WARNING",
            "APPROVAL_TIMEOUT",
            "TOOL_RESULT"
        ]
    );
    assert_eq!(stored[1].payload["risk_level"], "CRITICAL");
    assert_eq!(stored[2].payload["seconds_left"], 30);
    assert_eq!(stored[3].approval_status.as_deref(), Some("TIMEOUT"));
    assert_eq!(stored[4].error_code.as_deref(), Some("APPROVAL_TIMEOUT"));
    assert_eq!(stored[4].payload["status"], "error");
}

#[tokio::test]
async fn concurrent_sessions_keep_their_own_order_and_owners() {
    let stream = memory_stream().await;
    let mut cfg = RuntimeConfig::default();
    cfg.tools.high_risk_approval_expiry = Some(Duration::from_millis(50));
    cfg.flaky = FlakyService {
        failure_rate: 0.0,
        hang_rate: 0.0,
        ..FlakyService::default()
    };
    let runtime = AgentRuntime::start(stream.clone(), cfg);
    let projects = [Uuid::now_v7(), Uuid::now_v7()];
    let mut spaces = Vec::new();
    for i in 0..6 {
        spaces.push(runtime.workspace(format!("user-{}", i % 3), projects[i % 2]));
    }
    let messages = [
        "Research the latest vector database benchmarks",
        "What is 6 * 7?",
        "Check the health of the gateway service",
    ];
    let mut handles = Vec::new();
    for space in &spaces {
        let space = space.clone();
        handles.push(tokio::spawn(async move {
            for m in messages {
                space.send(m).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    runtime.shutdown().await;
    stream.shutdown().await;
    let mut all_ids = HashSet::new();
    for space in &spaces {
        let ctx = space.context();
        let events = stored_session(&stream, ctx).await;
        let t = types(&events);
        assert_eq!(t.first(), Some(&"AGENT_SWITCHED"));
        assert_eq!(t.last(), Some(&"TASK_COMPLETED"));
        assert_eq!(t.iter().filter(|t| **t == "TASK_PLAN_CREATED").count(), 3);
        assert_eq!(t.iter().filter(|t| **t == "AGENT_SWITCHED").count(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.user_id == ctx.user_id && e.project_id == ctx.project_id)
        );
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        all_ids.extend(events.iter().map(|e| e.id));
    }
    assert_eq!(
        all_ids.len() as u64,
        runtime.publisher.stats().total(),
        "every published event is stored exactly once, in its own session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_demo_run_produces_every_catalogue_type() {
    // Arrange
    let stream = memory_stream().await;
    let cfg = DemoConfig {
        users: 2,
        projects: 2,
        sessions: 4,
        rate: 20.0,
        duration: Duration::from_secs(4),
        seed: 7,
        approval_expiry: Duration::from_millis(800),
        long_approval_expiry: Duration::from_secs(31),
        panic_rate: 0.05,
        tool_timeout: Duration::from_millis(300),
        ..DemoConfig::default()
    };

    // Act
    let report = run_demo(stream.clone(), cfg, None).await.unwrap();
    stream.shutdown().await;

    // Assert: отчёт…
    assert!(
        report.missing_event_types().is_empty(),
        "missing: {:?}; report: {report:?}",
        report.missing_event_types()
    );
    assert_eq!(report.committed, report.events_total, "{report:?}");
    assert_eq!(report.dropped, 0);
    assert_eq!(report.users, ["demo-user-1", "demo-user-2"]);
    assert_eq!(report.projects.len(), 2);
    assert!(report.sessions >= 4 && report.messages >= 5);
    // …и то, что действительно записано.
    let mut stored_types = HashSet::new();
    let mut users = HashSet::new();
    let mut total = 0u64;
    for project_id in &report.projects {
        let scope = ReadScope {
            project_id: *project_id,
            user_id: None,
        };
        let mut after = 0;
        loop {
            let page = stream
                .store()
                .events_after_seq(&scope, &EventFilter::default(), after, i64::MAX, 1000)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                stored_types.insert(e.event_type.clone());
                users.insert(e.user_id.clone());
                total += 1;
            }
        }
    }
    for t in EventType::ALL {
        assert!(stored_types.contains(t.as_str()), "{t} is not stored");
    }
    assert_eq!(total, report.events_total);
    assert!(users.iter().all(|u| report.users.contains(u)));
    let by_type = |t: EventType| report.events_by_type[t.as_str()];
    // Каждое начатое дело закончено: вызов — результатом, согласование — решением
    // или истечением, взятая из очереди задача — выдачей, шаг — завершением.
    assert_eq!(by_type(EventType::ToolRequest), by_type(EventType::ToolResult));
    assert_eq!(
        by_type(EventType::ApprovalRequired),
        by_type(EventType::ApprovalResolved) + by_type(EventType::ApprovalTimeout)
    );
    assert_eq!(by_type(EventType::TaskQueued), by_type(EventType::TaskDequeued));
    assert_eq!(by_type(EventType::TaskStarted), by_type(EventType::TaskCompleted));
    eprintln!("{report:#?}");
}

/// Полный прогон с настройками по умолчанию (30 с): запускается явно,
/// `cargo test --test runtime -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 30+ seconds"]
async fn the_default_30_second_demo_produces_every_catalogue_type() {
    let stream = memory_stream().await;
    let report = run_demo(stream.clone(), DemoConfig::default(), None)
        .await
        .unwrap();
    stream.shutdown().await;
    eprintln!("{report:#?}");
    assert!(report.missing_event_types().is_empty(), "{report:?}");
    assert_eq!(report.committed, report.events_total);
}
