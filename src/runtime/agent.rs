//! Агенты: трейт [`Agent`], план ([`PlanStep`], [`StepAction`]) и встроенные
//! детерминированные агенты на правилах (без моделей и сети).
//!
//! Агент не публикует событий сам: он оценивает запрос ([`Agent::score`]),
//! строит план ([`Agent::plan`]), выполняет делегированные ему задачи шины
//! ([`Agent::run_job`]) и формулирует ответ ([`Agent::respond`]). Всё видимое в
//! журнале делают [`OrchestratorRouter`](super::OrchestratorRouter),
//! [`ToolExecutor`](super::ToolExecutor) и [`AgentBus`](super::AgentBus).
//!
//! Встроенные агенты (маршрутизация по ключевым словам):
//! - [`ResearchAgent`] `research-agent` — контекст, `web_search`, при наличии
//!   арифметики `calculator`, задача шины `summarize`;
//! - [`CodeAgent`] `code-agent` — контекст кодовой базы, задача шины `run_tests`,
//!   `file_write` (HIGH);
//! - [`OpsAgent`] `ops-agent` — ранбук, `service_status` (ненадёжный), `deploy`
//!   (CRITICAL в production) для выкаток, задача шины `notify_oncall`;
//! - [`GeneralAgent`] `general-agent` — запасной: калькулятор или контекст.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::bus::TaskError;
use super::context::{MAX_NAME_BYTES, MAX_TEXT_BYTES, clip, stable_hash, unit_interval};
use super::tools::Calculator;

/// Насколько агент подходит к запросу.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentScore {
    /// Оценка; 0 — не подходит. Побеждает наибольшая.
    pub score: f64,
    /// Почему (попадёт в `reason` события `AGENT_SWITCHED`).
    pub reason: String,
}

/// Что делает шаг плана.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// Извлечь контекст из базы знаний (`CONTEXT_RETRIEVED`).
    RetrieveContext {
        /// Запрос к базе знаний.
        query: String,
    },
    /// Вызвать инструмент через исполнитель.
    CallTool {
        /// Имя инструмента.
        tool: String,
        /// Вход.
        input: Value,
    },
    /// Отдать задачу исполнителям шины ([`Agent::run_job`]).
    Delegate {
        /// Имя задачи.
        job: String,
        /// Вход.
        input: Value,
    },
    /// Сформулировать ответ ([`Agent::respond`]).
    Respond,
}

impl StepAction {
    /// Вид шага: `retrieve_context`, `call_tool`, `delegate`, `respond`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RetrieveContext { .. } => "retrieve_context",
            Self::CallTool { .. } => "call_tool",
            Self::Delegate { .. } => "delegate",
            Self::Respond => "respond",
        }
    }
}

/// Шаг плана.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// Название шага (для человека).
    pub name: String,
    /// Действие.
    pub action: StepAction,
}

impl PlanStep {
    /// Шаг с названием и действием.
    pub fn new(name: impl Into<String>, action: StepAction) -> Self {
        Self {
            name: name.into(),
            action,
        }
    }

    /// Описание шага для массива `steps` события `TASK_PLAN_CREATED`. Строки
    /// усечены: `query` (обычно это текст пользователя) — до 500 байт, имена — до
    /// 256 байт (усечённая строка кончается на «…»).
    ///
    /// ```
    /// use eventlog::runtime::{PlanStep, StepAction};
    /// let step = PlanStep::new("look up", StepAction::RetrieveContext { query: "x".repeat(10_000) });
    /// assert!(step.describe(0)["query"].as_str().unwrap().len() < 600);
    /// ```
    pub fn describe(&self, index: usize) -> Value {
        let mut v = json!({
            "step": index,
            "name": clip(&self.name, MAX_NAME_BYTES),
            "action": self.action.kind(),
        });
        match &self.action {
            StepAction::CallTool { tool, .. } => v["tool_name"] = json!(clip(tool, MAX_NAME_BYTES)),
            StepAction::Delegate { job, .. } => v["job"] = json!(clip(job, MAX_NAME_BYTES)),
            StepAction::RetrieveContext { query } => v["query"] = json!(clip(query, MAX_TEXT_BYTES)),
            StepAction::Respond => {}
        }
        v
    }
}

/// Результат выполненного шага.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Номер шага (с 0).
    pub step: usize,
    /// Название шага.
    pub name: String,
    /// Результат.
    pub output: Value,
}

/// Краткие сведения об агенте.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Идентификатор (`agent_id`).
    pub id: String,
    /// Имя (`agent_name`, как `gen_ai.agent.name`).
    pub name: String,
    /// Описание.
    pub description: String,
}

/// Агент. Реализации должны быть детерминированными функциями входа, если от
/// них ждут воспроизводимого демо.
///
/// ```
/// use eventlog::runtime::{Agent, AgentScore, PlanStep, StepAction, StepOutput, TaskError};
/// use futures::future::BoxFuture;
/// use serde_json::Value;
///
/// struct Echo;
/// impl Agent for Echo {
///     fn id(&self) -> &str { "echo-agent" }
///     fn name(&self) -> &str { "Echo" }
///     fn score(&self, _request: &str) -> AgentScore {
///         AgentScore { score: 0.5, reason: "echoes everything".into() }
///     }
///     fn plan(&self, _request: &str) -> Vec<PlanStep> {
///         vec![PlanStep::new("answer", StepAction::Respond)]
///     }
///     fn run_job(&self, _job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
///         Box::pin(async move { Ok(input) })
///     }
///     fn respond(&self, request: &str, _outputs: &[StepOutput]) -> String {
///         request.to_owned()
///     }
/// }
/// assert_eq!(Echo.plan("hi").len(), 1);
/// ```
pub trait Agent: Send + Sync + 'static {
    /// Идентификатор (`agent_id`).
    fn id(&self) -> &str;
    /// Имя (`agent_name`).
    fn name(&self) -> &str;
    /// Описание.
    fn description(&self) -> &str {
        ""
    }
    /// Оценка пригодности для запроса.
    fn score(&self, request: &str) -> AgentScore;
    /// План выполнения запроса.
    fn plan(&self, request: &str) -> Vec<PlanStep>;
    /// Выполняет задачу, делегированную через шину (шаг [`StepAction::Delegate`]).
    fn run_job(&self, job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>>;
    /// Ответ пользователю по результатам шагов.
    fn respond(&self, request: &str, outputs: &[StepOutput]) -> String;
    /// Сведения об агенте.
    fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id().to_owned(),
            name: self.name().to_owned(),
            description: self.description().to_owned(),
        }
    }
}

/// Все встроенные агенты в порядке приоритета при равных оценках.
///
/// ```
/// let agents = eventlog::runtime::builtin_agents();
/// assert_eq!(agents.len(), 4);
/// ```
pub fn builtin_agents() -> Vec<Arc<dyn Agent>> {
    vec![
        Arc::new(ResearchAgent),
        Arc::new(CodeAgent),
        Arc::new(OpsAgent),
        Arc::new(GeneralAgent),
    ]
}

/// Слова запроса в нижнем регистре.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Оценка по ключевым словам: число совпавших различных слов.
fn keyword_score(request: &str, keywords: &[&str]) -> AgentScore {
    let ws = words(request);
    let hits: Vec<&str> = keywords
        .iter()
        .copied()
        .filter(|k| ws.iter().any(|w| w == k))
        .collect();
    AgentScore {
        score: hits.len() as f64,
        reason: if hits.is_empty() {
            "no keywords matched".to_owned()
        } else {
            format!("matched keywords: {}", hits.join(", "))
        },
    }
}

/// Первое вычислимое арифметическое выражение в тексте (с оператором).
/// Фрагменты длиннее [`Calculator::MAX_EXPRESSION_LEN`] не рассматриваются, а
/// слишком глубокие калькулятор отвергает сам: текст пользователя не может
/// переполнить стек.
pub(crate) fn extract_expression(text: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_digit() || "+-*/(). ".contains(c);
    text.split(|c: char| !allowed(c))
        .map(str::trim)
        // Все допустимые символы — ASCII, так что байты = символы.
        .filter(|s| s.len() <= Calculator::MAX_EXPRESSION_LEN)
        .filter(|s| s.chars().any(|c| c.is_ascii_digit()) && s.chars().skip(1).any(|c| "+-*/".contains(c)))
        .find(|s| Calculator::evaluate(s).is_ok())
        .map(str::to_owned)
}

/// Короткое имя из первых значимых слов: `fix_parser_bug`.
fn slug(text: &str) -> String {
    let s: Vec<String> = words(text)
        .into_iter()
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .take(3)
        .collect();
    if s.is_empty() {
        "change".to_owned()
    } else {
        s.join("_")
    }
}

/// Детерминированная «проба» запроса — зерно для исходов инструментов и задач.
pub(crate) fn probe(request: &str) -> u64 {
    stable_hash(&[request.as_bytes()]) >> 16
}

/// Сервис, о котором идёт речь.
fn service_of(request: &str) -> &'static str {
    const SERVICES: [&str; 7] = [
        "payments",
        "billing",
        "search",
        "auth",
        "gateway",
        "checkout",
        "notifications",
    ];
    let ws = words(request);
    SERVICES
        .iter()
        .copied()
        .find(|s| ws.iter().any(|w| w == s))
        .unwrap_or("app")
}

fn attempt_of(input: &Value) -> u64 {
    input.get("attempt").and_then(Value::as_u64).unwrap_or(0)
}

/// Короткая детерминированная пауза «работы» 10–60 мс.
fn work_time(seed: &str) -> Duration {
    Duration::from_millis(10 + stable_hash(&[seed.as_bytes(), b"work"]) % 51)
}

fn output_count(outputs: &[StepOutput], key: &str) -> usize {
    outputs
        .iter()
        .filter_map(|o| o.output.get(key))
        .map(|v| {
            v.as_array()
                .map_or_else(|| v.as_u64().unwrap_or(0) as usize, Vec::len)
        })
        .sum()
}

/// Исследователь: поиск, контекст, сводка.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResearchAgent;

impl Agent for ResearchAgent {
    fn id(&self) -> &str {
        "research-agent"
    }
    fn name(&self) -> &str {
        "Research Agent"
    }
    fn description(&self) -> &str {
        "Finds, compares and summarises information."
    }
    fn score(&self, request: &str) -> AgentScore {
        keyword_score(
            request,
            &[
                "research",
                "find",
                "search",
                "compare",
                "summarize",
                "summarise",
                "summary",
                "explain",
                "why",
                "benchmark",
                "benchmarks",
                "paper",
                "papers",
                "docs",
                "documentation",
                "learn",
                "latest",
            ],
        )
    }
    fn plan(&self, request: &str) -> Vec<PlanStep> {
        let mut steps = vec![
            PlanStep::new(
                "retrieve background",
                StepAction::RetrieveContext {
                    query: request.to_owned(),
                },
            ),
            PlanStep::new(
                "search the web",
                StepAction::CallTool {
                    tool: "web_search".into(),
                    input: json!({ "query": request, "limit": 3 }),
                },
            ),
        ];
        if let Some(expr) = extract_expression(request) {
            steps.push(PlanStep::new(
                "compute figures",
                StepAction::CallTool {
                    tool: "calculator".into(),
                    input: json!({ "expression": expr }),
                },
            ));
        }
        steps.push(PlanStep::new(
            "summarize sources",
            StepAction::Delegate {
                job: "summarize".into(),
                input: json!({ "query": request }),
            },
        ));
        steps.push(PlanStep::new("answer", StepAction::Respond));
        steps
    }
    fn run_job(&self, job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
        let job = job.to_owned();
        Box::pin(async move {
            let query = input.get("query").and_then(Value::as_str).unwrap_or_default();
            tokio::time::sleep(work_time(query)).await;
            match job.as_str() {
                "summarize" => Ok(json!({
                    "summary": format!("Key findings on \"{query}\" from the retrieved sources."),
                    "sentences": 3 + stable_hash(&[query.as_bytes()]) % 4,
                })),
                other => Err(TaskError::new(
                    "UNKNOWN_JOB",
                    format!("research-agent cannot run `{other}`"),
                )),
            }
        })
    }
    fn respond(&self, request: &str, outputs: &[StepOutput]) -> String {
        format!(
            "Research on \"{request}\": {} documents and {} web results reviewed.",
            output_count(outputs, "documents"),
            output_count(outputs, "results"),
        )
    }
}

/// Программист: контекст кода, тесты через шину, запись патча (HIGH).
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeAgent;

impl CodeAgent {
    /// Доля падений задачи `run_tests` (детерминированно по `probe` и `attempt`).
    pub const TEST_FAILURE_RATE: f64 = 0.2;
}

impl Agent for CodeAgent {
    fn id(&self) -> &str {
        "code-agent"
    }
    fn name(&self) -> &str {
        "Code Agent"
    }
    fn description(&self) -> &str {
        "Fixes bugs, writes patches and runs tests."
    }
    fn score(&self, request: &str) -> AgentScore {
        keyword_score(
            request,
            &[
                "code",
                "bug",
                "fix",
                "implement",
                "refactor",
                "test",
                "tests",
                "function",
                "compile",
                "patch",
                "file",
                "config",
                "parser",
                "module",
                "write",
            ],
        )
    }
    fn plan(&self, request: &str) -> Vec<PlanStep> {
        let name = slug(request);
        vec![
            PlanStep::new(
                "read the codebase",
                StepAction::RetrieveContext {
                    query: format!("codebase {request}"),
                },
            ),
            PlanStep::new(
                "run the test suite",
                StepAction::Delegate {
                    job: "run_tests".into(),
                    input: json!({ "suite": name, "probe": probe(request) }),
                },
            ),
            PlanStep::new(
                "write the patch",
                StepAction::CallTool {
                    tool: "file_write".into(),
                    input: json!({
                        "path": format!("src/{name}.rs"),
                        "content": format!("// patch: {request}\n"),
                    }),
                },
            ),
            PlanStep::new("answer", StepAction::Respond),
        ]
    }
    fn run_job(&self, job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
        let job = job.to_owned();
        Box::pin(async move {
            let suite = input
                .get("suite")
                .and_then(Value::as_str)
                .unwrap_or("all")
                .to_owned();
            tokio::time::sleep(work_time(&suite)).await;
            if job != "run_tests" {
                return Err(TaskError::new(
                    "UNKNOWN_JOB",
                    format!("code-agent cannot run `{job}`"),
                ));
            }
            let p = input.get("probe").and_then(Value::as_u64).unwrap_or(0);
            let attempt = attempt_of(&input);
            let u = unit_interval(stable_hash(&[&p.to_le_bytes(), &attempt.to_le_bytes(), b"tests"]));
            if u < Self::TEST_FAILURE_RATE {
                return Err(TaskError::new(
                    "TESTS_FLAKY",
                    format!("suite `{suite}`: 1 flaky test failed (attempt {attempt})"),
                )
                .retryable());
            }
            Ok(json!({ "suite": suite, "passed": 10 + p % 40, "failed": 0 }))
        })
    }
    fn respond(&self, request: &str, outputs: &[StepOutput]) -> String {
        let written = outputs
            .iter()
            .filter_map(|o| o.output.get("path").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        format!("Patched \"{request}\"; wrote {written}; tests pass.")
    }
}

/// Эксплуатация: ранбуки, проверка состояния, выкатки, оповещения.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpsAgent;

impl Agent for OpsAgent {
    fn id(&self) -> &str {
        "ops-agent"
    }
    fn name(&self) -> &str {
        "Ops Agent"
    }
    fn description(&self) -> &str {
        "Checks services, deploys releases and handles incidents."
    }
    fn score(&self, request: &str) -> AgentScore {
        keyword_score(
            request,
            &[
                "deploy",
                "release",
                "rollback",
                "restart",
                "incident",
                "outage",
                "production",
                "staging",
                "status",
                "health",
                "monitor",
                "scale",
                "latency",
                "down",
            ],
        )
    }
    fn plan(&self, request: &str) -> Vec<PlanStep> {
        let ws = words(request);
        let service = service_of(request);
        let mut steps = vec![
            PlanStep::new(
                "read the runbook",
                StepAction::RetrieveContext {
                    query: format!("runbook {service} {request}"),
                },
            ),
            PlanStep::new(
                "check service health",
                StepAction::CallTool {
                    tool: "service_status".into(),
                    input: json!({ "service": service, "probe": probe(request) }),
                },
            ),
        ];
        if ws
            .iter()
            .any(|w| matches!(w.as_str(), "deploy" | "release" | "rollback" | "ship"))
        {
            let env = if ws.iter().any(|w| w == "staging") {
                "staging"
            } else {
                "production"
            };
            let version = format!("v1.{}.{}", probe(request) % 20, probe(request) % 7);
            steps.push(PlanStep::new(
                "deploy",
                StepAction::CallTool {
                    tool: "deploy".into(),
                    input: json!({ "service": service, "environment": env, "version": version }),
                },
            ));
        }
        steps.push(PlanStep::new(
            "notify on-call",
            StepAction::Delegate {
                job: "notify_oncall".into(),
                input: json!({ "service": service }),
            },
        ));
        steps.push(PlanStep::new("answer", StepAction::Respond));
        steps
    }
    fn run_job(&self, job: &str, input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
        let job = job.to_owned();
        Box::pin(async move {
            let service = input
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or("app")
                .to_owned();
            tokio::time::sleep(work_time(&service)).await;
            match job.as_str() {
                "notify_oncall" => Ok(json!({ "notified": format!("oncall-{service}") })),
                other => Err(TaskError::new(
                    "UNKNOWN_JOB",
                    format!("ops-agent cannot run `{other}`"),
                )),
            }
        })
    }
    fn respond(&self, request: &str, outputs: &[StepOutput]) -> String {
        let deployed = outputs
            .iter()
            .filter_map(|o| o.output.get("deployment_id").and_then(Value::as_str))
            .collect::<Vec<_>>();
        if deployed.is_empty() {
            format!("Handled \"{request}\"; service is healthy, on-call notified.")
        } else {
            format!(
                "Handled \"{request}\"; deployment {} rolled out.",
                deployed.join(", ")
            )
        }
    }
}

/// Запасной агент: считает, если в запросе есть арифметика, иначе ищет контекст.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeneralAgent;

impl Agent for GeneralAgent {
    fn id(&self) -> &str {
        "general-agent"
    }
    fn name(&self) -> &str {
        "General Assistant"
    }
    fn description(&self) -> &str {
        "Answers anything the specialised agents do not cover."
    }
    fn score(&self, request: &str) -> AgentScore {
        if extract_expression(request).is_some() {
            AgentScore {
                score: 1.5,
                reason: "request contains arithmetic".into(),
            }
        } else {
            AgentScore {
                score: 0.1,
                reason: "fallback: no specialised agent matched".into(),
            }
        }
    }
    fn plan(&self, request: &str) -> Vec<PlanStep> {
        let first = match extract_expression(request) {
            Some(expr) => PlanStep::new(
                "calculate",
                StepAction::CallTool {
                    tool: "calculator".into(),
                    input: json!({ "expression": expr }),
                },
            ),
            None => PlanStep::new(
                "look up context",
                StepAction::RetrieveContext {
                    query: request.to_owned(),
                },
            ),
        };
        vec![first, PlanStep::new("answer", StepAction::Respond)]
    }
    fn run_job(&self, job: &str, _input: Value) -> BoxFuture<'static, Result<Value, TaskError>> {
        let job = job.to_owned();
        Box::pin(async move {
            Err(TaskError::new(
                "UNKNOWN_JOB",
                format!("general-agent cannot run `{job}`"),
            ))
        })
    }
    fn respond(&self, request: &str, outputs: &[StepOutput]) -> String {
        match outputs.iter().find_map(|o| o.output.get("result")) {
            Some(r) => format!("The answer to \"{request}\" is {r}."),
            None => format!("Here is what I found about \"{request}\"."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(request: &str) -> String {
        let agents = builtin_agents();
        let mut best: Option<(f64, &Arc<dyn Agent>)> = None;
        for a in &agents {
            let s = a.score(request).score;
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, a));
            }
        }
        best.map(|(_, a)| a.id().to_owned()).unwrap_or_default()
    }

    #[test]
    fn keyword_routing_picks_the_expected_agent() {
        assert_eq!(
            best("Research the latest vector database benchmarks"),
            "research-agent"
        );
        assert_eq!(best("Fix the bug in the parser"), "code-agent");
        assert_eq!(best("Deploy payments to production"), "ops-agent");
        assert_eq!(best("What is 12 * (3 + 4)?"), "general-agent");
        assert_eq!(best("hello there"), "general-agent");
    }

    #[test]
    fn plans_are_deterministic_and_use_the_right_tools() {
        let ops = OpsAgent.plan("Deploy payments to production");
        assert_eq!(ops, OpsAgent.plan("Deploy payments to production"));
        let tools: Vec<&str> = ops
            .iter()
            .filter_map(|s| match &s.action {
                StepAction::CallTool { tool, .. } => Some(tool.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(tools, ["service_status", "deploy"]);
        assert!(
            CodeAgent
                .plan("Fix the parser bug")
                .iter()
                .any(|s| matches!(&s.action, StepAction::CallTool { tool, .. } if tool == "file_write"))
        );
        assert_eq!(extract_expression("what is 2 + 2?").as_deref(), Some("2 + 2"));
        assert_eq!(extract_expression("version 1.2 of v3"), None);
    }

    #[test]
    fn a_100k_paren_message_does_not_overflow_the_stack_in_score_or_plan() {
        // Arrange: без предела глубины разбор такого сообщения переполнял стек.
        let flood = format!("What is {}1 + 1{}?", "(".repeat(100_000), ")".repeat(100_000));
        let open_only = format!("What is {}2 * 3", "(".repeat(100_000));
        let deep_but_short = format!("What is {}2 * 3{}?", "(".repeat(1000), ")".repeat(1000));

        for msg in [&flood, &open_only, &deep_but_short] {
            // Act
            let general = GeneralAgent.score(msg);
            let general_plan = GeneralAgent.plan(msg);
            let research_plan = ResearchAgent.plan(msg);

            // Assert: выражения нет — калькулятор не вызывается.
            assert_eq!(extract_expression(msg), None);
            assert_eq!(general.score, 0.1);
            assert!(matches!(
                general_plan[0].action,
                StepAction::RetrieveContext { .. }
            ));
            assert!(
                !research_plan
                    .iter()
                    .any(|s| matches!(&s.action, StepAction::CallTool { tool, .. } if tool == "calculator"))
            );
            // Описание шага в TASK_PLAN_CREATED не тащит весь текст.
            let described = general_plan[0].describe(0);
            assert!(described["query"].as_str().unwrap().len() <= MAX_TEXT_BYTES + '…'.len_utf8());
        }
        // Нормальное выражение рядом с мусором по-прежнему находится.
        let mixed = format!("{} and also 6 * 7", "(".repeat(100_000));
        assert_eq!(extract_expression(&mixed).as_deref(), Some("6 * 7"));
    }
}
