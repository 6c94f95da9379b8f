//! Приём OpenTelemetry без ввода-вывода: чтение OTLP/JSON ([`json`]), отображение
//! спанов и записей журнала в события каталога ([`mapping`]), детерминированные
//! идентификаторы ([`ids`]) и память о трассах для сессий ([`session`]).
//!
//! Protobuf читает `prost` (типы `opentelemetry-proto`); JSON — свои терпимые
//! правила, и оба пути дают одни и те же сообщения. HTTP и gRPC живут в `api::otlp`,
//! который зовёт этот модуль и отдаёт события тем же путём, что мутация приёма.

pub mod attrs;
pub mod ids;
pub mod json;
pub mod mapping;
pub mod session;

pub use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// Пределы приёма OTLP (документированы в docs/otlp.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Наибольшее число спанов (или записей журнала) в одном запросе.
    pub max_items: usize,
    /// Наибольшая длина строкового значения атрибута в нагрузке, байт; длиннее —
    /// обрезается, и событие помечается `otel.truncated: true`.
    pub max_attr_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_items: 10_000,
            max_attr_bytes: 8 * 1024,
        }
    }
}

#[cfg(test)]
mod tests;
