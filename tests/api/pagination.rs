//! Пагинация нескольких сотен событий при одновременной записи: ни повторов,
//! ни пропусков (keyset, а не смещение).

use std::collections::HashSet;

use eventlog::query::{EventFilter, ReadScope, Role, SortOrder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::fixture::node_ids;
use crate::helpers::{Backend, spawn_app};

async fn paging_under_concurrent_inserts_has_no_duplicate_or_gap(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let batch = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|_| json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "X"}))
                .collect(),
        )
    };
    for _ in 0..4 {
        app.ingest(&alice, batch(100)).await;
    }
    let q = "query($p: UUID!, $a: String, $o: SortOrder) { events(projectId: $p, first: 37, after: $a, order: $o) {
        nodes { id } pageInfo { hasNextPage endCursor } } }";
    let scope = ReadScope {
        project_id: p,
        user_id: None,
    };
    for order in ["NEWEST_FIRST", "OLDEST_FIRST"] {
        // Всё, что есть до первой страницы.
        let initial: HashSet<String> = app
            .store
            .page(
                &scope,
                &EventFilter::default(),
                SortOrder::NewestFirst,
                100_000,
                0,
                None,
            )
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        assert!(initial.len() >= 400);
        let mut seen: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let r = app
                .graphql(Some(&alice), q, json!({"p": p, "a": after, "o": order}))
                .await;
            seen.extend(node_ids(&r, "events"));
            // Новая запись между страницами.
            app.ingest(&alice, batch(13)).await;
            let info = &r["data"]["events"]["pageInfo"];
            if info["hasNextPage"] == false {
                break;
            }
            after = info["endCursor"].as_str().map(str::to_owned);
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{order}: a duplicate across pages");
        assert!(
            initial.iter().all(|id| unique.contains(id)),
            "{order}: an event that existed before paging was skipped"
        );
        if order == "NEWEST_FIRST" {
            // Новые события новее начала обхода — в обход сверху вниз они не попадают.
            assert_eq!(seen.len(), initial.len());
        }
    }
}
both!(paging_under_concurrent_inserts_has_no_duplicate_or_gap);
