//! Кто спрашивает ([`Principal`], из проверенного JWT) и что ему видно
//! ([`ReadScope`]). Таблица ролей SPEC §4 реализована здесь и только здесь:
//! запросы, аналитика, подписки, REST и кэши получают область только через
//! [`Principal::read_scope`] и [`Principal::ingest_user`].

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::model::Event;

/// Роль из claim `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Видит только свои события.
    User,
    /// Видит все события своих проектов.
    Admin,
    /// Ничего не читает; пишет события за любого пользователя своих проектов.
    Service,
}

impl Role {
    /// Имя роли, как в токене.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// Проверенный вызывающий.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` — идентификатор пользователя.
    pub sub: String,
    /// Роль.
    pub role: Role,
    /// Разрешённые проекты (`None`, если claim отсутствует — только для `user`).
    pub projects: Option<Vec<Uuid>>,
}

/// Отказ в доступе.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeError {
    /// Роль не позволяет эту операцию (например, чтение сервисом).
    #[error("{0}")]
    Forbidden(String),
    /// Проект вне claim `projects`. REST отвечает 404, GraphQL — FORBIDDEN.
    #[error("project {0} is not accessible with this token")]
    ProjectNotAllowed(Uuid),
    /// Неверный `userId` при записи.
    #[error("{0}")]
    BadUser(String),
}

/// Что видно вызывающему в одном проекте. Компилируется в каждое SQL-выражение
/// (`storage::sql::push_scope`) и проверяется в памяти для живых событий.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadScope {
    /// Проект.
    pub project_id: Uuid,
    /// `Some(sub)` — только события этого пользователя; `None` — все события проекта.
    pub user_id: Option<String>,
}

impl ReadScope {
    /// Видно ли событие в этой области.
    pub fn matches(&self, e: &Event) -> bool {
        e.project_id == self.project_id && self.user_id.as_ref().is_none_or(|u| *u == e.user_id)
    }
}

impl Principal {
    fn allows_project(&self, project_id: Uuid) -> bool {
        self.projects.as_ref().is_none_or(|ps| ps.contains(&project_id))
    }

    /// Область чтения проекта по таблице SPEC §4.
    pub fn read_scope(&self, project_id: Uuid) -> Result<ReadScope, ScopeError> {
        // Изоляция: сервис не читает ничего; проект вне claim — отказ, а не пустой ответ,
        // чтобы клиент отличал «нет прав» от «нет данных».
        if self.role == Role::Service {
            return Err(ScopeError::Forbidden("service tokens cannot read events".into()));
        }
        if !self.allows_project(project_id) {
            return Err(ScopeError::ProjectNotAllowed(project_id));
        }
        Ok(ReadScope {
            project_id,
            user_id: match self.role {
                Role::Admin => None,
                _ => Some(self.sub.clone()),
            },
        })
    }

    /// От чьего имени можно записать событие в проект `project_id`.
    /// `requested` — присланный клиентом `userId`.
    pub fn ingest_user(&self, project_id: Uuid, requested: Option<&str>) -> Result<String, ScopeError> {
        if !self.allows_project(project_id) {
            return Err(ScopeError::ProjectNotAllowed(project_id));
        }
        match (self.role, requested) {
            (Role::Service, Some(u)) => Ok(u.to_owned()),
            (Role::Service, None) => Err(ScopeError::BadUser(
                "userId: is required for service tokens".into(),
            )),
            (_, None) => Ok(self.sub.clone()),
            (_, Some(u)) if u == self.sub => Ok(u.to_owned()),
            (_, Some(_)) => Err(ScopeError::Forbidden(
                "userId: may only be your own user id".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, projects: Option<Vec<Uuid>>) -> Principal {
        Principal {
            sub: "alice".into(),
            role,
            projects,
        }
    }

    #[test]
    fn role_table_of_spec_section_4() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let user = p(Role::User, None);
        assert_eq!(user.read_scope(a).unwrap().user_id.as_deref(), Some("alice"));
        let user_in_a = p(Role::User, Some(vec![a]));
        assert_eq!(user_in_a.read_scope(b), Err(ScopeError::ProjectNotAllowed(b)));
        let admin = p(Role::Admin, Some(vec![a]));
        assert_eq!(admin.read_scope(a).unwrap().user_id, None);
        assert!(admin.read_scope(b).is_err());
        let svc = p(Role::Service, Some(vec![a]));
        assert!(matches!(svc.read_scope(a), Err(ScopeError::Forbidden(_))));

        assert_eq!(user.ingest_user(a, None).unwrap(), "alice");
        assert!(user.ingest_user(a, Some("bob")).is_err());
        assert!(admin.ingest_user(a, Some("bob")).is_err());
        assert_eq!(admin.ingest_user(a, Some("alice")).unwrap(), "alice");
        assert_eq!(svc.ingest_user(a, Some("bob")).unwrap(), "bob");
        assert!(matches!(svc.ingest_user(a, None), Err(ScopeError::BadUser(_))));
        assert!(svc.ingest_user(b, Some("bob")).is_err());
    }
}
