// Boots the vendored GraphiQL (globals React, ReactDOM and GraphiQL come from
// the UMD builds loaded before this file). Nothing here loads anything remote:
// HTTP queries go to the same-origin GraphQL path, and subscriptions go over a
// WebSocket to the same host (graphql-transport-ws protocol, via the graphql-ws
// client bundled inside graphiql.min.js).
(function () {
  "use strict";

  var DEFAULT_QUERY =
    "# weathernote GraphQL explorer\n" +
    "#\n" +
    "# Run: Ctrl-Enter or the play button.\n" +
    "# Subscriptions use a WebSocket to this server.\n" +
    "# Headers (Headers tab) go with every request and\n" +
    "# in the WebSocket connection_init payload, and\n" +
    "# are kept in this browser's localStorage.\n" +
    "\n" +
    "{\n" +
    "  current(lat: 40.7128, lon: -74.0060) {\n" +
    "    temperature\n" +
    "    condition {\n" +
    "      description\n" +
    "    }\n" +
    "    cached\n" +
    "    cell {\n" +
    "      lat\n" +
    "      lon\n" +
    "    }\n" +
    "  }\n" +
    "}\n";

  var container = document.getElementById("graphiql");
  var graphqlPath = container.getAttribute("data-graphql-path") || "/graphql";
  var subscriptionPath =
    container.getAttribute("data-subscription-path") || graphqlPath;

  // The page's Content-Security-Policy allows styles from this server and
  // <style> elements that carry this response's nonce. GraphiQL's dialogs and
  // menus insert one (react-remove-scroll-bar, via react-style-singleton),
  // which takes its nonce from the global __webpack_nonce__ (a name left from
  // webpack's convention). Served as a plain file (/graphiql/index.html) the
  // placeholder is still there: no nonce, and those <style> elements are
  // refused (the dialogs still work, without their scroll lock).
  var styleNonce = container.getAttribute("data-style-nonce");
  if (styleNonce && styleNonce !== "__CSP_NONCE__") {
    window.__webpack_nonce__ = styleNonce;
  }
  container.removeAttribute("data-style-nonce");

  // Same origin as the page: the page's scheme, host and port with the
  // GraphQL path for queries and mutations; the same host and port with the
  // ws: scheme (wss: when the page is served over https:) for subscriptions.
  var httpUrl = new URL(graphqlPath, window.location.href);
  var wsUrl = new URL(subscriptionPath, window.location.href);
  wsUrl.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  wsUrl.hash = "";

  var fetcher = GraphiQL.createFetcher({
    url: httpUrl.toString(),
    subscriptionUrl: wsUrl.toString(),
  });

  var root = ReactDOM.createRoot(container);
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    })
  );
})();
