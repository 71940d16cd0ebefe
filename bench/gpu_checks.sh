#!/usr/bin/env bash
# Issue 20's GPU checks in one call on a lent GPU machine (the `device` tool), figures to bench/RESULTS.md:
#   point 4: bench/bench_gpu.py (training summed over members, encoding, against the float32 bound);
#   point 5: bench/bench_analysis.py, `analyze` end to end on 1 M planted 7x7 kernels on CUDA (<= 15 s);
#   point 2 on a workstation's cores: bench/bench_ensemble.py on the machine's CPUs (cross_fit=5 against plain).
# The machine has no network. Its image holds torch, numpy, pyarrow, scikit-learn, tqdm and the rest
# that the modules timed import, except duckdb, which travels as a wheel in .whl/ (ignored by git, carried):
#   here, once:      bash bench/gpu_checks.sh --fetch-wheels
#   on the device:   run(command="bash bench/gpu_checks.sh", carry=[".whl"], timeout_s=560)
# The package is laid out under /tmp/kc (links into this checkout: no build, no install of it).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(duckdb==2.0.1)     # the rest the modules timed import is in the image (checked: bench docstrings)
PY=${PYTHON:-python3}      # PYTHON=.venv/bin/python for a smoke run here

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
    exit 0
fi

OUT=${OUT:-/tmp/kc-gpu-out}
mkdir -p "$OUT" /tmp/kc/kernel_catalog
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
for entry in catalog/*; do ln -sfn "$PWD/$entry" "/tmp/kc/kernel_catalog/$(basename "$entry")"; done
ln -sfn "$PWD/adapters" /tmp/kc/kernel_catalog/adapters
ln -sfn "$PWD/migrations" /tmp/kc/kernel_catalog/migrations
# the adapters register through entry points: a dist-info beside the links declares pyproject's
"$PY" - <<'EOF'
import pathlib, tomllib
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
info = pathlib.Path(f"/tmp/kc/kernel_catalog-{project['version']}.dist-info")
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kernel-catalog\nVersion: {project['version']}\n")
(info / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
    for group, points in project["entry-points"].items()))
EOF
export PYTHONPATH=/tmp/kc:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt" || true

# Arguments go to bench_gpu.py; E2E_KERNELS and E2E_DEVICE size the end-to-end run, ENSEMBLE_ARGS the
# ensemble bench on the machine's CPU cores (point 2 on a workstation's cores). A smoke run here:
# PYTHON=.venv/bin/python E2E_KERNELS=20000 E2E_DEVICE=cpu ENSEMBLE_ARGS="--n 120 --steps 20 --repeats 1" \
#   bash bench/gpu_checks.sh --device cpu --members 1 --rows 2000 --epochs 1 --encode 10000
# Each writes its file under $OUT as it goes: a run cut short still returns what was measured.
"$PY" bench/bench_gpu.py "$@" 2>&1 | tee "$OUT/bench_gpu.txt" || true     # each check runs, whatever the last did
"$PY" bench/bench_analysis.py --skip-throughput --kernels "${E2E_KERNELS:-1000000}" --device "${E2E_DEVICE:-cuda}" \
    --floor 2>&1 | tee "$OUT/bench_analysis.txt" || true
# shellcheck disable=SC2086
CUDA_VISIBLE_DEVICES= "$PY" bench/bench_ensemble.py ${ENSEMBLE_ARGS:---n 400 1000 4000 --repeats 2} 2>&1 \
    | tee "$OUT/bench_ensemble_cpu.txt" || true
