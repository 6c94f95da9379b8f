//! Аутентификация: проверка JWT (HS256, алгоритм закреплён, `exp` обязателен,
//! `nbf` учитывается, допуск часов 5 с) и выпуск токенов для `eventlog token`.
//! Результат проверки — [`Principal`](crate::query::Principal) из `query`.

//! [`dev_secret`] хранит сгенерированный секрет рядом с базой SQLite, когда
//! `EVENTLOG_JWT_SECRET` не задан.

pub mod dev_secret;
mod jwt;

pub use dev_secret::{DevSecret, DevSecretError};
pub use jwt::{AuthError, Authenticated, Claims, JwtKeys, bearer_token};
