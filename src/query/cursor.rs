//! Непрозрачные курсоры keyset-пагинации, привязанные к породившему их запросу.
//!
//! Формат (base64url без дополнения): версия (1 байт) | отпечаток запроса (8) |
//! время в микросекундах (8) | UUID (16) | HMAC-SHA256, первые 16 байт. Отпечаток —
//! хеш вида запроса, проекта, порядка, фильтра и области доступа; HMAC с ключом
//! сервера делает подделку курсора обнаружимой. Любое расхождение — [`CursorError`],
//! которое API превращает в BAD_USER_INPUT.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use super::{EventFilter, ReadScope, SortOrder};

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 8 + 8 + 16;
const TAG_LEN: usize = 16;

/// Вид запроса, к которому привязан курсор.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// `events`.
    Events,
    /// `sessionEvents`.
    SessionEvents,
    /// `sessions`.
    Sessions,
}

/// Позиция keyset: (время, id). Для `sessions` — (lastEventAt, sessionId).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Время (createdAt или lastEventAt).
    pub at: DateTime<Utc>,
    /// Идентификатор события или сессии.
    pub id: Uuid,
}

/// Отпечаток запроса: всё, от чего зависит смысл позиции.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBinding([u8; 8]);

impl QueryBinding {
    /// Вычисляет отпечаток. Фильтр сериализуется serde_json в фиксированном порядке
    /// полей (ключи объектов JSON упорядочены), так что одинаковые запросы дают один
    /// отпечаток.
    pub fn new(
        kind: CursorKind,
        scope: &ReadScope,
        order: SortOrder,
        filter: Option<&EventFilter>,
        extra: &str,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{kind:?}|{order:?}|{extra}|").as_bytes());
        h.update(serde_json::to_vec(scope).unwrap_or_default());
        h.update(b"|");
        h.update(serde_json::to_vec(&filter).unwrap_or_default());
        let digest = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        Self(out)
    }
}

/// Курсор не принят.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CursorError {
    /// Не base64, неверная длина или версия, не сошлась подпись.
    #[error("malformed or tampered cursor")]
    Malformed,
    /// Курсор выдан другим запросом (другой проект, порядок, фильтр или поле).
    #[error("cursor belongs to a different query")]
    ForeignQuery,
}

/// Кодирует и проверяет курсоры. Ключ общий для всех экземпляров сервера
/// (выводится из секрета JWT), чтобы курсор работал за балансировщиком.
#[derive(Clone)]
pub struct CursorCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec(..)")
    }
}

impl CursorCodec {
    /// Создаёт кодек, выводя ключ из секрета.
    pub fn new(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"eventlog-cursor-v1|");
        h.update(secret);
        Self {
            key: h.finalize().into(),
        }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC принимает ключ любой длины");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Кодирует позицию для запроса `binding`.
    pub fn encode(&self, binding: QueryBinding, pos: Position) -> String {
        let mut buf = Vec::with_capacity(BODY_LEN + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&binding.0);
        buf.extend_from_slice(&pos.at.timestamp_micros().to_be_bytes());
        buf.extend_from_slice(pos.id.as_bytes());
        let tag = self.tag(&buf);
        buf.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Проверяет курсор и возвращает позицию.
    pub fn decode(&self, binding: QueryBinding, cursor: &str) -> Result<Position, CursorError> {
        let raw = URL_SAFE_NO_PAD
            .decode(cursor.as_bytes())
            .map_err(|_| CursorError::Malformed)?;
        if raw.len() != BODY_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(CursorError::Malformed);
        }
        let (body, tag) = raw.split_at(BODY_LEN);
        // Сравнение подписи через Mac::verify_truncated_left — за постоянное время.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC принимает ключ любой длины");
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| CursorError::Malformed)?;
        if body[1..9] != binding.0 {
            return Err(CursorError::ForeignQuery);
        }
        let micros = i64::from_be_bytes(body[9..17].try_into().expect("8 байт"));
        let at = DateTime::from_timestamp_micros(micros).ok_or(CursorError::Malformed)?;
        let id = Uuid::from_slice(&body[17..33]).map_err(|_| CursorError::Malformed)?;
        Ok(Position { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> ReadScope {
        ReadScope {
            project_id: Uuid::nil(),
            user_id: Some("u".into()),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let codec = CursorCodec::new(b"secret");
        let b = QueryBinding::new(CursorKind::Events, &scope(), SortOrder::NewestFirst, None, "");
        let pos = Position {
            at: crate::model::truncate_to_micros(Utc::now()),
            id: Uuid::now_v7(),
        };
        let c = codec.encode(b, pos);
        assert_eq!(codec.decode(b, &c), Ok(pos));

        let other = QueryBinding::new(CursorKind::Events, &scope(), SortOrder::OldestFirst, None, "");
        assert_eq!(codec.decode(other, &c), Err(CursorError::ForeignQuery));

        let mut bytes = URL_SAFE_NO_PAD.decode(&c).unwrap();
        bytes[12] ^= 1;
        assert_eq!(
            codec.decode(b, &URL_SAFE_NO_PAD.encode(bytes)),
            Err(CursorError::Malformed)
        );
        assert_eq!(codec.decode(b, "not a cursor!"), Err(CursorError::Malformed));
        assert_eq!(
            CursorCodec::new(b"other").decode(b, &c),
            Err(CursorError::Malformed)
        );
    }
}
