//! Детерминированные идентификаторы: событие спана — из (проект, пользователь,
//! трасса, спан, вид события), сессия трассы — из (проект, пользователь, трасса),
//! сессия разговора с не-UUID идентификатором — из (проект, пользователь, разговор).
//!
//! Повтор экспорта даёт те же id (хранилище не создаёт дублей), а два арендатора с
//! одинаковой трассой не сталкиваются. UUID версии 8 (RFC 9562, «своя схема») из
//! первых 16 байт SHA-256 — в духе UUIDv5, но без SHA-1.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// UUIDv8 из SHA-256 частей; части разделены длиной, чтобы («ab», «c») ≠ («a», «bc»).
pub fn derive(domain: &str, parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"eventlog.otlp.v1\0");
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    Uuid::new_v8(b)
}

/// Id события `kind` спана `span_id` трассы `trace_id`.
pub fn event_id(project: Uuid, user: &str, trace_id: &[u8], span_id: &[u8], kind: &str) -> Uuid {
    derive(
        "event",
        &[
            project.as_bytes(),
            user.as_bytes(),
            trace_id,
            span_id,
            kind.as_bytes(),
        ],
    )
}

/// Сессия, выведенная из трассы.
pub fn trace_session(project: Uuid, user: &str, trace_id: &[u8]) -> Uuid {
    derive("trace-session", &[project.as_bytes(), user.as_bytes(), trace_id])
}

/// Сессия разговора: UUID, если идентификатор им является, иначе устойчивый UUIDv8.
pub fn conversation_session(project: Uuid, user: &str, conversation: &str) -> Uuid {
    Uuid::parse_str(conversation).unwrap_or_else(|_| {
        derive(
            "conversation",
            &[project.as_bytes(), user.as_bytes(), conversation.as_bytes()],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_tenants_and_kinds() {
        let p = Uuid::from_u128(1);
        let a = event_id(p, "alice", &[1; 16], &[2; 8], "TOOL_REQUEST");
        assert_eq!(a, event_id(p, "alice", &[1; 16], &[2; 8], "TOOL_REQUEST"));
        assert_eq!(a.get_version_num(), 8);
        assert_ne!(a, event_id(p, "bob", &[1; 16], &[2; 8], "TOOL_REQUEST"));
        assert_ne!(
            a,
            event_id(Uuid::from_u128(2), "alice", &[1; 16], &[2; 8], "TOOL_REQUEST")
        );
        assert_ne!(a, event_id(p, "alice", &[1; 16], &[2; 8], "TOOL_RESULT"));
        assert_ne!(derive("x", &[b"ab", b"c"]), derive("x", &[b"a", b"bc"]));
    }

    #[test]
    fn uuid_conversations_are_kept_and_others_are_hashed() {
        let p = Uuid::from_u128(1);
        let u = Uuid::now_v7();
        assert_eq!(conversation_session(p, "a", &u.to_string()), u);
        let c = conversation_session(p, "a", "conv_5j66");
        assert_eq!(c, conversation_session(p, "a", "conv_5j66"));
        assert_ne!(c, conversation_session(p, "b", "conv_5j66"));
    }
}
