#!/usr/bin/env bash
# The GPU benchmark kit: bare Keras-on-JAX ResNet-20 against our train stage (bench/gpu_train_bench.py,
# its parts in bench/gpu/*.py, the project helpers it uses in bench/support/).
#
# On the GPU machine, from the repository root, in one call:
#     bash bench/gpu/run.sh [--stretch-seconds 200]         (device run: carry .whl and .gpudata)
# Here, to prove it at toy size on the CPU:   OUT=/tmp/gpu-out bash bench/gpu/run.sh --tiny
#     (python3 must be a 3.12 with jax and the machine's packages; or PYTHON=.venv/bin/python, whose
#     own keras/mlflow are used: .whl/ is installed only into a Python 3.12)
# Once, on a machine with the registry, to fill the ignored folders it needs:
#     bash bench/gpu/run.sh --fetch     (wheels of bench/gpu/wheels.txt into .whl/, the archive into .gpudata/)
#
# Installs .whl/*.whl (if there) into /tmp/site, prints the devices and versions, runs the
# bench with everything it prints also in $OUT/log.txt; figures in $OUT/gpu_bench.json.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-out}
ARCHIVE=.gpudata/cifar10-jpeg.tar.gz

fetch() {
    set -e
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .gpudata
    # shellcheck disable=SC2046
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl $(grep -v '^\s*#' bench/gpu/wheels.txt | grep -v '^\s*$')
    [ -f "$ARCHIVE" ] || cp ../shared/datasets/cifar10-jpeg.tar.gz "$ARCHIVE"
    ls .whl | wc -l | xargs echo "wheels:"
    du -sh .whl .gpudata
}

bench() {
    echo "run.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), $(nproc) cores; args: $*"
    local site=""
    if ! $PY -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        echo "run.sh: $PY is not Python 3.12: .whl/ (built for the GPU machine's 3.12) not installed"
    elif compgen -G ".whl/*.whl" > /dev/null; then
        local started=$SECONDS
        rm -rf /tmp/site
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "run.sh: installing the wheels failed"; return 3; }
        site=/tmp/site
        echo "run.sh: $(ls .whl/*.whl | wc -l) wheels installed into /tmp/site in $((SECONDS - started)) s"
    else
        echo "run.sh: no .whl/: using $PY's own packages"
    fi
    export PYTHONPATH="${site:+$site:}$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    export KERAS_BACKEND=jax MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
    command -v nvidia-smi > /dev/null && nvidia-smi -L
    $PY - <<'EOF' || { echo "run.sh: JAX/Keras do not import"; return 4; }
import sys, jax, jaxlib, keras
print(f"python {sys.version.split()[0]} ({sys.executable}); jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
      f"keras {keras.__version__} ({keras.backend.backend()})")
print(f"jax.devices(): {jax.devices()}; kind: {jax.devices()[0].device_kind}")
EOF
    if [ ! -f "$ARCHIVE" ]; then
        echo "run.sh: $ARCHIVE is missing (bash bench/gpu/run.sh --fetch, and carry .gpudata)"
        return 5
    fi
    $PY bench/gpu_train_bench.py --archive "$ARCHIVE" --out "$OUT" "$@"
}

if [ "${1:-}" = "--fetch" ]; then
    fetch
    exit $?
fi
mkdir -p "$OUT"
bench "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
