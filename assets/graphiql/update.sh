#!/usr/bin/env bash
# Regenerates dist/ (GraphiQL served by `GET /graphql`, embedded in the binary with
# include_bytes!) from the npm packages pinned in package.json. Needs Node and npm;
# `cargo build` does not: dist/ is committed. Run after changing a version:
#   bash assets/graphiql/update.sh && cargo build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$work/"
[ -f "$here/package-lock.json" ] && cp "$here/package-lock.json" "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
cp "$work/package-lock.json" "$here/package-lock.json"
nm="$work/node_modules"
mkdir -p "$here/dist"
# The source-map comments point at files that are not shipped: drop them.
strip_map() { sed -e '/^\/\/# sourceMappingURL=/d' -e 's#/\*\# sourceMappingURL=[^*]*\*/##' "$1" > "$2"; }
strip_map "$nm/react/umd/react.production.min.js" "$here/dist/react.production.min.js"
strip_map "$nm/react-dom/umd/react-dom.production.min.js" "$here/dist/react-dom.production.min.js"
strip_map "$nm/graphiql/graphiql.min.js" "$here/dist/graphiql.min.js"
strip_map "$nm/graphiql/graphiql.min.css" "$here/dist/graphiql.min.css"
{
  for p in react react-dom graphiql; do
    echo "== $p $(node -p "require('$nm/$p/package.json').version") =="
    cat "$nm/$p/LICENSE"
    echo
  done
} > "$here/dist/LICENSES.txt"
ls -l "$here/dist"
