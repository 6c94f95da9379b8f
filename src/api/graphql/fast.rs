//! Быстрый путь GraphQL для самых частых запросов дашбордов: страница `events` или
//! `sessionEvents` со скалярными полями события, курсорами и `pageInfo`.
//!
//! Общий исполнитель async-graphql на странице из 50 событий вызывает сотни
//! резолверов, переводит каждую нагрузку из `serde_json::Value` в дерево
//! `async_graphql::Value` и обратно. Здесь запрос разбирается один раз в «план»
//! (кэш по тексту запроса), а ответ пишется прямо в байты JSON — тем же
//! конвейером чтения (`api::reads::events_page`: область, фильтр, курсоры).
//!
//! Правило безопасности: быстрый путь берёт запрос, только если уверен, что общий
//! путь ответил бы успехом и ровно этими байтами. Всё необычное — другие поля
//! (`session`), мутации, несколько операций, директивы кроме `@skip`/`@include`,
//! литералы неожиданного вида, переменные не того типа, любая ошибка чтения —
//! возвращает `None`, и запрос идёт общим путём (он и сформулирует ошибку).
//! Тест `tests/api/fast_path.rs` сверяет байты обоих путей на всех формах.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    BaseType, Directive, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
};
use async_graphql::{InputType, Name, Variables};
use async_graphql_value::{ConstValue, Value};
use uuid::Uuid;

use super::types::{EventFilterInput, SortOrder};
use crate::api::ApiContext;
use crate::api::reads::{self, EventsRequest, PageOut};
use crate::model::Event;
use crate::query::{CursorKind, Principal, SortOrder as QuerySortOrder};
use crate::storage::Columns;

/// Сколько разных текстов запросов помнит кэш планов.
const PLAN_CACHE_ENTRIES: u64 = 1_000;
/// Запросы длиннее этого быстрый путь не разбирает (и не кэширует).
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Кэш планов быстрого пути. `None` в кэше — запрос этого текста быстрым путём
/// не обслуживается (не разбирать его заново).
pub struct FastPath {
    plans: moka::sync::Cache<String, Option<Arc<Plan>>>,
    served: AtomicU64,
}

impl Default for FastPath {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").finish_non_exhaustive()
    }
}

impl FastPath {
    /// Пустой кэш планов.
    pub fn new() -> Self {
        Self {
            plans: moka::sync::Cache::new(PLAN_CACHE_ENTRIES),
            served: AtomicU64::new(0),
        }
    }

    /// Сколько запросов обслужено быстрым путём.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Примет ли быстрый путь запрос с этим текстом (при подходящих переменных и
    /// успешном чтении): форма запроса поддерживается.
    pub fn accepts(query: &str, operation_name: Option<&str>) -> bool {
        Plan::build(query, operation_name).is_some()
    }

    /// Пытается ответить на запрос быстрым путём: `Some(тело JSON)` — готовый
    /// успешный ответ, байт в байт как у общего пути; `None` — идти общим путём.
    pub async fn try_execute(
        &self,
        api: &ApiContext,
        principal: &Principal,
        query: &str,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<Vec<u8>> {
        if query.len() > MAX_QUERY_BYTES {
            return None;
        }
        let key = match operation_name {
            Some(op) => format!("{op}\u{0}{query}"),
            None => query.to_owned(),
        };
        let plan = match self.plans.get(&key) {
            Some(p) => p?,
            None => {
                let p = Plan::build(query, operation_name).map(Arc::new);
                self.plans.insert(key, p.clone());
                p?
            }
        };
        let body = plan.execute(api, principal, variables).await?;
        self.served.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::GRAPHQL_FAST_PATH).increment(1);
        Some(body)
    }
}

// ---------------------------------------------------------------- план

/// Тип объекта в выдаче.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obj {
    Query,
    Connection,
    Edge,
    Event,
    PageInfo,
}

impl Obj {
    fn name(self) -> &'static str {
        match self {
            Obj::Query => "Query",
            Obj::Connection => "EventConnection",
            Obj::Edge => "EventEdge",
            Obj::Event => "Event",
            Obj::PageInfo => "PageInfo",
        }
    }
}

/// Поле выдачи (после разбора имени в типе).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Typename,
    /// Корневое поле страницы.
    Page(CursorKind),
    Edges,
    Nodes,
    PageInfo,
    Cursor,
    Node,
    Ev(EvField),
    HasNext,
    HasPrevious,
    StartCursor,
    EndCursor,
}

/// Скалярные поля события по именам GraphQL.
const EVENT_FIELDS: [(&str, EvField); 12] = [
    ("id", EvField::Id),
    ("seq", EvField::Seq),
    ("sessionId", EvField::SessionId),
    ("userId", EvField::UserId),
    ("projectId", EvField::ProjectId),
    ("agentId", EvField::AgentId),
    ("eventType", EvField::EventType),
    ("payload", EvField::Payload),
    ("createdAt", EvField::CreatedAt),
    ("errorCode", EvField::ErrorCode),
    ("toolName", EvField::ToolName),
    ("approvalStatus", EvField::ApprovalStatus),
];

/// Скалярное поле события.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvField {
    Id,
    Seq,
    SessionId,
    UserId,
    ProjectId,
    AgentId,
    EventType,
    Payload,
    CreatedAt,
    ErrorCode,
    ToolName,
    ApprovalStatus,
}

impl FieldKind {
    /// Поле `name` типа `obj` и тип объекта, который оно возвращает (для скаляров `None`).
    fn resolve(obj: Obj, name: &str) -> Option<(FieldKind, Option<Obj>)> {
        use FieldKind as F;
        if name == "__typename" {
            return Some((F::Typename, None));
        }
        Some(match (obj, name) {
            (Obj::Query, "events") => (F::Page(CursorKind::Events), Some(Obj::Connection)),
            (Obj::Query, "sessionEvents") => (F::Page(CursorKind::SessionEvents), Some(Obj::Connection)),
            (Obj::Connection, "edges") => (F::Edges, Some(Obj::Edge)),
            (Obj::Connection, "nodes") => (F::Nodes, Some(Obj::Event)),
            (Obj::Connection, "pageInfo") => (F::PageInfo, Some(Obj::PageInfo)),
            (Obj::Edge, "cursor") => (F::Cursor, None),
            (Obj::Edge, "node") => (F::Node, Some(Obj::Event)),
            (Obj::PageInfo, "hasNextPage") => (F::HasNext, None),
            (Obj::PageInfo, "hasPreviousPage") => (F::HasPrevious, None),
            (Obj::PageInfo, "startCursor") => (F::StartCursor, None),
            (Obj::PageInfo, "endCursor") => (F::EndCursor, None),
            (Obj::Event, n) => {
                // `session` и неизвестные поля — общим путём.
                let (_, f) = EVENT_FIELDS.iter().find(|(name, _)| *name == n)?;
                (F::Ev(*f), None)
            }
            _ => return None,
        })
    }
}

/// Условие `@skip`/`@include`: литерал или переменная `Boolean!`.
#[derive(Debug, Clone)]
enum Cond {
    Skip(BoolSrc),
    Include(BoolSrc),
}

#[derive(Debug, Clone)]
enum BoolSrc {
    Lit(bool),
    Var(Name),
}

/// Элемент набора выборки: поле или группа (раскрытый фрагмент) с условиями.
#[derive(Debug, Clone)]
enum Item {
    Field {
        key: Name,
        kind: FieldKind,
        conds: Vec<Cond>,
        children: Vec<Item>,
    },
    Group {
        conds: Vec<Cond>,
        items: Vec<Item>,
    },
}

/// Источник значения аргумента.
#[derive(Debug, Clone)]
enum Arg {
    Lit(ConstValue),
    Var(Name),
    /// Литерал фильтра с переменными внутри (`filter: {eventTypes: [$t]}`) и типы
    /// позиций этих переменных.
    Tmpl(Value, Vec<(Name, ArgType)>),
}

/// Разобранный запрос страницы.
#[derive(Debug)]
struct Plan {
    /// Корневые элементы (единственное поле страницы и, возможно, `__typename`).
    root: Vec<Item>,
    /// Аргументы корневого поля по именам.
    args: HashMap<String, Arg>,
    /// Значения переменных по умолчанию.
    defaults: HashMap<Name, ConstValue>,
    /// Переменные без значения по умолчанию, обязательные (`!`).
    required: Vec<Name>,
    /// Вид страницы.
    kind: CursorKind,
    /// Число полей под корневым полем (оценка сверху для предела сложности).
    fields_below: usize,
}

/// Ожидаемый тип аргумента или переменной.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgType {
    Uuid,
    Int,
    String,
    Order,
    Filter,
    Boolean,
}

/// Аргументы корневых полей: имя → (тип, обязателен).
fn root_args(kind: CursorKind) -> &'static [(&'static str, ArgType, bool)] {
    match kind {
        CursorKind::SessionEvents => &[
            ("projectId", ArgType::Uuid, true),
            ("sessionId", ArgType::Uuid, true),
            ("first", ArgType::Int, false),
            ("after", ArgType::String, false),
        ],
        _ => &[
            ("projectId", ArgType::Uuid, true),
            ("filter", ArgType::Filter, false),
            ("order", ArgType::Order, false),
            ("first", ArgType::Int, false),
            ("after", ArgType::String, false),
        ],
    }
}

/// Аргументы поля, как их разобрал парсер.
type Arguments = Vec<(Positioned<Name>, Positioned<Value>)>;

/// Состояние построения плана.
struct Builder<'d> {
    doc: &'d ExecutableDocument,
    /// Объявленные переменные: имя → (тип, обязателен, есть ли значение по умолчанию).
    vars: HashMap<Name, (ArgType, bool)>,
    used_vars: Vec<Name>,
    used_fragments: Vec<Name>,
    directives: usize,
    aliases: usize,
    fields: usize,
    root_fields: Vec<(CursorKind, Arguments)>,
}

/// Тип переменной из объявления: только именованные типы без списков.
fn var_type(t: &Type) -> Option<(ArgType, bool)> {
    let BaseType::Named(n) = &t.base else {
        return None;
    };
    let ty = match n.as_str() {
        "UUID" => ArgType::Uuid,
        "Int" => ArgType::Int,
        "String" => ArgType::String,
        "SortOrder" => ArgType::Order,
        "EventFilter" => ArgType::Filter,
        "Boolean" => ArgType::Boolean,
        _ => return None,
    };
    Some((ty, !t.nullable))
}

impl<'d> Builder<'d> {
    /// Переменные внутри литерала фильтра: каждая — в позиции известного поля и
    /// объявлена ровно с типом этой позиции (в обязательную позицию — обязательная).
    /// `None` — такой шаблон общий путь мог бы проверить иначе: туда.
    fn filter_vars(&mut self, v: &Value) -> Option<Vec<(Name, ArgType)>> {
        let Value::Object(map) = v else {
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in map {
            // Тип позиции значения поля: (тип, обязательна ли, список ли).
            let (ty, list) = match k.as_str() {
                "eventTypes" | "agentIds" => (ArgType::String, true),
                "sessionId" => (ArgType::Uuid, false),
                "userId" | "toolName" | "errorCode" | "approvalStatus" => (ArgType::String, false),
                "hasError" => (ArgType::Boolean, false),
                // Остальные поля (время, JSON) — только литералами.
                _ if v.clone().into_const().is_some() => continue,
                _ => return None,
            };
            match (v, list) {
                // Элементы списка — `String!`: только обязательные строковые переменные.
                (Value::List(items), true) => {
                    for item in items {
                        match item {
                            Value::Variable(n) if self.vars.get(n) == Some(&(ty, true)) => {
                                self.used_vars.push(n.clone());
                                out.push((n.clone(), ty));
                            }
                            Value::Variable(_) => return None,
                            lit if lit.clone().into_const().is_some() => {}
                            _ => return None,
                        }
                    }
                }
                (Value::Variable(n), false) => {
                    let (vty, _) = *self.vars.get(n)?;
                    if vty != ty {
                        return None;
                    }
                    self.used_vars.push(n.clone());
                    out.push((n.clone(), ty));
                }
                (lit, _) if lit.clone().into_const().is_some() => {}
                _ => return None,
            }
        }
        Some(out)
    }

    /// Условия директив; `None` — неизвестная директива или неверный аргумент.
    fn conds(&mut self, dirs: &[Positioned<Directive>]) -> Option<Vec<Cond>> {
        let mut out = Vec::with_capacity(dirs.len());
        for d in dirs {
            self.directives += 1;
            let d = &d.node;
            let [(arg_name, value)] = d.arguments.as_slice() else {
                return None;
            };
            if arg_name.node.as_str() != "if" {
                return None;
            }
            let src = match &value.node {
                Value::Boolean(b) => BoolSrc::Lit(*b),
                Value::Variable(v) => {
                    // Позиция `Boolean!`: переменная должна быть объявлена как `Boolean!`.
                    if self.vars.get(v) != Some(&(ArgType::Boolean, true)) {
                        return None;
                    }
                    self.used_vars.push(v.clone());
                    BoolSrc::Var(v.clone())
                }
                _ => return None,
            };
            out.push(match d.name.node.as_str() {
                "skip" => Cond::Skip(src),
                "include" => Cond::Include(src),
                _ => return None,
            });
        }
        Some(out)
    }

    /// Набор выборки типа `obj`; `depth` защищает от циклов фрагментов.
    fn selection(&mut self, set: &SelectionSet, obj: Obj, depth: usize) -> Option<Vec<Item>> {
        if depth > 12 {
            return None;
        }
        let mut items = Vec::with_capacity(set.items.len());
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let (kind, child) = FieldKind::resolve(obj, f.name.node.as_str())?;
                    self.fields += 1;
                    if f.alias.is_some() {
                        self.aliases += 1;
                    }
                    let conds = self.conds(&f.directives)?;
                    if let FieldKind::Page(k) = kind {
                        self.root_fields.push((k, f.arguments.clone()));
                    } else if !f.arguments.is_empty() {
                        return None;
                    }
                    let children = match child {
                        Some(c) => {
                            if f.selection_set.node.items.is_empty() {
                                return None;
                            }
                            self.selection(&f.selection_set.node, c, depth + 1)?
                        }
                        None => {
                            if !f.selection_set.node.items.is_empty() {
                                return None;
                            }
                            Vec::new()
                        }
                    };
                    items.push(Item::Field {
                        key: f.response_key().node.clone(),
                        kind,
                        conds,
                        children,
                    });
                }
                Selection::InlineFragment(fr) => {
                    let fr = &fr.node;
                    if let Some(tc) = &fr.type_condition
                        && tc.node.on.node.as_str() != obj.name()
                    {
                        return None;
                    }
                    let conds = self.conds(&fr.directives)?;
                    let inner = self.selection(&fr.selection_set.node, obj, depth + 1)?;
                    items.push(Item::Group { conds, items: inner });
                }
                Selection::FragmentSpread(sp) => {
                    let sp = &sp.node;
                    let name = &sp.fragment_name.node;
                    let def = &self.doc.fragments.get(name)?.node;
                    if def.type_condition.node.on.node.as_str() != obj.name() || !def.directives.is_empty() {
                        return None;
                    }
                    self.used_fragments.push(name.clone());
                    let conds = self.conds(&sp.directives)?;
                    let inner = self.selection(&def.selection_set.node, obj, depth + 1)?;
                    items.push(Item::Group { conds, items: inner });
                }
            }
        }
        Some(items)
    }
}

/// Корневые `__typename` (по всем ветвям) стоят до поля страницы.
fn typename_before_page(items: &[Item]) -> bool {
    fn walk(items: &[Item], seen_page: &mut bool) -> bool {
        items.iter().all(|it| match it {
            Item::Field { kind, .. } => {
                if matches!(kind, FieldKind::Page(_)) {
                    *seen_page = true;
                    true
                } else {
                    !*seen_page
                }
            }
            Item::Group { items, .. } => walk(items, seen_page),
        })
    }
    walk(items, &mut false)
}

/// Поля одного ключа выдачи должны быть одним и тем же полем (иначе общий путь
/// отвергнет запрос); проверяется по всем ветвям независимо от условий.
fn keys_consistent(items: &[Item]) -> bool {
    fn collect<'a>(items: &'a [Item], out: &mut Vec<(&'a Name, FieldKind, &'a [Item])>) {
        for it in items {
            match it {
                Item::Field {
                    key, kind, children, ..
                } => out.push((key, *kind, children)),
                Item::Group { items, .. } => collect(items, out),
            }
        }
    }
    let mut flat = Vec::new();
    collect(items, &mut flat);
    let mut seen: HashMap<&Name, FieldKind> = HashMap::new();
    let mut by_key: HashMap<&Name, Vec<Item>> = HashMap::new();
    for (key, kind, children) in &flat {
        if let Some(k) = seen.insert(key, *kind)
            && k != *kind
        {
            return false;
        }
        by_key.entry(key).or_default().extend(children.iter().cloned());
    }
    by_key.values().all(|children| keys_consistent(children))
}

impl Plan {
    /// Разбирает запрос; `None` — не форма быстрого пути.
    fn build(query: &str, operation_name: Option<&str>) -> Option<Plan> {
        let doc = async_graphql::parser::parse_query(query).ok()?;
        // Одна операция в документе; имя в запросе (если есть) должно быть её именем.
        let op = match (&doc.operations, operation_name) {
            (DocumentOperations::Single(op), None) => op,
            (DocumentOperations::Multiple(map), want) if map.len() == 1 => {
                let (name, op) = map.iter().next()?;
                if want.is_some_and(|w| w != name.as_str()) {
                    return None;
                }
                op
            }
            _ => return None,
        };
        let op = &op.node;
        if op.ty != OperationType::Query || !op.directives.is_empty() {
            return None;
        }
        let mut b = Builder {
            doc: &doc,
            vars: HashMap::new(),
            used_vars: Vec::new(),
            used_fragments: Vec::new(),
            directives: 0,
            aliases: 0,
            fields: 0,
            root_fields: Vec::new(),
        };
        let mut defaults = HashMap::new();
        let mut required = Vec::new();
        for v in &op.variable_definitions {
            let v = &v.node;
            let name = v.name.node.clone();
            let (ty, non_null) = var_type(&v.var_type.node)?;
            if !v.directives.is_empty() || b.vars.insert(name.clone(), (ty, non_null)).is_some() {
                return None;
            }
            match &v.default_value {
                Some(d) => {
                    // Значение по умолчанию проверяется как литерал своего типа.
                    if !literal_ok(ty, &d.node) {
                        return None;
                    }
                    defaults.insert(name, d.node.clone());
                }
                None if non_null => required.push(name),
                None => {}
            }
        }
        let root = b.selection(&op.selection_set.node, Obj::Query, 0)?;
        // Общий исполнитель кладёт поля объекта в порядке готовности: страница
        // готова после ответа базы (обычно позже `__typename`, но не всегда). Порядок
        // однозначен, только если корневые `__typename` стоят до страницы; ниже
        // корня все поля готовы сразу и идут в порядке выборки.
        if !typename_before_page(&root) {
            return None;
        }
        // Ровно одно корневое поле страницы.
        let [(kind, arguments)] = std::mem::take(&mut b.root_fields).try_into().ok()?;
        let spec = root_args(kind);
        let mut args = HashMap::new();
        for (name, value) in &arguments {
            let (_, ty, arg_required) = spec.iter().find(|(n, _, _)| *n == name.node.as_str())?;
            let arg = match &value.node {
                Value::Variable(v) => {
                    let (vty, non_null) = *b.vars.get(v)?;
                    // Переменная в позиции аргумента: тот же тип; в обязательную позицию —
                    // только обязательная переменная.
                    if vty != *ty || (*arg_required && !non_null) {
                        return None;
                    }
                    b.used_vars.push(v.clone());
                    Arg::Var(v.clone())
                }
                other => match other.clone().into_const() {
                    Some(lit) => {
                        if !literal_ok(*ty, &lit) || (*arg_required && lit == ConstValue::Null) {
                            return None;
                        }
                        Arg::Lit(lit)
                    }
                    // Переменные внутри литерала — только в фильтре.
                    None if *ty == ArgType::Filter => Arg::Tmpl(other.clone(), b.filter_vars(other)?),
                    None => return None,
                },
            };
            if args.insert(name.node.to_string(), arg).is_some() {
                return None;
            }
        }
        if spec.iter().any(|(n, _, req)| *req && !args.contains_key(*n)) {
            return None;
        }
        // Все переменные и фрагменты использованы (иначе общий путь отвергнет запрос).
        if b.vars.keys().any(|v| !b.used_vars.contains(v))
            || doc.fragments.keys().any(|f| !b.used_fragments.contains(f))
        {
            return None;
        }
        if b.directives > 10 || b.aliases > super::limits::MAX_ALIASES || !keys_consistent(&root) {
            return None;
        }
        Some(Plan {
            root,
            args,
            defaults,
            required,
            kind,
            fields_below: b.fields,
        })
    }

    /// Значение аргумента на этот запрос: `None` — аргумент не задан.
    fn arg<'a>(&'a self, name: &str, vars: &'a Variables) -> Option<&'a ConstValue> {
        match self.args.get(name)? {
            Arg::Lit(v) => Some(v),
            Arg::Var(v) => vars.get(v).or_else(|| self.defaults.get(v)),
            // Подставляется отдельно ([`Plan::filter_value`]).
            Arg::Tmpl(..) => None,
        }
    }

    /// Значение фильтра на этот запрос: `Some(None)` — фильтр не задан; `None` —
    /// идти общим путём (переменная шаблона без значения или значение не подходит).
    fn filter_value(&self, vars: &Variables) -> Option<Option<ConstValue>> {
        let Some(Arg::Tmpl(tmpl, _)) = self.args.get("filter") else {
            return Some(self.arg("filter", vars).cloned());
        };
        // Переменная без значения и без значения по умолчанию: что сделает с ней общий
        // путь (ошибка или отсутствие поля) — решает он.
        let value = tmpl
            .clone()
            .into_const_with(|n| vars.get(&n).or_else(|| self.defaults.get(&n)).cloned().ok_or(()))
            .ok()?;
        filter_ok(&value).then_some(Some(value))
    }

    fn bool_of(&self, src: &BoolSrc, vars: &Variables) -> Option<bool> {
        match src {
            BoolSrc::Lit(b) => Some(*b),
            BoolSrc::Var(v) => match vars.get(v).or_else(|| self.defaults.get(v))? {
                ConstValue::Boolean(b) => Some(*b),
                _ => None,
            },
        }
    }

    /// Включён ли элемент при этих переменных.
    fn active(&self, conds: &[Cond], vars: &Variables) -> Option<bool> {
        for c in conds {
            let on = match c {
                Cond::Skip(s) => !self.bool_of(s, vars)?,
                Cond::Include(s) => self.bool_of(s, vars)?,
            };
            if !on {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Поля выдачи набора при этих переменных: по ключам в порядке первого
    /// появления, дети одинаковых ключей объединены (как у исполнителя async-graphql).
    fn collect(&self, items: &[Item], vars: &Variables) -> Option<Vec<Out>> {
        let mut out: Vec<Out> = Vec::new();
        self.collect_into(items, vars, &mut out)?;
        for o in &mut out {
            let pending = std::mem::take(&mut o.pending);
            // Объект, у которого все поля пропущены, общий путь отдаёт как null:
            // `collect` тогда `None`, и запрос уходит общим путём.
            if !pending.is_empty() {
                o.children = self.collect(&pending, vars)?;
            }
        }
        // Пустой корень общий путь тоже отдаёт как null.
        (!out.is_empty()).then_some(out)
    }

    fn collect_into(&self, items: &[Item], vars: &Variables, out: &mut Vec<Out>) -> Option<()> {
        for it in items {
            match it {
                Item::Field {
                    key,
                    kind,
                    conds,
                    children,
                } => {
                    if !self.active(conds, vars)? {
                        continue;
                    }
                    match out.iter_mut().find(|o| o.key == *key) {
                        Some(o) => o.pending.extend(children.iter().cloned()),
                        None => out.push(Out {
                            key: key.clone(),
                            kind: *kind,
                            pending: children.clone(),
                            children: Vec::new(),
                        }),
                    }
                }
                Item::Group { conds, items } => {
                    if self.active(conds, vars)? {
                        self.collect_into(items, vars, out)?;
                    }
                }
            }
        }
        Some(())
    }

    async fn execute(&self, api: &ApiContext, principal: &Principal, vars: &Variables) -> Option<Vec<u8>> {
        if self
            .required
            .iter()
            .any(|v| !matches!(vars.get(v), Some(c) if *c != ConstValue::Null))
        {
            return None;
        }
        // Переменные проверяются строго (строже общего пути): всё, что общий путь
        // мог бы отвергнуть или привести иначе, уходит к нему.
        let refused = |v: &Name, ty: ArgType| vars.get(v).is_some_and(|value| !variable_ok(ty, value));
        for (name, arg) in &self.args {
            let bad = match arg {
                Arg::Var(v) => {
                    let (_, ty, _) = root_args(self.kind).iter().find(|(n, _, _)| n == name)?;
                    refused(v, *ty)
                }
                Arg::Tmpl(_, nested) => nested.iter().any(|(v, ty)| refused(v, *ty)),
                Arg::Lit(_) => false,
            };
            if bad {
                return None;
            }
        }
        let root = self.collect(&self.root, vars)?;
        let project_id: Uuid = parse(self.arg("projectId", vars)?)?;
        let first: Option<i32> = parse_opt(self.arg("first", vars))?;
        let after: Option<String> = parse_opt(self.arg("after", vars))?;
        let rows = i64::from(first.unwrap_or(match self.kind {
            CursorKind::SessionEvents => 500,
            _ => 50,
        }));
        // Предел сложности: оценка сверху, как `limits::page_cost` с числом полей
        // вместо сложности детей; близко к пределу — общим путём.
        let per_rows =
            (rows.clamp(1, reads::MAX_SESSION_PAGE) as usize).div_ceil(super::limits::ROWS_PER_COST_UNIT);
        if 2 + self.fields_below * per_rows > super::MAX_COMPLEXITY {
            return None;
        }
        let req = match self.kind {
            CursorKind::SessionEvents => {
                let session_id: Uuid = parse(self.arg("sessionId", vars)?)?;
                EventsRequest {
                    kind: CursorKind::SessionEvents,
                    project_id,
                    filter: crate::storage::EventRepository::session_filter(session_id),
                    order: QuerySortOrder::OldestFirst,
                    first: rows,
                    offset: 0,
                    after: None,
                    names: ("first", "after"),
                    columns: Columns::ALL,
                }
            }
            _ => {
                let filter: Option<EventFilterInput> = parse_opt(self.filter_value(vars)?.as_ref())?;
                let order: Option<SortOrder> = parse_opt(self.arg("order", vars))?;
                EventsRequest {
                    kind: CursorKind::Events,
                    project_id,
                    filter: filter.map(Into::into).unwrap_or_default(),
                    order: order.unwrap_or(SortOrder::NewestFirst).into(),
                    first: rows,
                    offset: 0,
                    after: None,
                    names: ("first", "after"),
                    columns: Columns::ALL,
                }
            }
        };
        let req = EventsRequest {
            after: after.as_deref(),
            columns: columns_of(&root),
            ..req
        };
        // Любая ошибка — общим путём: он вернёт её в своём виде.
        let page = reads::events_page(api, principal, req).await.ok()?;
        let mut w = Writer::with_capacity(page.items.len() * 700 + 256);
        w.raw(b"{\"data\":");
        w.object(&root, |w, o| match o.kind {
            FieldKind::Typename => w.string(Obj::Query.name()),
            FieldKind::Page(_) => w.connection(&o.children, &page),
            _ => unreachable!("корень содержит только страницу и __typename"),
        });
        w.raw(b"}");
        Some(w.buf)
    }
}

/// Столбцы, нужные полям событий выдачи (после `@skip`/`@include`, как у общего пути).
fn columns_of(root: &[Out]) -> Columns {
    fn walk(outs: &[Out], selected: &mut Vec<EvField>) {
        for o in outs {
            if let FieldKind::Ev(f) = o.kind {
                selected.push(f);
            }
            walk(&o.children, selected);
        }
    }
    let mut selected = Vec::new();
    walk(root, &mut selected);
    Columns::for_graphql_selection(|name| {
        EVENT_FIELDS
            .iter()
            .any(|(n, f)| *n == name && selected.contains(f))
    })
}

/// Поле выдачи с уже собранными детьми.
#[derive(Debug)]
struct Out {
    key: Name,
    kind: FieldKind,
    /// Элементы детей до сборки.
    pending: Vec<Item>,
    children: Vec<Out>,
}

fn parse<T: InputType>(v: &ConstValue) -> Option<T> {
    T::parse(Some(v.clone())).ok()
}

/// Необязательный аргумент: не задан → `Some(None)`; ошибка разбора → `None`.
fn parse_opt<T: InputType>(v: Option<&ConstValue>) -> Option<Option<T>> {
    match v {
        None | Some(ConstValue::Null) => Some(None),
        Some(v) => T::parse(Some(v.clone())).ok().map(Some),
    }
}

/// Литерал в тексте запроса подходит типу (строго: как его примет проверка
/// общего пути; всё сомнительное — нет).
fn literal_ok(ty: ArgType, v: &ConstValue) -> bool {
    match (ty, v) {
        (_, ConstValue::Null) => true,
        (ArgType::Uuid, ConstValue::String(s)) => Uuid::parse_str(s).is_ok(),
        (ArgType::String, ConstValue::String(_)) => true,
        (ArgType::Int, ConstValue::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        (ArgType::Boolean, ConstValue::Boolean(_)) => true,
        (ArgType::Order, ConstValue::Enum(e)) => matches!(e.as_str(), "NEWEST_FIRST" | "OLDEST_FIRST"),
        (ArgType::Filter, ConstValue::Object(_)) => filter_ok(v),
        _ => false,
    }
}

/// Значение переменной подходит типу. Переменные приходят из JSON, поэтому
/// значение перечисления — строка.
fn variable_ok(ty: ArgType, v: &ConstValue) -> bool {
    match (ty, v) {
        (ArgType::Order, ConstValue::String(s)) => matches!(s.as_str(), "NEWEST_FIRST" | "OLDEST_FIRST"),
        (ArgType::Order, _) => *v == ConstValue::Null,
        _ => literal_ok(ty, v),
    }
}

/// Фильтр: объект только с известными полями нужных видов (списки — списками
/// строк, без приведения одиночного значения к списку).
fn filter_ok(v: &ConstValue) -> bool {
    let ConstValue::Object(map) = v else {
        return false;
    };
    let string = |v: &ConstValue| matches!(v, ConstValue::String(_) | ConstValue::Null);
    map.iter().all(|(k, v)| match k.as_str() {
        "eventTypes" | "agentIds" => match v {
            ConstValue::Null => true,
            ConstValue::List(items) => items.iter().all(|i| matches!(i, ConstValue::String(_))),
            _ => false,
        },
        "sessionId" => match v {
            ConstValue::Null => true,
            ConstValue::String(s) => Uuid::parse_str(s).is_ok(),
            _ => false,
        },
        "userId" | "toolName" | "errorCode" | "approvalStatus" => string(v),
        "hasError" => matches!(v, ConstValue::Boolean(_) | ConstValue::Null),
        "from" | "to" => match v {
            ConstValue::Null => true,
            ConstValue::String(_) => {
                <Option<chrono::DateTime<chrono::Utc>> as InputType>::parse(Some(v.clone())).is_ok()
            }
            _ => false,
        },
        // JSON: любое значение; проверку «объект» делает общий конвейер чтения.
        "payloadContains" => true,
        _ => false,
    })
}

// ---------------------------------------------------------------- запись ответа

/// Запись JSON ответа прямо в байты: строки и нагрузки — через serde_json (то же
/// экранирование, что у общего пути), время — `to_rfc3339` (как скаляр DateTime
/// async-graphql).
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn string(&mut self, s: &str) {
        // Запись в Vec<u8> не отказывает.
        let _ = serde_json::to_writer(&mut self.buf, s);
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.raw(b"null"),
        }
    }

    fn uuid(&mut self, u: &Uuid) {
        let mut tmp = Uuid::encode_buffer();
        self.raw(b"\"");
        self.raw(u.hyphenated().encode_lower(&mut tmp).as_bytes());
        self.raw(b"\"");
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }

    /// Объект из полей `fields`; значение каждого пишет `value`.
    fn object(&mut self, fields: &[Out], mut value: impl FnMut(&mut Self, &Out)) {
        self.raw(b"{");
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.string(f.key.as_str());
            self.raw(b":");
            value(self, f);
        }
        self.raw(b"}");
    }

    fn connection(&mut self, fields: &[Out], page: &PageOut<Event>) {
        self.object(fields, |w, f| match f.kind {
            FieldKind::Typename => w.string(Obj::Connection.name()),
            FieldKind::Edges => {
                w.raw(b"[");
                for (i, (cursor, e)) in page.items.iter().enumerate() {
                    if i > 0 {
                        w.raw(b",");
                    }
                    w.object(&f.children, |w, g| match g.kind {
                        FieldKind::Typename => w.string(Obj::Edge.name()),
                        FieldKind::Cursor => w.string(cursor),
                        FieldKind::Node => w.event(&g.children, e),
                        _ => unreachable!("поля ребра проверены при разборе"),
                    });
                }
                w.raw(b"]");
            }
            FieldKind::Nodes => {
                w.raw(b"[");
                for (i, (_, e)) in page.items.iter().enumerate() {
                    if i > 0 {
                        w.raw(b",");
                    }
                    w.event(&f.children, e);
                }
                w.raw(b"]");
            }
            FieldKind::PageInfo => w.object(&f.children, |w, g| match g.kind {
                FieldKind::Typename => w.string(Obj::PageInfo.name()),
                FieldKind::HasNext => w.bool(page.has_next),
                FieldKind::HasPrevious => w.bool(page.has_previous),
                FieldKind::StartCursor => w.opt_string(page.items.first().map(|(c, _)| c.as_str())),
                FieldKind::EndCursor => w.opt_string(page.items.last().map(|(c, _)| c.as_str())),
                _ => unreachable!("поля pageInfo проверены при разборе"),
            }),
            _ => unreachable!("поля соединения проверены при разборе"),
        });
    }

    fn event(&mut self, fields: &[Out], e: &Event) {
        self.object(fields, |w, f| match f.kind {
            FieldKind::Typename => w.string(Obj::Event.name()),
            FieldKind::Ev(field) => match field {
                EvField::Id => w.uuid(&e.id),
                EvField::Seq => {
                    use std::io::Write as _;
                    let _ = write!(w.buf, "\"{}\"", e.seq);
                }
                EvField::SessionId => w.uuid(&e.session_id),
                EvField::UserId => w.string(&e.user_id),
                EvField::ProjectId => w.uuid(&e.project_id),
                EvField::AgentId => w.opt_string(e.agent_id.as_deref()),
                EvField::EventType => w.string(&e.event_type),
                EvField::Payload => {
                    let _ = serde_json::to_writer(&mut w.buf, &e.payload);
                }
                EvField::CreatedAt => w.string(&e.created_at.to_rfc3339()),
                EvField::ErrorCode => w.opt_string(e.error_code.as_deref()),
                EvField::ToolName => w.opt_string(e.tool_name.as_deref()),
                EvField::ApprovalStatus => w.opt_string(e.approval_status.as_deref()),
            },
            _ => unreachable!("поля события проверены при разборе"),
        });
    }
}
