//! Миграции: up → down → up на обеих базах; таблицы и каждый индекс появляются и исчезают.

use eventlog::storage::Store;
use migration::{INDEX_NAMES, Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Statement};

use crate::both;
use crate::helpers::{Backend, TestDb};

async fn names(store: &Store, pg: bool, kind: &str) -> Vec<String> {
    let sql = match (pg, kind) {
        (true, "table") => "SELECT tablename AS n FROM pg_tables WHERE schemaname = 'public'",
        (true, _) => "SELECT indexname AS n FROM pg_indexes WHERE schemaname = 'public'",
        (false, "table") => "SELECT name AS n FROM sqlite_master WHERE type = 'table'",
        (false, _) => "SELECT name AS n FROM sqlite_master WHERE type = 'index'",
    };
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(store.backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "n").unwrap())
        .collect()
}

async fn up_down_up_creates_and_removes_every_table_and_index(b: Backend) {
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    let pg = b.is_postgres();
    for round in 0..2 {
        Migrator::up(store.connection(), None).await.unwrap();
        let tables = names(&store, pg, "table").await;
        let indexes = names(&store, pg, "index").await;
        for t in ["event_logs", "event_logs_rejected"] {
            assert!(
                tables.contains(&t.to_owned()),
                "round {round}: table {t} missing: {tables:?}"
            );
        }
        for i in INDEX_NAMES {
            assert!(
                indexes.contains(&i.to_string()),
                "round {round}: index {i} missing: {indexes:?}"
            );
        }
        if round == 0 {
            Migrator::down(store.connection(), None).await.unwrap();
            let tables = names(&store, pg, "table").await;
            let indexes = names(&store, pg, "index").await;
            assert!(
                !tables.iter().any(|t| t.starts_with("event_logs")),
                "tables left: {tables:?}"
            );
            assert!(
                !indexes.iter().any(|i| i.starts_with("idx_event_logs")),
                "indexes left: {indexes:?}"
            );
        }
    }
    assert!(
        Migrator::get_pending_migrations(store.connection())
            .await
            .unwrap()
            .is_empty()
    );
}
both!(up_down_up_creates_and_removes_every_table_and_index);
