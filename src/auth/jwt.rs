//! JWT: ключи, проверка и выпуск.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::query::{Principal, Role};

/// Допуск расхождения часов при проверке `exp`/`nbf`, секунд.
pub const LEEWAY_SECS: u64 = 5;

/// Claims токена eventlog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Пользователь.
    pub sub: String,
    /// Роль: `user` (по умолчанию), `admin`, `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Разрешённые проекты (обязательны для admin и service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<Uuid>>,
    /// Истечение (секунды Unix), обязательно.
    pub exp: i64,
    /// Не раньше (секунды Unix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Выпущен.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Токен не принят. Клиент видит UNAUTHENTICATED с этим текстом.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// Нет заголовка или он не `Bearer …`.
    #[error("missing bearer token")]
    Missing,
    /// Подпись, алгоритм, срок или формат не прошли проверку.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Проверенный вызывающий и срок действия его токена.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Кто это.
    pub principal: Principal,
    /// Когда токен истекает (подписки закрываются в этот момент).
    pub expires_at: DateTime<Utc>,
}

/// Ключи HS256 и правила проверки.
#[derive(Clone)]
pub struct JwtKeys {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// Ключи из секрета.
    pub fn new(secret: &[u8]) -> Self {
        // Алгоритм закреплён: токен с `alg: none` или RS256 не пройдёт.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Проверяет токен и строит [`Authenticated`].
    pub fn verify(&self, token: &str) -> Result<Authenticated, AuthError> {
        let data = decode::<Claims>(token, &self.dec, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        let role = match c.role.as_deref() {
            None | Some("user") => Role::User,
            Some("admin") => Role::Admin,
            Some("service") => Role::Service,
            Some(other) => return Err(AuthError::Invalid(format!("unknown role {other:?}"))),
        };
        if c.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        if role != Role::User && c.projects.is_none() {
            return Err(AuthError::Invalid(format!(
                "the projects claim is required for role {}",
                role.as_str()
            )));
        }
        let expires_at = DateTime::from_timestamp(c.exp, 0)
            .ok_or_else(|| AuthError::Invalid("exp out of range".into()))?
            + Duration::seconds(LEEWAY_SECS as i64);
        Ok(Authenticated {
            principal: Principal {
                sub: c.sub,
                role,
                projects: c.projects,
            },
            expires_at,
        })
    }

    /// Выпускает токен.
    pub fn mint(
        &self,
        sub: &str,
        role: Role,
        projects: Option<Vec<Uuid>>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = Utc::now();
        let claims = Claims {
            sub: sub.to_owned(),
            role: Some(role.as_str().to_owned()),
            projects,
            exp: (now + ttl).timestamp(),
            nbf: None,
            iat: Some(now.timestamp()),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Подписывает произвольные claims (для тестов отрицательных случаев).
    pub fn sign_raw(&self, claims: &serde_json::Value) -> Result<String, AuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.enc)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// Достаёт токен из значения `Bearer <jwt>` (схема без учёта регистра).
pub fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(AuthError::Missing),
    }
}
