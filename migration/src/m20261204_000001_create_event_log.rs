//! Журнал фиксаций: один порядок событий для всех писателей базы.
//!
//! PostgreSQL: `seq` выдаётся последовательностью при вставке, а не при фиксации,
//! поэтому порядок seq у параллельных писателей не совпадает с порядком фиксации.
//! Порядок журнала задаёт таблица `event_log_commits`: триггер на каждую
//! вставляющую инструкцию берёт транзакционный advisory-замок, получает под ним
//! номер фиксации `pos` и держит замок до COMMIT. Значит, номера фиксаций видимы
//! читателям строго префиксом: если видна фиксация `pos`, то все меньшие уже
//! видны (или откатились и не появятся никогда). Позиция события — `(pos, seq)`.
//! Триггер же обновляет `event_log_heads` (последняя позиция проекта — ключ
//! точного кэша аналитики) и шлёт `NOTIFY eventlog_log` (будит читателей журнала).
//!
//! SQLite: писатели сериализуются самой базой, rowid (`seq`) выдаётся в порядке
//! фиксации, поэтому позиция события — это его `seq`; триггер на строку ведёт
//! только `event_log_heads`.
//!
//! Существующие строки PostgreSQL получают фиксации порциями по 1000 в порядке seq.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Ключ advisory-замка журнала (ASCII «eventlog»); тот же ключ в `eventlog::storage::log`.
pub const LOG_LOCK_KEY: i64 = 7_311_142_570_156_650_343;

fn pg_up() -> Vec<String> {
    vec![
        "CREATE TABLE event_log_commits (
            pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            seqs bigint[] NOT NULL,
            seq_range int8range NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )"
        .to_owned(),
        "CREATE INDEX idx_event_log_commits_seq_range ON event_log_commits USING gist (seq_range)".to_owned(),
        "CREATE INDEX idx_event_log_commits_committed ON event_log_commits (committed_at)".to_owned(),
        "CREATE TABLE event_log_heads (
            project_id uuid PRIMARY KEY,
            pos bigint NOT NULL,
            purged bigint NOT NULL DEFAULT 0
        )"
        .to_owned(),
        // Существующие строки: фиксации по 1000 seq, номера по порядку seq.
        "INSERT INTO event_log_commits (seqs, seq_range)
         SELECT array_agg(seq ORDER BY seq), int8range(min(seq), max(seq), '[]')
         FROM (SELECT seq, (row_number() OVER (ORDER BY seq) - 1) / 1000 AS g FROM event_logs) t
         GROUP BY g ORDER BY g"
            .to_owned(),
        "INSERT INTO event_log_heads (project_id, pos)
         SELECT e.project_id, max(c.pos)
         FROM event_logs e JOIN event_log_commits c ON c.seq_range @> e.seq
         GROUP BY e.project_id"
            .to_owned(),
        format!(
            "CREATE FUNCTION eventlog_log_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                s bigint[];
                p bigint;
            BEGIN
                SELECT array_agg(seq ORDER BY seq) INTO s FROM eventlog_new_rows;
                IF s IS NULL THEN
                    RETURN NULL;
                END IF;
                -- Замок держится до конца транзакции: номер фиксации выдаётся и
                -- фиксируется под ним, поэтому порядок pos = порядок фиксации.
                PERFORM pg_advisory_xact_lock({LOG_LOCK_KEY});
                INSERT INTO event_log_commits (seqs, seq_range)
                    VALUES (s, int8range(s[1], s[array_length(s, 1)], '[]'))
                    RETURNING pos INTO p;
                INSERT INTO event_log_heads (project_id, pos)
                    SELECT DISTINCT project_id, p FROM eventlog_new_rows
                    ON CONFLICT (project_id) DO UPDATE SET pos = EXCLUDED.pos;
                PERFORM pg_notify('eventlog_log', p::text);
                RETURN NULL;
            END $$"
        ),
        "CREATE TRIGGER event_logs_log_commit AFTER INSERT ON event_logs
         REFERENCING NEW TABLE AS eventlog_new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION eventlog_log_commit()"
            .to_owned(),
    ]
}

fn sqlite_up() -> Vec<String> {
    vec![
        "CREATE TABLE event_log_heads (
            project_id TEXT PRIMARY KEY,
            pos INTEGER NOT NULL,
            purged INTEGER NOT NULL DEFAULT 0
        )"
        .to_owned(),
        "INSERT INTO event_log_heads (project_id, pos)
         SELECT project_id, max(seq) FROM event_logs GROUP BY project_id"
            .to_owned(),
        "CREATE TRIGGER event_logs_log_head AFTER INSERT ON event_logs FOR EACH ROW BEGIN
            INSERT INTO event_log_heads (project_id, pos) VALUES (NEW.project_id, NEW.seq)
                ON CONFLICT (project_id) DO UPDATE SET pos = excluded.pos;
         END"
        .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = if manager.get_database_backend() == DbBackend::Postgres {
            pg_up()
        } else {
            sqlite_up()
        };
        run_all(manager, &sql).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql: Vec<String> = if manager.get_database_backend() == DbBackend::Postgres {
            vec![
                "DROP TRIGGER IF EXISTS event_logs_log_commit ON event_logs".into(),
                "DROP FUNCTION IF EXISTS eventlog_log_commit()".into(),
                "DROP TABLE IF EXISTS event_log_heads".into(),
                "DROP TABLE IF EXISTS event_log_commits".into(),
            ]
        } else {
            vec![
                "DROP TRIGGER IF EXISTS event_logs_log_head".into(),
                "DROP TABLE IF EXISTS event_log_heads".into(),
            ]
        };
        run_all(manager, &sql).await
    }
}
