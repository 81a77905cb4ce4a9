#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png: runs the browser test that opens every page of
# the web UI at a desktop and a narrow width (needs Debian's chromium and
# chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDSTORE_SCREENSHOTS=1 FOLDSTORE_REQUIRE_BROWSER=1 \
  cargo test -p foldstore-server --test browser every_page_renders_and_screenshots -- --nocapture
