#!/usr/bin/env bash
# Prepare, on a machine that reaches PyPI, everything benchmarks/gpu_check_device.sh needs on an
# offline NVIDIA GPU machine, into .whl/ at the repository root (git-ignored):
#
#   .whl/*.whl                              gguf, platformdirs, nvidia-ml-py, pyyaml, diskcache
#                                           for CPython 3.12; .whl/serve/: `serve`'s packages
#   .whl/llama_cpp_python-<v>-trimmed.tar.gz  the llama-cpp-python sdist without .git,
#                                           vendor/llama.cpp/models/*.gguf, docs and benches
#                                           (76.6 MB -> about 12.5 MB for 0.3.36; still builds)
#
# Usage: benchmarks/gpu_check_prepare.sh     (then carry .whl to the GPU machine with the repo)
# Versions: LLAMA_VERSION (0.3.36), PY_VERSION (3.12); the wheels are pinned to what this
# checkout is tested with.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

LLAMA_VERSION=${LLAMA_VERSION:-0.3.36}
PY_VERSION=${PY_VERSION:-3.12}
DEST=.whl
mkdir -p "$DEST"

# Pure-Python wheels, and pyyaml's binary one (gguf imports yaml; the GPU machine may lack it).
python3 -m pip download --quiet --no-deps --only-binary :all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$DEST" \
    gguf==0.19.0 platformdirs==4.14.9 nvidia-ml-py==13.615.71 pyyaml==6.0.3 diskcache==5.6.3
# `amalia-edge serve` and its dependencies (the serve_load step), as tested here.
mkdir -p "$DEST/serve"
python3 -m pip download --quiet --no-deps --only-binary :all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$DEST/serve" \
    starlette==1.10.0 anyio==4.16.0 idna==3.20 sniffio==1.3.1 typing_extensions==4.16.0 \
    uvicorn==0.55.0 click==8.5.1 h11==0.16.0 pydantic==2.13.4 pydantic_core==2.46.4 \
    annotated-types==0.7.0 typing-inspection==0.4.2 prometheus_client==0.26.0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The sdist itself, not a wheel (pip fetches its build backend to read the metadata).
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
    "llama-cpp-python==$LLAMA_VERSION"
src=$(ls "$tmp"/llama_cpp_python-"$LLAMA_VERSION".tar.gz)
tar -xzf "$src" -C "$tmp"
root="$tmp/llama_cpp_python-$LLAMA_VERSION"
rm -rf "$root/.git" "$root/vendor/llama.cpp/.git" "$root/vendor/llama.cpp/docs" \
    "$root/vendor/llama.cpp/benches"
rm -f "$root"/vendor/llama.cpp/models/*.gguf
out="$DEST/llama_cpp_python-$LLAMA_VERSION-trimmed.tar.gz"
tar -czf "$out" -C "$tmp" "llama_cpp_python-$LLAMA_VERSION"
echo "sdist: $(du -h "$src" | cut -f1) -> $(du -h "$out" | cut -f1) ($out)"
ls -la "$DEST"
du -sh "$DEST"
