//! Запросы GraphQL по HTTP: каждый фильтр против ожидания, посчитанного в тесте;
//! sessionEvents, event, sessions; пределы `first`; курсоры; DataLoader.

use serde_json::{Value, json};

use crate::both;
use crate::fixture::{Fx, code, ids, node_ids, visible, world};
use crate::helpers::Backend;

const EVENTS: &str = "query($p: UUID!, $f: EventFilter, $o: SortOrder, $n: Int, $a: String) {
  events(projectId: $p, filter: $f, order: $o, first: $n, after: $a) {
    nodes { id seq eventType userId agentId toolName errorCode approvalStatus payload createdAt sessionId projectId }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

async fn every_filter_matches_an_independent_expectation(b: Backend) {
    let w = world(&b).await;
    let t = w.t0;
    type Pred = Box<dyn Fn(&Fx) -> bool>;
    let cases: Vec<(Value, Pred)> = vec![
        (json!({}), Box::new(|_| true)),
        (
            json!({"eventTypes": ["ERROR", "TOOL_RESULT"]}),
            Box::new(|e| e.ty == "ERROR" || e.ty == "TOOL_RESULT"),
        ),
        (json!({"eventTypes": []}), Box::new(|_| false)),
        (
            json!({"agentIds": ["agent-a"]}),
            Box::new(|e| e.agent.as_deref() == Some("agent-a")),
        ),
        (json!({"sessionId": w.sessions[2]}), {
            let s = w.sessions[2];
            Box::new(move |e| e.session == s)
        }),
        (json!({"userId": "bob"}), Box::new(|e| e.user == "bob")),
        (
            json!({"toolName": "deploy"}),
            Box::new(|e| e.tool == Some("deploy")),
        ),
        (
            json!({"errorCode": "E_1"}),
            Box::new(|e| e.code.as_deref() == Some("E_1")),
        ),
        (json!({"hasError": true}), Box::new(|e| e.code.is_some())),
        (json!({"hasError": false}), Box::new(|e| e.code.is_none())),
        (
            json!({"approvalStatus": "REJECTED"}),
            Box::new(|e| e.status == Some("REJECTED")),
        ),
        (
            json!({"from": (t + chrono::Duration::hours(2)).to_rfc3339(), "to": (t + chrono::Duration::hours(5)).to_rfc3339()}),
            Box::new(move |e| {
                e.at >= t + chrono::Duration::hours(2) && e.at < t + chrono::Duration::hours(5)
            }),
        ),
        (
            json!({"payloadContains": {"parity": "odd"}}),
            Box::new(|e| e.payload["parity"] == "odd"),
        ),
        (
            json!({"payloadContains": {"tags": ["t3"]}}),
            Box::new(|e| e.payload["tags"][0] == "t3"),
        ),
        (
            json!({"payloadContains": {"parity": "even", "i": 42}}),
            Box::new(|e| e.payload["i"] == 42),
        ),
        (
            json!({"eventTypes": ["TOOL_REQUEST"], "agentIds": ["agent-b", "agent-c"], "hasError": false}),
            Box::new(|e| {
                e.ty == "TOOL_REQUEST"
                    && matches!(e.agent.as_deref(), Some("agent-b" | "agent-c"))
                    && e.code.is_none()
            }),
        ),
    ];
    for (who, token, user) in [("admin", &w.admin, None), ("alice", &w.alice, Some("alice"))] {
        for (filter, pred) in &cases {
            let r = w
                .app
                .graphql(
                    Some(token),
                    EVENTS,
                    json!({"p": w.project, "f": filter, "n": 500}),
                )
                .await;
            let expected: Vec<&Fx> = visible(&w, user).into_iter().filter(|e| pred(e)).collect();
            assert_eq!(
                node_ids(&r, "events"),
                ids(&expected),
                "{who} with filter {filter}"
            );
        }
    }
    // Значения столбцов и нагрузка доходят до клиента как есть.
    let r = w
        .app
        .graphql(
            Some(&w.admin),
            EVENTS,
            json!({"p": w.project, "n": 500, "o": "OLDEST_FIRST"}),
        )
        .await;
    let nodes = r["data"]["events"]["nodes"].as_array().unwrap();
    let first = &w.events[0];
    assert_eq!(nodes[0]["id"], first.id.to_string());
    assert_eq!(nodes[0]["payload"], first.payload);
    assert_eq!(nodes[0]["eventType"], first.ty);
    assert_eq!(nodes[0]["userId"], first.user);
    let seqs: Vec<i64> = nodes
        .iter()
        .map(|n| n["seq"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.iter().all(|s| *s > 0));
}
both!(every_filter_matches_an_independent_expectation);

async fn pages_walk_the_whole_set_and_has_next_page_is_exact(b: Backend) {
    let w = world(&b).await;
    let expected = ids(&visible(&w, None));
    assert_eq!(expected.len(), 90);
    for (n, order) in [(30, "NEWEST_FIRST"), (45, "OLDEST_FIRST"), (7, "NEWEST_FIRST")] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let r = w
                .app
                .graphql(
                    Some(&w.admin),
                    EVENTS,
                    json!({"p": w.project, "n": n, "a": after, "o": order}),
                )
                .await;
            let page = node_ids(&r, "events");
            let info = &r["data"]["events"]["pageInfo"];
            assert_eq!(info["hasPreviousPage"], pages > 0);
            seen.extend(page);
            pages += 1;
            if info["hasNextPage"] == false {
                break;
            }
            after = info["endCursor"].as_str().map(str::to_owned);
        }
        let mut want = expected.clone();
        if order == "OLDEST_FIRST" {
            want.reverse();
        }
        assert_eq!(seen, want, "first {n}, {order}");
        // 90 / 30 и 90 / 45 — последняя страница полная, а hasNextPage на ней false.
        assert_eq!(pages, 90usize.div_ceil(n));
    }
}
both!(pages_walk_the_whole_set_and_has_next_page_is_exact);

async fn first_out_of_range_and_bad_cursors_are_bad_user_input(b: Backend) {
    let w = world(&b).await;
    for n in [0, 501, -1] {
        let r = w
            .app
            .graphql(Some(&w.admin), EVENTS, json!({"p": w.project, "n": n}))
            .await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "first {n}");
        assert!(r["errors"][0]["message"].as_str().unwrap().starts_with("first:"));
    }
    let q = "query($p: UUID!, $s: UUID!, $n: Int) { sessionEvents(projectId: $p, sessionId: $s, first: $n) { nodes { id } } }";
    let ok = w
        .app
        .graphql(
            Some(&w.admin),
            q,
            json!({"p": w.project, "s": w.sessions[0], "n": 5000}),
        )
        .await;
    assert!(ok["errors"].is_null(), "{ok}");
    let bad = w
        .app
        .graphql(
            Some(&w.admin),
            q,
            json!({"p": w.project, "s": w.sessions[0], "n": 5001}),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");

    let r = w
        .app
        .graphql(Some(&w.admin), EVENTS, json!({"p": w.project, "n": 10}))
        .await;
    let cursor = r["data"]["events"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Испорченный, мусорный и чужой (другой порядок, фильтр, поле) курсоры.
    let mut tampered = cursor.clone().into_bytes();
    let k = tampered.len() / 2;
    tampered[k] = if tampered[k] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign_cases = vec![
        json!({"p": w.project, "n": 10, "a": tampered}),
        json!({"p": w.project, "n": 10, "a": "garbage!!"}),
        json!({"p": w.project, "n": 10, "a": cursor, "o": "OLDEST_FIRST"}),
        json!({"p": w.project, "n": 10, "a": cursor, "f": {"hasError": true}}),
    ];
    for vars in foreign_cases {
        let r = w.app.graphql(Some(&w.admin), EVENTS, vars.clone()).await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "{vars}");
    }
    let r = w
        .app
        .graphql(
            Some(&w.admin),
            "query($p: UUID!, $a: String) { sessions(projectId: $p, after: $a) { nodes { sessionId } } }",
            json!({"p": w.project, "a": cursor}),
        )
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "an events cursor used on sessions");
    // Курсор администратора не подходит пользователю (другая область).
    let r = w
        .app
        .graphql(
            Some(&w.bob),
            EVENTS,
            json!({"p": w.project, "n": 10, "a": cursor}),
        )
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
}
both!(first_out_of_range_and_bad_cursors_are_bad_user_input);

async fn session_events_event_and_sessions_follow_the_spec(b: Backend) {
    let w = world(&b).await;
    let s = w.sessions[1];
    // sessionEvents: сначала старые, только видимые.
    let q = "query($p: UUID!, $s: UUID!) { sessionEvents(projectId: $p, sessionId: $s) { nodes { id } } }";
    let r = w
        .app
        .graphql(Some(&w.alice), q, json!({"p": w.project, "s": s}))
        .await;
    let mut want: Vec<&Fx> = visible(&w, Some("alice"))
        .into_iter()
        .filter(|e| e.session == s)
        .collect();
    want.reverse();
    assert_eq!(node_ids(&r, "sessionEvents"), ids(&want));

    // event(id): видимое — есть, чужое — null.
    let q = "query($p: UUID!, $id: UUID!) { event(projectId: $p, id: $id) { id userId } }";
    let bobs = w
        .events
        .iter()
        .find(|e| e.user == "bob" && e.project == w.project)
        .unwrap();
    let r = w
        .app
        .graphql(Some(&w.bob), q, json!({"p": w.project, "id": bobs.id}))
        .await;
    assert_eq!(r["data"]["event"]["id"], bobs.id.to_string());
    let r = w
        .app
        .graphql(Some(&w.alice), q, json!({"p": w.project, "id": bobs.id}))
        .await;
    assert!(r["data"]["event"].is_null(), "{r}");

    // sessions: по последней активности; сводка по всем видимым событиям сессии,
    // даже если фильтру подходит только одно.
    let q = "query($p: UUID!, $f: EventFilter) { sessions(projectId: $p, filter: $f) {
        nodes { sessionId userId firstEventAt lastEventAt events errors agentIds } pageInfo { hasNextPage } } }";
    let r = w
        .app
        .graphql(
            Some(&w.alice),
            q,
            json!({"p": w.project, "f": {"eventTypes": ["ERROR"]}}),
        )
        .await;
    let nodes = r["data"]["sessions"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    let alice = visible(&w, Some("alice"));
    let mut expected_sessions: Vec<_> = w
        .sessions
        .iter()
        .filter(|s| alice.iter().any(|e| e.session == **s && e.ty == "ERROR"))
        .map(|s| {
            let evs: Vec<&&Fx> = alice.iter().filter(|e| e.session == *s).collect();
            let last = evs.iter().map(|e| e.at).max().unwrap();
            (*s, last, evs)
        })
        .collect();
    expected_sessions.sort_by_key(|x| std::cmp::Reverse((x.1, x.0)));
    assert_eq!(nodes.len(), expected_sessions.len());
    for (n, (sid, last, evs)) in nodes.iter().zip(&expected_sessions) {
        assert_eq!(n["sessionId"], sid.to_string());
        assert_eq!(n["events"], evs.len());
        assert_eq!(n["errors"], evs.iter().filter(|e| e.code.is_some()).count());
        assert_eq!(n["userId"], "alice");
        let at: chrono::DateTime<chrono::Utc> = n["lastEventAt"].as_str().unwrap().parse().unwrap();
        assert_eq!(at, *last);
        let mut agents: Vec<String> = evs.iter().filter_map(|e| e.agent.clone()).collect();
        agents.sort();
        agents.dedup();
        assert_eq!(n["agentIds"], json!(agents));
    }
}
both!(session_events_event_and_sessions_follow_the_spec);

async fn event_session_is_batched_one_query_per_page(b: Backend) {
    // Без опроса журнала: иначе фоновый читатель добавляет свои запросы к счёту.
    let w = crate::fixture::world_with(&b, |s| {
        s.log_poll_ms = 3_600_000;
        s.log_notify = false;
        // Потребитель сводок сессий шагает раз в час (первый шаг — при запуске):
        // его инструкции тоже не попадают в счёт.
        s.sessions_follow_ms = 3_600_000;
        s.rollup_interval_ms = 0;
    })
    .await;
    let without = "query($p: UUID!) { events(projectId: $p, first: 90) { nodes { id } } }";
    let with = "query($p: UUID!) { events(projectId: $p, first: 90) { nodes { id session { sessionId events agentIds } } } }";
    let count = |q: &'static str| {
        let w = &w;
        async move {
            let before = w.app.store.statements_executed();
            let r = w.app.graphql(Some(&w.admin), q, json!({"p": w.project})).await;
            assert!(r["errors"].is_null(), "{r}");
            assert_eq!(r["data"]["events"]["nodes"].as_array().unwrap().len(), 90);
            w.app.store.statements_executed() - before
        }
    };
    // Читатель журнала в фоне тоже ходит в базу: дожидаемся, пока он дочитает всё
    // записанное миром (опрос выключен выше).
    w.app.stream.sync_to_head().await.unwrap();
    // Пробуждение от фиксации мира могло остаться в запасе у читателя: ждём, пока
    // счётчик инструкций перестанет меняться.
    loop {
        let before = w.app.store.statements_executed();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if w.app.store.statements_executed() == before {
            break;
        }
    }
    let base = count(without).await;
    let batched = count(with).await;
    // 90 событий в трёх сессиях: сводки — три запроса на всю страницу, а не 90
    // (позиция потребителя `sessions`, его неприменённые строки, строки сводок).
    assert_eq!(
        batched - base,
        3,
        "session summaries took {} statements",
        batched - base
    );
}
both!(event_session_is_batched_one_query_per_page);

async fn sessions_page_through_with_cursors(b: Backend) {
    let w = world(&b).await;
    let q = "query($p: UUID!, $a: String) { sessions(projectId: $p, first: 1, after: $a) {
        nodes { sessionId lastEventAt } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let r = w
            .app
            .graphql(Some(&w.admin), q, json!({"p": w.project, "a": after}))
            .await;
        let conn = &r["data"]["sessions"];
        let nodes = conn["nodes"].as_array().unwrap_or_else(|| panic!("{r}"));
        assert_eq!(nodes.len(), 1);
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], after.is_some());
        seen.push(nodes[0]["sessionId"].as_str().unwrap().to_owned());
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let mut expected: Vec<_> = w
        .sessions
        .iter()
        .map(|s| {
            let last = w
                .events
                .iter()
                .filter(|e| e.session == *s && e.project == w.project)
                .map(|e| e.at)
                .max()
                .unwrap();
            (last, *s)
        })
        .collect();
    expected.sort_by_key(|x| std::cmp::Reverse(*x));
    assert_eq!(
        seen,
        expected.iter().map(|(_, s)| s.to_string()).collect::<Vec<_>>()
    );
}
both!(sessions_page_through_with_cursors);
