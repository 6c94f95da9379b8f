//! Память о трассах: сессия каждой трассы и разговора и узлы трассы (родитель,
//! агент) для поиска объемлющего агента и смен агентов.
//!
//! Почему так. Экспортёры шлют спаны по завершении, дети раньше родителей, и
//! часто разными запросами: спаны инструментов (без `gen_ai.conversation.id`)
//! уходят раньше спана `invoke_agent`, у которого он есть. Держать ответ на
//! запрос детей до прихода родителя нельзя: Python-экспортёр шлёт пакеты по одному
//! и ждал бы сам себя, а подтверждать незаписанное — нарушить «ответ после
//! фиксации». Поэтому сессия трассы решается при первом её появлении и дальше не
//! меняется (все спаны трассы — в одной сессии):
//! - есть идентификатор разговора (`gen_ai.conversation.id`, затем `session.id`) у
//!   любого спана трассы в этом запросе → сессия разговора;
//! - иначе → сессия, выведенная из трассы; разговор, который придёт позже с этой
//!   трассой, принимает её сессию (и следующие трассы разговора попадают туда же).
//!
//! Граница: таблицы ограничены ([`SessionMemory::new`], [`MAX_NODES_TOTAL`]),
//! старейшие записи вытесняются; память у каждого экземпляра своя и не переживает перезапуск. Трасса,
//! забытая между запросами, получает сессию заново по тем же правилам.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ids;

/// Ключ трассы: трассы разных арендаторов не смешиваются.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceKey {
    /// Проект.
    pub project_id: Uuid,
    /// Пользователь.
    pub user_id: String,
    /// Идентификатор трассы (16 байт).
    pub trace_id: Vec<u8>,
}

/// Узел трассы: что нужно знать о спане, чтобы найти объемлющего агента.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Спан.
    pub span_id: Vec<u8>,
    /// Родитель (пусто у корня).
    pub parent_id: Vec<u8>,
    /// Спан агента (`invoke_agent` / `invoke_workflow`).
    pub is_agent: bool,
    /// Агент спана (свой атрибут или имя агента у спана агента).
    pub agent: Option<String>,
    /// Начало спана.
    pub start: DateTime<Utc>,
    /// Агент, которому передаёт управление инструмент `transfer_to_<агент>`.
    pub handoff_to: Option<String>,
}

/// Что известно о трассе после учёта запроса.
#[derive(Debug, Clone, Default)]
pub struct TraceView {
    /// Сессия трассы.
    pub session_id: Uuid,
    /// Известные узлы трассы по id спана (этот запрос и прежние).
    pub nodes: HashMap<Vec<u8>, Node>,
}

impl TraceView {
    /// Ближайший спан-агент среди предков `span_id` (сам спан не считается).
    pub fn enclosing_agent(&self, span_id: &[u8]) -> Option<&Node> {
        let mut cur = self.nodes.get(span_id)?;
        // Ограничение шагов защищает от циклов в присланных родителях.
        for _ in 0..MAX_NODES_PER_TRACE {
            let parent = self.nodes.get(&cur.parent_id)?;
            if parent.is_agent && parent.agent.is_some() {
                return Some(parent);
            }
            cur = parent;
        }
        None
    }
}

/// Наибольшее число узлов, которое помнится на трассу.
pub const MAX_NODES_PER_TRACE: usize = 4096;
/// Наибольшее число узлов во всей памяти (порядка 100 байт на узел): сверх него
/// вытесняются старейшие трассы.
pub const MAX_NODES_TOTAL: usize = 500_000;

#[derive(Debug)]
struct TraceEntry {
    session_id: Uuid,
    nodes: HashMap<Vec<u8>, Node>,
}

/// Ограниченная память трасс и разговоров (вытеснение старейших).
#[derive(Debug)]
pub struct SessionMemory {
    capacity: usize,
    traces: HashMap<TraceKey, TraceEntry>,
    trace_order: VecDeque<TraceKey>,
    conversations: HashMap<(Uuid, String, String), Uuid>,
    conversation_order: VecDeque<(Uuid, String, String)>,
    /// Узлов во всех трассах.
    total_nodes: usize,
}

impl SessionMemory {
    /// Память не более чем на `capacity` трасс и `capacity` разговоров.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            traces: HashMap::new(),
            trace_order: VecDeque::new(),
            conversations: HashMap::new(),
            conversation_order: VecDeque::new(),
            total_nodes: 0,
        }
    }

    /// Учитывает спаны трассы из запроса: решает (или берёт решённую) сессию и
    /// добавляет узлы. `conversation` — идентификатор разговора, если он есть у
    /// какого-нибудь спана трассы в запросе.
    pub fn observe(&mut self, key: &TraceKey, conversation: Option<&str>, nodes: Vec<Node>) -> TraceView {
        let conv_key = conversation.map(|c| (key.project_id, key.user_id.clone(), c.to_owned()));
        if !self.traces.contains_key(key) {
            let session_id = match &conv_key {
                Some(ck) => match self.conversations.get(ck) {
                    Some(s) => *s,
                    None => ids::conversation_session(key.project_id, &key.user_id, &ck.2),
                },
                None => ids::trace_session(key.project_id, &key.user_id, &key.trace_id),
            };
            self.insert_trace(key.clone(), session_id);
        }
        let entry = self.traces.get_mut(key).expect("трасса только что вставлена");
        let session_id = entry.session_id;
        for n in nodes {
            if entry.nodes.len() < MAX_NODES_PER_TRACE || entry.nodes.contains_key(&n.span_id) {
                let id = n.span_id.clone();
                if entry.nodes.insert(id, n).is_none() {
                    self.total_nodes += 1;
                }
            }
        }
        let view = TraceView {
            session_id,
            nodes: entry.nodes.clone(),
        };
        // Общий бюджет узлов: вытесняем старейшие трассы (текущая уже в `view`).
        while self.total_nodes > MAX_NODES_TOTAL {
            let Some(old) = self.trace_order.pop_front() else {
                break;
            };
            if let Some(e) = self.traces.remove(&old) {
                self.total_nodes -= e.nodes.len();
            }
        }
        // Разговор, впервые встреченный с уже решённой трассой, принимает её сессию.
        if let Some(ck) = conv_key
            && !self.conversations.contains_key(&ck)
        {
            self.insert_conversation(ck, session_id);
        }
        view
    }

    /// Сессия трассы, если трасса помнится.
    pub fn session_of(&self, key: &TraceKey) -> Option<Uuid> {
        self.traces.get(key).map(|e| e.session_id)
    }

    fn insert_trace(&mut self, key: TraceKey, session_id: Uuid) {
        while self.traces.len() >= self.capacity {
            match self.trace_order.pop_front() {
                Some(old) => {
                    if let Some(e) = self.traces.remove(&old) {
                        self.total_nodes -= e.nodes.len();
                    }
                }
                None => break,
            }
        }
        self.trace_order.push_back(key.clone());
        self.traces.insert(
            key,
            TraceEntry {
                session_id,
                nodes: HashMap::new(),
            },
        );
    }

    fn insert_conversation(&mut self, key: (Uuid, String, String), session_id: Uuid) {
        while self.conversations.len() >= self.capacity {
            match self.conversation_order.pop_front() {
                Some(old) => {
                    self.conversations.remove(&old);
                }
                None => break,
            }
        }
        self.conversation_order.push_back(key.clone());
        self.conversations.insert(key, session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u8) -> TraceKey {
        TraceKey {
            project_id: Uuid::from_u128(7),
            user_id: "alice".into(),
            trace_id: vec![t; 16],
        }
    }

    #[test]
    fn children_first_keep_the_trace_session_and_the_conversation_adopts_it() {
        let mut m = SessionMemory::new(16);
        // Дети без разговора пришли первыми: сессия из трассы.
        let a = m.observe(&key(1), None, vec![]).session_id;
        assert_eq!(a, ids::trace_session(Uuid::from_u128(7), "alice", &[1; 16]));
        // Корень с разговором: та же сессия; разговор запомнил её.
        assert_eq!(m.observe(&key(1), Some("conv-1"), vec![]).session_id, a);
        // Следующая трасса того же разговора — туда же.
        assert_eq!(m.observe(&key(2), Some("conv-1"), vec![]).session_id, a);
        // Разговор, пришедший первым, даёт свою сессию.
        let c = m.observe(&key(3), Some("conv-2"), vec![]).session_id;
        assert_eq!(
            c,
            ids::conversation_session(Uuid::from_u128(7), "alice", "conv-2")
        );
    }

    #[test]
    fn memory_is_bounded_and_evicts_the_oldest() {
        let mut m = SessionMemory::new(2);
        for t in 1..=3 {
            m.observe(&key(t), None, vec![]);
        }
        assert!(m.session_of(&key(1)).is_none());
        assert!(m.session_of(&key(3)).is_some());
        assert!(m.traces.len() <= 2);
    }
}
