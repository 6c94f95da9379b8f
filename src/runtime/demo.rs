//! Демо-генератор трафика для `eventlog demo`: [`run_demo`] гоняет среду
//! ([`AgentRuntime`]) от имени нескольких пользователей в нескольких проектах
//! и параллельных сессиях — вызовы инструментов, рискованные инструменты с
//! согласованием (одобренные, отклонённые, истёкшие), ошибки и повторы.
//!
//! # Как устроено
//!
//! - `sessions` исполнителей сессий работают параллельно. Каждый открывает
//!   сессию (случайные пользователь и проект), отправляет 1–4 сообщения
//!   (оркестрованный или прямой режим) и открывает следующую, пока не истечёт
//!   `duration`; между сообщениями — пауза со средним `sessions / rate` секунд.
//! - Первая сессия первого исполнителя — обзорный сценарий
//!   ([`TOUR`]), который затрагивает каждый тип каталога SPEC §3; он
//!   доигрывается до конца, даже если `duration` короче.
//! - Автоматический согласующий подписан на `APPROVAL_REQUIRED` через
//!   [`StreamManager::subscribe`] (как живая панель) и решает после случайной
//!   паузы: первые три короткие согласования каждой сессии — перестановка из
//!   «одобрить», «отклонить», «не отвечать» (тогда срабатывает
//!   `APPROVAL_TIMEOUT`), дальше 60/25/15 %. Длинные согласования
//!   (срок > 30 с) он решает всегда, но только после предупреждения
//!   `APPROVAL_TIMEOUT_WARNING`, которое приходит через `срок − 30 с`.
//!
//! # Сроки согласований
//!
//! Предупреждение испускается за 30 с до истечения и только при сроке больше
//! 30 с. Поэтому в демо два срока: `approval_expiry` (по умолчанию 4 с) — для
//! HIGH, чтобы истечения случались за секунды, и `long_approval_expiry`
//! (по умолчанию 33 с) — для CRITICAL, чтобы предупреждение приходило через
//! 3 с после запроса, внутри 30-секундного прогона.
//!
//! # Детерминизм
//!
//! При одном `seed` одинаковы проекты, сценарии сессий (пользователь, проект,
//! сообщения, режимы), входы инструментов, исходы ненадёжных инструментов и
//! решения согласующего (они зависят от номера сессии и номера согласования в
//! ней). Чередование параллельных сессий, идентификаторы сессий и событий и
//! времена — нет.
//!
//! Вызывает: команда `eventlog demo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::approval::{ApprovalConfig, ApprovalId, WARNING_BEFORE_EXPIRY};
use super::bus::BusConfig;
use super::context::{SessionContext, millis, stable_hash};
use super::tool_executor::ToolExecutorConfig;
use super::tools::FlakyService;
use super::worker_space::UserWorkerSpace;
use super::{AgentRuntime, RuntimeConfig};
use crate::StreamManager;
use crate::model::{Event, EventType};
use crate::query::{EventFilter, ReadScope};
use crate::stream::StreamError;

/// Настройки демо.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Пользователей (`demo-user-1`, …); по умолчанию 3.
    pub users: usize,
    /// Проектов (UUID выводятся из `seed`); по умолчанию 2. Каждый пользователь
    /// работает во всех проектах.
    pub projects: usize,
    /// Явные проекты (например, тот, что напечатал `eventlog serve`); если заданы,
    /// заменяют `projects` сгенерированных.
    pub project_ids: Vec<Uuid>,
    /// Первый проект вместо выведенного из `seed` (`eventlog demo` ставит сюда
    /// демонстрационный проект из файла секрета, для которого `serve` печатает
    /// токены); по умолчанию нет.
    pub first_project: Option<Uuid>,
    /// Параллельных сессий; по умолчанию 4.
    pub sessions: usize,
    /// Сообщений пользователей в секунду на всё демо (приблизительно, верхняя
    /// граница: ожидание согласований её снижает); по умолчанию 6. Одно
    /// сообщение даёт 10–25 событий.
    pub rate: f64,
    /// Сколько открывать новые сессии и сообщения; по умолчанию 30 с. Начатые
    /// сообщения доделываются (не дольше срока согласования).
    pub duration: Duration,
    /// Зерно; по умолчанию 42.
    pub seed: u64,
    /// Срок согласования HIGH (по умолчанию 4 с: истечения видны за секунды).
    pub approval_expiry: Duration,
    /// Срок согласования CRITICAL (по умолчанию 33 с: больше 30 с, чтобы
    /// `APPROVAL_TIMEOUT_WARNING` пришло через 3 с после запроса).
    pub long_approval_expiry: Duration,
    /// Доля сообщений в прямом режиме; по умолчанию 0.25.
    pub direct_share: f64,
    /// Доля временных ошибок `service_status`; по умолчанию 0.3.
    pub failure_rate: f64,
    /// Доля паник `service_status`; по умолчанию 0. Паника печатается стандартным
    /// обработчиком паник процесса в stderr (поверх индикатора прогресса), хотя
    /// исполнитель её ловит; включайте явно.
    pub panic_rate: f64,
    /// Доля зависаний `service_status` (их прерывает таймаут); по умолчанию 0.05.
    pub hang_rate: f64,
    /// Таймаут `service_status`; по умолчанию 1.5 с.
    pub tool_timeout: Duration,
    /// Исполнителей шины; по умолчанию 3.
    pub bus_workers: usize,
    /// Ёмкость очереди шины; по умолчанию 64.
    pub bus_capacity: usize,
    /// Сколько после прогона ждать, пока все события будут записаны; по
    /// умолчанию 10 с.
    pub drain_timeout: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            users: 3,
            projects: 2,
            project_ids: Vec::new(),
            first_project: None,
            sessions: 4,
            rate: 6.0,
            duration: Duration::from_secs(30),
            seed: 42,
            approval_expiry: Duration::from_secs(4),
            long_approval_expiry: Duration::from_secs(33),
            direct_share: 0.25,
            failure_rate: 0.3,
            panic_rate: 0.0,
            hang_rate: 0.05,
            tool_timeout: Duration::from_millis(1500),
            bus_workers: 3,
            bus_capacity: 64,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Итог демо.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// Зерно.
    pub seed: u64,
    /// Проекты.
    pub projects: Vec<Uuid>,
    /// Пользователи.
    pub users: Vec<String>,
    /// Открыто сессий.
    pub sessions: usize,
    /// Отправлено сообщений.
    pub messages: u64,
    /// Сообщений, план которых не выполнился (отказ, ошибка после повторов).
    pub failed_messages: u64,
    /// Принято в очередь записи по типам: весь каталог SPEC §3, включая нули.
    pub events_by_type: BTreeMap<String, u64>,
    /// Всего принято в очередь записи.
    pub events_total: u64,
    /// Сколько из них подтверждено записанными (живая подписка увидела их
    /// после фиксации) к концу ожидания `drain_timeout`.
    pub committed: u64,
    /// Не принято писателем (полная очередь или остановленный логгер).
    pub dropped: u64,
    /// Длительность прогона.
    pub elapsed: Duration,
}

impl DemoReport {
    /// Типы каталога, которых не было.
    pub fn missing_event_types(&self) -> Vec<EventType> {
        EventType::ALL
            .into_iter()
            .filter(|t| self.events_by_type.get(t.as_str()).copied().unwrap_or(0) == 0)
            .collect()
    }
}

/// Ошибка демо.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Неверные настройки (что именно — в тексте).
    #[error("invalid demo config: {0}")]
    InvalidConfig(String),
    /// Подписка на записанные события не удалась (ошибка чтения базы).
    #[error("demo subscription failed: {0}")]
    Subscription(#[from] StreamError),
}

/// Сообщение сценария: режим, агент (для прямого режима) и текст.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptedMessage {
    /// Агент для прямого режима; `None` — оркестрованный режим.
    pub direct_agent: Option<&'static str>,
    /// Текст.
    pub text: &'static str,
}

const fn orchestrated(text: &'static str) -> ScriptedMessage {
    ScriptedMessage {
        direct_agent: None,
        text,
    }
}

const fn direct(agent: &'static str, text: &'static str) -> ScriptedMessage {
    ScriptedMessage {
        direct_agent: Some(agent),
        text,
    }
}

/// Обзорный сценарий первой сессии. Вместе с согласующим он даёт все типы
/// каталога: смену агента и прямой вызов, контекст, план и шаги, шину, сбой
/// `service_status` с повтором (`ERROR`), согласование CRITICAL с
/// предупреждением и три согласования HIGH (одобрено, отклонено, истекло — в
/// порядке, который задаёт зерно).
pub const TOUR: [ScriptedMessage; 5] = [
    direct(
        "ops-agent",
        "Deploy the payments service to production (change OPS-332)",
    ),
    orchestrated("Fix the bug in the config parser and write the patch"),
    orchestrated("Research the latest vector database benchmarks and compare 12 * 8 results"),
    direct("code-agent", "Refactor the parser module and add tests"),
    orchestrated("Implement the config loader function"),
];

const RESEARCH: [&str; 6] = [
    "Research the latest vector database benchmarks",
    "Find papers that compare LLM evaluation benchmarks",
    "Summarize the documentation on agent observability",
    "Explain why recall drops in the search benchmarks",
    "Compare latency of the top 3 vector stores: 120 + 85 + 60",
    "Search for the latest docs on tracing agents",
];
const CODE: [&str; 6] = [
    "Fix the bug in the parser",
    "Refactor the config module and add tests",
    "Implement a function to validate the config file",
    "Write a patch for the failing tests in the tokenizer",
    "Fix the compile error in the auth module",
    "Write unit tests for the billing parser",
];
const OPS: [&str; 8] = [
    "Deploy checkout to staging",
    "Check the health of the gateway service",
    "Release billing v2 to production",
    "Restart the search service after the latency incident",
    "Rollback auth in production",
    "Monitor notifications latency and scale if needed",
    "Deploy the notifications service to staging",
    "Status of the payments service?",
];
const GENERAL: [&str; 4] = [
    "What is 17 * 23 + 4?",
    "How many hours are in 6 * 7 days? 6 * 7 * 24",
    "Hello, what can you do?",
    "Give me a short overview of this workspace",
];
const AGENTS: [&str; 4] = ["research-agent", "code-agent", "ops-agent", "general-agent"];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// Случайное сообщение сценария обычной сессии.
fn random_message(rng: &mut StdRng, direct_share: f64) -> ScriptedMessage {
    let (agent, text) = match rng.random_range(0..10) {
        0..=2 => ("research-agent", pick(rng, &RESEARCH)),
        3..=5 => ("code-agent", pick(rng, &CODE)),
        6..=8 => ("ops-agent", pick(rng, &OPS)),
        _ => ("general-agent", pick(rng, &GENERAL)),
    };
    if rng.random_bool(direct_share.clamp(0.0, 1.0)) {
        // Иногда пользователь зовёт «не того» агента — так тоже бывает.
        let agent = if rng.random_bool(0.2) {
            AGENTS[rng.random_range(0..AGENTS.len())]
        } else {
            agent
        };
        ScriptedMessage {
            direct_agent: Some(agent),
            text,
        }
    } else {
        ScriptedMessage {
            direct_agent: None,
            text,
        }
    }
}

fn uuid_from(rng: &mut StdRng) -> Uuid {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn validate(cfg: &DemoConfig) -> Result<(), DemoError> {
    let bad = |m: &str| Err(DemoError::InvalidConfig(m.to_owned()));
    if cfg.users == 0 {
        return bad("users must be at least 1");
    }
    if cfg.projects == 0 {
        return bad("projects must be at least 1");
    }
    if cfg.sessions == 0 {
        return bad("sessions must be at least 1");
    }
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return bad("rate must be a positive number");
    }
    for (name, v) in [
        ("direct_share", cfg.direct_share),
        ("failure_rate", cfg.failure_rate),
        ("panic_rate", cfg.panic_rate),
        ("hang_rate", cfg.hang_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(DemoError::InvalidConfig(format!("{name} must be within 0..=1")));
        }
    }
    if cfg.approval_expiry.is_zero() || cfg.long_approval_expiry.is_zero() {
        return bad("approval expiries must be positive");
    }
    Ok(())
}

/// Общее состояние прогона.
struct Shared {
    seed: u64,
    /// Сессия → её ключ (номер исполнителя и номер сессии у него): от ключа,
    /// а не от случайного UUID, зависят решения согласующего.
    sessions: Mutex<HashMap<Uuid, u64>>,
    messages: AtomicU64,
    failed: AtomicU64,
    committed: AtomicU64,
}

impl Shared {
    fn session_key(&self, session_id: &Uuid) -> Option<u64> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(session_id)
            .copied()
    }
}

/// Запускает демо на `stream` и возвращает отчёт. `progress` (если задан)
/// получает длину в миллисекундах `duration`, позицию и число событий.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use eventlog::logger::LoggerConfig;
/// use eventlog::runtime::{DemoConfig, run_demo};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
///
/// let store = Store::connect("sqlite://eventlog.db?mode=rwc", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 16_384);
/// let cfg = DemoConfig { duration: Duration::from_secs(10), ..DemoConfig::default() };
/// let report = run_demo(stream.clone(), cfg, None).await?;
/// println!("projects: {:?}, users: {:?}", report.projects, report.users);
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn run_demo(
    stream: StreamManager,
    cfg: DemoConfig,
    progress: Option<ProgressBar>,
) -> Result<DemoReport, DemoError> {
    validate(&cfg)?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut projects: Vec<Uuid> = (0..cfg.projects).map(|_| uuid_from(&mut rng)).collect();
    if let Some(first) = cfg.first_project {
        projects[0] = first;
    }
    if !cfg.project_ids.is_empty() {
        projects = cfg.project_ids.clone();
    }
    let users: Vec<String> = (1..=cfg.users).map(|i| format!("demo-user-{i}")).collect();

    let runtime = AgentRuntime::start(
        stream.clone(),
        RuntimeConfig {
            approvals: ApprovalConfig {
                default_expiry: cfg.approval_expiry,
                ..ApprovalConfig::default()
            },
            tools: ToolExecutorConfig {
                high_risk_approval_expiry: Some(cfg.approval_expiry),
                critical_risk_approval_expiry: Some(cfg.long_approval_expiry),
                ..ToolExecutorConfig::default()
            },
            bus: BusConfig {
                workers: cfg.bus_workers.max(1),
                capacity: cfg.bus_capacity.max(1),
            },
            router: Default::default(),
            flaky: FlakyService {
                failure_rate: cfg.failure_rate,
                panic_rate: cfg.panic_rate,
                hang_rate: cfg.hang_rate,
                timeout: cfg.tool_timeout,
            },
        },
    );
    let shared = Arc::new(Shared {
        seed: cfg.seed,
        sessions: Mutex::new(HashMap::new()),
        messages: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        committed: AtomicU64::new(0),
    });
    tracing::info!(
        seed = cfg.seed,
        users = cfg.users,
        projects = cfg.projects,
        sessions = cfg.sessions,
        duration_ms = millis(cfg.duration),
        "Demo started."
    );

    // Наблюдатели: подписки на каждый проект считают записанное и кормят согласующего.
    // Подписки создаются до первого события, так что ничего не пропадает.
    let stop_watch = CancellationToken::new();
    let mut watchers = JoinSet::new();
    for project_id in &projects {
        let sub = stream.subscribe(
            ReadScope {
                project_id: *project_id,
                user_id: None,
            },
            EventFilter::default(),
            None,
        );
        watchers.spawn(watch_project(
            stream.clone(),
            *project_id,
            Box::pin(sub),
            runtime.clone(),
            shared.clone(),
            cfg.clone(),
            stop_watch.clone(),
        ));
    }

    if let Some(pb) = &progress {
        pb.set_length(millis(cfg.duration));
        pb.set_position(0);
    }
    let deadline = started + cfg.duration;
    let mut workers = JoinSet::new();
    for w in 0..cfg.sessions {
        workers.spawn(session_worker(
            w as u64,
            runtime.clone(),
            shared.clone(),
            cfg.clone(),
            projects.clone(),
            users.clone(),
            deadline,
        ));
    }

    // Ждём исполнителей сессий, обновляя индикатор.
    let mut sessions_opened = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(n)) => sessions_opened += n,
                Some(Err(e)) => tracing::warn!(error = %e, "Demo session worker ended abnormally."),
                None => break,
            },
            _ = tick.tick() => {
                if let Some(pb) = &progress {
                    pb.set_position(millis(started.elapsed()).min(millis(cfg.duration)));
                    pb.set_message(format!("{} events", runtime.publisher.stats().total()));
                }
            }
        }
    }
    runtime.shutdown().await;

    // Ждём, пока всё принятое будет записано (или истечёт срок ожидания).
    let drain_deadline = Instant::now() + cfg.drain_timeout;
    let mut subscription_error = None;
    loop {
        let published = runtime.publisher.stats().total();
        if shared.committed.load(Ordering::Acquire) >= published || Instant::now() >= drain_deadline {
            break;
        }
        if watchers.is_empty() {
            break;
        }
        tokio::select! {
            joined = watchers.join_next() => {
                if let Some(Ok(Err(e))) = joined {
                    subscription_error = Some(e);
                    break;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
    }
    stop_watch.cancel();
    while let Some(joined) = watchers.join_next().await {
        if let Ok(Err(e)) = joined
            && subscription_error.is_none()
        {
            subscription_error = Some(e);
        }
    }
    if let Some(e) = subscription_error {
        return Err(DemoError::Subscription(e));
    }

    let stats = runtime.publisher.stats();
    let events_by_type = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), stats.count(*t)))
        .collect();
    let report = DemoReport {
        seed: cfg.seed,
        projects,
        users,
        sessions: sessions_opened,
        messages: shared.messages.load(Ordering::Relaxed),
        failed_messages: shared.failed.load(Ordering::Relaxed),
        events_by_type,
        events_total: stats.total(),
        committed: shared.committed.load(Ordering::Acquire),
        dropped: stats.dropped,
        elapsed: started.elapsed(),
    };
    if let Some(pb) = &progress {
        pb.set_position(millis(cfg.duration));
        pb.finish_with_message(format!(
            "{} events ({} committed)",
            report.events_total, report.committed
        ));
    }
    tracing::info!(
        events = report.events_total,
        committed = report.committed,
        dropped = report.dropped,
        messages = report.messages,
        elapsed_ms = millis(report.elapsed),
        "Demo finished."
    );
    Ok(report)
}

/// Исполнитель сессий номер `w`; возвращает, сколько сессий он открыл.
async fn session_worker(
    w: u64,
    runtime: AgentRuntime,
    shared: Arc<Shared>,
    cfg: DemoConfig,
    projects: Vec<Uuid>,
    users: Vec<String>,
    deadline: Instant,
) -> usize {
    let mut rng = StdRng::seed_from_u64(stable_hash(&[&cfg.seed.to_le_bytes(), &w.to_le_bytes()]));
    let mean_gap = cfg.sessions as f64 / cfg.rate;
    let mut opened = 0usize;
    loop {
        let tour = w == 0 && opened == 0;
        if !tour && Instant::now() >= deadline {
            break;
        }
        let user = users[rng.random_range(0..users.len())].clone();
        let project = projects[rng.random_range(0..projects.len())];
        let script: Vec<ScriptedMessage> = if tour {
            TOUR.to_vec()
        } else {
            let n = rng.random_range(1..=4);
            (0..n)
                .map(|_| random_message(&mut rng, cfg.direct_share))
                .collect()
        };
        let ctx = SessionContext::new_session(user, project);
        let key = (w << 32) | opened as u64;
        shared
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(ctx.session_id, key);
        let space = UserWorkerSpace::new(runtime.router.clone(), ctx);
        opened += 1;
        for msg in script {
            if !tour && Instant::now() >= deadline {
                break;
            }
            let result = match msg.direct_agent {
                Some(agent) => space.call_agent(agent, msg.text).await,
                None => space.send(msg.text).await,
            };
            shared.messages.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "Demo message did not complete.");
            }
            // Пауза «на подумать»: от половины до полутора средних.
            let gap = Duration::from_secs_f64(mean_gap * rng.random_range(0.5..1.5));
            let now = Instant::now();
            if !tour && now + gap >= deadline {
                break;
            }
            tokio::time::sleep(gap).await;
        }
    }
    opened
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Approve,
    Reject,
    Ignore,
}

/// Решение согласующего и пауза перед ним; функция зерна, ключа сессии и
/// номера согласования в ней.
fn decide(seed: u64, session_key: u64, ordinal: u64, expires_in: Duration) -> (Verdict, Duration) {
    let mut rng = StdRng::seed_from_u64(stable_hash(&[
        &seed.to_le_bytes(),
        &session_key.to_le_bytes(),
        &ordinal.to_le_bytes(),
    ]));
    if expires_in > WARNING_BEFORE_EXPIRY {
        // Длинное: решаем всегда, но после предупреждения.
        let delay = expires_in - WARNING_BEFORE_EXPIRY + Duration::from_millis(rng.random_range(100..500));
        let verdict = if rng.random_bool(0.7) {
            Verdict::Approve
        } else {
            Verdict::Reject
        };
        return (verdict, delay);
    }
    let verdict = if ordinal < 3 {
        let mut perm = [Verdict::Approve, Verdict::Reject, Verdict::Ignore];
        let mut session_rng = StdRng::seed_from_u64(stable_hash(&[
            &seed.to_le_bytes(),
            &session_key.to_le_bytes(),
            b"perm",
        ]));
        perm.shuffle(&mut session_rng);
        perm[ordinal as usize]
    } else {
        match rng.random_range(0..100) {
            0..60 => Verdict::Approve,
            60..85 => Verdict::Reject,
            _ => Verdict::Ignore,
        }
    };
    (verdict, expires_in.mul_f64(rng.random_range(0.1..0.7)))
}

const REVIEWERS: [&str; 3] = ["alice.reviewer", "sec-ops", "oncall-lead"];

/// Читает записанные события проекта: считает свои и решает согласования.
/// При отставании от живого буфера переподписывается с последнего `seq`.
async fn watch_project(
    stream: StreamManager,
    project_id: Uuid,
    first: futures::stream::BoxStream<'static, Result<Arc<Event>, StreamError>>,
    runtime: AgentRuntime,
    shared: Arc<Shared>,
    cfg: DemoConfig,
    stop: CancellationToken,
) -> Result<(), StreamError> {
    let mut sub = first;
    // Номер следующего согласования по сессиям (короткие и длинные — отдельно).
    let mut ordinals: HashMap<(u64, bool), u64> = HashMap::new();
    let mut approvers = JoinSet::new();
    let result = loop {
        let item = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            item = sub.next() => item,
        };
        match item {
            Some(Ok(event)) => {
                let Some(key) = shared.session_key(&event.session_id) else {
                    continue;
                };
                shared.committed.fetch_add(1, Ordering::AcqRel);
                if event.event_type == EventType::ApprovalRequired.as_str()
                    && let Some(id) = event
                        .payload
                        .get("approval_id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<ApprovalId>().ok())
                {
                    let expires_in = Duration::from_millis(
                        event
                            .payload
                            .get("expires_in_ms")
                            .and_then(Value::as_u64)
                            .unwrap_or(millis(cfg.approval_expiry)),
                    );
                    let long = expires_in > WARNING_BEFORE_EXPIRY;
                    let ordinal = ordinals.entry((key, long)).or_insert(0);
                    let (verdict, delay) = decide(shared.seed, key, *ordinal, expires_in);
                    *ordinal += 1;
                    if verdict == Verdict::Ignore {
                        continue;
                    }
                    let approvals = runtime.approvals.clone();
                    let reviewer = REVIEWERS[(stable_hash(&[id.0.as_bytes()]) % 3) as usize];
                    approvers.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let (approved, comment) = match verdict {
                            Verdict::Approve => (true, "looks good"),
                            _ => (false, "too risky right now"),
                        };
                        if let Err(e) = approvals
                            .resolve(id, approved, reviewer, Some(comment.to_owned()))
                            .await
                        {
                            tracing::debug!(%id, error = %e, "Demo approver was too late.");
                        }
                    });
                }
            }
            Some(Err(StreamError::Lagged { last_seq, skipped })) => {
                tracing::warn!(%project_id, skipped, "Demo watcher lagged; resubscribing from the last seq.");
                sub = Box::pin(stream.subscribe(
                    ReadScope {
                        project_id,
                        user_id: None,
                    },
                    EventFilter::default(),
                    Some(last_seq),
                ));
            }
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
        // Готовые решения не копим.
        while approvers.try_join_next().is_some() {}
    };
    approvers.abort_all();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_three_short_approvals_of_a_session_cover_every_verdict() {
        for key in 0..50u64 {
            let mut seen: Vec<Verdict> = (0..3)
                .map(|o| decide(7, key, o, Duration::from_secs(4)).0)
                .collect();
            seen.sort_by_key(|v| *v as u8);
            assert_eq!(seen, [Verdict::Approve, Verdict::Reject, Verdict::Ignore]);
        }
    }

    #[test]
    fn long_approvals_are_decided_after_the_warning() {
        for o in 0..20 {
            let (v, delay) = decide(1, 3, o, Duration::from_secs(33));
            assert_ne!(v, Verdict::Ignore);
            assert!(delay > Duration::from_secs(3) && delay < Duration::from_secs(4));
        }
        let (_, short) = decide(1, 3, 0, Duration::from_secs(4));
        assert!(short < Duration::from_secs(3));
    }

    #[test]
    fn decisions_and_scripts_are_deterministic_for_a_seed() {
        assert_eq!(
            decide(42, 5, 4, Duration::from_secs(4)),
            decide(42, 5, 4, Duration::from_secs(4))
        );
        let script = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| random_message(&mut rng, 0.25))
                .collect::<Vec<_>>()
        };
        assert_eq!(script(9), script(9));
        assert_ne!(script(9), script(10));
    }

    #[test]
    fn invalid_configs_are_rejected_with_a_reason() {
        let bad = DemoConfig {
            sessions: 0,
            ..DemoConfig::default()
        };
        assert!(matches!(validate(&bad), Err(DemoError::InvalidConfig(m)) if m.contains("sessions")));
        let bad = DemoConfig {
            failure_rate: 1.5,
            ..DemoConfig::default()
        };
        assert!(validate(&bad).is_err());
        assert!(validate(&DemoConfig::default()).is_ok());
    }
}

#[cfg(test)]
mod tour_tests {
    use super::*;
    use crate::runtime::agent::{Agent, CodeAgent, OpsAgent, StepAction, builtin_agents};
    use crate::runtime::tools::FlakyOutcome;
    use serde_json::json;

    fn tool_inputs(agent: &dyn Agent, text: &str, tool: &str) -> Vec<Value> {
        agent
            .plan(text)
            .into_iter()
            .filter_map(|s| match s.action {
                StepAction::CallTool { tool: t, input } if t == tool => Some(input),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tour_ops_message_fails_once_then_deploys_to_production() {
        let flaky = FlakyService::default();
        let text = TOUR[0].text;
        let probe = tool_inputs(&OpsAgent, text, "service_status").remove(0);
        assert_eq!(flaky.outcome(&probe), FlakyOutcome::Error);
        let mut retry = probe.clone();
        retry["attempt"] = json!(1);
        assert_eq!(flaky.outcome(&retry), FlakyOutcome::Ok);
        let deploy = tool_inputs(&OpsAgent, text, "deploy").remove(0);
        assert_eq!(deploy["environment"], "production");
    }

    #[test]
    fn tour_reaches_three_high_risk_approvals() {
        let agents = builtin_agents();
        let mut high = 0;
        for m in &TOUR[1..] {
            let agent = match m.direct_agent {
                Some(id) => agents.iter().find(|a| a.id() == id).unwrap().clone(),
                None => agents
                    .iter()
                    .max_by(|a, b| a.score(m.text).score.total_cmp(&b.score(m.text).score))
                    .unwrap()
                    .clone(),
            };
            high += tool_inputs(agent.as_ref(), m.text, "file_write").len();
            // Тесты кода не должны падать все три попытки подряд.
            for step in agent.plan(m.text) {
                if let StepAction::Delegate { job, input } = step.action
                    && job == "run_tests"
                {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let ok = (0..3).any(|a| {
                        let mut i = input.clone();
                        i["attempt"] = json!(a);
                        rt.block_on(CodeAgent.run_job("run_tests", i)).is_ok()
                    });
                    assert!(ok, "{}", m.text);
                }
            }
        }
        assert_eq!(high, 3);
    }
}
