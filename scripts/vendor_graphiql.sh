#!/usr/bin/env bash
# Refreshes the vendored GraphiQL assets in weathernote/static/graphiql/ from the npm registry.
#
#   scripts/vendor_graphiql.sh [GRAPHIQL_VERSION [REACT_VERSION]]     (defaults: 3.9.0, 18.3.1)
#
# Needs npm (network) and python3; the tests never run it and never touch the network. It packs
# the three packages in a temporary directory (npm checks each tarball against the registry's
# dist.integrity; this script checks it once more), copies the production UMD builds, the
# stylesheet and the licences, rewrites VERSIONS.txt (sha256 of each file) and the integrity
# attributes (sha384) in index.html. Then run:
#
#   .venv/bin/python -m pytest -q tests/unit/test_graphiql_assets.py tests/system/test_graphiql_browser.py
#
# GraphiQL must stay on a version with a UMD build (graphiql 5 has none) and a production one
# (graphiql <= 3.8.3 ships a webpack development build as graphiql.min.js: refused below).
set -euo pipefail

GRAPHIQL_VERSION=${1:-3.9.0}
REACT_VERSION=${2:-18.3.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/weathernote/static/graphiql
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
for spec in "react@$REACT_VERSION" "react-dom@$REACT_VERSION" "graphiql@$GRAPHIQL_VERSION"; do
    name=${spec%@*}
    expected=$(npm view "$spec" dist.integrity)
    tarball=$(npm pack --silent "$spec" | tail -n 1)
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w 0)"
    if [ "$actual" != "$expected" ]; then
        echo "$tarball: $actual is not the registry's $expected" >&2
        exit 1
    fi
    mkdir "$name"
    tar -xzf "$tarball" -C "$name"
    echo "$tarball  $actual" >>integrity.txt
done

js=graphiql/package/graphiql.min.js
if grep -q webpackBootstrap "$js" || ! grep -q '"production"' "$js"; then
    echo "graphiql@$GRAPHIQL_VERSION: $js is not a production build" >&2
    exit 1
fi
if ! grep -q graphql-transport-ws "$js"; then
    echo "graphiql@$GRAPHIQL_VERSION: $js does not bundle the graphql-ws client" >&2
    exit 1
fi

install -m 0644 react/package/umd/react.production.min.js "$DEST/react.production.min.js"
install -m 0644 react-dom/package/umd/react-dom.production.min.js "$DEST/react-dom.production.min.js"
install -m 0644 "$js" "$DEST/graphiql.min.js"
install -m 0644 graphiql/package/graphiql.min.css "$DEST/graphiql.min.css"
for name in react react-dom graphiql; do
    install -m 0644 "$name/package/LICENSE" "$DEST/licenses/$name.LICENSE"
done

GRAPHIQL_VERSION=$GRAPHIQL_VERSION REACT_VERSION=$REACT_VERSION DEST=$DEST python3 - <<'PY'
import base64
import hashlib
import os
import re
from pathlib import Path

dest = Path(os.environ["DEST"])
graphiql, react = os.environ["GRAPHIQL_VERSION"], os.environ["REACT_VERSION"]
files = ["react.production.min.js", "react-dom.production.min.js", "graphiql.min.js", "graphiql.min.css"]

# index.html: the integrity attribute that follows each vendored file's URL
page = dest / "index.html"
html = page.read_text()
for name in files:
    digest = base64.b64encode(hashlib.sha384((dest / name).read_bytes()).digest()).decode()
    html, count = re.subn(
        rf'(/graphiql/{re.escape(name)}"\s+integrity=")sha384-[A-Za-z0-9+/=]+(")', rf"\g<1>sha384-{digest}\g<2>", html
    )
    if count != 1:
        raise SystemExit(f"index.html: no integrity attribute after /graphiql/{name}")
page.write_text(html)

versions = dest / "VERSIONS.txt"
text = versions.read_text()
head, _, _ = text.partition("package@version")
tail = text[text.index("\nOur own files") :]
rows = [
    (f"react@{react}", "package/umd/react.production.min.js", "react.production.min.js"),
    (f"react-dom@{react}", "package/umd/react-dom.production.min.js", "react-dom.production.min.js"),
    (f"graphiql@{graphiql}", "package/graphiql.min.js", "graphiql.min.js"),
    (f"graphiql@{graphiql}", "package/graphiql.min.css", "graphiql.min.css"),
    (f"react@{react}", "package/LICENSE", "licenses/react.LICENSE"),
    (f"react-dom@{react}", "package/LICENSE", "licenses/react-dom.LICENSE"),
    (f"graphiql@{graphiql}", "package/LICENSE", "licenses/graphiql.LICENSE"),
]
lines = ["package@version   path inside the npm tarball                 vendored as"]
lines += [f"{pkg:<17} {path:<43} {name}" for pkg, path, name in rows]
lines += ["", "npm tarball integrity (dist.integrity)"]
for line in Path("integrity.txt").read_text().splitlines():
    tarball, integrity = line.split()
    lines.append(f"{tarball:<21} {integrity}")
lines += ["", "sha256 of the vendored files"]
lines += [f"{name:<28} {hashlib.sha256((dest / name).read_bytes()).hexdigest()}" for name in files]
versions.write_text(head + "\n".join(lines) + "\n" + tail)
print(f"vendored graphiql@{graphiql}, react@{react} and react-dom@{react} into {dest}")
PY
