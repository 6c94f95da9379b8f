//! Быстрый путь страниц событий против общего исполнителя: два сервера на одной
//! базе (быстрый путь включён и выключен), одни и те же запросы — ответы должны
//! совпадать байт в байт (тело, код, Content-Type). Для форм быстрого пути тест
//! проверяет по счётчику, что ответ действительно дал быстрый путь; для прочих —
//! что запрос ушёл общим путём.

use serde_json::{Value, json};

use crate::both;
use crate::fixture::world;
use crate::helpers::{Backend, TestApp, spawn_instance};
use eventlog::api::graphql::fast::FastPath;

/// Ответ как есть: код, Content-Type, тело.
async fn raw(
    app: &TestApp,
    token: Option<&str>,
    accept: Option<&str>,
    body: &Value,
) -> (u16, String, String) {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.addr))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.text().await.expect("body"))
}

const FULL: &str = "query($p: UUID!, $f: EventFilter, $o: SortOrder, $n: Int, $a: String) {
  events(projectId: $p, filter: $f, order: $o, first: $n, after: $a) {
    nodes { id seq sessionId userId projectId agentId eventType payload createdAt errorCode toolName approvalStatus }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

async fn fast_path_answers_byte_for_byte_like_the_general_executor(b: Backend) {
    let w = world(&b).await;
    let general = spawn_instance(&w.app.db_url, |s| s.graphql_fast_path = false).await;
    let fast = &w.app;
    let p = w.project.to_string();
    let s0 = w.sessions[0].to_string();

    // Курсор второй страницы для запросов с `after`.
    let first_page = fast.graphql(Some(&w.admin), FULL, json!({"p": p, "n": 7})).await;
    let cursor = first_page["data"]["events"]["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let sess_page = fast
        .graphql(
            Some(&w.admin),
            "query($p: UUID!, $s: UUID!) { sessionEvents(projectId: $p, sessionId: $s, first: 5) { pageInfo { endCursor } } }",
            json!({"p": p, "s": s0}),
        )
        .await;
    let sess_cursor = sess_page["data"]["sessionEvents"]["pageInfo"]["endCursor"]
        .as_str()
        .expect("session cursor")
        .to_owned();

    // (запрос, операция, переменные, ждём ли быстрый путь)
    let fast_shapes: Vec<(String, Option<&str>, Value)> = vec![
        (FULL.into(), None, json!({"p": p})),
        (FULL.into(), None, json!({"p": p, "n": 7, "a": cursor})),
        (FULL.into(), None, json!({"p": p, "o": "OLDEST_FIRST", "n": 500})),
        (
            FULL.into(),
            None,
            json!({"p": p, "f": {"eventTypes": ["ERROR", "TOOL_RESULT"], "hasError": true}}),
        ),
        (
            FULL.into(),
            None,
            json!({"p": p, "f": {"agentIds": ["agent-a"], "from": w.t0.to_rfc3339(), "to": null}}),
        ),
        (
            FULL.into(),
            None,
            json!({"p": p, "f": {"payloadContains": {"n": 3}}, "n": null, "o": null, "a": null}),
        ),
        // Фрагменты, псевдонимы, __typename, объединение одинаковых ключей.
        (
            "query Page($p: UUID!) { __typename list: events(projectId: $p, first: 4) {
               __typename edges { __typename cursor node { ...Ev __typename } }
               pageInfo { ...Pi } edges { node { id kind: eventType } } } }
             fragment Ev on Event { id seq at: createdAt payload userId }
             fragment Pi on PageInfo { hasNextPage endCursor __typename }"
                .into(),
            Some("Page"),
            json!({"p": p}),
        ),
        (
            "query Page($p: UUID!) { events(projectId: $p, first: 2) { nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { t1: __typename events(projectId: $p, first: 2) { nodes { id } __typename } }".into(),
            None,
            json!({"p": p}),
        ),
        // Встроенные фрагменты и директивы с литералами и переменными.
        (
            "query($p: UUID!, $yes: Boolean!, $no: Boolean!) { events(projectId: $p, first: 3) {
               ... on EventConnection { nodes { id eventType @skip(if: $yes) agentId @include(if: $yes) } }
               ... @include(if: $no) { pageInfo { hasNextPage } }
               pageInfo @skip(if: false) { startCursor hasPreviousPage @include(if: true) }
               edges @skip(if: true) { cursor } } }"
                .into(),
            None,
            json!({"p": p, "yes": true, "no": false}),
        ),
        // Литералы аргументов, значения переменных по умолчанию.
        (
            format!(
                "{{ events(projectId: \"{p}\", first: 3, order: OLDEST_FIRST, filter: {{eventTypes: [\"ERROR\"], userId: \"bob\"}}) {{ nodes {{ id errorCode }} }} }}"
            ),
            None,
            json!({}),
        ),
        (
            "query($p: UUID!, $n: Int = 4, $o: SortOrder = OLDEST_FIRST) { events(projectId: $p, first: $n, order: $o) { nodes { id createdAt } pageInfo { hasNextPage } } }".into(),
            None,
            json!({"p": p}),
        ),
        // Переменные внутри литерала фильтра (форма `page-type` бенчмарка).
        (
            "query($p: UUID!, $t: String!, $a: String) { events(projectId: $p, filter: {eventTypes: [$t]}, first: 5, after: $a) {
               edges { cursor node { id eventType } } pageInfo { hasNextPage endCursor } } }"
                .into(),
            None,
            json!({"p": p, "t": "ERROR", "a": null}),
        ),
        (
            "query($p: UUID!, $t: String!, $u: String, $e: Boolean, $s: UUID) { events(projectId: $p,
               filter: {eventTypes: [$t, \"TOOL_RESULT\"], userId: $u, hasError: $e, sessionId: $s, agentIds: [\"agent-a\"]}, first: 9) {
               nodes { id userId errorCode } } }"
                .into(),
            None,
            json!({"p": p, "t": "ERROR", "u": null, "e": true, "s": s0}),
        ),
        // sessionEvents.
        (
            "query($p: UUID!, $s: UUID!, $n: Int, $a: String) { sessionEvents(projectId: $p, sessionId: $s, first: $n, after: $a) {
               edges { cursor node { id seq eventType payload createdAt } } pageInfo { hasNextPage hasPreviousPage endCursor } } }"
                .into(),
            None,
            json!({"p": p, "s": s0, "n": 5, "a": sess_cursor}),
        ),
        (
            "query($p: UUID!, $s: UUID!) { sessionEvents(projectId: $p, sessionId: $s) { nodes { id userId } } }".into(),
            None,
            json!({"p": p, "s": s0}),
        ),
    ];
    // Формы, которые быстрый путь не берёт (или берёт только разбор, но не эти
    // значения): ответ общего пути, в том числе ошибки.
    let general_shapes: Vec<(String, Option<&str>, Value)> = vec![
        (
            "query($p: UUID!) { events(projectId: $p, first: 2) { nodes { id session { events agentIds } } } }".into(),
            None,
            json!({"p": p}),
        ),
        (FULL.into(), None, json!({"p": p, "a": "not-a-cursor"})),
        // Переменные в литерале фильтра, которые быстрый путь не берёт: необязательная в
        // позиции `String!`, не того типа, без значения, значение не того вида.
        (
            "query($p: UUID!, $t: String) { events(projectId: $p, filter: {eventTypes: [$t]}, first: 3) { nodes { id } } }".into(),
            None,
            json!({"p": p, "t": "ERROR"}),
        ),
        (
            "query($p: UUID!, $t: Int!) { events(projectId: $p, filter: {eventTypes: [$t]}, first: 3) { nodes { id } } }".into(),
            None,
            json!({"p": p, "t": 5}),
        ),
        (
            "query($p: UUID!, $u: String) { events(projectId: $p, filter: {userId: $u}, first: 3) { nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!, $s: UUID) { events(projectId: $p, filter: {sessionId: $s}, first: 3) { nodes { id } } }".into(),
            None,
            json!({"p": p, "s": "not-a-uuid"}),
        ),
        (
            "query($p: UUID!, $t: String!) { events(projectId: $p, filter: {eventTypes: $t}, first: 3) { nodes { id } } }".into(),
            None,
            json!({"p": p, "t": "ERROR"}),
        ),
        (FULL.into(), None, json!({"p": p, "n": 0})),
        (FULL.into(), None, json!({"p": p, "n": 501})),
        (FULL.into(), None, json!({"p": "not-a-uuid"})),
        (FULL.into(), None, json!({})),
        (FULL.into(), None, json!({"p": p, "f": {"eventTypes": "ERROR"}})),
        (FULL.into(), None, json!({"p": p, "f": {"nope": 1}})),
        (FULL.into(), None, json!({"p": p, "f": {"payloadContains": [1]}})),
        (FULL.into(), None, json!({"p": p, "o": "SIDEWAYS"})),
        (
            "query($p: String!) { events(projectId: $p) { nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!, $x: Int) { events(projectId: $p) { nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p) { nodes { id } } } fragment U on Event { id }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query A($p: UUID!) { events(projectId: $p) { nodes { id } } } query B { __typename }".into(),
            Some("A"),
            json!({"p": p}),
        ),
        (
            "query A($p: UUID!) { events(projectId: $p) { nodes { id } } }".into(),
            Some("B"),
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p) { nodes { id: eventType id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p) { nodes { id @deprecated } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p) { nodes } }".into(),
            None,
            json!({"p": p}),
        ),
        // Все поля объекта пропущены: общий путь отдаёт null.
        (
            "query($p: UUID!) { events(projectId: $p) { pageInfo { hasNextPage @skip(if: true) } nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p) @skip(if: true) { nodes { id } } }".into(),
            None,
            json!({"p": p}),
        ),
        (
            "query($p: UUID!) { events(projectId: $p, first: 2) { nodes { id(x: 1) } } }".into(),
            None,
            json!({"p": p}),
        ),
    ];

    // Два поля с обращением к базе: общий исполнитель кладёт их в порядке
    // готовности (недетерминированно), быстрый путь такие запросы не берёт.
    assert!(!FastPath::accepts(
        "query($p: UUID!) { events(projectId: $p) { nodes { id } } sessions(projectId: $p) { nodes { sessionId } } }",
        None
    ));
    // `__typename` после страницы: общий исполнитель кладёт готовые поля раньше
    // ждущих базу, а страница иногда готова сразу — порядок ключей у него не
    // определён, и быстрый путь такой запрос не берёт.
    assert!(!FastPath::accepts(
        "query($p: UUID!) { events(projectId: $p) { nodes { id } } __typename }",
        None
    ));
    let other = w.other_project.to_string();
    let tokens: Vec<Option<&str>> = vec![
        Some(w.admin.as_str()),
        Some(w.alice.as_str()),
        Some(w.bob.as_str()),
        None,
        Some("not.a.token"),
    ];
    for (expect_fast, shapes) in [(true, &fast_shapes), (false, &general_shapes)] {
        for (query, op, vars) in shapes {
            if expect_fast {
                assert!(FastPath::accepts(query, *op), "the fast path must plan {query}");
            }
            for token in &tokens {
                for accept in [None, Some("application/graphql-response+json")] {
                    let mut body = json!({"query": query, "variables": vars});
                    if let Some(op) = op {
                        body["operationName"] = json!(op);
                    }
                    let before = fast.fast.served();
                    let got = raw(fast, *token, accept, &body).await;
                    let served = fast.fast.served() - before;
                    let want = raw(&general, *token, accept, &body).await;
                    assert_eq!(
                        got, want,
                        "fast and general responses differ for {body} with token {token:?}"
                    );
                    // Успех под проверенным токеном — быстрым путём; всё прочее — общим.
                    let ok = got.0 == 200 && !got.2.contains("\"errors\"");
                    let authed = matches!(token, Some(t) if *t != "not.a.token");
                    assert_eq!(
                        served,
                        u64::from(expect_fast && ok && authed),
                        "fast path use for {body} (status {}, token {token:?}): {}",
                        got.0,
                        got.2
                    );
                }
            }
        }
    }
    // Проект вне claim и чужие строки: ответы тоже совпадают (ошибка или пусто).
    let body = json!({"query": FULL, "variables": {"p": other}});
    assert_eq!(
        raw(fast, Some(&w.bob), None, &body).await,
        raw(&general, Some(&w.bob), None, &body).await
    );
    // Страница действительно непуста и содержит нагрузки: сравнение не вырождено.
    let (_, _, text) = raw(
        fast,
        Some(&w.admin),
        None,
        &json!({"query": FULL, "variables": {"p": p}}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"]["events"]["nodes"].as_array().unwrap().len(), 50, "{v}");
    assert!(v["data"]["events"]["nodes"][0]["payload"].is_object(), "{v}");
}
both!(fast_path_answers_byte_for_byte_like_the_general_executor);

/// Предел размера страницы (`EVENTLOG_MAX_PAGE_BYTES`) режет страницу одинаково
/// на обоих путях: и когда нагрузки выбраны, и когда читаются только id.
async fn page_byte_limit_cuts_pages_alike_on_both_paths(b: Backend) {
    let w = world(&b).await;
    // 40 свежих событий с нагрузкой ~1 КБ: страница с нагрузками не помещается в
    // 30 000 байт, страница из одних id (оценка ~512 байт на событие) — помещается.
    let session = uuid::Uuid::now_v7();
    let big: Vec<Value> = (0..40)
        .map(|i| {
            json!({"sessionId": session, "projectId": w.project, "userId": "bob",
                   "eventType": "TOOL_RESULT", "payload": {"i": i, "blob": "x".repeat(1000)}})
        })
        .collect();
    let r = w.app.ingest(&w.service, Value::Array(big)).await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 40, "{r}");
    let small = |s: &mut eventlog::config::Settings| s.max_page_bytes = 30_000;
    let fast = spawn_instance(&w.app.db_url, small).await;
    let general = spawn_instance(&w.app.db_url, |s| {
        small(s);
        s.graphql_fast_path = false;
    })
    .await;
    let p = w.project.to_string();
    for query in [
        FULL,
        "query($p: UUID!, $n: Int) { events(projectId: $p, first: $n) { nodes { id } pageInfo { hasNextPage endCursor } } }",
    ] {
        let body = json!({"query": query, "variables": {"p": p, "n": 40}});
        let before = fast.fast.served();
        let got = raw(&fast, Some(&w.admin), None, &body).await;
        assert_eq!(fast.fast.served() - before, 1, "served by the fast path");
        assert_eq!(got, raw(&general, Some(&w.admin), None, &body).await, "{body}");
        let v: Value = serde_json::from_str(&got.2).unwrap();
        let n = v["data"]["events"]["nodes"].as_array().unwrap().len();
        if query == FULL {
            assert!(n < 40, "the payloads exceed the limit, the page is cut: {n}");
        } else {
            assert_eq!(n, 40, "ids alone fit");
        }
    }
}
both!(page_byte_limit_cuts_pages_alike_on_both_paths);
