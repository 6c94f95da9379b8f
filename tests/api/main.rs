//! Один интеграционный бинарник: каждый модуль — набор тестов одной возможности,
//! каждый тест идёт на SQLite и (при `EVENTLOG_TEST_POSTGRES_URL`) на PostgreSQL.

mod helpers;

mod analytics;
mod auth;
mod cluster;
mod cors;
mod error_codes;
mod fast_path;
mod filter_parity;
mod fixture;
mod graphiql;
mod hardening;
mod health;
mod hostile;
mod httpbench;
mod ingest;

mod isolation;
mod limits;
mod log;
mod logger;
mod migrations;
mod newcomer;
mod otlp;
mod pagination;
mod queries;
mod rest;
mod rollups;
mod schema;
mod session_summaries;
mod stream;
mod subscriptions;
