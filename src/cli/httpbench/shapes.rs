//! Формы запросов `http-reads` и выбор параметров: пара «пользователь, проект»
//! по числу строк, роль (в основном `user`, часть `admin`), свой JWT на
//! пользователя и роль, цепочки страниц по курсору глубиной 0..=5.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::Duration;
use clap::ValueEnum;
use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::{Value, json};

use eventlog::auth::JwtKeys;
use eventlog::model::EventType;
use eventlog::query::Role;

use super::dataset::World;

/// Форма запроса.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `events(first: 50)`, сначала новые, все поля события (без `session`).
    Page,
    /// То же с `filter: {eventTypes: [один тип]}`.
    PageType,
    /// Та же страница, только `id` (цена выборки полей).
    PageIds,
    /// `sessionEvents(first: 100)` случайной сессии пользователя.
    SessionEvents,
    /// `sessions(first: 50)`, все поля сводки.
    Sessions,
    /// `analytics` за 7 дней по часам, все поля.
    #[value(name = "analytics-7d")]
    #[serde(rename = "analytics-7d")]
    Analytics7d,
    /// `analytics` за 30 дней по часам, все поля.
    #[value(name = "analytics-30d")]
    #[serde(rename = "analytics-30d")]
    Analytics30d,
}

impl Shape {
    /// Все формы по порядку.
    pub const ALL: [Shape; 7] = [
        Shape::Page,
        Shape::PageType,
        Shape::PageIds,
        Shape::SessionEvents,
        Shape::Sessions,
        Shape::Analytics7d,
        Shape::Analytics30d,
    ];

    /// Имя, как в `--shapes`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Page => "page",
            Shape::PageType => "page-type",
            Shape::PageIds => "page-ids",
            Shape::SessionEvents => "session-events",
            Shape::Sessions => "sessions",
            Shape::Analytics7d => "analytics-7d",
            Shape::Analytics30d => "analytics-30d",
        }
    }

    /// Поле ответа со страницей (у аналитики страниц нет).
    fn connection(self) -> Option<&'static str> {
        match self {
            Shape::Page | Shape::PageType | Shape::PageIds => Some("events"),
            Shape::SessionEvents => Some("sessionEvents"),
            Shape::Sessions => Some("sessions"),
            Shape::Analytics7d | Shape::Analytics30d => None,
        }
    }

    /// Текст запроса GraphQL.
    pub fn query(self) -> String {
        const EVENT: &str = "id seq sessionId userId projectId agentId eventType payload \
                             createdAt errorCode toolName approvalStatus";
        const PAGE_INFO: &str = "pageInfo { hasNextPage endCursor }";
        match self {
            Shape::Page => format!(
                "query($p: UUID!, $after: String) {{ events(projectId: $p, first: 50, after: $after) \
                 {{ edges {{ cursor node {{ {EVENT} }} }} {PAGE_INFO} }} }}"
            ),
            Shape::PageType => format!(
                "query($p: UUID!, $t: String!, $after: String) {{ events(projectId: $p, \
                 filter: {{eventTypes: [$t]}}, first: 50, after: $after) \
                 {{ edges {{ cursor node {{ {EVENT} }} }} {PAGE_INFO} }} }}"
            ),
            Shape::PageIds => format!(
                "query($p: UUID!, $after: String) {{ events(projectId: $p, first: 50, after: $after) \
                 {{ edges {{ node {{ id }} }} {PAGE_INFO} }} }}"
            ),
            Shape::SessionEvents => format!(
                "query($p: UUID!, $s: UUID!, $after: String) {{ sessionEvents(projectId: $p, \
                 sessionId: $s, first: 100, after: $after) \
                 {{ edges {{ cursor node {{ {EVENT} }} }} {PAGE_INFO} }} }}"
            ),
            Shape::Sessions => format!(
                "query($p: UUID!, $after: String) {{ sessions(projectId: $p, first: 50, after: $after) \
                 {{ edges {{ cursor node {{ sessionId userId firstEventAt lastEventAt events \
                 errors agentIds }} }} {PAGE_INFO} }} }}"
            ),
            Shape::Analytics7d | Shape::Analytics30d => {
                "query($p: UUID!, $from: DateTime!, $to: DateTime!) { \
                 analytics(projectId: $p, filter: {from: $from, to: $to}, bucket: HOUR) { \
                 totalEvents sessions eventTypeCounts { eventType count } \
                 agentInteractions { agentId events sessions toolCalls errors lastSeenAt } \
                 errorStats { totalErrors errorRate byCode { errorCode count } \
                 byTool { toolName calls errors } } timeline { bucketStart events errors } \
                 approvals { required approved rejected timedOut } \
                 modelUsage { model calls inputTokens outputTokens errors } } }"
                    .to_owned()
            }
        }
    }
}

/// Один запрос (и, может быть, его продолжение по курсору).
#[derive(Debug, Clone)]
pub struct Request {
    /// Форма.
    pub shape: Shape,
    /// JWT вызывающего.
    pub token: Arc<str>,
    /// Переменные без `after`.
    pub vars: Value,
    /// Курсор продолжения.
    pub after: Option<String>,
    /// Сколько ещё страниц пройти по курсору после этой.
    pub depth_left: u8,
}

impl Request {
    /// Тело POST /graphql.
    pub fn body(&self) -> Value {
        let mut vars = self.vars.clone();
        if let Some(a) = &self.after {
            vars["after"] = json!(a);
        }
        json!({"query": self.shape.query(), "variables": vars})
    }

    /// Проверяет ответ: без ошибок GraphQL и с данными; для страниц — следующий
    /// запрос цепочки, если она не кончилась.
    pub fn follow(&self, response: &Value) -> Result<Option<Request>> {
        if let Some(errors) = response.get("errors") {
            bail!("{}: GraphQL errors: {errors}", self.shape.name());
        }
        let data = response
            .get("data")
            .filter(|d| !d.is_null())
            .with_context(|| format!("{}: no data in {response}", self.shape.name()))?;
        let Some(field) = self.shape.connection() else {
            anyhow::ensure!(
                data["analytics"]["totalEvents"].is_number(),
                "{}: no analytics in {data}",
                self.shape.name()
            );
            return Ok(None);
        };
        let page = &data[field];
        anyhow::ensure!(
            page["edges"].is_array(),
            "{}: no edges in {data}",
            self.shape.name()
        );
        if self.depth_left == 0 || page["pageInfo"]["hasNextPage"] != json!(true) {
            return Ok(None);
        }
        let cursor = page["pageInfo"]["endCursor"]
            .as_str()
            .with_context(|| format!("{}: hasNextPage without endCursor", self.shape.name()))?;
        Ok(Some(Request {
            after: Some(cursor.to_owned()),
            depth_left: self.depth_left - 1,
            ..self.clone()
        }))
    }
}

/// Выбор параметров запросов по набору данных.
pub struct Picker {
    world: Arc<World>,
    pairs: WeightedIndex<u64>,
    /// Токены по парам: `user` и `admin` пользователя пары.
    tokens: Vec<[Arc<str>; 2]>,
    admin_share: f64,
}

/// Секрет JWT сервера прогона.
pub const SECRET: &str = "eventlog-loadgen-http-reads-secret";

impl Picker {
    /// Выбор по набору `world`; доля запросов администратора — `admin_share`.
    pub fn new(world: Arc<World>, admin_share: f64) -> Result<Self> {
        let keys = JwtKeys::new(SECRET.as_bytes());
        let ttl = Duration::hours(24);
        let mut tokens = Vec::with_capacity(world.pairs.len());
        for p in &world.pairs {
            let user = keys.mint(&p.user, Role::User, None, ttl)?;
            let admin = keys.mint(&p.user, Role::Admin, Some(world.projects.clone()), ttl)?;
            tokens.push([user.into(), admin.into()]);
        }
        let pairs =
            WeightedIndex::new(world.pairs.iter().map(|p| p.rows)).context("the data set has no rows")?;
        Ok(Self {
            world,
            pairs,
            tokens,
            admin_share,
        })
    }

    /// Новый запрос формы `shape`: пара по числу строк, роль, глубина цепочки.
    pub fn pick(&self, shape: Shape, rng: &mut StdRng) -> Request {
        let k = self.pairs.sample(rng);
        let pair = &self.world.pairs[k];
        let admin = rng.random_bool(self.admin_share);
        let token = self.tokens[k][usize::from(admin)].clone();
        let now = self.world.spec.now;
        let vars = match shape {
            Shape::Page | Shape::PageIds | Shape::Sessions => json!({"p": pair.project}),
            Shape::PageType => {
                let t = EventType::ALL[rng.random_range(0..EventType::ALL.len())];
                json!({"p": pair.project, "t": t.as_str()})
            }
            Shape::SessionEvents => {
                let s = pair.sessions[rng.random_range(0..pair.sessions.len())];
                json!({"p": pair.project, "s": s})
            }
            Shape::Analytics7d | Shape::Analytics30d => {
                // Конец окна — случайная миллисекунда последнего часа набора: точный
                // кэш аналитики (ключ — весь фильтр) не отвечает вместо базы.
                let to = now - Duration::milliseconds(rng.random_range(0..3_600_000));
                let days = if shape == Shape::Analytics7d { 7 } else { 30 };
                json!({"p": pair.project, "from": to - Duration::days(days), "to": to})
            }
        };
        let depth_left = if shape.connection().is_some() {
            rng.random_range(0..=5)
        } else {
            0
        };
        Request {
            shape,
            token,
            vars,
            after: None,
            depth_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::httpbench::dataset::{Pair, Spec};
    use rand::SeedableRng;
    use uuid::Uuid;

    fn world() -> Arc<World> {
        let p = Uuid::new_v4();
        let pair = |user: &str, rows| Pair {
            project: p,
            user: user.into(),
            rows,
            sessions: vec![Uuid::new_v4()],
        };
        Arc::new(World {
            spec: Spec {
                events: 1010,
                seed: 1,
                now: "2026-01-01T00:00:00Z".parse().unwrap(),
            },
            projects: vec![p],
            pairs: vec![pair("big", 1000), pair("small", 10)],
        })
    }

    #[test]
    fn pairs_are_picked_by_rows_and_roles_by_share() {
        let picker = Picker::new(world(), 0.1).unwrap();
        let keys = JwtKeys::new(SECRET.as_bytes());
        let mut rng = StdRng::seed_from_u64(3);
        let (mut big, mut admin) = (0, 0);
        for _ in 0..10_000 {
            let r = picker.pick(Shape::Page, &mut rng);
            let who = keys.verify(&r.token).unwrap().principal;
            big += usize::from(who.sub == "big");
            admin += usize::from(who.role == Role::Admin);
            assert!(r.depth_left <= 5);
        }
        assert!((9800..=9950).contains(&big), "big pair picked {big} of 10000");
        assert!((850..=1150).contains(&admin), "admin {admin} of 10000");
    }

    #[test]
    fn follows_cursor_until_depth_or_last_page() {
        let picker = Picker::new(world(), 0.0).unwrap();
        let mut r = picker.pick(Shape::Sessions, &mut StdRng::seed_from_u64(1));
        r.depth_left = 1;
        let page = |next: bool| json!({"data": {"sessions": {"edges": [], "pageInfo": {"hasNextPage": next, "endCursor": "c1"}}}});
        let next = r.follow(&page(true)).unwrap().unwrap();
        assert_eq!(next.after.as_deref(), Some("c1"));
        assert_eq!(next.body()["variables"]["after"], "c1");
        assert!(next.follow(&page(true)).unwrap().is_none(), "depth exhausted");
        assert!(r.follow(&page(false)).unwrap().is_none(), "last page");
        assert!(
            r.follow(&json!({"data": null, "errors": [{"message": "x"}]}))
                .is_err()
        );
    }

    #[test]
    fn analytics_window_ends_in_the_last_hour() {
        let picker = Picker::new(world(), 0.0).unwrap();
        let now = world().spec.now;
        let mut rng = StdRng::seed_from_u64(5);
        for shape in [Shape::Analytics7d, Shape::Analytics30d] {
            let r = picker.pick(shape, &mut rng);
            let to: chrono::DateTime<chrono::Utc> = serde_json::from_value(r.vars["to"].clone()).unwrap();
            let from: chrono::DateTime<chrono::Utc> = serde_json::from_value(r.vars["from"].clone()).unwrap();
            assert!(to <= now && to > now - Duration::hours(1));
            let days = if shape == Shape::Analytics7d { 7 } else { 30 };
            assert_eq!(to - from, Duration::days(days));
            assert_eq!(r.depth_left, 0);
        }
    }
}
