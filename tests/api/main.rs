//! Один интеграционный бинарник: каждый модуль — набор тестов одной возможности,
//! каждый тест идёт на SQLite и (при `EVENTLOG_TEST_POSTGRES_URL`) на PostgreSQL.

mod helpers;

mod analytics;
mod auth;
mod filter_parity;
mod fixture;
mod hardening;
mod health;
mod ingest;
mod isolation;
mod logger;
mod migrations;
mod otlp;
mod pagination;
mod queries;
mod rest;
mod schema;
mod stream;
mod subscriptions;
