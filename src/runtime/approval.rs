//! [`ApprovalManager`]: согласование рискованных действий человеком.
//!
//! Владеет ожидающими согласованиями: одна фоновая задача держит
//! `HashMap<ApprovalId, oneshot::Sender<Decision>>` (вместе с таймерами), а
//! дескриптор [`ApprovalManager`] лишь шлёт ей команды. Поэтому решение,
//! предупреждение и истечение одного согласования никогда не гоняются друг с
//! другом: всё происходит по очереди в одной задаче.
//!
//! События (SPEC §3):
//! - `APPROVAL_REQUIRED` — при [`ApprovalManager::request`]: `tool_name`,
//!   `approval_status=PENDING`, `agent_id` (если он есть в запросе); нагрузка
//!   `approval_id`, `expires_at`, `risk_level`, `reason` (+ `tool_name`,
//!   `tool_call_id`, `agent_id`, `expires_in_ms`).
//! - `APPROVAL_RESOLVED` — при [`ApprovalManager::resolve`]: `APPROVED`/`REJECTED`,
//!   `tool_name`; `approval_id`, `resolved_by`, `comment`, `wait_ms`.
//! - `APPROVAL_TIMEOUT_WARNING` — ровно за [`WARNING_BEFORE_EXPIRY`] (30 с) до
//!   истечения: `PENDING`, `tool_name`; `approval_id`, `expires_at`, `seconds_left`.
//! - `APPROVAL_TIMEOUT` — при истечении: `TIMEOUT`, `tool_name`; `approval_id`,
//!   `waited_ms`.
//!
//! Строки от людей и инструментов в нагрузке усечены: `reason` и `comment` — до
//! 8 КиБ, `resolved_by` — до 256 байт.
//!
//! # Таймеры
//!
//! Все сроки считаются по часам tokio (`tokio::time::Instant`), поэтому тесты
//! управляют ими через `tokio::time::pause()`/`advance()` без реального ожидания.
//! Стеночное время (`expires_at`) вычисляется один раз при запросе.
//!
//! Предупреждение ставится, только если срок **строго больше** 30 с. При сроке
//! ≤ 30 с согласование уже в момент запроса находится в «последних 30 секундах»:
//! отдельного предупреждения нет, о сроке говорит `expires_at` в
//! `APPROVAL_REQUIRED`, затем приходит `APPROVAL_RESOLVED` или `APPROVAL_TIMEOUT`.
//! Решение, пришедшее в тот же тик, что и срок, проигрывает сроку: срок включителен.
//! Таймер tokio срабатывает с точностью до миллисекунды (округляя вверх), поэтому
//! перед каждой командой задача сама обрабатывает наступившие сроки: команда,
//! пришедшая в момент срока или позже, всегда видит его уже обработанным.
//! Ключи таймеров хранятся в записи согласования, и решение снимает его таймеры:
//! память не растёт с числом решённых согласований.
//!
//! Вызывают: [`ToolExecutor`](super::ToolExecutor) (запросы перед рискованными
//! инструментами) и люди/автоматы, принимающие решения (`resolve`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use uuid::Uuid;

use super::context::{MAX_ERROR_TEXT_BYTES, MAX_NAME_BYTES, Publisher, SessionContext, clip, millis};
use super::tool_executor::RiskLevel;
use crate::model::{ApprovalStatus, EventType};

/// За сколько до истечения испускается `APPROVAL_TIMEOUT_WARNING` (SPEC §3).
pub const WARNING_BEFORE_EXPIRY: Duration = Duration::from_secs(30);

/// Срок согласования по умолчанию.
pub const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(300);

/// Наибольший срок: более длинные сроки урезаются до него (30 дней).
pub const MAX_APPROVAL_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Идентификатор согласования (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApprovalId(pub Uuid);

impl ApprovalId {
    /// Новый идентификатор.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ApprovalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ApprovalId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Ошибка менеджера согласований.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApprovalError {
    /// Такого согласования не было (или оно вытеснено из истории, см.
    /// [`ApprovalConfig::history_limit`]).
    #[error("approval {0} is unknown")]
    UnknownId(ApprovalId),
    /// Согласование уже решено; `status` — принятое решение.
    #[error("approval {id} is already resolved as {}", status.as_str())]
    AlreadyResolved {
        /// Согласование.
        id: ApprovalId,
        /// Решение (`APPROVED` или `REJECTED`).
        status: ApprovalStatus,
    },
    /// Срок согласования истёк; решение больше не принимается.
    #[error("approval {id} has expired")]
    Expired {
        /// Согласование.
        id: ApprovalId,
    },
    /// Фоновая задача менеджера остановлена.
    #[error("approval manager is stopped")]
    Closed,
}

/// Настройки [`ApprovalManager`].
#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    /// Срок, если запрос не задал свой (по умолчанию 5 минут).
    pub default_expiry: Duration,
    /// Сколько завершённых согласований помнить, чтобы отличать «уже решено» и
    /// «истекло» от «неизвестно» (по умолчанию 10 000; старейшие вытесняются).
    pub history_limit: usize,
    /// Ёмкость очереди команд задачи (по умолчанию 1024).
    pub command_capacity: usize,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            default_expiry: DEFAULT_APPROVAL_EXPIRY,
            history_limit: 10_000,
            command_capacity: 1024,
        }
    }
}

/// Что нужно согласовать.
///
/// ```
/// use std::time::Duration;
/// use eventlog::runtime::{ApprovalRequest, RiskLevel};
///
/// let req = ApprovalRequest::new("deploy", RiskLevel::Critical, "production deployment")
///     .agent("ops-agent")
///     .tool_call("call_1")
///     .expires_in(Duration::from_secs(35));
/// assert_eq!(req.expires_in, Some(Duration::from_secs(35)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// Инструмент, которому нужно разрешение.
    pub tool_name: String,
    /// Уровень риска.
    pub risk_level: RiskLevel,
    /// Почему нужно согласование (для человека).
    pub reason: String,
    /// Агент, запросивший инструмент.
    pub agent_id: Option<String>,
    /// Вызов инструмента (`tool_call_id`, как в OpenTelemetry GenAI).
    pub tool_call_id: Option<String>,
    /// Срок; `None` — [`ApprovalConfig::default_expiry`]; не больше
    /// [`MAX_APPROVAL_EXPIRY`].
    pub expires_in: Option<Duration>,
}

impl ApprovalRequest {
    /// Запрос без агента, вызова и собственного срока.
    pub fn new(tool_name: impl Into<String>, risk_level: RiskLevel, reason: impl Into<String>) -> Self {
        Self {
            tool_name: tool_name.into(),
            risk_level,
            reason: reason.into(),
            agent_id: None,
            tool_call_id: None,
            expires_in: None,
        }
    }

    /// Задаёт агента.
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Задаёт вызов инструмента.
    pub fn tool_call(mut self, tool_call_id: impl Into<String>) -> Self {
        self.tool_call_id = Some(tool_call_id.into());
        self
    }

    /// Задаёт срок.
    pub fn expires_in(mut self, expiry: Duration) -> Self {
        self.expires_in = Some(expiry);
        self
    }
}

/// Решение по согласованию.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Одобрено.
    Approved {
        /// Кто решил.
        resolved_by: String,
        /// Комментарий.
        comment: Option<String>,
    },
    /// Отклонено.
    Rejected {
        /// Кто решил.
        resolved_by: String,
        /// Комментарий.
        comment: Option<String>,
    },
    /// Срок истёк без решения.
    TimedOut,
}

impl Decision {
    /// Статус для колонки `approval_status`.
    pub fn status(&self) -> ApprovalStatus {
        match self {
            Self::Approved { .. } => ApprovalStatus::Approved,
            Self::Rejected { .. } => ApprovalStatus::Rejected,
            Self::TimedOut => ApprovalStatus::Timeout,
        }
    }

    /// Одобрено ли.
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approved { .. })
    }
}

/// Ожидающее согласование, выданное [`ApprovalManager::request`].
#[derive(Debug)]
pub struct PendingApproval {
    /// Идентификатор (его передают в [`ApprovalManager::resolve`]).
    pub id: ApprovalId,
    /// Когда истекает (стеночное время).
    pub expires_at: DateTime<Utc>,
    /// Срок от момента запроса.
    pub expires_in: Duration,
    /// Конец канала решения; отправитель — в задаче менеджера. Если ожидающий
    /// бросит `PendingApproval`, согласование остаётся открытым до решения или срока.
    rx: oneshot::Receiver<Decision>,
}

impl PendingApproval {
    /// Ждёт решения: одобрения, отклонения или истечения срока.
    pub async fn decision(self) -> Result<Decision, ApprovalError> {
        self.rx.await.map_err(|_| ApprovalError::Closed)
    }
}

/// Сведения об открытом согласовании (для панелей и автоматических решателей).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalInfo {
    /// Идентификатор.
    pub id: ApprovalId,
    /// Сессия.
    pub session: SessionContext,
    /// Инструмент.
    pub tool_name: String,
    /// Риск.
    pub risk_level: RiskLevel,
    /// Причина.
    pub reason: String,
    /// Агент.
    pub agent_id: Option<String>,
    /// Вызов инструмента.
    pub tool_call_id: Option<String>,
    /// Когда истекает.
    pub expires_at: DateTime<Utc>,
    /// Срок от момента запроса.
    pub expires_in: Duration,
}

/// Дешёвый `Clone`-дескриптор менеджера согласований.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventlog::logger::LoggerConfig;
/// use eventlog::runtime::{ApprovalConfig, ApprovalManager, ApprovalRequest, RiskLevel, SessionContext};
/// use eventlog::storage::Store;
/// use eventlog::StreamManager;
/// use uuid::Uuid;
///
/// let store = Store::connect("sqlite::memory:", Default::default()).await?;
/// store.migrate_up().await?;
/// let stream = StreamManager::start(store, LoggerConfig::default(), 1024);
/// let approvals = ApprovalManager::start(stream.clone(), ApprovalConfig::default());
///
/// let ctx = SessionContext::new_session("alice", Uuid::now_v7());
/// let pending = approvals
///     .request(&ctx, ApprovalRequest::new("file_write", RiskLevel::High, "writes a file"))
///     .await?;
/// let id = pending.id;
/// approvals.resolve(id, true, "bob", Some("looks fine".into())).await?;
/// assert!(pending.decision().await?.is_approved());
/// // Повторное решение — понятная ошибка.
/// assert!(approvals.resolve(id, false, "bob", None).await.is_err());
/// stream.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApprovalManager {
    /// Очередь команд; получатель — у задачи [`ManagerTask`]. Когда все
    /// дескрипторы брошены, задача дорабатывает открытые согласования (их сроки)
    /// и завершается.
    tx: mpsc::Sender<Command>,
}

impl fmt::Debug for ApprovalManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalManager")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

type Reply<T> = oneshot::Sender<Result<T, ApprovalError>>;

enum Command {
    Request {
        ctx: SessionContext,
        req: ApprovalRequest,
        reply: Reply<PendingApproval>,
    },
    Resolve {
        id: ApprovalId,
        approved: bool,
        resolved_by: String,
        comment: Option<String>,
        reply: Reply<Decision>,
    },
    Pending {
        reply: Reply<Vec<ApprovalInfo>>,
    },
    /// Сколько таймеров держит задача (для тестов утечки таймеров).
    #[cfg(test)]
    TimerCount {
        reply: Reply<usize>,
    },
}

impl ApprovalManager {
    /// Запускает задачу менеджера на текущем рантайме tokio.
    pub fn start(publisher: impl Into<Publisher>, config: ApprovalConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
        let task = ManagerTask {
            rx,
            publisher: publisher.into(),
            config,
            pending: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            history: HashMap::new(),
            history_order: VecDeque::new(),
        };
        tokio::spawn(task.run());
        Self { tx }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApprovalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ApprovalError::Closed)?;
        rx.await.map_err(|_| ApprovalError::Closed)?
    }

    /// Открывает согласование и испускает `APPROVAL_REQUIRED` (до возврата).
    /// Решение ждут через [`PendingApproval::decision`].
    pub async fn request(
        &self,
        ctx: &SessionContext,
        req: ApprovalRequest,
    ) -> Result<PendingApproval, ApprovalError> {
        let ctx = ctx.clone();
        self.call(|reply| Command::Request { ctx, req, reply }).await
    }

    /// Решает согласование и испускает `APPROVAL_RESOLVED`; ожидающий получает
    /// решение. Ошибки: [`ApprovalError::AlreadyResolved`] (повторное решение),
    /// [`ApprovalError::Expired`] (после срока), [`ApprovalError::UnknownId`].
    pub async fn resolve(
        &self,
        id: ApprovalId,
        approved: bool,
        resolved_by: impl Into<String>,
        comment: Option<String>,
    ) -> Result<Decision, ApprovalError> {
        let resolved_by = resolved_by.into();
        self.call(|reply| Command::Resolve {
            id,
            approved,
            resolved_by,
            comment,
            reply,
        })
        .await
    }

    /// Открытые согласования, по возрастанию срока.
    pub async fn pending(&self) -> Result<Vec<ApprovalInfo>, ApprovalError> {
        self.call(|reply| Command::Pending { reply }).await
    }

    /// Сколько таймеров (предупреждений и сроков) держит задача менеджера.
    #[cfg(test)]
    pub(crate) async fn timer_count(&self) -> Result<usize, ApprovalError> {
        self.call(|reply| Command::TimerCount { reply }).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Warning,
    Expiry,
}

struct Pending {
    info: ApprovalInfo,
    /// Отправитель решения; получатель — в [`PendingApproval`] у ожидающего.
    /// Бросить его (без отправки) — значит сообщить ожидающему `Closed`.
    decision: oneshot::Sender<Decision>,
    requested_at: Instant,
    deadline: Instant,
    /// Ключи таймеров этого согласования в [`ManagerTask::timers`]; решение их
    /// снимает.
    timer_keys: Vec<TimerKey>,
}

/// Ключ таймера: срок и порядковый номер (различает одинаковые моменты).
type TimerKey = (Instant, u64);

/// Задача, владеющая всеми открытыми согласованиями и их таймерами.
struct ManagerTask {
    /// Получатель команд; отправители — в дескрипторах [`ApprovalManager`].
    rx: mpsc::Receiver<Command>,
    publisher: Publisher,
    config: ApprovalConfig,
    pending: HashMap<ApprovalId, Pending>,
    /// Таймеры по сроку; второй элемент ключа различает одинаковые моменты.
    /// Таймеры решённого или истёкшего согласования снимаются вместе с ним.
    timers: BTreeMap<TimerKey, (ApprovalId, TimerKind)>,
    timer_seq: u64,
    /// Итоги завершённых согласований (ограниченная история).
    history: HashMap<ApprovalId, ApprovalStatus>,
    history_order: VecDeque<ApprovalId>,
}

impl ManagerTask {
    async fn run(mut self) {
        let mut accepting = true;
        loop {
            if !accepting && self.pending.is_empty() {
                break;
            }
            let next = self.timers.first_key_value().map(|((at, _), _)| *at);
            tokio::select! {
                biased;
                // Сроки раньше команд: решение в тот же тик, что и срок, опаздывает.
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.fire_due_timers();
                }
                // Команда от дескриптора; `None` — все дескрипторы брошены.
                cmd = self.rx.recv(), if accepting => match cmd {
                    Some(cmd) => {
                        // Таймер tokio округляет срок вверх до миллисекунды, так
                        // что наступивший срок мог ещё не разбудить задачу: он всё
                        // равно обрабатывается раньше команды.
                        self.fire_due_timers();
                        self.handle(cmd);
                    }
                    None => accepting = false,
                },
            }
        }
        tracing::debug!("Approval manager stopped.");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Request { ctx, req, reply } => {
                let pending = self.open(ctx, req);
                let _ = reply.send(Ok(pending));
            }
            Command::Resolve {
                id,
                approved,
                resolved_by,
                comment,
                reply,
            } => {
                let result = self.resolve(id, approved, resolved_by, comment);
                let _ = reply.send(result);
            }
            Command::Pending { reply } => {
                let mut list: Vec<_> = self.pending.values().collect();
                list.sort_by_key(|p| (p.deadline, p.info.id));
                let _ = reply.send(Ok(list.into_iter().map(|p| p.info.clone()).collect()));
            }
            #[cfg(test)]
            Command::TimerCount { reply } => {
                let _ = reply.send(Ok(self.timers.len()));
            }
        }
    }

    fn add_timer(&mut self, at: Instant, id: ApprovalId, kind: TimerKind) -> TimerKey {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, (id, kind));
        key
    }

    /// Снимает оставшиеся таймеры завершённого согласования.
    fn cancel_timers(&mut self, keys: &[TimerKey]) {
        for key in keys {
            self.timers.remove(key);
        }
    }

    fn open(&mut self, ctx: SessionContext, req: ApprovalRequest) -> PendingApproval {
        let id = ApprovalId::new();
        let expires_in = req
            .expires_in
            .unwrap_or(self.config.default_expiry)
            .min(MAX_APPROVAL_EXPIRY);
        let now = Instant::now();
        let deadline = now + expires_in;
        let expires_at = chrono::Duration::from_std(expires_in)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let (tx, rx) = oneshot::channel();

        let mut event = ctx
            .event(EventType::ApprovalRequired)
            .tool(req.tool_name.clone())
            .approval(ApprovalStatus::Pending)
            .payload(json!({
                "approval_id": id.to_string(),
                "expires_at": rfc3339(expires_at),
                "risk_level": req.risk_level.as_str(),
                "reason": clip(&req.reason, MAX_ERROR_TEXT_BYTES),
                "tool_name": req.tool_name,
                "tool_call_id": req.tool_call_id,
                "agent_id": req.agent_id,
                "expires_in_ms": millis(expires_in),
            }));
        if let Some(agent_id) = &req.agent_id {
            event = event.agent(agent_id.as_str());
        }
        self.publisher.publish(event);
        tracing::debug!(%id, tool_name = %req.tool_name, expires_in_ms = millis(expires_in), "Approval requested.");

        let mut timer_keys = Vec::with_capacity(2);
        if expires_in > WARNING_BEFORE_EXPIRY {
            timer_keys.push(self.add_timer(deadline - WARNING_BEFORE_EXPIRY, id, TimerKind::Warning));
        }
        timer_keys.push(self.add_timer(deadline, id, TimerKind::Expiry));

        let info = ApprovalInfo {
            id,
            session: ctx,
            tool_name: req.tool_name,
            risk_level: req.risk_level,
            reason: req.reason,
            agent_id: req.agent_id,
            tool_call_id: req.tool_call_id,
            expires_at,
            expires_in,
        };
        self.pending.insert(
            id,
            Pending {
                info,
                decision: tx,
                requested_at: now,
                deadline,
                timer_keys,
            },
        );
        PendingApproval {
            id,
            expires_at,
            expires_in,
            rx,
        }
    }

    fn resolve(
        &mut self,
        id: ApprovalId,
        approved: bool,
        resolved_by: String,
        comment: Option<String>,
    ) -> Result<Decision, ApprovalError> {
        let Some(p) = self.pending.remove(&id) else {
            return Err(match self.history.get(&id) {
                Some(ApprovalStatus::Timeout) => ApprovalError::Expired { id },
                Some(status) => ApprovalError::AlreadyResolved { id, status: *status },
                None => ApprovalError::UnknownId(id),
            });
        };
        self.cancel_timers(&p.timer_keys);
        let decision = if approved {
            Decision::Approved {
                resolved_by: resolved_by.clone(),
                comment: comment.clone(),
            }
        } else {
            Decision::Rejected {
                resolved_by: resolved_by.clone(),
                comment: comment.clone(),
            }
        };
        let wait_ms = millis(Instant::now().saturating_duration_since(p.requested_at));
        let event = p
            .info
            .session
            .event(EventType::ApprovalResolved)
            .tool(p.info.tool_name.as_str())
            .approval(decision.status())
            .payload(json!({
                "approval_id": id.to_string(),
                "resolved_by": clip(&resolved_by, MAX_NAME_BYTES),
                "comment": comment.as_deref().map(|c| clip(c, MAX_ERROR_TEXT_BYTES)),
                "wait_ms": wait_ms,
                "tool_name": p.info.tool_name,
                "tool_call_id": p.info.tool_call_id,
            }));
        self.publisher.publish(event);
        tracing::debug!(%id, approved, wait_ms, "Approval resolved.");
        self.remember(id, decision.status());
        // Ожидающий мог уйти (вызов отменён) — решение всё равно записано.
        let _ = p.decision.send(decision.clone());
        Ok(decision)
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (id, kind) = entry.remove();
            match kind {
                TimerKind::Warning => self.warn(id, now),
                TimerKind::Expiry => self.expire(id, now),
            }
        }
    }

    fn warn(&mut self, id: ApprovalId, now: Instant) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let seconds_left = p.deadline.saturating_duration_since(now).as_secs_f64().round() as u64;
        let event = p
            .info
            .session
            .event(EventType::ApprovalTimeoutWarning)
            .tool(p.info.tool_name.as_str())
            .approval(ApprovalStatus::Pending)
            .payload(json!({
                "approval_id": id.to_string(),
                "expires_at": rfc3339(p.info.expires_at),
                "seconds_left": seconds_left,
                "tool_name": p.info.tool_name,
                "tool_call_id": p.info.tool_call_id,
            }));
        self.publisher.publish(event);
        tracing::debug!(%id, seconds_left, "Approval expires soon.");
    }

    fn expire(&mut self, id: ApprovalId, now: Instant) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        // Сработавший таймер уже снят; снимаем остальные (если были).
        self.cancel_timers(&p.timer_keys);
        let waited_ms = millis(now.saturating_duration_since(p.requested_at));
        let event = p
            .info
            .session
            .event(EventType::ApprovalTimeout)
            .tool(p.info.tool_name.as_str())
            .approval(ApprovalStatus::Timeout)
            .payload(json!({
                "approval_id": id.to_string(),
                "waited_ms": waited_ms,
                "expires_at": rfc3339(p.info.expires_at),
                "tool_name": p.info.tool_name,
                "tool_call_id": p.info.tool_call_id,
            }));
        self.publisher.publish(event);
        tracing::debug!(%id, waited_ms, tool_name = %p.info.tool_name, "Approval timed out.");
        self.remember(id, ApprovalStatus::Timeout);
        let _ = p.decision.send(Decision::TimedOut);
    }

    fn remember(&mut self, id: ApprovalId, status: ApprovalStatus) {
        self.history.insert(id, status);
        self.history_order.push_back(id);
        while self.history_order.len() > self.config.history_limit {
            if let Some(old) = self.history_order.pop_front() {
                self.history.remove(&old);
            }
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamManager;
    use crate::model::Event;
    use crate::runtime::testkit::{drain_session, has_keys, memory_stream, session, types};

    async fn setup() -> (StreamManager, ApprovalManager, SessionContext) {
        let stream = memory_stream().await;
        let manager = ApprovalManager::start(stream.clone(), ApprovalConfig::default());
        (stream, manager, session())
    }

    fn deploy(expiry: Duration) -> ApprovalRequest {
        ApprovalRequest::new("deploy", RiskLevel::Critical, "production deployment")
            .agent("ops-agent")
            .tool_call("call_1")
            .expires_in(expiry)
    }

    fn u64_of(e: &Event, key: &str) -> u64 {
        e.payload[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {:?}", e.payload))
    }

    #[tokio::test]
    async fn warning_fires_exactly_30s_before_expiry_then_timeout_refuses_the_waiter() {
        // Arrange
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let start = Instant::now();

        // Act
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        let id = pending.id;
        let decision = pending.decision().await.unwrap();
        let waited = start.elapsed();
        let late = manager.resolve(id, true, "bob", None).await;
        tokio::time::resume();
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(decision, Decision::TimedOut);
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_millis(60_010),
            "{waited:?}"
        );
        assert_eq!(late, Err(ApprovalError::Expired { id }));
        assert_eq!(
            types(&events),
            [
                "APPROVAL_REQUIRED",
                "APPROVAL_TIMEOUT_WARNING",
                "APPROVAL_TIMEOUT"
            ]
        );
        let (req, warn, timeout) = (&events[0], &events[1], &events[2]);
        assert_eq!(req.tool_name.as_deref(), Some("deploy"));
        assert_eq!(req.agent_id.as_deref(), Some("ops-agent"));
        assert_eq!(req.approval_status.as_deref(), Some("PENDING"));
        assert_eq!(warn.tool_name.as_deref(), Some("deploy"));
        assert_eq!(timeout.tool_name.as_deref(), Some("deploy"));
        assert_eq!(req.error_code, None);
        has_keys(req, &["approval_id", "expires_at", "risk_level", "reason"]);
        assert_eq!(req.payload["approval_id"], id.to_string());
        assert_eq!(req.payload["risk_level"], "CRITICAL");
        assert_eq!(req.payload["reason"], "production deployment");
        assert_eq!(warn.approval_status.as_deref(), Some("PENDING"));
        has_keys(warn, &["approval_id", "expires_at", "seconds_left"]);
        assert_eq!(u64_of(warn, "seconds_left"), 30);
        assert_eq!(warn.payload["expires_at"], req.payload["expires_at"]);
        assert_eq!(timeout.approval_status.as_deref(), Some("TIMEOUT"));
        has_keys(timeout, &["approval_id", "waited_ms"]);
        assert!((60_000..60_010).contains(&u64_of(timeout, "waited_ms")));
        for e in &events {
            assert_eq!(e.payload["approval_id"], id.to_string());
            assert_eq!(e.session_id, ctx.session_id);
            assert_eq!(e.user_id, "alice");
        }
    }

    #[tokio::test]
    async fn resolving_after_the_warning_reports_wait_and_cancels_the_expiry() {
        // Arrange
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        let id = pending.id;

        // Act
        tokio::time::sleep(Duration::from_secs(35)).await;
        let resolved = manager
            .resolve(id, true, "bob", Some("ship it".into()))
            .await
            .unwrap();
        let decision = pending.decision().await.unwrap();
        // Срок прошёл бы здесь — но согласование уже решено.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let twice = manager.resolve(id, false, "carol", None).await;
        tokio::time::resume();
        let events = drain_session(&stream, &ctx).await;

        // Assert
        assert_eq!(resolved, decision);
        assert_eq!(
            decision,
            Decision::Approved {
                resolved_by: "bob".into(),
                comment: Some("ship it".into())
            }
        );
        assert_eq!(
            twice,
            Err(ApprovalError::AlreadyResolved {
                id,
                status: ApprovalStatus::Approved
            })
        );
        assert_eq!(
            types(&events),
            [
                "APPROVAL_REQUIRED",
                "APPROVAL_TIMEOUT_WARNING",
                "APPROVAL_RESOLVED"
            ]
        );
        let res = &events[2];
        assert_eq!(res.approval_status.as_deref(), Some("APPROVED"));
        assert_eq!(res.tool_name.as_deref(), Some("deploy"));
        has_keys(res, &["approval_id", "resolved_by", "comment", "wait_ms"]);
        assert_eq!(res.payload["resolved_by"], "bob");
        assert_eq!(res.payload["comment"], "ship it");
        assert!((35_000..35_010).contains(&u64_of(res, "wait_ms")));
    }

    #[tokio::test]
    async fn rejection_before_the_warning_emits_no_warning() {
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        manager.resolve(pending.id, false, "bob", None).await.unwrap();
        assert!(matches!(pending.decision().await, Ok(Decision::Rejected { .. })));
        tokio::time::sleep(Duration::from_secs(120)).await;
        tokio::time::resume();
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["APPROVAL_REQUIRED", "APPROVAL_RESOLVED"]);
        assert_eq!(events[1].approval_status.as_deref(), Some("REJECTED"));
        assert_eq!(events[1].payload["comment"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn expiries_of_30s_or_less_time_out_without_a_warning() {
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let thirty = manager
            .request(&ctx, deploy(Duration::from_secs(30)))
            .await
            .unwrap();
        let ten = manager
            .request(&ctx, deploy(Duration::from_secs(10)))
            .await
            .unwrap();
        let (ten_id, thirty_id) = (ten.id, thirty.id);
        assert_eq!(ten.decision().await.unwrap(), Decision::TimedOut);
        assert_eq!(thirty.decision().await.unwrap(), Decision::TimedOut);
        tokio::time::resume();
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(
            types(&events),
            [
                "APPROVAL_REQUIRED",
                "APPROVAL_REQUIRED",
                "APPROVAL_TIMEOUT",
                "APPROVAL_TIMEOUT"
            ]
        );
        assert_eq!(events[2].payload["approval_id"], ten_id.to_string());
        assert_eq!(events[3].payload["approval_id"], thirty_id.to_string());
    }

    #[tokio::test]
    async fn unknown_ids_are_clear_errors_and_pending_lists_open_approvals() {
        let (stream, manager, ctx) = setup().await;
        let unknown = ApprovalId::new();
        assert_eq!(
            manager.resolve(unknown, true, "bob", None).await,
            Err(ApprovalError::UnknownId(unknown))
        );
        let a = manager
            .request(&ctx, deploy(Duration::from_secs(600)))
            .await
            .unwrap();
        let b = manager
            .request(&ctx, deploy(Duration::from_secs(300)).tool_call("call_2"))
            .await
            .unwrap();
        let open = manager.pending().await.unwrap();
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [b.id, a.id]);
        assert_eq!(open[0].tool_call_id.as_deref(), Some("call_2"));
        assert_eq!(open[0].session, ctx);
        manager.resolve(a.id, false, "bob", None).await.unwrap();
        assert_eq!(manager.pending().await.unwrap().len(), 1);
        assert_eq!(
            ApprovalError::UnknownId(unknown).to_string(),
            format!("approval {unknown} is unknown")
        );
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn history_limit_forgets_the_oldest_outcomes() {
        let stream = memory_stream().await;
        let manager = ApprovalManager::start(
            stream.clone(),
            ApprovalConfig {
                history_limit: 1,
                ..ApprovalConfig::default()
            },
        );
        let ctx = session();
        let a = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        let b = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        manager.resolve(a.id, true, "bob", None).await.unwrap();
        manager.resolve(b.id, true, "bob", None).await.unwrap();
        assert_eq!(
            manager.resolve(a.id, true, "bob", None).await,
            Err(ApprovalError::UnknownId(a.id))
        );
        assert!(matches!(
            manager.resolve(b.id, true, "bob", None).await,
            Err(ApprovalError::AlreadyResolved { .. })
        ));
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn waiters_outlive_dropped_handles_until_expiry() {
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(5)))
            .await
            .unwrap();
        drop(manager);
        assert_eq!(pending.decision().await.unwrap(), Decision::TimedOut);
        tokio::time::resume();
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["APPROVAL_REQUIRED", "APPROVAL_TIMEOUT"]);
    }

    #[tokio::test]
    async fn the_warning_fires_at_expiry_minus_30s_and_not_a_millisecond_earlier() {
        // Arrange: счётчики публикатора видны сразу, без чтения базы.
        let stream = memory_stream().await;
        let publisher = Publisher::new(stream.clone());
        let manager = ApprovalManager::start(publisher.clone(), ApprovalConfig::default());
        let ctx = session();
        let warnings = || publisher.stats().count(EventType::ApprovalTimeoutWarning);
        tokio::time::pause();
        let start = Instant::now();
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(Instant::now(), start, "the clock must not move while requesting");
        let warn_at = start + Duration::from_secs(60) - WARNING_BEFORE_EXPIRY;

        // Act 1: за 1 мс до момента предупреждения. Круг через задачу менеджера
        // (`pending`) гарантирует, что наступившие таймеры уже обработаны: сроки
        // идут раньше команд.
        tokio::time::advance(warn_at - Duration::from_millis(1) - Instant::now()).await;
        manager.pending().await.unwrap();

        // Assert 1
        assert_eq!(Instant::now(), warn_at - Duration::from_millis(1));
        assert_eq!(warnings(), 0, "no warning before expiry - 30 s");

        // Act 2: ровно expiry − 30 с.
        tokio::time::advance(Duration::from_millis(1)).await;
        manager.pending().await.unwrap();

        // Assert 2
        assert_eq!(Instant::now(), warn_at);
        assert_eq!(warnings(), 1, "exactly one warning at expiry - 30 s");
        tokio::time::advance(Duration::from_secs(29)).await;
        manager.pending().await.unwrap();
        assert_eq!(warnings(), 1, "the warning is not repeated");
        manager.resolve(pending.id, true, "bob", None).await.unwrap();
        tokio::time::resume();
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn resolved_approvals_leave_no_timers_behind() {
        // Arrange
        let (stream, manager, ctx) = setup().await;
        let n = 200;
        let mut ids = Vec::new();
        for _ in 0..n {
            let p = manager
                .request(&ctx, deploy(Duration::from_secs(3600)))
                .await
                .unwrap();
            ids.push(p.id);
        }
        let short = manager
            .request(&ctx, deploy(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(manager.timer_count().await.unwrap(), 2 * n + 1);

        // Act
        for (i, id) in ids.iter().enumerate() {
            manager.resolve(*id, i % 2 == 0, "bob", None).await.unwrap();
        }
        let after_resolve = manager.timer_count().await.unwrap();
        manager.resolve(short.id, false, "bob", None).await.unwrap();

        // Assert: таймер остался только у ещё открытого, затем — ни одного.
        assert_eq!(after_resolve, 1);
        assert_eq!(manager.timer_count().await.unwrap(), 0);
        assert!(manager.pending().await.unwrap().is_empty());
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn expiry_removes_the_remaining_timers_of_the_approval() {
        let (stream, manager, ctx) = setup().await;
        tokio::time::pause();
        let pending = manager
            .request(&ctx, deploy(Duration::from_secs(45)))
            .await
            .unwrap();
        assert_eq!(manager.timer_count().await.unwrap(), 2);
        assert_eq!(pending.decision().await.unwrap(), Decision::TimedOut);
        assert_eq!(manager.timer_count().await.unwrap(), 0);
        tokio::time::resume();
        stream.shutdown().await;
    }

    #[tokio::test]
    async fn long_human_comments_and_reasons_are_truncated_in_payloads() {
        let (stream, manager, ctx) = setup().await;
        let req = ApprovalRequest::new("deploy", RiskLevel::Critical, "r".repeat(100_000));
        let pending = manager.request(&ctx, req).await.unwrap();
        manager
            .resolve(pending.id, false, "b".repeat(10_000), Some("c".repeat(200_000)))
            .await
            .unwrap();
        let events = drain_session(&stream, &ctx).await;
        assert_eq!(types(&events), ["APPROVAL_REQUIRED", "APPROVAL_RESOLVED"]);
        assert_eq!(events[0].agent_id, None, "no agent in the request");
        let reason = events[0].payload["reason"].as_str().unwrap();
        assert!(reason.len() <= MAX_ERROR_TEXT_BYTES + 3 && reason.ends_with('…'));
        let comment = events[1].payload["comment"].as_str().unwrap();
        assert!(comment.len() <= MAX_ERROR_TEXT_BYTES + 3 && comment.ends_with('…'));
        assert!(events[1].payload["resolved_by"].as_str().unwrap().len() <= MAX_NAME_BYTES + 3);
        assert_eq!(events[1].tool_name.as_deref(), Some("deploy"));
    }
}
