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
    /// Потребитель журнала не зарегистрирован (миграции не применены).
    #[error("log follower {0} is not registered; run the migrations")]
    UnknownFollower(String),
}

impl StorageError {
    /// Отвергла ли база сами данные строки (постоянная ошибка): нарушение
    /// ограничения или неверное значение — PostgreSQL классы 22 и 23, SQLite
    /// CONSTRAINT (19), TOOBIG (18), MISMATCH (20). Только такие ошибки делят пакет
    /// пополам и отправляют строку в таблицу отказов.
    ///
    /// Всё остальное — обрыв, таймаут, исчерпанный пул, реплика только для
    /// чтения после переключения, нет места, нет прав, нет таблицы — не вина
    /// строки: такой пакет повторяется с задержкой, пока база не поправится,
    /// и ничего не теряется.
    pub fn is_row_rejection(&self) -> bool {
        let db = match self {
            StorageError::Sqlx(sqlx::Error::Database(db)) => db,
            StorageError::Db(
                DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)),
            ) => match e.as_ref() {
                sqlx::Error::Database(db) => db,
                _ => return false,
            },
            _ => return false,
        };
        let code = db.code().unwrap_or_default();
        if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
            // SQLSTATE PostgreSQL: постоянны только классы 22 и 23.
            return code.starts_with("22") || code.starts_with("23");
        }
        // SQLite: первичный код — младший байт расширенного.
        code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 18..=20))
    }

    /// Временная ли ошибка (всё, что не отказ базы принять строку).
    pub fn is_transient(&self) -> bool {
        !self.is_row_rejection()
    }
}
