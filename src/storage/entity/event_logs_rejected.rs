//! Сущность `event_logs_rejected` — события, которые база отвергла навсегда.

use sea_orm::entity::prelude::*;

/// Строка таблицы отказов.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_logs_rejected")]
pub struct Model {
    /// Идентификатор записи об отказе.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Событие целиком, как оно было в очереди.
    #[sea_orm(column_type = "JsonBinary")]
    pub raw_event: Json,
    /// Текст ошибки базы.
    pub error: String,
    /// Когда отвергнуто.
    pub rejected_at: DateTimeUtc,
}

/// Связей нет.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
