//! Модель данных: события ([`Event`], [`NewEvent`]), справочник типов событий
//! ([`EventType`]) и единый модуль проверки полей ([`validation`]).
//!
//! Чистый лист архитектуры: здесь нет ввода-вывода. Правила полей из SPEC §2/§5
//! живут только в [`validation`]; API, логгер и тесты пользуются ими отсюда.

mod event;
mod event_type;
mod size;
pub mod validation;

pub use event::{ApprovalStatus, Event, NewEvent, truncate_to_micros};
pub use event_type::EventType;
pub use size::json_bytes;
pub use validation::{EventDraft, ValidationError};
