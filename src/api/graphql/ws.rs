//! Websocket `/graphql/ws` (graphql-transport-ws и устаревший graphql-ws).
//!
//! Поверх протокола async-graphql добавлены защиты, которых в нём нет:
//! - токен из `connection_init` (`{"Authorization": "Bearer …"}`, ключ без учёта
//!   регистра) проверяется здесь; отказ закрывает сокет с кодом 4403;
//! - нет `connection_init` за `ws_init_timeout_ms` (10 с по умолчанию) — закрытие 4408;
//! - повтор id активной подписки — закрытие 4409 (graphql-transport-ws) или
//!   ошибка для этого id (graphql-ws), а не тихая подмена;
//! - не более [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] подписок на соединение;
//! - пределы на вызывающего (JWT `sub`) и на сервер ([`WsRegistry`]): соединений
//!   всего (сверх — HTTP 429 с `Retry-After` до апгрейда), соединений одного
//!   вызывающего (сверх — закрытие 4429 после `connection_init`) и подписок одного
//!   вызывающего на всех его соединениях (сверх — ошибка операции с кодом
//!   RATE_LIMITED); так один шумный клиент не занимает ресурсы остальных;
//! - пределы размера сообщения и кадра;
//! - `Origin` браузера проверяется по `EVENTLOG_CORS_ORIGINS` (чужой — 403 до апгрейда);
//! - остановка сервера закрывает соединения кодом 1001 (going away).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Ёмкость буфера чтения сокета, байт. tungstenite перед каждой попыткой чтения
/// заполняет нулями всю свободную ёмкость буфера (по умолчанию 128 КиБ), а чтение
/// пробуется при каждом опросе соединения — то есть после каждого отправленного
/// события подписки. При тысячах сообщений в секунду это было главной статьёй
/// расхода CPU сервера (четверть его времени в memset, см. docs/performance.md).
/// Сообщения клиента малы; кадр больше буфера всё равно читается целиком (буфер
/// растёт до размера кадра, предел — [`MAX_FRAME_BYTES`]).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Код закрытия при превышении числа соединений одного вызывающего.
pub const CLOSE_RATE_LIMITED: u16 = 4429;

/// Счётчики websocket на весь сервер: соединения всего и, по вызывающему (JWT
/// `sub`), соединения и подписки. Один на приложение (в [`ApiContext`](crate::api::ApiContext)).
#[derive(Debug, Default)]
pub struct WsRegistry {
    total: AtomicUsize,
    per_caller: Mutex<HashMap<String, CallerUse>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct CallerUse {
    connections: usize,
    subscriptions: usize,
}

impl WsRegistry {
    /// Занимает место соединения, если общий предел не достигнут. Место
    /// освобождается, когда возвращённый [`ConnSlot`] уничтожается.
    fn open(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnSlot {
            registry: self.clone(),
            caller: None,
            subscriptions: 0,
        })
    }

    fn with_caller<R>(&self, sub: &str, f: impl FnOnce(&mut CallerUse) -> R) -> R {
        let mut map = self.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(sub.to_owned()).or_default();
        let out = f(entry);
        if entry.connections == 0 && entry.subscriptions == 0 {
            map.remove(sub);
        }
        out
    }
}

/// Место одного соединения в [`WsRegistry`]; при уничтожении возвращает всё,
/// что соединение занимало (соединение вызывающего и его подписки).
struct ConnSlot {
    registry: Arc<WsRegistry>,
    caller: Option<String>,
    subscriptions: usize,
}

impl ConnSlot {
    /// Привязывает соединение к вызывающему; `false` — его предел соединений исчерпан.
    fn bind(&mut self, sub: &str, max: usize) -> bool {
        if self.caller.is_some() {
            return true;
        }
        let ok = self.registry.with_caller(sub, |u| {
            if u.connections >= max {
                return false;
            }
            u.connections += 1;
            true
        });
        if ok {
            self.caller = Some(sub.to_owned());
        }
        ok
    }

    /// Занимает подписку вызывающего; `false` — предел подписок исчерпан.
    fn add_subscription(&mut self, max: usize) -> bool {
        let Some(sub) = &self.caller else { return true };
        let ok = self.registry.with_caller(sub, |u| {
            if u.subscriptions >= max {
                return false;
            }
            u.subscriptions += 1;
            true
        });
        if ok {
            self.subscriptions += 1;
        }
        ok
    }

    fn remove_subscription(&mut self) {
        let Some(sub) = &self.caller else { return };
        if self.subscriptions > 0 {
            self.subscriptions -= 1;
            self.registry
                .with_caller(sub, |u| u.subscriptions = u.subscriptions.saturating_sub(1));
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(sub) = &self.caller {
            let n = self.subscriptions;
            self.registry.with_caller(sub, |u| {
                u.connections = u.connections.saturating_sub(1);
                u.subscriptions = u.subscriptions.saturating_sub(n);
            });
        }
        self.registry.total.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Guard {
    /// Активные id подписок этого соединения.
    active: HashSet<String>,
    /// Проверенный токен из connection_init; забирается колбэком инициализации.
    auth: Option<Authenticated>,
    init_seen: bool,
    /// Место соединения в реестре (соединение и подписки вызывающего).
    slot: ConnSlot,
    /// Пределы на вызывающего: (соединений, подписок).
    caps: (usize, usize),
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
    let limits = state.api.limits.clone();
    let Some(slot) = state.api.ws.open(limits.ws_max_connections) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({"errors": [{
                "message": format!(
                    "too many websocket connections: at most {} per server (EVENTLOG_WS_MAX_CONNECTIONS)",
                    limits.ws_max_connections
                ),
                "extensions": {"code": super::codes::RATE_LIMITED},
            }]})),
        )
            .into_response();
    };
    let caps = (
        limits.ws_max_connections_per_token,
        limits.ws_max_subscriptions_per_token,
    );
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let connections = state.connections.clone();
            connections.track_future(serve(state, socket, protocol, slot, caps))
        })
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
fn op_error(proto: WebSocketProtocols, id: &str, code: &str, message: &str) -> Message {
    let err = json!({"message": message, "extensions": {"code": code}});
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
                Ok(a) => {
                    let max = g.caps.0;
                    if !g.slot.bind(&a.principal.sub, max) {
                        let _ = ctl.send(close(
                            CLOSE_RATE_LIMITED,
                            &format!("RATE_LIMITED: at most {max} websocket connections per token"),
                        ));
                        return None;
                    }
                    g.auth = Some(a);
                }
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
                            "BAD_USER_INPUT",
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
                    "BAD_USER_INPUT",
                    &format!("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection"),
                ));
                return None;
            }
            let max = g.caps.1;
            if !g.slot.add_subscription(max) {
                let _ = ctl.send(op_error(
                    proto,
                    id,
                    super::codes::RATE_LIMITED,
                    &format!(
                        "too many subscriptions: at most {max} per token \
                         (EVENTLOG_WS_MAX_SUBSCRIPTIONS_PER_TOKEN)"
                    ),
                ));
                return None;
            }
            g.active.insert(id.clone());
        }
        ClientMessage::Stop { id } if g.active.remove(id) => g.slot.remove_subscription(),
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

async fn serve(
    state: AppState,
    socket: WebSocket,
    proto: WebSocketProtocols,
    slot: ConnSlot,
    caps: (usize, usize),
) {
    let (mut sink, source) = socket.split();
    let guard = Arc::new(Mutex::new(Guard {
        active: HashSet::new(),
        auth: None,
        init_seen: false,
        slot,
        caps,
    }));
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
                        let mut g = lock(&guard);
                        if g.active.remove(&id) {
                            g.slot.remove_subscription();
                        }
                    }
                    if sink.send(Message::Text(t.into())).await.is_err() { break; }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let _ = sink.send(close(code, &reason)).await;
                    break;
                }
            },
            // Сервер останавливается: 1001 «going away», клиент переподключится и продолжит с afterSeq.
            _ = state.shutdown.cancelled() => {
                let _ = sink.send(close(1001, "server shutting down")).await;
                break;
            }
            // Нет connection_init вовремя.
            _ = &mut init_deadline, if waiting_init => {
                let _ = sink.send(close(4408, "Connection initialisation timeout")).await;
                break;
            }
        }
    }
    let _ = sink.close().await;
}
