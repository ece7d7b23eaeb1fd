#!/usr/bin/env bash
# Fetches uPlot (the web console's charting library) from the npm registry with
# `npm pack`, checks the tarball against its pinned digest and copies the built
# files into the console's static folder. Nothing is committed and the page
# never fetches it from the internet. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.6.32
SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
dest=src/connector_console/static/vendor
[ -f "$dest/uPlot.iife.min.js" ] && [ -f "$dest/uPlot.min.css" ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null)
echo "$SHA256  $tmp/uplot-$VERSION.tgz" | sha256sum --check --quiet
tar xzf "$tmp/uplot-$VERSION.tgz" -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$dest/"
cp "$tmp/package/LICENSE" "$dest/uPlot.LICENSE"
echo "vendor-uplot: uPlot $VERSION in $dest"
