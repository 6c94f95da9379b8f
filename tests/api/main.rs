//! Один интеграционный бинарник: каждый модуль — набор тестов одной возможности,
//! каждый тест идёт на SQLite и (при `EVENTLOG_TEST_POSTGRES_URL`) на PostgreSQL.

mod helpers;

mod migrations;
mod logger;
mod stream;
mod filter_parity;
