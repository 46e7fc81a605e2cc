#!/usr/bin/env bash
# A real headless browser for the HTML report's test (tests/test_html_report.py opens
# summary.html in it): Debian's chromium, `chromium --headless --dump-dom`.
# Idempotent: installed only when missing.
set -euo pipefail
. "$(dirname "$0")/../lib/apt.sh"

need_tools chromium
chromium --version >/dev/null
