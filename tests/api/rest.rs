//! REST-совместимость SPEC §6.

use eventlog::query::Role;

use crate::both;
use crate::fixture::{Fx, ids, visible, world};
use crate::helpers::Backend;

async fn rest_routes_page_filter_and_name_bad_parameters(b: Backend) {
    let w = world(&b).await;
    let base = format!("/my/projects/{}", w.project);
    // Сначала новые, курсор до конца, next_cursor null на последней странице.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}/events?limit=40&cursor={c}"),
            None => format!("{base}/events?limit=40"),
        };
        let (status, body) = w.app.get(Some(&w.admin), &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["limit"], 40);
        assert_eq!(body["offset"], 0);
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids(&visible(&w, None)));
    // Фильтры и смещение.
    let (_, body) = w
        .app
        .get(
            Some(&w.admin),
            &format!("{base}/events?event_type=ERROR&agent_id=agent-a&limit=500&offset=1"),
        )
        .await;
    let want: Vec<&Fx> = visible(&w, None)
        .into_iter()
        .filter(|e| e.ty == "ERROR" && e.agent.as_deref() == Some("agent-a"))
        .skip(1)
        .collect();
    let got: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids(&want));
    assert_eq!(body["offset"], 1);
    // Маршрут сессии — сначала старые.
    let s = w.sessions[0];
    let (_, body) = w
        .app
        .get(Some(&w.admin), &format!("{base}/events/{s}?limit=500"))
        .await;
    let mut want: Vec<&Fx> = visible(&w, None).into_iter().filter(|e| e.session == s).collect();
    want.reverse();
    let got: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids(&want));
    assert!(body["next_cursor"].is_null());
    // Аналитика со snake_case полями.
    let (status, body) = w
        .app
        .get(Some(&w.admin), &format!("{base}/analytics?bucket=day"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["total_events"], 90);
    assert!(body["error_stats"]["by_code"].is_array());
    // Неверные параметры — 400 с именем параметра.
    for (q, param) in [
        ("events?limit=0", "limit"),
        ("events?limit=501", "limit"),
        ("events?limit=ten", "limit"),
        ("events?offset=-1", "offset"),
        ("events?from=yesterday", "from"),
        ("events?session_id=nope", "session_id"),
        ("events?cursor=zzz", "cursor"),
        ("analytics?bucket=week", "bucket"),
        ("analytics?to=1", "to"),
    ] {
        let (status, body) = w.app.get(Some(&w.admin), &format!("{base}/{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["parameter"], param, "{q}: {body}");
    }
    let (status, body) = w.app.get(Some(&w.admin), "/my/projects/not-a-uuid/events").await;
    assert_eq!(
        (status, body["error"]["parameter"].as_str()),
        (400, Some("project_id"))
    );
    // Проект вне claim — 404; без токена — 401.
    let other = w.app.token("root", Role::Admin, &[w.other_project]);
    assert_eq!(w.app.get(Some(&other), &format!("{base}/events")).await.0, 404);
    assert_eq!(w.app.get(None, &format!("{base}/events")).await.0, 401);
}
both!(rest_routes_page_filter_and_name_bad_parameters);
