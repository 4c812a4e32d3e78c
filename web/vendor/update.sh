#!/usr/bin/env bash
# Reproduces the browser libraries embedded in the binary from the pinned
# lockfile, and their checksum manifest. Needs Node and npm; `go run .` and
# `go build` do not.
#
#   web/vendor/update.sh           install exactly what package-lock.json pins, copy, rewrite SHA256SUMS
#   web/vendor/update.sh --check   the same into a temporary folder, then compare with what is committed
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
nm="$work/node_modules"

out="$work/out"
mkdir -p "$out/jose"
# name in the binary <- file in the npm package
cp "$nm/react/umd/react.production.min.js"          "$out/react.production.min.js"
cp "$nm/react-dom/umd/react-dom.production.min.js"  "$out/react-dom.production.min.js"
cp "$nm/graphiql/dist/index.umd.js"                 "$out/graphiql.min.js"
cp "$nm/graphiql/dist/style.css"                    "$out/graphiql.min.css"
cp "$nm/graphql-ws/umd/graphql-ws.min.js"           "$out/graphql-ws.min.js"
# jose's browser build is a tree of ES modules; the pages import index.js.
(cd "$nm/jose/dist/webapi" && find . -name '*.js' | while read -r f; do
  mkdir -p "$out/jose/$(dirname "$f")"; cp "$f" "$out/jose/$f"; done)
# Source-map comments point at files that are not shipped.
find "$out" -name '*.js' -exec sed -i '/^\/\/# sourceMappingURL=/d' {} +
for pkg in react react-dom graphiql graphql-ws jose; do
  cp "$nm/$pkg/LICENSE"* "$out/LICENSE.$pkg" 2>/dev/null || true
done
(cd "$out" && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum > SHA256SUMS)

if [[ "${1:-}" == "--check" ]]; then
  diff -r "$out" "$here/dist" && echo "web/vendor/dist matches package-lock.json"
  exit
fi
rm -rf "$here/dist"
cp -r "$out" "$here/dist"
echo "wrote $(wc -l < "$here/dist/SHA256SUMS") files to web/vendor/dist"
