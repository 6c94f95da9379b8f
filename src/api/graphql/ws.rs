//! Websocket `/graphql/ws` (graphql-transport-ws и устаревший graphql-ws).
//!
//! Поверх протокола async-graphql добавлены защиты, которых в нём нет:
//! - токен из `connection_init` (`{"Authorization": "Bearer …"}`, ключ без учёта
//!   регистра) проверяется здесь; отказ закрывает сокет с кодом 4403;
//! - нет `connection_init` за `ws_init_timeout_ms` (10 с по умолчанию) — закрытие 4408;
//! - повтор id активной подписки — закрытие 4409 (graphql-transport-ws) или
//!   ошибка для этого id (graphql-ws), а не тихая подмена;
//! - не более [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] подписок на соединение;
//! - пределы размера сообщения и кадра;
//! - `Origin` браузера проверяется по `EVENTLOG_CORS_ORIGINS` (чужой — 403 до апгрейда).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, ClientMessage, WebSocketProtocols, WsMessage};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt, future};
use serde::Deserialize;
use serde_json::json;
use std::str::FromStr;
use tokio::sync::mpsc;

use super::RequestAuth;
use crate::api::AppState;
use crate::auth::{Authenticated, JwtKeys, bearer_token};

/// Наибольшее число одновременных подписок на одном соединении.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 100;
/// Предел размера сообщения клиента, байт.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Предел размера кадра, байт.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Guard {
    /// Активные id подписок этого соединения.
    active: HashSet<String>,
    /// Проверенный токен из connection_init; забирается колбэком инициализации.
    auth: Option<Authenticated>,
    init_seen: bool,
}

fn lock(g: &Mutex<Guard>) -> std::sync::MutexGuard<'_, Guard> {
    g.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `GET /graphql/ws`: апгрейд с пределами размеров.
pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !crate::api::origin::websocket_origin_allowed(&state.settings.cors_origins, &headers) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        tracing::info!(origin, "Websocket from a disallowed origin refused.");
        return (
            StatusCode::FORBIDDEN,
            "Origin not allowed: add it to EVENTLOG_CORS_ORIGINS",
        )
            .into_response();
    }
    // Подпротокол выбирается из заголовка клиента; без известного — 400.
    let Some(protocol) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
    else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(state, socket, protocol))
}

/// Кадр закрытия. Причина обрезается до 123 байт (предел управляющего кадра
/// websocket), иначе клиент увидел бы ошибку протокола вместо кода.
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }))
}

/// Сообщение об ошибке для одной операции в формате протокола.
fn op_error(proto: WebSocketProtocols, id: &str, message: &str) -> Message {
    let err = json!({"message": message, "extensions": {"code": "BAD_USER_INPUT"}});
    let body = match proto {
        WebSocketProtocols::GraphQLWS => json!({"type": "error", "id": id, "payload": [err]}),
        WebSocketProtocols::SubscriptionsTransportWS => json!({"type": "error", "id": id, "payload": err}),
    };
    Message::Text(body.to_string().into())
}

fn verify_init(keys: &JwtKeys, payload: &Option<serde_json::Value>) -> Result<Authenticated, String> {
    let header = payload
        .as_ref()
        .and_then(|p| p.as_object())
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")))
        .and_then(|(_, v)| v.as_str())
        .ok_or_else(|| "missing Authorization in connection_init payload".to_owned())?;
    let token = bearer_token(header).map_err(|e| e.to_string())?;
    keys.verify(token).map_err(|e| e.to_string())
}

/// Проверяет входящее сообщение; `None` — сообщение поглощено (ответ уже
/// отправлен через `ctl`).
fn inspect(
    guard: &Mutex<Guard>,
    keys: &JwtKeys,
    ctl: &mpsc::UnboundedSender<Message>,
    proto: WebSocketProtocols,
    bytes: &[u8],
) -> Option<serde_json::Result<ClientMessage>> {
    let msg = ClientMessage::from_bytes(bytes);
    let Ok(m) = &msg else { return Some(msg) };
    let mut g = lock(guard);
    match m {
        ClientMessage::ConnectionInit { payload } => {
            g.init_seen = true;
            match verify_init(keys, payload) {
                Ok(a) => g.auth = Some(a),
                Err(reason) => {
                    // Изоляция: без действительного токена соединение закрывается сразу.
                    let _ = ctl.send(close(4403, &format!("Forbidden: {reason}")));
                    return None;
                }
            }
        }
        ClientMessage::Start { id, .. } => {
            if g.active.contains(id) {
                match proto {
                    WebSocketProtocols::GraphQLWS => {
                        let _ = ctl.send(close(4409, &format!("Subscriber for {id} already exists")));
                    }
                    WebSocketProtocols::SubscriptionsTransportWS => {
                        let _ = ctl.send(op_error(
                            proto,
                            id,
                            "a subscription with this id is already running",
                        ));
                    }
                }
                return None;
            }
            if g.active.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                let _ = ctl.send(op_error(
                    proto,
                    id,
                    &format!("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection"),
                ));
                return None;
            }
            g.active.insert(id.clone());
        }
        ClientMessage::Stop { id } => {
            g.active.remove(id);
        }
        _ => {}
    }
    Some(msg)
}

#[derive(Deserialize)]
struct Outgoing {
    #[serde(rename = "type")]
    ty: String,
    id: Option<String>,
}

async fn serve(state: AppState, socket: WebSocket, proto: WebSocketProtocols) {
    let (mut sink, source) = socket.split();
    let guard = Arc::new(Mutex::new(Guard::default()));
    // Отправитель служебных ответов (закрытия, ошибки операций); получатель — цикл ниже.
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Message>();

    let (g, keys) = (guard.clone(), state.keys.clone());
    let input = source
        .take_while(|r| future::ready(r.is_ok()))
        .filter_map(move |r| {
            let out = match r {
                Ok(Message::Text(t)) => inspect(&g, &keys, &ctl_tx, proto, t.as_bytes()),
                Ok(Message::Binary(b)) => inspect(&g, &keys, &ctl_tx, proto, &b),
                _ => None,
            };
            future::ready(out)
        });
    let g = guard.clone();
    let gql = async_graphql::http::WebSocket::from_message_stream(state.schema.clone(), input, proto)
        .on_connection_init(move |_payload| {
            let auth = lock(&g).auth.take();
            async move {
                let auth = auth.ok_or_else(|| async_graphql::Error::new("unauthorized"))?;
                let mut data = Data::default();
                data.insert(RequestAuth::Valid(auth));
                Ok(data)
            }
        });
    futures::pin_mut!(gql);
    let init_deadline = tokio::time::sleep(Duration::from_millis(state.settings.ws_init_timeout_ms));
    tokio::pin!(init_deadline);
    loop {
        let waiting_init = !lock(&guard).init_seen;
        tokio::select! {
            biased;
            // Служебный ответ; закрытие завершает соединение.
            Some(m) = ctl_rx.recv() => {
                let is_close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || is_close { break; }
            }
            // Ответы протокола и события подписок.
            m = gql.next() => match m {
                None => break,
                Some(WsMessage::Text(t)) => {
                    if (t.contains("\"complete\"") || t.contains("\"error\""))
                        && let Ok(o) = serde_json::from_str::<Outgoing>(&t)
                        && (o.ty == "complete" || o.ty == "error")
                        && let Some(id) = o.id
                    {
                        lock(&guard).active.remove(&id);
                    }
                    if sink.send(Message::Text(t.into())).await.is_err() { break; }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let _ = sink.send(close(code, &reason)).await;
                    break;
                }
            },
            // Нет connection_init вовремя.
            _ = &mut init_deadline, if waiting_init => {
                let _ = sink.send(close(4408, "Connection initialisation timeout")).await;
                break;
            }
        }
    }
    let _ = sink.close().await;
}
