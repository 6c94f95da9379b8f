//! Индексы под формы запросов API (страницы пользователя и администратора,
//! фильтр по типу, ошибки). Выбраны по EXPLAIN на PostgreSQL (docs/performance.md):
//! страница из 50 строк и аналитика проекта за 7 дней идут по индексу без сортировки
//! всего проекта.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = manager.get_database_backend() == DbBackend::Postgres;
        // INCLUDE есть только в PostgreSQL: там аналитика читает только индекс.
        let include = |cols: &str| {
            if pg {
                format!(" INCLUDE ({cols})")
            } else {
                String::new()
            }
        };
        let sql = vec![
            format!(
                "CREATE INDEX idx_event_logs_project_user_created ON event_logs \
                 (project_id, user_id, created_at, id){}",
                include("event_type, agent_id, error_code, tool_name, approval_status, session_id")
            ),
            "CREATE INDEX idx_event_logs_project_user_type_created ON event_logs \
             (project_id, user_id, event_type, created_at, id)"
                .to_owned(),
            "CREATE INDEX idx_event_logs_project_type_created ON event_logs \
             (project_id, event_type, created_at, id)"
                .to_owned(),
            "CREATE INDEX idx_event_logs_project_errors ON event_logs \
             (project_id, created_at, error_code) WHERE error_code IS NOT NULL"
                .to_owned(),
        ];
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql: Vec<String> = [
            "idx_event_logs_project_user_created",
            "idx_event_logs_project_user_type_created",
            "idx_event_logs_project_type_created",
            "idx_event_logs_project_errors",
        ]
        .iter()
        .map(|n| format!("DROP INDEX IF EXISTS {n}"))
        .collect();
        run_all(manager, &sql).await
    }
}
