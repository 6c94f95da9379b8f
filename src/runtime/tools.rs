//! Встроенные детерминированные инструменты для демо, тестов и примеров: без
//! сети и без настоящей файловой системы, результаты — функция входа.
//!
//! | инструмент | тип | риск | что делает |
//! |---|---|---|---|
//! | [`WebSearch`] `web_search` | datastore | LOW (MEDIUM, если запрос о секретах) | выдуманные, но стабильные результаты поиска |
//! | [`Calculator`] `calculator` | function | LOW | арифметика `+ - * / ( )` |
//! | [`FileWrite`] `file_write` | function | HIGH (CRITICAL вне рабочего каталога) | пишет файл в память |
//! | [`Deploy`] `deploy` | extension | HIGH (staging) / CRITICAL (production) | «выкатывает» сервис |
//! | [`FlakyService`] `service_status` | extension | LOW | иногда ошибается, паникует или зависает |
//!
//! Используют: демо ([`super::demo`]) и тесты; приложения регистрируют свои
//! инструменты через [`ToolExecutor::register`](super::ToolExecutor::register).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::context::{stable_hash, unit_interval};
use super::tool_executor::{RiskAssessment, RiskLevel, Tool, ToolError, ToolType};

/// Все встроенные инструменты; `flaky` — настроенный [`FlakyService`].
///
/// ```
/// use eventlog::runtime::tools::{FlakyService, builtin_tools};
/// let tools = builtin_tools(FlakyService::default());
/// assert_eq!(tools.len(), 5);
/// ```
pub fn builtin_tools(flaky: FlakyService) -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(WebSearch),
        Arc::new(Calculator),
        Arc::new(FileWrite::default()),
        Arc::new(Deploy),
        Arc::new(flaky),
    ]
}

fn str_field<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

/// Детерминированная «сетевая» задержка 5–40 мс.
fn simulated_latency(seed: &str) -> Duration {
    Duration::from_millis(5 + stable_hash(&[seed.as_bytes()]) % 36)
}

/// Поиск по выдуманному вебу: для одного запроса всегда одни и те же результаты.
///
/// Вход: `{"query": строка, "limit": число (1..=10, по умолчанию 3)}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebSearch;

impl Tool for WebSearch {
    fn name(&self) -> &str {
        "web_search"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Datastore
    }
    fn description(&self) -> &str {
        "Searches a deterministic simulated web index."
    }
    fn assess_risk(&self, input: &Value) -> RiskAssessment {
        let q = str_field(input, "query").unwrap_or_default().to_lowercase();
        let r = RiskAssessment::new(RiskLevel::Low);
        if ["password", "secret", "token", "api key", "credential"]
            .iter()
            .any(|w| q.contains(w))
        {
            r.escalate(RiskLevel::Medium, "query mentions credentials")
        } else {
            r
        }
    }
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async move {
            let Some(query) = str_field(&input, "query").map(str::to_owned) else {
                return Err(ToolError::new("INVALID_INPUT", "`query` must be a string"));
            };
            let limit = input
                .get("limit")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .clamp(1, 10);
            tokio::time::sleep(simulated_latency(&query)).await;
            let results: Vec<Value> = (0..limit)
                .map(|i| {
                    let h = stable_hash(&[query.as_bytes(), &i.to_le_bytes()]);
                    json!({
                        "title": format!("{query} — result {}", i + 1),
                        "url": format!("https://example.org/{:016x}", h),
                        "snippet": format!("Deterministic snippet #{} about {query}.", h % 1000),
                    })
                })
                .collect();
            Ok(json!({ "query": query, "results": results }))
        })
    }
}

/// Калькулятор: `+ - * /`, скобки, унарный минус, десятичные числа.
///
/// Вход: `{"expression": "2 * (3 + 4)"}`; результат `{"expression", "result"}`.
///
/// Разбор рекурсивный, поэтому вход ограничен: не длиннее
/// [`Calculator::MAX_EXPRESSION_LEN`] символов и не глубже
/// [`Calculator::MAX_DEPTH`] вложенных скобок и унарных минусов. Иначе —
/// ошибка `INVALID_EXPRESSION`, а не переполнение стека (выражение приходит из
/// сообщения пользователя).
///
/// ```
/// use eventlog::runtime::tools::Calculator;
/// assert_eq!(Calculator::evaluate("2 * (3 + 4) - 1"), Ok(13.0));
/// assert!(Calculator::evaluate("1 / 0").is_err());
/// let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
/// assert_eq!(Calculator::evaluate(&deep).unwrap_err().code, "INVALID_EXPRESSION");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

impl Calculator {
    /// Наибольшая длина выражения, символов.
    pub const MAX_EXPRESSION_LEN: usize = 4096;
    /// Наибольшая вложенность скобок и унарных минусов.
    pub const MAX_DEPTH: usize = 64;

    /// Вычисляет выражение.
    pub fn evaluate(expr: &str) -> Result<f64, ToolError> {
        // Сначала дешёвая проверка байт, затем точная — символов.
        if expr.len() > Self::MAX_EXPRESSION_LEN && expr.chars().count() > Self::MAX_EXPRESSION_LEN {
            return Err(ToolError::new(
                "INVALID_EXPRESSION",
                format!(
                    "expression is longer than {} characters",
                    Self::MAX_EXPRESSION_LEN
                ),
            ));
        }
        let tokens: Vec<char> = expr.chars().collect();
        let mut p = ExprParser {
            t: &tokens,
            i: 0,
            depth: 0,
        };
        let v = p.expr()?;
        if p.peek().is_some() {
            return Err(ToolError::new(
                "INVALID_EXPRESSION",
                format!("unexpected `{}` at {}", tokens[p.i], p.i),
            ));
        }
        Ok(v)
    }
}

struct ExprParser<'a> {
    t: &'a [char],
    i: usize,
    /// Текущая вложенность (скобки и унарные минусы), не больше
    /// [`Calculator::MAX_DEPTH`].
    depth: usize,
}

impl ExprParser<'_> {
    /// Следующий значимый символ (пробелы пропускаются).
    fn peek(&mut self) -> Option<char> {
        while self.t.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
        self.t.get(self.i).copied()
    }
    fn expr(&mut self) -> Result<f64, ToolError> {
        let mut v = self.term()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.term()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<f64, ToolError> {
        let mut v = self.factor()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.i += 1;
            let r = self.factor()?;
            if op == '/' && r == 0.0 {
                return Err(ToolError::new("DIVISION_BY_ZERO", "division by zero"));
            }
            v = if op == '*' { v * r } else { v / r };
        }
        Ok(v)
    }
    /// Входит на уровень глубже; слишком глубоко — ошибка.
    fn descend(&mut self) -> Result<(), ToolError> {
        self.depth += 1;
        if self.depth > Calculator::MAX_DEPTH {
            return Err(ToolError::new(
                "INVALID_EXPRESSION",
                format!("expression is nested deeper than {}", Calculator::MAX_DEPTH),
            ));
        }
        Ok(())
    }
    fn factor(&mut self) -> Result<f64, ToolError> {
        match self.peek() {
            Some('-') => {
                self.i += 1;
                self.descend()?;
                let v = -self.factor()?;
                self.depth -= 1;
                Ok(v)
            }
            Some('(') => {
                self.i += 1;
                self.descend()?;
                let v = self.expr()?;
                if self.peek() != Some(')') {
                    return Err(ToolError::new("INVALID_EXPRESSION", "missing `)`"));
                }
                self.i += 1;
                self.depth -= 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.i;
                // Внутри числа пробелы не пропускаются: «1 2» — две лексемы.
                while self
                    .t
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    self.i += 1;
                }
                let s: String = self.t[start..self.i].iter().collect();
                s.parse()
                    .map_err(|_| ToolError::new("INVALID_EXPRESSION", format!("bad number `{s}`")))
            }
            Some(c) => Err(ToolError::new(
                "INVALID_EXPRESSION",
                format!("unexpected `{c}` at {}", self.i),
            )),
            None => Err(ToolError::new(
                "INVALID_EXPRESSION",
                "unexpected end of expression",
            )),
        }
    }
}

impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Function
    }
    fn description(&self) -> &str {
        "Evaluates arithmetic expressions."
    }
    fn assess_risk(&self, _input: &Value) -> RiskAssessment {
        RiskAssessment::new(RiskLevel::Low)
    }
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async move {
            let Some(expr) = str_field(&input, "expression") else {
                return Err(ToolError::new("INVALID_INPUT", "`expression` must be a string"));
            };
            let result = Self::evaluate(expr)?;
            Ok(json!({ "expression": expr, "result": result }))
        })
    }
}

/// Запись файла — в памяти, не на диск. Риск HIGH; CRITICAL, если путь
/// выходит за рабочий каталог (абсолютный или с `..`).
///
/// Вход: `{"path": строка, "content": строка}`.
#[derive(Debug, Clone, Default)]
pub struct FileWrite {
    /// Записанные файлы: путь → содержимое. Общий для клонов.
    files: Arc<Mutex<HashMap<String, String>>>,
}

impl FileWrite {
    /// Что сейчас «записано».
    pub fn files(&self) -> HashMap<String, String> {
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Tool for FileWrite {
    fn name(&self) -> &str {
        "file_write"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Function
    }
    fn description(&self) -> &str {
        "Writes a file into the (simulated) workspace."
    }
    fn assess_risk(&self, input: &Value) -> RiskAssessment {
        let path = str_field(input, "path").unwrap_or_default();
        let r = RiskAssessment::new(RiskLevel::High).escalate(RiskLevel::High, "writes to the filesystem");
        if path.starts_with('/') || path.split('/').any(|s| s == "..") {
            r.escalate(RiskLevel::Critical, "path is outside the workspace")
        } else {
            r
        }
    }
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async move {
            let (Some(path), Some(content)) = (str_field(&input, "path"), str_field(&input, "content"))
            else {
                return Err(ToolError::new(
                    "INVALID_INPUT",
                    "`path` and `content` must be strings",
                ));
            };
            self.files
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(path.to_owned(), content.to_owned());
            Ok(json!({ "path": path, "bytes_written": content.len() }))
        })
    }
}

/// «Выкатка» сервиса: HIGH для staging, CRITICAL для production.
///
/// Вход: `{"service", "environment": "staging"|"production", "version"}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deploy;

impl Tool for Deploy {
    fn name(&self) -> &str {
        "deploy"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Extension
    }
    fn description(&self) -> &str {
        "Deploys a service version to an environment (simulated)."
    }
    fn assess_risk(&self, input: &Value) -> RiskAssessment {
        let env = str_field(input, "environment").unwrap_or("production");
        let r = RiskAssessment::new(RiskLevel::High).escalate(RiskLevel::High, "changes a running service");
        if env == "production" {
            r.escalate(RiskLevel::Critical, "production deployment affects live users")
        } else {
            r
        }
    }
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(async move {
            let service = str_field(&input, "service").unwrap_or("app").to_owned();
            let env = str_field(&input, "environment")
                .unwrap_or("production")
                .to_owned();
            let version = str_field(&input, "version").unwrap_or("latest").to_owned();
            tokio::time::sleep(simulated_latency(&service) * 2).await;
            let id = stable_hash(&[service.as_bytes(), env.as_bytes(), version.as_bytes()]);
            Ok(json!({
                "deployment_id": format!("dep-{:08x}", id as u32),
                "service": service,
                "environment": env,
                "version": version,
                "status": "rolled_out",
            }))
        })
    }
}

/// Ненадёжная проверка состояния сервиса (`service_status`): исход —
/// детерминированная функция входа.
///
/// Вход: `{"service": строка, "probe": число, "attempt": число, "simulate": строка}`.
/// Без `simulate` число `u = hash(service, probe, attempt)` ∈ [0, 1) выбирает исход:
/// `u < panic_rate` — паника; далее `failure_rate` — временная ошибка
/// `UPSTREAM_UNAVAILABLE`; далее `hang_rate` — зависание (его прервёт таймаут
/// исполнителя); иначе — успех. `simulate` принудительно задаёт исход:
/// `error`, `panic`, `hang`, `ok` или `error_once` (ошибка только при `attempt` = 0
/// или без него).
///
/// ```
/// use eventlog::runtime::tools::FlakyService;
/// let flaky = FlakyService { failure_rate: 0.5, ..FlakyService::default() };
/// assert_eq!(flaky.failure_rate, 0.5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FlakyService {
    /// Доля временных ошибок (по умолчанию 0.3).
    pub failure_rate: f64,
    /// Доля паник (по умолчанию 0).
    pub panic_rate: f64,
    /// Доля зависаний (по умолчанию 0.05).
    pub hang_rate: f64,
    /// Собственный таймаут инструмента (по умолчанию 2 с).
    pub timeout: Duration,
}

impl Default for FlakyService {
    fn default() -> Self {
        Self {
            failure_rate: 0.3,
            panic_rate: 0.0,
            hang_rate: 0.05,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Исход одного вызова [`FlakyService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakyOutcome {
    /// Успех.
    Ok,
    /// Временная ошибка.
    Error,
    /// Паника.
    Panic,
    /// Зависание.
    Hang,
}

impl FlakyService {
    /// Исход вызова с этим входом (без исполнения).
    pub fn outcome(&self, input: &Value) -> FlakyOutcome {
        let attempt = input.get("attempt").and_then(Value::as_u64).unwrap_or(0);
        match str_field(input, "simulate") {
            Some("error") => return FlakyOutcome::Error,
            Some("panic") => return FlakyOutcome::Panic,
            Some("hang") => return FlakyOutcome::Hang,
            Some("ok") => return FlakyOutcome::Ok,
            Some("error_once") if attempt == 0 => return FlakyOutcome::Error,
            Some("error_once") => return FlakyOutcome::Ok,
            _ => {}
        }
        let service = str_field(input, "service").unwrap_or_default();
        let probe = input.get("probe").and_then(Value::as_u64).unwrap_or(0);
        let u = unit_interval(stable_hash(&[
            service.as_bytes(),
            &probe.to_le_bytes(),
            &attempt.to_le_bytes(),
        ]));
        let mut edge = self.panic_rate;
        if u < edge {
            return FlakyOutcome::Panic;
        }
        edge += self.failure_rate;
        if u < edge {
            return FlakyOutcome::Error;
        }
        edge += self.hang_rate;
        if u < edge {
            return FlakyOutcome::Hang;
        }
        FlakyOutcome::Ok
    }
}

impl Tool for FlakyService {
    fn name(&self) -> &str {
        "service_status"
    }
    fn tool_type(&self) -> ToolType {
        ToolType::Extension
    }
    fn description(&self) -> &str {
        "Checks the health of a service through an unreliable upstream."
    }
    fn assess_risk(&self, _input: &Value) -> RiskAssessment {
        RiskAssessment::new(RiskLevel::Low).escalate(RiskLevel::Low, "calls an unreliable external service")
    }
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
    fn execute(&self, input: Value) -> BoxFuture<'_, Result<Value, ToolError>> {
        let outcome = self.outcome(&input);
        Box::pin(async move {
            let service = str_field(&input, "service").unwrap_or("app").to_owned();
            match outcome {
                FlakyOutcome::Panic => {
                    panic!("simulated crash in service_status while probing `{service}`")
                }
                FlakyOutcome::Error => Err(ToolError::new(
                    "UPSTREAM_UNAVAILABLE",
                    format!("status endpoint of `{service}` answered 503"),
                )
                .retryable()),
                FlakyOutcome::Hang => {
                    // Зависание: ответа нет, пока таймаут исполнителя не прервёт задачу.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Err(ToolError::new("UPSTREAM_HANG", "no answer"))
                }
                FlakyOutcome::Ok => {
                    let latency = simulated_latency(&service);
                    tokio::time::sleep(latency).await;
                    Ok(json!({
                        "service": service,
                        "status": "healthy",
                        "latency_ms": latency.as_millis() as u64,
                    }))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculator_handles_precedence_unary_minus_and_errors() {
        assert_eq!(Calculator::evaluate("1 + 2 * 3"), Ok(7.0));
        assert_eq!(Calculator::evaluate("-(2 + 3) * 2"), Ok(-10.0));
        assert_eq!(Calculator::evaluate("7 / 2"), Ok(3.5));
        assert_eq!(
            Calculator::evaluate("1 / (2 - 2)").unwrap_err().code,
            "DIVISION_BY_ZERO"
        );
        assert_eq!(
            Calculator::evaluate("2 +").unwrap_err().code,
            "INVALID_EXPRESSION"
        );
        assert_eq!(Calculator::evaluate("(1").unwrap_err().code, "INVALID_EXPRESSION");
        assert_eq!(
            Calculator::evaluate("1 2").unwrap_err().code,
            "INVALID_EXPRESSION"
        );
    }

    #[test]
    fn calculator_rejects_deep_nesting_and_long_input_without_overflowing_the_stack() {
        // Arrange: 100 000 скобок без ограничения глубины переполняли стек.
        let flood = format!("{}1 + 1", "(".repeat(100_000));
        let balanced = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
        let minuses = format!("{}1", "-".repeat(3000));
        let at_limit = format!(
            "{}1{}",
            "(".repeat(Calculator::MAX_DEPTH),
            ")".repeat(Calculator::MAX_DEPTH)
        );
        let too_deep = format!(
            "{}1{}",
            "(".repeat(Calculator::MAX_DEPTH + 1),
            ")".repeat(Calculator::MAX_DEPTH + 1)
        );
        let long_flat = vec!["1"; 3000].join("+");

        // Act + Assert
        for expr in [&flood, &balanced, &minuses, &too_deep, &long_flat] {
            let err = Calculator::evaluate(expr).unwrap_err();
            assert_eq!(err.code, "INVALID_EXPRESSION", "{}", err.message);
        }
        assert!(
            Calculator::evaluate(&flood)
                .unwrap_err()
                .message
                .contains("longer than 4096")
        );
        assert!(
            Calculator::evaluate(&too_deep)
                .unwrap_err()
                .message
                .contains("deeper than 64")
        );
        assert_eq!(Calculator::evaluate(&at_limit), Ok(1.0));
        // Глубина считается по вложенности, а не по числу скобок подряд.
        let wide = vec!["(1 + 2)"; 200].join(" + ");
        assert_eq!(Calculator::evaluate(&wide), Ok(600.0));
        assert_eq!(Calculator::evaluate("--2"), Ok(2.0));
    }

    #[tokio::test]
    async fn calculator_tool_returns_invalid_expression_for_a_100k_paren_input() {
        let input = json!({ "expression": format!("{}2", "(".repeat(100_000)) });
        let err = Calculator.execute(input).await.unwrap_err();
        assert_eq!(err.code, "INVALID_EXPRESSION");
        let deep = json!({ "expression": format!("{}2{}", "(".repeat(1000), ")".repeat(1000)) });
        assert_eq!(
            Calculator.execute(deep).await.unwrap_err().code,
            "INVALID_EXPRESSION"
        );
    }

    #[test]
    fn risk_levels_follow_the_table() {
        let fw = FileWrite::default();
        assert_eq!(
            fw.assess_risk(&json!({"path": "src/a.rs"})).level,
            RiskLevel::High
        );
        assert_eq!(
            fw.assess_risk(&json!({"path": "/etc/passwd"})).level,
            RiskLevel::Critical
        );
        assert_eq!(
            fw.assess_risk(&json!({"path": "a/../../b"})).level,
            RiskLevel::Critical
        );
        assert_eq!(
            Deploy.assess_risk(&json!({"environment": "staging"})).level,
            RiskLevel::High
        );
        assert_eq!(
            Deploy.assess_risk(&json!({"environment": "production"})).level,
            RiskLevel::Critical
        );
        assert_eq!(
            WebSearch.assess_risk(&json!({"query": "rust"})).level,
            RiskLevel::Low
        );
        assert_eq!(
            WebSearch.assess_risk(&json!({"query": "leaked API key"})).level,
            RiskLevel::Medium
        );
    }

    #[test]
    fn flaky_outcome_is_deterministic_and_roughly_follows_rates() {
        let f = FlakyService {
            failure_rate: 0.3,
            panic_rate: 0.1,
            hang_rate: 0.1,
            timeout: Duration::from_secs(1),
        };
        let mut counts = HashMap::new();
        for probe in 0..2000u64 {
            let input = json!({"service": "billing", "probe": probe});
            let o = f.outcome(&input);
            assert_eq!(o, f.outcome(&input));
            *counts.entry(format!("{o:?}")).or_insert(0) += 1;
        }
        let share = |k: &str| f64::from(counts.get(k).copied().unwrap_or(0)) / 2000.0;
        assert!((share("Error") - 0.3).abs() < 0.05, "{counts:?}");
        assert!((share("Panic") - 0.1).abs() < 0.03, "{counts:?}");
        assert!((share("Hang") - 0.1).abs() < 0.03, "{counts:?}");
        assert_eq!(f.outcome(&json!({"simulate": "error_once"})), FlakyOutcome::Error);
        assert_eq!(
            f.outcome(&json!({"simulate": "error_once", "attempt": 1})),
            FlakyOutcome::Ok
        );
    }
}
