#!/usr/bin/env bash
# The README's pictures of the QC page: 12 phantom cases (no MSD image goes into the repository), `hippo-peft qc`
# with their references, the page rendered by headless Chromium. Usage: bash scripts/qc_phantom_page.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/qc}
PY=${PY:-.venv/bin/python}
HP=${HP:-.venv/bin/hippo-peft}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -c "from hippo_peft.experiments.qc_phantoms import write_qc_phantoms; write_qc_phantoms('$TMP', 12)"
status=0
"$HP" qc "$TMP/pred" --images "$TMP/images" --reference "$TMP/ref" -o "$TMP/qc" --no-progress || status=$?
[ "$status" -eq 1 ] || { echo "expected exit 1 (two phantoms cannot be drawn), got $status"; exit 1; }
mkdir -p "$OUT"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$TMP/profile" \
  --window-size=1300,1000 --screenshot="$OUT/phantoms_page.png" "file://$TMP/qc/index.html" 2>/dev/null
cp "$TMP/qc/cases/phantom_001.png" "$OUT/phantom_001.png"
echo "wrote $OUT/phantoms_page.png and $OUT/phantom_001.png"
