//! Предел числа псевдонимов в документе (в async-graphql 7 его нет): расширение
//! считает поля с alias во всех операциях и фрагментах после разбора запроса.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

/// Наибольшее число псевдонимов в одном запросе.
pub const MAX_ALIASES: usize = 30;

/// Цена `analytics` в единицах сложности (предел запроса — 500): два тяжёлых
/// агрегирующих запроса к базе, поэтому в один запрос помещается не больше 4.
pub const ANALYTICS_COST: usize = 100;
/// Цена `sessions`: агрегат по всем событиям проекта на каждую страницу.
pub const SESSIONS_COST: usize = 50;
/// Строк страницы на единицу множителя сложности вложенных полей.
pub const ROWS_PER_COST_UNIT: usize = 250;

/// Сложность страницы: вложенные поля стоят пропорционально числу строк
/// (`first` / 250, не меньше 1), так что много больших страниц в одном запросе
/// не помещаются, а обычная страница стоит как раньше.
pub fn page_cost(first: Option<i32>, default: i32, child_complexity: usize) -> usize {
    // Вне допустимого диапазона `first` отвечает сам резолвер (BAD_USER_INPUT с
    // именем поля), поэтому здесь значение прижимается к наибольшему допустимому.
    let rows = first
        .unwrap_or(default)
        .clamp(1, crate::api::reads::MAX_SESSION_PAGE as i32) as usize;
    1 + child_complexity * rows.div_ceil(ROWS_PER_COST_UNIT)
}

/// Фабрика расширения.
pub struct AliasLimit(pub usize);

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimitExt(self.0))
    }
}

struct AliasLimitExt(usize);

fn count(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + count(&f.node.selection_set.node),
            Selection::InlineFragment(f) => count(&f.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

#[async_graphql::async_trait::async_trait]
impl Extension for AliasLimitExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let ops: usize = match &doc.operations {
            DocumentOperations::Single(op) => count(&op.node.selection_set.node),
            DocumentOperations::Multiple(map) => {
                map.values().map(|op| count(&op.node.selection_set.node)).sum()
            }
        };
        let frags: usize = doc
            .fragments
            .values()
            .map(|f| count(&f.node.selection_set.node))
            .sum();
        if ops + frags > self.0 {
            let mut err = ServerError::new(format!("too many aliases: at most {} per request", self.0), None);
            let mut ext = async_graphql::ErrorExtensionValues::default();
            ext.set("code", super::codes::VALIDATION_FAILED);
            err.extensions = Some(ext);
            return Err(err);
        }
        Ok(doc)
    }
}
