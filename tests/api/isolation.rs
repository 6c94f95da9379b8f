//! Матрица изоляции: роль × операция × ожидание. Пользователь A никогда не видит
//! событий пользователя B — ни через events, event(id), sessions, sessionEvents,
//! analytics, REST, ни подбором payloadContains или чужим курсором.

use eventlog::query::Role;
use serde_json::{Value, json};

use crate::both;
use crate::fixture::{World, code, visible, world};
use crate::helpers::Backend;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Видит ровно события этого пользователя (None — всех пользователей проекта).
    Rows(Option<&'static str>),
    /// Ошибка с кодом GraphQL и статусом REST.
    Denied(&'static str, u16),
}

async fn graphql_users(w: &World, token: &str, project: uuid::Uuid) -> Result<Vec<String>, String> {
    let q = "query($p: UUID!) { events(projectId: $p, first: 500) { nodes { userId } } }";
    let r = w.app.graphql(Some(token), q, json!({"p": project})).await;
    if !r["errors"].is_null() {
        return Err(code(&r).to_owned());
    }
    Ok(r["data"]["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["userId"].as_str().unwrap().to_owned())
        .collect())
}

async fn role_by_operation_matrix(b: Backend) {
    let w = world(&b).await;
    let admin_other = w.app.token("root2", Role::Admin, &[w.other_project]);
    let bob_other = w.app.token("bob", Role::User, &[w.other_project]);
    let table: Vec<(&str, String, Expect)> = vec![
        (
            "alice (no projects claim)",
            w.alice.clone(),
            Expect::Rows(Some("alice")),
        ),
        ("bob (projects=[P])", w.bob.clone(), Expect::Rows(Some("bob"))),
        ("admin of P", w.admin.clone(), Expect::Rows(None)),
        (
            "admin of another project",
            admin_other,
            Expect::Denied("FORBIDDEN", 404),
        ),
        (
            "bob limited to another project",
            bob_other,
            Expect::Denied("FORBIDDEN", 404),
        ),
        (
            "service of P",
            w.service.clone(),
            Expect::Denied("FORBIDDEN", 403),
        ),
    ];
    for (who, token, expect) in table {
        // events
        let got = graphql_users(&w, &token, w.project).await;
        // sessions: сводки только по видимым
        let s = w
            .app
            .graphql(
                Some(&token),
                "query($p: UUID!) { sessions(projectId: $p) { nodes { sessionId events userId } } }",
                json!({"p": w.project}),
            )
            .await;
        // analytics
        let a = w
            .app
            .graphql(
                Some(&token),
                "query($p: UUID!) { analytics(projectId: $p) { totalEvents } }",
                json!({"p": w.project}),
            )
            .await;
        // REST
        let (status, rest) = w
            .app
            .get(
                Some(&token),
                &format!("/my/projects/{}/events?limit=500", w.project),
            )
            .await;
        let (astatus, arest) = w
            .app
            .get(Some(&token), &format!("/my/projects/{}/analytics", w.project))
            .await;
        match expect {
            Expect::Rows(user) => {
                let want = visible(&w, user);
                let got = got.unwrap_or_else(|e| panic!("{who}: {e}"));
                assert_eq!(got.len(), want.len(), "{who}: events");
                assert!(
                    user.is_none_or(|u| got.iter().all(|x| x == u)),
                    "{who}: saw another user's events"
                );
                let total: i64 = s["data"]["sessions"]["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["events"].as_i64().unwrap())
                    .sum();
                assert_eq!(
                    total as usize,
                    want.len(),
                    "{who}: sessions summarise visible events only"
                );
                assert_eq!(
                    a["data"]["analytics"]["totalEvents"],
                    want.len(),
                    "{who}: analytics"
                );
                assert_eq!(status, 200, "{who}: REST {rest}");
                let items = rest["items"].as_array().unwrap();
                assert_eq!(items.len(), want.len(), "{who}: REST events");
                assert!(user.is_none_or(|u| items.iter().all(|i| i["user_id"] == u)));
                assert_eq!(astatus, 200);
                assert_eq!(arest["total_events"], want.len(), "{who}: REST analytics");
            }
            Expect::Denied(gql, http) => {
                assert_eq!(got, Err(gql.to_owned()), "{who}: events");
                assert_eq!(code(&s), gql, "{who}: sessions");
                assert_eq!(code(&a), gql, "{who}: analytics");
                assert_eq!(status, http, "{who}: REST events");
                assert_eq!(astatus, http, "{who}: REST analytics");
            }
        }
    }
}
both!(role_by_operation_matrix);

async fn a_user_cannot_reach_another_users_events_by_probing(b: Backend) {
    let w = world(&b).await;
    let bobs: Vec<_> = visible(&w, Some("bob"));
    let target = bobs[0];
    // По id.
    let r = w
        .app
        .graphql(
            Some(&w.alice),
            "query($p: UUID!, $id: UUID!) { event(projectId: $p, id: $id) { id } }",
            json!({"p": w.project, "id": target.id}),
        )
        .await;
    assert_eq!(r["data"]["event"], Value::Null);
    // Фильтр userId чужого пользователя — пусто.
    let q = "query($p: UUID!, $f: EventFilter) { events(projectId: $p, filter: $f, first: 500) { nodes { id } } }";
    let r = w
        .app
        .graphql(Some(&w.alice), q, json!({"p": w.project, "f": {"userId": "bob"}}))
        .await;
    assert_eq!(r["data"]["events"]["nodes"], json!([]));
    // Подбор содержимого нагрузки.
    let r = w
        .app
        .graphql(
            Some(&w.alice),
            q,
            json!({"p": w.project, "f": {"payloadContains": target.payload}}),
        )
        .await;
    assert_eq!(r["data"]["events"]["nodes"], json!([]));
    let r = w
        .app
        .graphql(
            Some(&w.alice),
            "query($p: UUID!, $f: EventFilter) { analytics(projectId: $p, filter: $f) { totalEvents } }",
            json!({"p": w.project, "f": {"payloadContains": target.payload}}),
        )
        .await;
    assert_eq!(r["data"]["analytics"]["totalEvents"], 0);
    // Сессия, где есть события обоих: alice видит только свои.
    let q =
        "query($p: UUID!, $s: UUID!) { sessionEvents(projectId: $p, sessionId: $s) { nodes { userId } } }";
    let r = w
        .app
        .graphql(Some(&w.alice), q, json!({"p": w.project, "s": target.session}))
        .await;
    assert!(
        r["data"]["sessionEvents"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["userId"] == "alice")
    );
    let (_, rest) = w
        .app
        .get(
            Some(&w.alice),
            &format!("/my/projects/{}/events/{}?limit=500", w.project, target.session),
        )
        .await;
    assert!(
        rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["user_id"] == "alice"),
        "{rest}"
    );
    // Курсор администратора пользователю не подходит.
    let r = w
        .app
        .graphql(
            Some(&w.admin),
            "query($p: UUID!) { events(projectId: $p, first: 5) { pageInfo { endCursor } } }",
            json!({"p": w.project}),
        )
        .await;
    let c = r["data"]["events"]["pageInfo"]["endCursor"].as_str().unwrap();
    let (status, _) = w
        .app
        .get(
            Some(&w.alice),
            &format!("/my/projects/{}/events?cursor={c}", w.project),
        )
        .await;
    assert_eq!(status, 400);
}
both!(a_user_cannot_reach_another_users_events_by_probing);
