#!/usr/bin/env bash
# amalia-edge on an NVIDIA Jetson: from a freshly flashed board to a working GPU install.
#
#   jetson/setup.sh [--dry-run] [--yes] [--force] [--venv DIR] [--onnx-index URL]
#                   [--skip-onnx] [--skip-verify] [--container]
#
# Steps (each skipped when already done, so the script can be run again at any time):
#   1. detect the board, L4T and JetPack with amalia_edge.device.detect, and look the L4T
#      release up in amalia_edge/device/jetson_stack.py: which onnxruntime-gpu (version and
#      wheel index, or wheel file), which cuda-python, and whether the TensorRT backend can work there;
#      print that plan (every package, version and index) before doing anything
#   2. check free disk, memory and swap before compiling; offer to add a swap file
#   3. install the apt packages the build needs
#   4. create a virtual environment with --system-site-packages, so JetPack's TensorRT
#      Python bindings (python3-libnvinfer, system Python only) stay importable
#   5. build llama-cpp-python with CUDA for compute capability 8.7
#   6. install onnxruntime-gpu for this L4T release: from the Jetson wheel index, or (JetPack
#      6.0, whose build no index carries now) the wheel file from NVIDIA's Jetson Zoo; skipped,
#      with the reason, where no wheel fits (JetPack 5 and 7); and cuda-python for TensorRT
#   7. install amalia-edge itself (editable) and onnx, which both ONNX backends import
#   8. run `amalia-edge doctor --deep` and a short generation on the demo model that must
#      report the GPU backend
#
# Every failure stops with what went wrong and what to do. Versions that do not depend on
# the L4T release come from jetson/versions.env (the same file the container build reads);
# the ones that do come from amalia_edge/device/jetson_stack.py.
#
# Fake boards: AMALIA_EDGE_ROOT points the detection at a fake /proc, /sys, /etc tree (a
# copy of a board's files) and AMALIA_EDGE_BIN_PATH at fake nvpmodel/jetson_clocks; with
# --dry-run --force this prints, on any machine, the exact plan for that board.
# ONNXRUNTIME_GPU_VERSION=X with --onnx-index URL installs a wheel the table does not list.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
ROOT="${AMALIA_EDGE_ROOT:-/}"

# versions.env is plain KEY=value lines (tests check that); not followed by shellcheck.
# shellcheck disable=SC1091
source "$SCRIPT_DIR/versions.env"

DRY_RUN=0
YES=0
FORCE=0
SKIP_ONNX=0
SKIP_VERIFY=0
CONTAINER=0
VENV="${AMALIA_EDGE_VENV:-$HOME/.venvs/amalia-edge}"
ONNX_INDEX="${JETSON_PIP_INDEX:-}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
SYSTEM_PYTHON="${SYSTEM_PYTHON:-python3}"
# Root (a container build) needs no sudo; a user on the board does.
SUDO=sudo
if [[ "$(id -u)" == "0" ]]; then
    SUDO=""
fi

usage() {
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# die PROBLEM FIX: stop with what went wrong and what to do.
die() {
    printf 'setup.sh: error: %s\n' "$1" >&2
    if [[ -n "${2:-}" ]]; then
        printf 'setup.sh: fix: %s\n' "$2" >&2
    fi
    exit 1
}

# run CMD...: print the command; execute it unless --dry-run.
run() {
    printf '    + %s\n' "$*"
    if [[ "$DRY_RUN" == "0" ]]; then
        "$@"
    fi
}

confirm() {
    if [[ "$YES" == "1" ]]; then
        return 0
    fi
    if [[ ! -t 0 ]]; then
        return 1
    fi
    local answer
    read -r -p "$1 [y/N] " answer
    [[ "$answer" == "y" || "$answer" == "Y" || "$answer" == "yes" ]]
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --yes|-y) YES=1 ;;
        --force) FORCE=1 ;;
        --skip-onnx) SKIP_ONNX=1 ;;
        --skip-verify) SKIP_VERIFY=1 ;;
        --container) CONTAINER=1; YES=1 ;;
        --venv) VENV="${2:?--venv needs a directory}"; shift ;;
        --onnx-index) ONNX_INDEX="${2:?--onnx-index needs a URL}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1" "see jetson/setup.sh --help" ;;
    esac
    shift
done

if [[ "$DRY_RUN" == "1" ]]; then
    say "dry run: printing the plan, changing nothing"
fi

# ---------------------------------------------------------------- 1. detect the board
say "detecting the board (root: $ROOT)"
command -v "$SYSTEM_PYTHON" >/dev/null 2>&1 \
    || die "$SYSTEM_PYTHON not found" "install it: sudo apt-get install -y python3"
# amalia_edge.device.detect needs only the standard library: it runs before any install,
# and setup.sh uses the same board and L4T -> JetPack tables as the package.
detect() {
    PYTHONPATH="$REPO" "$SYSTEM_PYTHON" -m amalia_edge.device.detect "$ROOT" "$@"
}
DETECT_OUTPUT="$(detect)" \
    || die "board detection failed" "run: PYTHONPATH=$REPO $SYSTEM_PYTHON -m amalia_edge.device.detect"
DETECTED_IS_JETSON=0
DETECTED_L4T=""
DETECTED_JETPACK=""
DETECTED_JETPACK_MAJOR=""
DETECTED_BOARD_NAME=""
DETECTED_CUDA_CC=""
DETECTED_MEM_TOTAL_GIB=""
DETECTED_SWAP_TOTAL_GIB=""
DETECTED_POWER_MODE=""
DETECTED_THOR_ONLY=0
DETECTED_STACK=""
DETECTED_STACK_NOTE=""
DETECTED_STACK_CUDA=""
DETECTED_STACK_TENSORRT=""
DETECTED_ORT_VERSION=""
DETECTED_ORT_INDEX=""
DETECTED_ORT_WHEEL_URL=""
DETECTED_ORT_WHEEL_FILE=""
DETECTED_ORT_NOTE=""
DETECTED_ORT_NUMPY=""
DETECTED_CUDA_PYTHON_VERSION=""
DETECTED_CUDA_PYTHON_NOTE=""
DETECTED_TENSORRT_OK=0
DETECTED_TENSORRT_NOTE=""
eval "$DETECT_OUTPUT"

if [[ "$DETECTED_IS_JETSON" != "1" ]]; then
    if [[ "$FORCE" != "1" ]]; then
        die "this is not a Jetson (no /etc/nv_tegra_release, device tree not nvidia,tegra)" \
            "on a workstation install with: pip install -e '.[all]' (see README); or pass --force to run this Jetson build anyway"
    fi
    # A container build on a workstation: plan for the release of the base image (or
    # $L4T_VERSION), the release the container will run on.
    PLAN_L4T="${L4T_VERSION:-${L4T_JETPACK_IMAGE##*:r}}"
    note "not a Jetson: continuing because of --force, planning for L4T $PLAN_L4T"
    DETECT_OUTPUT="$(detect --l4t "$PLAN_L4T")" || die "board detection failed" "see above"
    eval "$DETECT_OUTPUT"
fi
note "board:   ${DETECTED_BOARD_NAME:-unknown}"
note "L4T:     ${DETECTED_L4T:-unknown}   JetPack: ${DETECTED_JETPACK:-unknown}"
note "CUDA:    compute capability ${DETECTED_CUDA_CC:-unknown}"
if [[ -n "$DETECTED_STACK_NOTE" ]]; then
    note "note:    $DETECTED_STACK_NOTE"
fi

if [[ "$DETECTED_THOR_ONLY" == "1" && "$FORCE" != "1" ]]; then
    die "L4T ${DETECTED_L4T} (JetPack ${DETECTED_JETPACK}) runs only on Jetson Thor; this kit builds for Orin (sm_87)" \
        "on an Orin flash JetPack 6.2 (L4T 36.4) or 7.2 (L4T 39.2) with SDK Manager, or pass --force"
fi
if [[ -z "$DETECTED_STACK" ]]; then
    if [[ "$FORCE" != "1" ]]; then
        die "unsupported L4T release '${DETECTED_L4T:-unknown}' (JetPack '${DETECTED_JETPACK:-unknown}')" \
            "flash JetPack 6.2 (or 5.1.x / 7.2) with SDK Manager, or pass --force"
    fi
    note "unsupported L4T: continuing because of --force, with the L4T 36.4 plan"
    eval "$(detect --plan 36.4.0 | grep -v -E '^DETECTED_(IS_JETSON|L4T|JETPACK|JETPACK_MAJOR)=')"
fi

case "$DETECTED_JETPACK_MAJOR" in
    5)
        # JetPack 5 is Ubuntu 20.04 with Python 3.8; amalia-edge needs 3.10, which comes from
        # the deadsnakes PPA.
        TARGET_PYTHON="${PYTHON:-python3.10}"
        ;;
    *)
        # JetPack 6: Python 3.10 (Ubuntu 22.04); JetPack 7: Python 3.12 (Ubuntu 24.04).
        TARGET_PYTHON="${PYTHON:-python3}"
        ;;
esac

# What this release gets: onnxruntime-gpu (version + index, or a wheel file no index carries),
# cuda-python, TensorRT. --onnx-index or ONNXRUNTIME_GPU_VERSION replace the table's choice.
ORT_WHEEL_URL=""
ORT_WHEEL_FILE=""
if [[ -z "$ONNX_INDEX" && -z "${ONNXRUNTIME_GPU_VERSION:-}" && -n "$DETECTED_ORT_WHEEL_URL" ]]; then
    ORT_WHEEL_URL="$DETECTED_ORT_WHEEL_URL"
    ORT_WHEEL_FILE="$DETECTED_ORT_WHEEL_FILE"
fi
ORT_VERSION="${ONNXRUNTIME_GPU_VERSION:-$DETECTED_ORT_VERSION}"
ONNX_INDEX="${ONNX_INDEX:-$DETECTED_ORT_INDEX}"
if [[ "$SKIP_ONNX" != "1" && -n "${ONNXRUNTIME_GPU_VERSION:-}" && -z "$ONNX_INDEX" ]]; then
    die "ONNXRUNTIME_GPU_VERSION=$ONNXRUNTIME_GPU_VERSION needs --onnx-index on L4T ${DETECTED_L4T:-unknown}: no wheel index serves onnxruntime-gpu for this release" \
        "pass --onnx-index URL as well, or unset ONNXRUNTIME_GPU_VERSION to install the table's choice"
fi
ORT_FROM="${ORT_WHEEL_URL:+the wheel file $ORT_WHEEL_URL}"
ORT_FROM="${ORT_FROM:-$ONNX_INDEX}"
ORT_SKIP_WHY=""
if [[ "$SKIP_ONNX" == "1" ]]; then
    ORT_SKIP_WHY="--skip-onnx"
elif [[ -z "$ORT_VERSION" || -z "$ORT_FROM" ]]; then
    ORT_SKIP_WHY="$DETECTED_ORT_NOTE"
fi
say "plan for ${DETECTED_STACK} (CUDA ${DETECTED_STACK_CUDA}, TensorRT ${DETECTED_STACK_TENSORRT})"
note "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION  built here with CUDA for sm_$CUDA_ARCHITECTURES (from PyPI source)"
if [[ -z "$ORT_SKIP_WHY" ]]; then
    note "onnxruntime-gpu==$ORT_VERSION  from $ORT_FROM${DETECTED_ORT_NUMPY:+ (with $DETECTED_ORT_NUMPY)}"
else
    note "onnxruntime-gpu  not installed: $ORT_SKIP_WHY"
    printf 'setup.sh: warning: no onnxruntime-gpu will be installed, so the ONNX Runtime backend has no GPU here\n' >&2
fi
if [[ -n "$DETECTED_CUDA_PYTHON_VERSION" ]]; then
    note "cuda-python==$DETECTED_CUDA_PYTHON_VERSION  from PyPI (the TensorRT backend's CUDA runtime bindings)"
else
    note "cuda-python  not installed: $DETECTED_CUDA_PYTHON_NOTE"
fi
note "onnx==$ONNX_VERSION  from PyPI (read by both ONNX backends)"
note "amalia-edge[tui,plots]  editable, from $REPO"
if [[ "$DETECTED_TENSORRT_OK" == "1" ]]; then
    note "TensorRT: $DETECTED_TENSORRT_NOTE"
else
    note "TensorRT backend unavailable: $DETECTED_TENSORRT_NOTE"
fi

# ---------------------------------------------------------------- 2. resources
say "checking disk, memory and swap before compiling"
VENV_PARENT="$(dirname "$VENV")"
DF_DIR="$VENV_PARENT"
while [[ ! -d "$DF_DIR" ]]; do DF_DIR="$(dirname "$DF_DIR")"; done
DISK_FREE_GB=$(( $(df -Pk "$DF_DIR" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
MEM_GB="${DETECTED_MEM_TOTAL_GIB:-0}"
SWAP_GB="${DETECTED_SWAP_TOTAL_GIB:-0}"
note "disk free at $DF_DIR: ${DISK_FREE_GB} GB (need $MIN_DISK_GB)"
note "memory ${MEM_GB} GiB + swap ${SWAP_GB} GiB (need $MIN_MEMORY_PLUS_SWAP_GB together to compile)"
if (( DISK_FREE_GB < MIN_DISK_GB )); then
    if [[ "$DRY_RUN" == "1" ]]; then
        note "would stop: only ${DISK_FREE_GB} GB free at $DF_DIR"
    else
        die "only ${DISK_FREE_GB} GB free at $DF_DIR; the build and a 9B model need $MIN_DISK_GB GB" \
            "free space (sudo apt-get clean; remove old models), or use --venv on a bigger disk (NVMe)"
    fi
fi
if [[ "$CONTAINER" == "1" ]]; then
    note "container build: swap is the host's business; skipped"
elif (( MEM_GB + SWAP_GB < MIN_MEMORY_PLUS_SWAP_GB )); then
    note "memory + swap is below $MIN_MEMORY_PLUS_SWAP_GB GiB: the CUDA build can be killed by the OOM killer"
    if [[ "$DRY_RUN" == "1" ]] || confirm "add a ${SWAP_FILE_GB} GB swap file at /swapfile?"; then
        if [[ -e /swapfile && "$DRY_RUN" == "0" ]]; then
            die "/swapfile already exists but memory + swap is still too small" \
                "enable it (sudo swapon /swapfile) or make it bigger, then run setup.sh again"
        fi
        run ${SUDO:+"$SUDO"} fallocate -l "${SWAP_FILE_GB}G" /swapfile
        run ${SUDO:+"$SUDO"} chmod 600 /swapfile
        run ${SUDO:+"$SUDO"} mkswap /swapfile
        run ${SUDO:+"$SUDO"} swapon /swapfile
        note "to keep it after reboot add to /etc/fstab: /swapfile none swap sw 0 0"
        SWAP_GB=$(( SWAP_GB + SWAP_FILE_GB ))
    else
        die "not enough memory + swap to compile llama.cpp with CUDA" \
            "add swap (sudo fallocate -l ${SWAP_FILE_GB}G /swapfile && sudo chmod 600 /swapfile && sudo mkswap /swapfile && sudo swapon /swapfile), then run setup.sh again"
    fi
fi
# nvcc jobs use 1-2 GB each: one job per 2 GiB of memory + swap (counting a swap file added
# above), at most one per core.
JOBS=$(( (MEM_GB + SWAP_GB) / 2 ))
CORES="$(nproc)"
if (( JOBS > CORES )); then JOBS="$CORES"; fi
if (( JOBS < 1 )); then JOBS=1; fi

# ---------------------------------------------------------------- 3. apt packages
say "system packages"
APT_PACKAGES=(build-essential cmake git)
if [[ -n "$ORT_WHEEL_URL" && -z "$ORT_SKIP_WHY" ]]; then
    APT_PACKAGES+=(curl)  # downloads the onnxruntime-gpu wheel file (step 6)
fi
if [[ "$DETECTED_JETPACK_MAJOR" == "5" ]]; then
    APT_PACKAGES+=(python3.10 python3.10-venv python3.10-dev)
else
    APT_PACKAGES+=(python3-venv python3-dev python3-pip)
fi
MISSING=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        MISSING+=("$pkg")
    fi
done
if (( ${#MISSING[@]} > 0 )); then
    if [[ "$DETECTED_JETPACK_MAJOR" == "5" ]] && [[ " ${MISSING[*]} " == *" python3.10 "* ]]; then
        run ${SUDO:+"$SUDO"} add-apt-repository -y ppa:deadsnakes/ppa
    fi
    run ${SUDO:+"$SUDO"} apt-get update
    run ${SUDO:+"$SUDO"} apt-get install -y "${MISSING[@]}"
else
    note "already installed: ${APT_PACKAGES[*]}"
fi
if [[ "$DETECTED_IS_JETSON" == "1" ]] && ! dpkg -s python3-libnvinfer >/dev/null 2>&1; then
    note "python3-libnvinfer (TensorRT Python) is not installed: the TensorRT backend needs it"
    note "  install the JetPack components with: sudo apt-get install -y nvidia-jetpack"
fi
if [[ "$DETECTED_IS_JETSON" == "1" && ! -x "$CUDA_HOME/bin/nvcc" ]]; then
    if [[ "$DRY_RUN" == "1" ]]; then
        note "would stop: $CUDA_HOME/bin/nvcc not found"
    else
        die "$CUDA_HOME/bin/nvcc not found: llama.cpp would be built without CUDA" \
            "install the CUDA toolkit from JetPack: sudo apt-get install -y nvidia-jetpack (or set CUDA_HOME)"
    fi
fi

# ---------------------------------------------------------------- 4. virtual environment
say "virtual environment $VENV (--system-site-packages: JetPack's TensorRT stays visible)"
if [[ "$DRY_RUN" == "0" ]]; then
    command -v "$TARGET_PYTHON" >/dev/null 2>&1 \
        || die "$TARGET_PYTHON not found" "install it (JetPack 5: sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt-get install -y python3.10 python3.10-venv python3.10-dev)"
    PY_OK="$("$TARGET_PYTHON" -c "import sys; print(int(sys.version_info[:2] >= tuple(map(int, '$PYTHON_MIN_VERSION'.split('.')))))")"
    [[ "$PY_OK" == "1" ]] || die "$TARGET_PYTHON is older than $PYTHON_MIN_VERSION" \
        "set PYTHON=python3.10 (or newer) and run setup.sh again"
fi
if [[ -x "$VENV/bin/python" ]]; then
    note "exists; reused"
else
    run "$TARGET_PYTHON" -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
run "${PIP[@]}" install --upgrade pip wheel

# ---------------------------------------------------------------- 5. llama-cpp-python + CUDA
say "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION with CUDA for compute capability ${CUDA_ARCHITECTURES:0:1}.${CUDA_ARCHITECTURES:1}"
have_cuda_llama() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - "$LLAMA_CPP_PYTHON_VERSION" <<'PY' >/dev/null 2>&1
import sys, llama_cpp
assert llama_cpp.__version__ == sys.argv[1]
assert llama_cpp.llama_supports_gpu_offload()
PY
}
if [[ "$DRY_RUN" == "0" ]] && have_cuda_llama; then
    note "already built with CUDA; skipped"
else
    # Each variable, and why it is needed on Orin:
    # - CMAKE_ARGS -DGGML_CUDA=on: the CUDA backend is off by default
    #   (llama-cpp-python README, "Supported Backends: CUDA").
    # - -DCMAKE_CUDA_ARCHITECTURES=87: Orin is sm_87; without it CMake either fails to detect
    #   the iGPU or builds every architecture (far longer build, and "native" can pick a wrong
    #   one: node-llama-cpp#560, ID-Robots/clawbox#61).
    # - CUDACXX: CMake does not find nvcc on Jetson unless told, and silently builds the CPU
    #   version (abetlen/llama-cpp-python#1779).
    # - PATH with $CUDA_HOME/bin: /usr/local/cuda/bin is not on PATH by default on L4T
    #   (ID-Robots/clawbox#61).
    # - FORCE_CMAKE=1 and --no-binary: always compile here; never take a prebuilt CPU wheel
    #   (llama-cpp-python README).
    # - CMAKE_BUILD_PARALLEL_LEVEL: bounded by memory + swap so nvcc is not OOM-killed.
    export PATH="$CUDA_HOME/bin:$PATH"
    run env \
        "CUDACXX=$CUDA_HOME/bin/nvcc" \
        "CMAKE_ARGS=-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES" \
        "FORCE_CMAKE=1" \
        "CMAKE_BUILD_PARALLEL_LEVEL=$JOBS" \
        "${PIP[@]}" install --no-cache-dir --force-reinstall --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    if [[ "$DRY_RUN" == "0" && "$CONTAINER" == "0" && "$DETECTED_IS_JETSON" == "1" ]] && ! have_cuda_llama; then
        die "llama-cpp-python was built without GPU offload" \
            "check that $CUDA_HOME/bin/nvcc works (nvcc --version), then run setup.sh again; the build log is in the pip output above"
    fi
fi

# ---------------------------------------------------------------- 6. onnxruntime-gpu, cuda-python
if [[ -n "$ORT_SKIP_WHY" ]]; then
    say "onnxruntime-gpu: skipped ($ORT_SKIP_WHY)"
else
    say "onnxruntime-gpu $ORT_VERSION from $ORT_FROM"
    installed_ort=""
    if [[ -x "$VENV/bin/python" ]]; then
        installed_ort="$("$VENV/bin/python" -m pip show onnxruntime-gpu 2>/dev/null | sed -n 's/^Version: //p' || true)"
    fi
    if [[ "$DRY_RUN" == "0" && "$installed_ort" == "$ORT_VERSION" ]]; then
        note "already installed; skipped"
    else
        # The CPU wheel "onnxruntime" provides the same module and would shadow the GPU one.
        run "${PIP[@]}" uninstall -y onnxruntime
        ORT_REQS=("onnxruntime-gpu==$ORT_VERSION")
        if [[ -n "$DETECTED_ORT_NUMPY" ]]; then
            ORT_REQS+=("$DETECTED_ORT_NUMPY")
        fi
        if [[ -n "$ORT_WHEEL_URL" ]]; then
            # No index carries this build: fetch the file under its wheel name (pip reads the
            # tags from the name; the URL's own is opaque), to a .part first so an interrupted
            # download never looks complete, then install that file.
            WHEEL_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/amalia-edge/wheels"
            WHEEL_PATH="$WHEEL_DIR/$ORT_WHEEL_FILE"
            run mkdir -p "$WHEEL_DIR"
            if [[ "$DRY_RUN" == "1" || ! -s "$WHEEL_PATH" ]]; then
                if ! run curl -fL --retry 3 -o "$WHEEL_PATH.part" "$ORT_WHEEL_URL"; then
                    die "could not download onnxruntime-gpu $ORT_VERSION from $ORT_WHEEL_URL" \
                        "download it yourself to $WHEEL_PATH and run setup.sh again, or pass --onnx-index URL with ONNXRUNTIME_GPU_VERSION=X, or --skip-onnx"
                fi
                run mv "$WHEEL_PATH.part" "$WHEEL_PATH"
            fi
            ORT_REQS[0]="$WHEEL_PATH"
            if ! run "${PIP[@]}" install "${ORT_REQS[@]}"; then
                die "onnxruntime-gpu $ORT_VERSION from $WHEEL_PATH did not install" \
                    "check the pip output above; pass --onnx-index URL with ONNXRUNTIME_GPU_VERSION=X, or --skip-onnx"
            fi
        elif ! run "${PIP[@]}" install --index-url "$ONNX_INDEX" --extra-index-url https://pypi.org/simple \
            "${ORT_REQS[@]}"; then
            die "onnxruntime-gpu $ORT_VERSION is not available from $ONNX_INDEX" \
                "pass another index with --onnx-index URL and ONNXRUNTIME_GPU_VERSION=X (see https://pypi.jetson-ai-lab.io), or --skip-onnx to go on with llama.cpp and TensorRT"
        fi
    fi
fi
if [[ -n "$DETECTED_CUDA_PYTHON_VERSION" ]]; then
    say "cuda-python $DETECTED_CUDA_PYTHON_VERSION (CUDA runtime bindings for the TensorRT backend)"
    run "${PIP[@]}" install "cuda-python==$DETECTED_CUDA_PYTHON_VERSION"
else
    say "cuda-python: skipped ($DETECTED_CUDA_PYTHON_NOTE)"
fi

# ---------------------------------------------------------------- 7. amalia-edge
say "amalia-edge (editable, from $REPO)"
# Only the extras that do not pull CPU builds of GPU libraries: not [llama] or [onnx] (its
# onnxruntime CPU wheel would shadow onnxruntime-gpu). onnx itself is needed: both ONNX
# backends and the TensorRT builder read the graph's metadata with it.
run "${PIP[@]}" install -e "${REPO}[tui,plots]" "onnx==$ONNX_VERSION"

# ---------------------------------------------------------------- 8. verify
if [[ "$SKIP_VERIFY" == "1" || "$CONTAINER" == "1" ]]; then
    say "verification skipped; run later: $VENV/bin/amalia-edge doctor --deep"
else
    say "verifying: doctor, then a short generation that must run on the GPU"
    run "$VENV/bin/amalia-edge" doctor --deep
    DEMO_DIR="$REPO/demo-artifacts"
    if [[ ! -f "$DEMO_DIR/manifest.json" ]]; then
        run "$VENV/bin/amalia-edge" quantize --out "$DEMO_DIR"
    fi
    run "$VENV/bin/python" "$SCRIPT_DIR/check_generation.py" "$DEMO_DIR"
fi

say "done"
if [[ "$DETECTED_IS_JETSON" == "1" && -n "$DETECTED_POWER_MODE" ]]; then
    note "power mode now: $DETECTED_POWER_MODE. For full speed: sudo $VENV/bin/amalia-edge power --set MAXN --clocks on"
fi
note "activate with: source $VENV/bin/activate"
