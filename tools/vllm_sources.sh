#!/usr/bin/env bash
# Unpack the Python sources of vLLM <version> (PyPI's GPU wheel, no dependencies) into
# <dir>. The wheel's hash is pinned in requirements/vllm-<version>-sources.txt: the first
# download writes that file (commit it), every later one is checked against it.
# Usage: tools/vllm_sources.sh <python> <version> <dir>
set -euo pipefail
py=$1 version=$2 dir=$3
pin="requirements/vllm-$version-sources.txt"
rm -rf "$dir" && mkdir -p "$dir/wheel"
pip=("$py" -m pip --disable-pip-version-check download -q --no-deps -d "$dir/wheel")
if [ -f "$pin" ]; then
  "${pip[@]}" --require-hashes -r "$pin"
else
  "${pip[@]}" "vllm==$version"
  wheel=$(ls "$dir"/wheel/vllm-"$version"-*.whl)
  hash=$(sha256sum "$wheel" | cut -d' ' -f1)
  {
    echo "# vLLM $version's Python sources for \`make vllm-check\` / \`make test-matrix\` (GPU wheel,"
    echo "# no dependencies; pinned by tools/vllm_sources.sh on its first download)."
    echo "vllm==$version --hash=sha256:$hash"
  } > "$pin"
  echo "vllm-sources: pinned $(basename "$wheel") in $pin (sha256 $hash); commit it"
fi
"$py" - "$dir" "$dir"/wheel/vllm-"$version"-*.whl <<'PY'
import sys, zipfile
out, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("vllm/") and n.endswith(".py")])
PY
rm -rf "$dir/wheel"
touch "$dir/.stamp"
