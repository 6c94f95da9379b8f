//! Общие для всех путей чтения понятия: фильтр [`EventFilter`], область доступа
//! вызывающего ([`Principal`] → [`ReadScope`]) и курсоры ([`CursorCodec`]).
//!
//! Чистый лист без ввода-вывода. `storage` компилирует эти типы в SQL, `stream`
//! проверяет их в памяти; GraphQL, REST и подписки берут их только отсюда, так что
//! фильтры, изоляция и курсоры определены ровно в одном месте.

mod contains;
mod cursor;
mod filter;
mod scope;

pub use contains::json_contains;
pub use cursor::{CursorCodec, CursorError, CursorKind, Position, QueryBinding};
pub use filter::{EventFilter, SortOrder};
pub use scope::{Principal, ReadScope, Role, ScopeError};
