//! Сущность `event_logs` (SPEC §2).

use sea_orm::entity::prelude::*;

/// Строка таблицы `event_logs`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_logs")]
pub struct Model {
    /// Идентификатор (UUIDv7 или ключ идемпотентности клиента).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Сессия.
    pub session_id: Uuid,
    /// Владелец.
    pub user_id: String,
    /// Проект.
    pub project_id: Uuid,
    /// Агент.
    pub agent_id: Option<String>,
    /// Тип события.
    pub event_type: String,
    /// Нагрузка: jsonb на PostgreSQL, JSON-текст на SQLite.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// Время события.
    pub created_at: DateTimeUtc,
    /// Код ошибки.
    pub error_code: Option<String>,
    /// Инструмент.
    pub tool_name: Option<String>,
    /// Статус согласования.
    pub approval_status: Option<String>,
    /// Порядковый номер, выдаёт база.
    pub seq: i64,
}

/// Связей нет.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
