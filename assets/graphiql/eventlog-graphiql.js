// GraphiQL for eventlog, served by the server itself (no CDN).
// Queries and mutations go over POST /graphql with the headers of the editor's
// "Headers" tab; subscriptions go over /graphql/ws, and because GraphiQL does not put
// those headers into `connection_init` by itself, one websocket fetcher is kept per
// distinct set of headers and sends them as the connection_init payload
// (eventlog reads {"Authorization": "Bearer <jwt>"} from it).
(function () {
  "use strict";
  var httpUrl = window.location.origin + "/graphql";
  var wsUrl =
    (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + "/graphql/ws";
  var fetchers = new Map();

  function fetcherFor(headers) {
    var key = JSON.stringify(headers || {});
    var fetcher = fetchers.get(key);
    if (!fetcher) {
      fetcher = GraphiQL.createFetcher({
        url: httpUrl,
        subscriptionUrl: wsUrl,
        headers: headers || {},
        wsConnectionParams: headers || {},
      });
      fetchers.set(key, fetcher);
    }
    return fetcher;
  }

  function fetcher(params, opts) {
    return fetcherFor(opts && opts.headers)(params, opts);
  }

  var defaultQuery = [
    "# Paste a token printed by `eventlog serve` (or `eventlog token`) into the Headers tab:",
    '#   {"Authorization": "Bearer <token>"}',
    '# and {"projectId": "<demo project id>"} into Variables.',
    "",
    "query RecentEvents($projectId: UUID!) {",
    "  events(projectId: $projectId, first: 10) {",
    "    nodes { seq createdAt eventType agentId toolName errorCode payload }",
    "    pageInfo { hasNextPage endCursor }",
    "  }",
    "}",
    "",
    "subscription Live($projectId: UUID!) {",
    "  events(projectId: $projectId) { seq createdAt eventType agentId sessionId }",
    "}",
    "",
  ].join("\n");

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultHeaders: '{\n  "Authorization": "Bearer <token>"\n}',
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: true,
    })
  );
})();
