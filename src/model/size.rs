//! Оценка памяти, которую занимает событие: ею ограничены очередь писателя и
//! живой буфер (в байтах, а не только в штуках). Обходит дерево JSON без
//! сериализации — дёшево на горячем пути `log_event`.

use serde_json::{Map, Value};

use super::{Event, NewEvent};

/// Постоянная часть события в памяти (uuid, время, заголовки строк и карты).
const FIXED: usize = 256;

/// Оценка размера JSON-значения в памяти, байт.
pub fn json_bytes(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 16,
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(json_bytes).sum::<usize>(),
        Value::Object(m) => map_bytes(m),
    }
}

fn map_bytes(m: &Map<String, Value>) -> usize {
    48 + m.iter().map(|(k, v)| 24 + k.len() + json_bytes(v)).sum::<usize>()
}

/// Общая оценка для [`NewEvent`] и [`Event`]: у них одни и те же поля.
fn event_bytes(texts: [&str; 2], optional: [&Option<String>; 4], payload: &Map<String, Value>) -> usize {
    FIXED
        + texts.iter().map(|t| t.len()).sum::<usize>()
        + optional
            .iter()
            .map(|o| o.as_ref().map_or(0, String::len))
            .sum::<usize>()
        + map_bytes(payload)
}

impl NewEvent {
    /// Сколько байт памяти примерно занимает событие.
    pub fn approx_bytes(&self) -> usize {
        event_bytes(
            [&self.user_id, &self.event_type],
            [
                &self.agent_id,
                &self.error_code,
                &self.tool_name,
                &self.approval_status,
            ],
            &self.payload,
        )
    }
}

impl Event {
    /// Сколько байт памяти примерно занимает событие.
    pub fn approx_bytes(&self) -> usize {
        event_bytes(
            [&self.user_id, &self.event_type],
            [
                &self.agent_id,
                &self.error_code,
                &self.tool_name,
                &self.approval_status,
            ],
            &self.payload,
        )
    }
}
