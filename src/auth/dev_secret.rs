//! Секрет разработки: файл рядом с базой SQLite, где лежат сгенерированный секрет
//! JWT и id демонстрационного проекта. Его читают `serve`, `demo` и `token`, когда
//! `EVENTLOG_JWT_SECRET` не задан, — так токены, напечатанные одной командой,
//! действуют для других и переживают перезапуск сервера, а `demo` пишет в тот
//! проект, токены которого печатает `serve`.
//!
//! Файл создаётся с правами 0600 атомарно: содержимое пишется во временный файл и
//! публикуется жёсткой ссылкой, которая не перезаписывает существующий файл. Два
//! процесса, стартовавшие одновременно, получат один и тот же секрет.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Файл секрета разработки не прочитан или не создан.
#[derive(Debug, Error)]
pub enum DevSecretError {
    /// Ошибка файловой системы.
    #[error("{path}: {source}")]
    Io {
        /// Путь к файлу.
        path: PathBuf,
        /// Причина.
        source: std::io::Error,
    },
    /// Файл есть, но его содержимое не разбирается.
    #[error("{path}: not an eventlog secret file: {reason}")]
    Malformed {
        /// Путь к файлу.
        path: PathBuf,
        /// Что не так.
        reason: String,
    },
}

/// Содержимое файла секрета.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileBody {
    /// Секрет HS256 (64 шестнадцатеричных символа).
    jwt_secret: String,
    /// Демонстрационный проект.
    demo_project_id: Uuid,
}

/// Секрет разработки, прочитанный или только что созданный.
#[derive(Debug, Clone)]
pub struct DevSecret {
    /// Где он лежит.
    pub path: PathBuf,
    /// Секрет HS256 (байты строки из файла).
    pub secret: Vec<u8>,
    /// Демонстрационный проект: в него пишет `demo`, для него `serve` печатает токены.
    pub demo_project_id: Uuid,
    /// Файл создан этим вызовом.
    pub created: bool,
}

/// Путь файла секрета для URL базы: `<файл базы>.secret` для SQLite на диске;
/// `None` для PostgreSQL и SQLite в памяти (им нечего положить рядом).
pub fn default_path(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || path.starts_with("file::memory:") {
        return None;
    }
    let mut name = path.to_owned();
    name.push_str(".secret");
    Some(PathBuf::from(name))
}

impl DevSecret {
    /// Читает файл `path` или, если его нет, создаёт с новым секретом и новым
    /// демонстрационным проектом.
    pub fn load_or_create(path: &Path) -> Result<Self, DevSecretError> {
        match Self::load(path) {
            Ok(s) => return Ok(s),
            Err(DevSecretError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let body = FileBody {
            jwt_secret: raw.iter().map(|b| format!("{b:02x}")).collect(),
            demo_project_id: Uuid::now_v7(),
        };
        match publish(path, &body) {
            Ok(()) => Ok(Self::from_body(path, body, true)),
            // Другой процесс успел первым: берём его секрет.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(DevSecretError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Читает существующий файл.
    pub fn load(path: &Path) -> Result<Self, DevSecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| DevSecretError::Io {
            path: path.to_owned(),
            source,
        })?;
        let body: FileBody = serde_json::from_str(&text).map_err(|e| DevSecretError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if body.jwt_secret.len() < 32 {
            return Err(DevSecretError::Malformed {
                path: path.to_owned(),
                reason: "jwt_secret is shorter than 32 characters".into(),
            });
        }
        warn_if_readable_by_others(path);
        Ok(Self::from_body(path, body, false))
    }

    fn from_body(path: &Path, body: FileBody, created: bool) -> Self {
        Self {
            path: path.to_owned(),
            secret: body.jwt_secret.into_bytes(),
            demo_project_id: body.demo_project_id,
            created,
        }
    }
}

/// Пишет тело во временный файл 0600 рядом и публикует его жёсткой ссылкой:
/// `AlreadyExists`, если файл уже есть (его не трогаем).
fn publish(path: &Path, body: &FileBody) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("eventlog.secret"),
        Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        let text = serde_json::to_string_pretty(body).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "The JWT secret file is readable by other users; chmod 600 it."
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_beside_the_sqlite_file_and_absent_otherwise() {
        assert_eq!(
            default_path("sqlite://eventlog.db?mode=rwc"),
            Some(PathBuf::from("eventlog.db.secret"))
        );
        assert_eq!(
            default_path("sqlite:///tmp/x/e.db"),
            Some(PathBuf::from("/tmp/x/e.db.secret"))
        );
        assert_eq!(default_path("sqlite::memory:"), None);
        assert_eq!(default_path("postgres://u@h/db"), None);
    }

    #[test]
    fn second_load_returns_the_same_secret_and_project() {
        let dir = std::env::temp_dir().join(format!("eventlog-devsecret-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.db.secret");
        let a = DevSecret::load_or_create(&path).unwrap();
        let b = DevSecret::load_or_create(&path).unwrap();
        assert!(a.created && !b.created);
        assert_eq!(a.secret, b.secret);
        assert_eq!(a.demo_project_id, b.demo_project_id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Во временном каталоге не остаётся мусора.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
