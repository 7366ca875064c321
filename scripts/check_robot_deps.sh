#!/usr/bin/env bash
# Resolve docker/requirements-robot.txt for the robot PC (Python 3.12, manylinux x86_64, Ubuntu 24.04's glibc
# 2.39) without installing anything: a dependency conflict (NumPy 1 vs a package that needs 2, a CUDA 13
# torch) shows here instead of in a failed image build. Needs PyPI; takes a few minutes (it reads the
# metadata of torch's CUDA wheels). Writes the resolved set to ${OUT:-/tmp/flow2one-robot-deps.json}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/flow2one-robot-deps.json}
REQ=docker/requirements-robot.txt
plat=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for v in $(seq 17 39); do plat+=(--platform "manylinux_2_${v}_x86_64"); done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
grep -v "not wheel-only" "$REQ" > "$tmp/wheels.txt"
"$PY" -m pip install -q --dry-run --report "$OUT" --target "$tmp/t" --python-version 3.12 \
  --only-binary=:all: "${plat[@]}" -r "$tmp/wheels.txt" 2>&1 | { grep -v "^WARNING: Location" || true; }
# The source packages: only that their pinned versions exist (building them here would take minutes).
grep -E "^[^#].*not wheel-only" "$REQ" | sed "s/#.*//" | while read -r spec; do
  name=${spec%%==*}; version=${spec##*==}
  versions=$("$PY" -m pip index versions "$name" 2>/dev/null || true)
  grep -q "[ ,]$version\(,\|$\)" <<<"$versions" \
    || { echo "robot deps: $name $version not found on the index" >&2; exit 1; }
done
"$PY" - "$OUT" <<'PY'
import json, sys
got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
bad = [f"numpy {got['numpy']} (Jazzy's apt packages need NumPy 1)"] if got["numpy"].split(".")[0] != "1" else []
bad += [f"{n} {v} (CUDA 13 beside tensorrt-cu12)" for n, v in got.items() if n.endswith("-cu13")]
print(f"robot deps resolve: {len(got)} packages for Python 3.12 manylinux x86_64; numpy {got['numpy']}, "
      f"torch {got['torch']}, onnxruntime-gpu {got['onnxruntime-gpu']}, franky-control {got['franky-control']}")
if bad:
    sys.exit("robot deps conflict: " + "; ".join(bad))
PY
