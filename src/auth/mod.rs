//! Аутентификация: проверка JWT (HS256, алгоритм закреплён, `exp` обязателен,
//! `nbf` учитывается, допуск часов 5 с) и выпуск токенов для `eventlog token`.
//! Результат проверки — [`Principal`](crate::query::Principal) из `query`.

mod jwt;

pub use jwt::{AuthError, Authenticated, Claims, JwtKeys, bearer_token};
