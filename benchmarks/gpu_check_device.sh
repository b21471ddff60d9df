#!/usr/bin/env bash
# The whole GPU check on an offline NVIDIA machine, as one command from the repository root:
#
#   OUT=/some/dir benchmarks/gpu_check_device.sh
#
# Needs: nvcc, CMake, ninja, scikit-build-core and Python 3.12 with numpy, psutil, jinja2 and
# sentencepiece on the machine, and .whl/ from benchmarks/gpu_check_prepare.sh beside the repo
# (gguf, platformdirs, nvidia-ml-py, pyyaml wheels and the trimmed llama-cpp-python sdist).
# Installs nothing system-wide: packages go to .gpu_site/ (put first on PYTHONPATH).
#
# Steps, each result written to $OUT as soon as it exists, so a run cut short still reports:
#   $OUT/tools.txt            nvidia-smi, nvcc, cmake, ninja, python versions
#   $OUT/build.log.gz         llama-cpp-python's CUDA build (under `timeout $BUILD_TIMEOUT`)
#   $OUT/llama_offload.txt    llama_supports_gpu_offload() of the build
#   $OUT/gpu_check/           benchmarks/gpu_check.py's gpu_check.json and gpu_check.md
#   $OUT/serve_load.json|.md  benchmarks/serve_load.py (demo model and a random 180M one), if
#                             at least 40 s of TOTAL_BUDGET are left
#   $OUT/steps.log            what ran, when, with which exit status
# Budget: everything under TOTAL_BUDGET seconds (default 560): each step's timeout is its own
# (BUILD_TIMEOUT 330 s, CHECK_TIMEOUT 230 s, SERVE_TIMEOUT 150 s) or what is left, if less.
# SKIP_BUILD=1 uses the llama-cpp-python already importable (a dry run on a CPU machine);
# REUSE_LLAMA_TGZ=FILE unpacks a build an earlier run saved as $OUT/llama_cpp_cuda_sm<arch>.tgz.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

OUT=${OUT:-gpu_check_out}
WHL=${WHL:-.whl}
SITE=$PWD/.gpu_site
LLAMA_VERSION=${LLAMA_VERSION:-0.3.36}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-330}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-230}
SERVE_TIMEOUT=${SERVE_TIMEOUT:-150}
TOTAL_BUDGET=${TOTAL_BUDGET:-560}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu_check_work}
T_START=$(date +%s)
CUDA_ARCH=${CUDA_ARCH:-90} # Hopper (H100/H200); the Jetson AGX Orin is 87
# EXTRA_CMAKE_ARGS: more llama.cpp options, e.g. -DGGML_CUDA_FA=OFF to halve the build time
# The CPU side for AVX2, not GGML_NATIVE: on the first H200 run (2026-12-04) a native build had
# ggml's AMX kernels on (AMX_INT8 = 1) and every generation crashed with SIGSEGV; those kernels
# also crash on small models on our AMX CI machine (see the Makefile).
CPU_CMAKE_ARGS=${CPU_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}
PY=${PYTHON:-$(command -v python3.12 || command -v python3)}
mkdir -p "$OUT" "$SITE"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/steps.log"; }
# The smaller of a step's own timeout and the seconds left of TOTAL_BUDGET (5 s kept back).
budget() {
    local left=$((TOTAL_BUDGET - ($(date +%s) - T_START) - 5))
    echo $((left < $1 ? left : $1))
}
# Installs wheels into $SITE unless every named module already imports.
need() {
    local mods=$1
    shift
    if "$PY" -c "import ${mods}" 2>/dev/null; then
        log "have: ${mods}"
    else
        "$PY" -m pip install --quiet --no-deps --target "$SITE" "$@" >>"$OUT/steps.log" 2>&1
        log "installed for ${mods}: exit $?"
    fi
}

export PATH="/usr/local/cuda/bin:$PATH"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONFAULTHANDLER=1 # a segfaulting child prints its Python stack into the report
# Offline: never look for an index (it would wait for network timeouts); --target skips PEP 668.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 PIP_BREAK_SYSTEM_PACKAGES=1

log "start; OUT=$OUT"
{
    date -u
    nvidia-smi || echo "nvidia-smi: failed"
    nvcc --version || echo "nvcc: not found"
    cmake --version | head -1 || echo "cmake: not found"
    ninja --version || echo "ninja: not found"
    "$PY" --version
    "$PY" -c "import scikit_build_core, numpy, psutil, jinja2, sentencepiece; print('build deps ok')"
    nproc
} >"$OUT/tools.txt" 2>&1
log "tools: $(tail -2 "$OUT/tools.txt" | head -1)"

need gguf "$WHL"/gguf-*.whl
need platformdirs "$WHL"/platformdirs-*.whl
need pynvml "$WHL"/nvidia_ml_py-*.whl
need yaml "$WHL"/pyyaml-*.whl
need diskcache "$WHL"/diskcache-*.whl # llama_cpp imports it
# `amalia-edge serve` for the serve_load step: all of them or none (pydantic with its core)
need "starlette, uvicorn, pydantic, prometheus_client" "$WHL"/serve/*.whl

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    log "llama-cpp-python build skipped (SKIP_BUILD=1)"
elif [ -n "${REUSE_LLAMA_TGZ:-}" ]; then
    # A build saved by an earlier run on the same kind of machine (see below): 4 minutes saved.
    tar -xzf "$REUSE_LLAMA_TGZ" -C "$SITE"
    log "llama-cpp-python from $REUSE_LLAMA_TGZ: exit $?"
else
    t0=$(date +%s)
    cmake_args="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH -DLLAVA_BUILD=OFF -DGGML_CUDA_NCCL=OFF $CPU_CMAKE_ARGS ${EXTRA_CMAKE_ARGS:-}"
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        timeout "$(budget "$BUILD_TIMEOUT")" "$PY" -m pip install --no-build-isolation --no-deps -v \
        --target "$SITE" "$WHL/llama_cpp_python-$LLAMA_VERSION-trimmed.tar.gz" >"$OUT/build.log" 2>&1
    status=$?
    log "llama-cpp-python CUDA build: exit $status in $(($(date +%s) - t0)) s (124 = timed out)"
    tail -40 "$OUT/build.log" >"$OUT/build_tail.log"
    gzip -f "$OUT/build.log"
    # Keep the build: the next run passes it as REUSE_LLAMA_TGZ instead of building again
    # (on 2026-12-04 one build took 229 s and the next timed out at 245 s, 5 steps short).
    if [ "$status" = 0 ]; then
        echo "$cmake_args" >"$SITE/llama_cpp/AMALIA_CMAKE_ARGS.txt" # read back on reuse
        (cd "$SITE" && tar -czf "$OUT/llama_cpp_cuda_sm$CUDA_ARCH.tgz" llama_cpp llama_cpp_python-*.dist-info)
        log "saved the build: $OUT/llama_cpp_cuda_sm$CUDA_ARCH.tgz ($(du -h "$OUT/llama_cpp_cuda_sm$CUDA_ARCH.tgz" | cut -f1))"
    fi
fi

# The build's options (saved with it, so a reused build says how it was made), else ours.
built_with=$(cat "$SITE/llama_cpp/AMALIA_CMAKE_ARGS.txt" 2>/dev/null || echo "${EXTRA_CMAKE_ARGS:-}")
case " $built_with " in
*-DGGML_CUDA_FA=OFF*)
    # No FlashAttention kernels in this build: llama.cpp would run a GPU model's attention on
    # the CPU if asked for it (amalia-edge asks by default on a GPU).
    export AMALIA_EDGE_FLASH_ATTN=off
    log "AMALIA_EDGE_FLASH_ATTN=off (built with -DGGML_CUDA_FA=OFF)"
    ;;
esac

"$PY" -c "import llama_cpp; print(llama_cpp.__version__, 'gpu_offload', llama_cpp.llama_supports_gpu_offload())" \
    >"$OUT/llama_offload.txt" 2>&1
log "llama_cpp: $(tail -1 "$OUT/llama_offload.txt")"

# Even without a working build, the check runs: NVML, doctor and the report still say a lot.
t0=$(date +%s)
left=$(budget "$CHECK_TIMEOUT")
if [ "$left" -lt 10 ]; then # `timeout 0` would mean no limit at all
    log "gpu_check: skipped (only $left s left)"
else
    # shellcheck disable=SC2086 # GPU_CHECK_ARGS is a list of options
    timeout "$left" "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_check" \
        --work "$WORK" ${GPU_CHECK_ARGS:-} >"$OUT/gpu_check.log" 2>&1
    log "gpu_check: exit $? in $(($(date +%s) - t0)) s (124 = timed out)"
fi

# A native crash in generation: which way of loading crashes (benchmarks/gpu_crash_probe.py,
# one child per probe), then gdb's backtrace of the CLI if gdb is there.
# (Only a model-running step's crash: the ONNX Runtime probe's own crash does not count.)
if "$PY" - "$OUT/gpu_check/gpu_check.json" 2>/dev/null <<'PYEOF'; then
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
runs = [r for k, r in steps.items() if k == "check_generation" or k.startswith("bench ")]
runs += list((steps.get("generate") or {}).get("per_quant", {}).values())
sys.exit(0 if any(r.get("signal") for r in runs) else 1)
PYEOF
    gguf=$(find "$WORK" -path '*/artifacts-*/*Q4_K_M*.gguf' 2>/dev/null | head -1)
    [ -n "$gguf" ] || gguf=$(find "$WORK" -path '*/artifacts-*/*.gguf' 2>/dev/null | sort | head -1)
    left=$(budget 120)
    if [ -n "$gguf" ] && [ "$left" -gt 20 ]; then
        timeout "$left" "$PY" benchmarks/gpu_crash_probe.py "$gguf" --out "$OUT" --timeout 30 \
            >"$OUT/gpu_crash_probe.log" 2>&1
        log "gpu_crash_probe: exit $? ($OUT/gpu_crash_probe.md)"
    fi
    left=$(budget 60)
    if [ -n "$gguf" ] && [ "$left" -gt 20 ] && command -v gdb >/dev/null; then
        exe=$("$PY" -c "import sys; print(sys.executable)") # gdb needs the binary, not a shim
        timeout "$left" gdb -q -batch -ex run -ex bt --args "$exe" -m amalia_edge \
            generate "$gguf" "Olá" --max-tokens 4 >"$OUT/crash_gdb.txt" 2>&1
        log "gdb backtrace of a crashing generate: exit $? ($OUT/crash_gdb.txt)"
    fi
fi

# The server under load: the demo model and serve_load's random 180M model (vocabulary all
# text pieces: the check's 0.8B model pads to 128k with [PAD] pieces a client never sees).
left=$(budget "$SERVE_TIMEOUT")
if [ "$left" -lt 40 ]; then
    log "serve_load: skipped (only $left s left)"
else
    t0=$(date +%s)
    # shellcheck disable=SC2086 # SERVE_LOAD_ARGS is a list of options
    timeout "$left" "$PY" benchmarks/serve_load.py --ctx 512 \
        ${SERVE_LOAD_ARGS:---random --layouts 4 --random-quants Q8_0,Q4_K_M --tokens 128 --random-tokens 128 --reps 2} \
        --json "$OUT/serve_load.json" >"$OUT/serve_load.md" 2>"$OUT/serve_load.log"
    log "serve_load: exit $? in $(($(date +%s) - t0)) s (124 = timed out)"
    cp "${TMPDIR:-/tmp}"/serve_load_*.log "$OUT/" 2>/dev/null
fi
nvidia-smi --query-gpu=name,driver_version,power.draw,temperature.gpu,clocks.sm,clocks_event_reasons.active \
    --format=csv >"$OUT/nvidia-smi-after.csv" 2>&1
log "done"
