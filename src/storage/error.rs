//! Ошибка слоя хранения и её классификация: временная (повторить) или постоянная
//! (база отвергает данные — изолировать строку).

use sea_orm::{DbErr, RuntimeErr};
use thiserror::Error;

/// Ошибка слоя хранения.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Ошибка SeaORM.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Ошибка драйвера sqlx (быстрые пути записи).
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Строка из базы не разобралась.
    #[error("cannot decode row: {0}")]
    Decode(String),
    /// Неподдерживаемый URL базы.
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
}

impl StorageError {
    /// Временная ли ошибка: обрыв соединения, таймаут, исчерпан пул, база
    /// перегружена или перезапускается, конфликт сериализации, занятая SQLite.
    /// Такие ошибки повторяются с задержкой; остальные считаются отказом базы
    /// принять данные.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Sqlx(e) => sqlx_transient(e),
            StorageError::Db(e) => match e {
                DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
                DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                    sqlx_transient(e)
                }
                _ => false,
            },
            StorageError::Decode(_) | StorageError::UnsupportedUrl(_) => false,
        }
    }
}

fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: класс 08 — соединение, 53 — ресурсы, 57P0x — остановка
            // сервера, 57014 — отмена по таймауту, 40001/40P01 — сериализация и
            // взаимоблокировка, 55P03 — блокировка недоступна.
            // SQLite: 5 (BUSY), 6 (LOCKED) и их расширенные коды (младший байт).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || matches!(&*code, "57014" | "40001" | "40P01" | "55P03")
                || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}
