//! Приём OpenTelemetry: OTLP/HTTP (`POST /v1/traces`, `POST /v1/logs`; protobuf
//! и JSON, gzip) и OTLP/gRPC (`TraceService`, `LogsService`) на основном порту
//! (HTTP/2 без TLS, маршрут по пути gRPC) и на `EVENTLOG_OTLP_GRPC_LISTEN`.
//!
//! Путь события тот же, что у мутации `ingestEvents`: проверка полей
//! (`model::validation`, в [`crate::otlp::mapping`]), `StreamManager::broadcast_events`
//! и ответ только после `CommitWaiter::wait` — подтверждённый спан записан. В отличие
//! от мутации запрос не «всё или ничего»: неверные спаны отвергаются по одному и
//! считаются в `partial_success`. Полная очередь — никогда не частичный успех:
//! HTTP 429 (остановка — 503) с `Retry-After`, gRPC RESOURCE_EXHAUSTED / UNAVAILABLE
//! с `RetryInfo`, и ничего не принято.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use prost::Message;
use uuid::Uuid;

use super::AppState;
use super::graphql::RequestAuth;
use super::graphql::http::auth_from_headers;
use crate::logger::BatchError;
use crate::model::NewEvent;
use crate::otlp::mapping::{self, Mapped};
use crate::otlp::session::{SessionMemory, TraceView};
use crate::otlp::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse, Limits, json,
};
use crate::query::Principal;

/// Заголовок с проектом.
pub const PROJECT_HEADER: &str = "x-eventlog-project";
/// Сколько трасс и разговоров помнит память сессий.
pub const SESSION_MEMORY_CAPACITY: usize = 100_000;

/// Состояние приёма OTLP: память трасс (общая для HTTP и gRPC) и пределы.
#[derive(Clone)]
pub struct OtlpState {
    /// Память трасс; держится под мьютексом недолго (без ожиданий внутри).
    memory: Arc<Mutex<SessionMemory>>,
    /// Пределы.
    limits: Limits,
}

impl Default for OtlpState {
    fn default() -> Self {
        Self {
            memory: Arc::new(Mutex::new(SessionMemory::new(SESSION_MEMORY_CAPACITY))),
            limits: Limits::default(),
        }
    }
}

/// Почему запрос не принят целиком.
#[derive(Debug)]
enum Refusal {
    /// Нет или неверный токен (401 / UNAUTHENTICATED).
    Unauthenticated(String),
    /// Тело не читается, слишком много элементов и т. п. (400 / INVALID_ARGUMENT).
    BadRequest(String),
    /// Тело больше предела (413 / RESOURCE_EXHAUSTED без повтора).
    TooLarge(String),
    /// Неподдерживаемый Content-Type (415).
    UnsupportedMedia(String),
    /// Очередь писателя полна (429 / RESOURCE_EXHAUSTED с RetryInfo).
    QueueFull { retry_after_ms: u64 },
    /// Сервер останавливается (503 / UNAVAILABLE с RetryInfo).
    Unavailable { retry_after_ms: u64 },
    /// Внутренняя ошибка (500 / INTERNAL); причина — в журнале сервера.
    Internal,
}

/// Маршруты OTLP/HTTP (со своим пределом тела) и gRPC-сервисы на основном порту.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(http_traces))
        .route("/v1/logs", post(http_logs))
        .layer(DefaultBodyLimit::max(state.settings.otlp_body_limit))
}

/// gRPC `TraceService` и `LogsService` как маршрутизатор axum (пути gRPC
/// `/opentelemetry.proto.collector.*/Export` не пересекаются с остальными).
pub fn grpc_router(state: AppState) -> Router {
    let limit = state.settings.otlp_body_limit;
    let traces = TraceServiceServer::new(Grpc(state.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(Grpc(state))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    tonic::service::Routes::new(traces)
        .add_service(logs)
        .into_axum_router()
}

/// Вид тела запроса.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        other => Err(Refusal::UnsupportedMedia(format!(
            "Content-Type {other:?} is not supported: use application/x-protobuf or application/json"
        ))),
    }
}

/// Тело без сжатия; распакованное больше `limit` байт — отказ.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Refusal::BadRequest(format!("body: invalid gzip data: {e}")))?;
            if out.len() > limit {
                return Err(Refusal::TooLarge(format!(
                    "body: more than {limit} bytes after decompression"
                )));
            }
            Ok(out.into())
        }
        other => Err(Refusal::UnsupportedMedia(format!(
            "Content-Encoding {other:?} is not supported (use gzip)"
        ))),
    }
}

fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    match auth_from_headers(state, headers) {
        RequestAuth::Valid(a) => Ok(a.principal),
        RequestAuth::Missing => Err(Refusal::Unauthenticated("missing bearer token".into())),
        RequestAuth::Invalid(e) => Err(Refusal::Unauthenticated(e.to_string())),
    }
}

fn header_project(headers: &HeaderMap) -> Result<Option<Uuid>, Refusal> {
    headers
        .get(PROJECT_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok())
                .ok_or_else(|| Refusal::BadRequest(format!("{PROJECT_HEADER}: must be a UUID")))
        })
        .transpose()
}

/// Принимает спаны запроса: отображение, очередь, ожидание фиксации.
async fn ingest_traces(
    state: &AppState,
    headers: &HeaderMap,
    req: ExportTraceServiceRequest,
    mut out: Mapped,
) -> Result<Mapped, Refusal> {
    let principal = principal(state, headers)?;
    let project = header_project(headers)?;
    let otlp = &state.otlp;
    let count: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if count > otlp.limits.max_items {
        return Err(Refusal::BadRequest(format!(
            "at most {} spans per request, got {count}",
            otlp.limits.max_items
        )));
    }
    let spans = mapping::collect_spans(&req, &principal, project, &mut out);
    let plans = mapping::plan_traces(&spans);
    let views: HashMap<_, TraceView> = {
        let mut memory = otlp.memory.lock().unwrap_or_else(|p| p.into_inner());
        plans
            .into_iter()
            .map(|(key, plan)| {
                let view = memory.observe(&key, plan.conversation.as_deref(), plan.nodes);
                (key, view)
            })
            .collect()
    };
    mapping::map_spans(&spans, &views, otlp.limits, Utc::now(), &mut out);
    commit(state, &mut out).await?;
    Ok(out)
}

/// Принимает записи журнала.
async fn ingest_logs(
    state: &AppState,
    headers: &HeaderMap,
    req: ExportLogsServiceRequest,
    mut out: Mapped,
) -> Result<Mapped, Refusal> {
    let principal = principal(state, headers)?;
    let project = header_project(headers)?;
    let otlp = &state.otlp;
    let count: usize = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if count > otlp.limits.max_items {
        return Err(Refusal::BadRequest(format!(
            "at most {} log records per request, got {count}",
            otlp.limits.max_items
        )));
    }
    {
        let mut memory = otlp.memory.lock().unwrap_or_else(|p| p.into_inner());
        let mut sessions = |key: &_, conv: Option<&str>| memory.observe(key, conv, Vec::new());
        mapping::map_logs(
            &req,
            &principal,
            project,
            &mut sessions,
            otlp.limits,
            Utc::now(),
            &mut out,
        );
    }
    commit(state, &mut out).await?;
    Ok(out)
}

/// Ставит события в очередь тем же путём, что мутация, и ждёт фиксации.
async fn commit(state: &AppState, out: &mut Mapped) -> Result<(), Refusal> {
    if out.events.is_empty() {
        return Ok(());
    }
    let events: Vec<NewEvent> = std::mem::take(&mut out.events);
    let n = events.len();
    let stream = &state.api.stream;
    let waiter = stream.broadcast_events(events).map_err(|e| match e {
        BatchError::QueueFull(_) => Refusal::QueueFull {
            retry_after_ms: (stream.logger().queue_depth() as u64 / 20).clamp(50, 5000),
        },
        BatchError::Closed(_) => Refusal::Unavailable { retry_after_ms: 1000 },
        // Каждое событие уже проверено при сопоставлении: сюда попасть — ошибка сервера.
        BatchError::Invalid(_, e) => {
            tracing::error!(error = %e, "OTLP event failed validation after mapping.");
            Refusal::Internal
        }
    })?;
    let outcome = waiter.wait().await.map_err(|e| {
        tracing::warn!(error = %e, "OTLP commit wait failed.");
        Refusal::Internal
    })?;
    // Отвергнутые базой и занятые чужими строками id — в event_logs_rejected.
    let refused = outcome.rejected + outcome.conflicts;
    if refused > 0 {
        out.rejected += refused;
        out.messages.push(format!(
            "{refused} of {n} events were rejected by the database or had an id taken by another \
             project or user (kept in event_logs_rejected)"
        ));
    }
    Ok(())
}

/// Вид данных OTLP/HTTP: как читать JSON и как строить ответ protobuf. Общий
/// путь запроса — [`http_export`].
trait Signal: prost::Message + Default + Sized {
    /// Что считать в сообщении о частичном приёме («spans», «log records»).
    const NOUN: &'static str;
    /// Поле JSON-ответа с числом отвергнутых элементов.
    const REJECTED_FIELD: &'static str;
    /// Терпимое чтение JSON: запрос и отвергнутые элементы.
    fn from_json(body: &[u8]) -> Result<json::Decoded<Self>, json::DecodeError>;
    /// Ответ protobuf с `partial_success`.
    fn response(out: &Mapped) -> Vec<u8>;
}

impl Signal for ExportTraceServiceRequest {
    const NOUN: &'static str = "spans";
    const REJECTED_FIELD: &'static str = "rejectedSpans";
    fn from_json(body: &[u8]) -> Result<json::Decoded<Self>, json::DecodeError> {
        json::traces(body)
    }
    fn response(out: &Mapped) -> Vec<u8> {
        trace_response(out).encode_to_vec()
    }
}

impl Signal for ExportLogsServiceRequest {
    const NOUN: &'static str = "log records";
    const REJECTED_FIELD: &'static str = "rejectedLogRecords";
    fn from_json(body: &[u8]) -> Result<json::Decoded<Self>, json::DecodeError> {
        json::logs(body)
    }
    fn response(out: &Mapped) -> Vec<u8> {
        logs_response(out).encode_to_vec()
    }
}

/// Общий путь OTLP/HTTP: кодировка, распаковка, разбор, приём `ingest`, ответ в
/// кодировке запроса.
async fn http_export<S, F, Fut>(state: &AppState, headers: &HeaderMap, body: Bytes, ingest: F) -> Response
where
    S: Signal,
    F: FnOnce(S, Mapped) -> Fut,
    Fut: std::future::Future<Output = Result<Mapped, Refusal>>,
{
    let enc = match encoding(headers) {
        Ok(e) => e,
        Err(r) => return refusal_response(r, Encoding::Json),
    };
    let result = async {
        let body = decompress(headers, body, state.settings.otlp_body_limit)?;
        let (req, out) = match enc {
            Encoding::Protobuf => (
                S::decode(body).map_err(|e| Refusal::BadRequest(format!("body: invalid protobuf: {e}")))?,
                Mapped::default(),
            ),
            Encoding::Json => {
                let d = S::from_json(&body).map_err(|e| Refusal::BadRequest(e.0))?;
                (d.request, Mapped::with_rejections(d.rejected))
            }
        };
        ingest(req, out).await
    }
    .await;
    match result {
        Ok(out) => match enc {
            Encoding::Protobuf => protobuf_ok(S::response(&out)),
            Encoding::Json => json_ok(partial_json(S::REJECTED_FIELD, &out, &out.message(S::NOUN))),
        },
        Err(r) => refusal_response(r, enc),
    }
}

async fn http_traces(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    http_export(&state, &headers, body, |req, out| {
        ingest_traces(&state, &headers, req, out)
    })
    .await
}

async fn http_logs(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    http_export(&state, &headers, body, |req, out| {
        ingest_logs(&state, &headers, req, out)
    })
    .await
}

/// Ответ на спаны: `partial_success`, только если есть отказы или предупреждение.
fn trace_response(out: &Mapped) -> ExportTraceServiceResponse {
    let message = out.message("spans");
    ExportTraceServiceResponse {
        partial_success: (out.rejected > 0 || !message.is_empty()).then_some(ExportTracePartialSuccess {
            rejected_spans: out.rejected as i64,
            error_message: message,
        }),
    }
}

/// Ответ на записи журнала (правило то же).
fn logs_response(out: &Mapped) -> ExportLogsServiceResponse {
    let message = out.message("log records");
    ExportLogsServiceResponse {
        partial_success: (out.rejected > 0 || !message.is_empty()).then_some(ExportLogsPartialSuccess {
            rejected_log_records: out.rejected as i64,
            error_message: message,
        }),
    }
}

/// Ответ OTLP/JSON: `{}` или `{"partialSuccess": {...}}` (int64 — строкой, как в proto3 JSON).
fn partial_json(field: &str, out: &Mapped, message: &str) -> serde_json::Value {
    if out.rejected == 0 && message.is_empty() {
        return serde_json::json!({});
    }
    serde_json::json!({"partialSuccess": {field: out.rejected.to_string(), "errorMessage": message}})
}

fn protobuf_ok(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
}

fn json_ok(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// `google.rpc.Status` и `google.rpc.RetryInfo` — тела ошибок OTLP/HTTP и детали gRPC.
mod rpc {
    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// Код gRPC.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// Сообщение.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Детали (`google.protobuf.Any`).
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// Тип.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// Значение.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    /// `google.rpc.RetryInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        /// Через сколько повторить.
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        /// Секунды.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Наносекунды.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `Any` с `RetryInfo` на `ms` миллисекунд.
    pub fn retry_info(ms: u64) -> Any {
        use prost::Message as _;
        Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: RetryInfo {
                retry_delay: Some(Duration {
                    seconds: (ms / 1000) as i64,
                    nanos: ((ms % 1000) * 1_000_000) as i32,
                }),
            }
            .encode_to_vec(),
        }
    }
}

impl Refusal {
    fn grpc_code(&self) -> tonic::Code {
        match self {
            Refusal::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Refusal::BadRequest(_) | Refusal::UnsupportedMedia(_) => tonic::Code::InvalidArgument,
            Refusal::TooLarge(_) => tonic::Code::InvalidArgument,
            Refusal::QueueFull { .. } => tonic::Code::ResourceExhausted,
            Refusal::Unavailable { .. } => tonic::Code::Unavailable,
            Refusal::Internal => tonic::Code::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Unauthenticated(m)
            | Refusal::BadRequest(m)
            | Refusal::TooLarge(m)
            | Refusal::UnsupportedMedia(m) => m.clone(),
            Refusal::QueueFull { .. } => "the writer queue is full; retry later".into(),
            Refusal::Unavailable { .. } => "the server is shutting down; retry later".into(),
            Refusal::Internal => "internal error".into(),
        }
    }

    fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Refusal::QueueFull { retry_after_ms } | Refusal::Unavailable { retry_after_ms } => {
                Some(*retry_after_ms)
            }
            _ => None,
        }
    }

    fn into_status(self) -> tonic::Status {
        let message = self.message();
        match self.retry_after_ms() {
            Some(ms) => {
                let details = rpc::Status {
                    code: self.grpc_code() as i32,
                    message: message.clone(),
                    details: vec![rpc::retry_info(ms)],
                }
                .encode_to_vec();
                tonic::Status::with_details(self.grpc_code(), message, details.into())
            }
            None => tonic::Status::new(self.grpc_code(), message),
        }
    }
}

/// Ответ-отказ OTLP/HTTP: `google.rpc.Status` в кодировке запроса, `Retry-After` при повторе.
fn refusal_response(r: Refusal, enc: Encoding) -> Response {
    let status = match &r {
        Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Refusal::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = rpc::Status {
        code: r.grpc_code() as i32,
        message: r.message(),
        details: r.retry_after_ms().map(rpc::retry_info).into_iter().collect(),
    };
    let mut resp = match enc {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            body.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": body.code, "message": body.message}).to_string(),
        )
            .into_response(),
    };
    if let Some(ms) = r.retry_after_ms() {
        // Retry-After в целых секундах, не меньше 1.
        let secs = ms.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// gRPC-сервисы поверх того же приёма.
#[derive(Clone)]
struct Grpc(AppState);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let out = ingest_traces(&self.0, &headers, request.into_inner(), Mapped::default())
            .await
            .map_err(Refusal::into_status)?;
        Ok(tonic::Response::new(trace_response(&out)))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let out = ingest_logs(&self.0, &headers, request.into_inner(), Mapped::default())
            .await
            .map_err(Refusal::into_status)?;
        Ok(tonic::Response::new(logs_response(&out)))
    }
}
