//! Один интеграционный бинарник: каждый модуль — набор тестов одной возможности,
//! каждый тест идёт на SQLite и (при `EVENTLOG_TEST_POSTGRES_URL`) на PostgreSQL.

mod helpers;

mod migrations;
mod logger;
mod stream;
mod filter_parity;
mod fixture;
mod queries;
mod analytics;
mod ingest;
mod isolation;
mod auth;
mod hardening;
mod rest;
mod health;
mod schema;
mod subscriptions;
mod pagination;
