#!/usr/bin/env bash
# Build or run the amalia-edge JetPack 6 container.
#
#   jetson/container.sh build [--dry-run]
#   jetson/container.sh run [--dry-run] [AMALIA-EDGE ARGS...]   (default: doctor --deep)
#
# The base image comes from jetson/versions.env (L4T_JETPACK_IMAGE), the same file setup.sh
# reads. `run` gives the container the GPU with --runtime nvidia (the NVIDIA Container
# Runtime that JetPack installs) and mounts $AMALIA_EDGE_MODELS (default ./models) at /models.
#
# So that the probe inside knows the board, `run` also mounts the host's
# /etc/nv_tegra_release and copies of the device-tree model and compatible strings:
# /proc and /sys files cannot be bind-mounted into a container, so dusty-nv/jetson-containers'
# run.sh copies /proc/device-tree/model to /tmp/nv_jetson_model and mounts the copy; the
# compatible string (the module id) is copied the same way to /tmp/nv_jetson_compatible, and
# amalia_edge.device.probe reads both copies when /proc/device-tree is missing.
# AMALIA_EDGE_ROOT (default /) is where the host files are read, for tests.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
# versions.env is plain KEY=value lines (tests check that); not followed by shellcheck.
# shellcheck disable=SC1091
source "$SCRIPT_DIR/versions.env"

TAG="amalia-edge:${L4T_JETPACK_IMAGE##*:}"
MODELS="${AMALIA_EDGE_MODELS:-$PWD/models}"
DRY_RUN=0

run() {
    printf '+ %s\n' "$*"
    if [[ "$DRY_RUN" == "0" ]]; then
        "$@"
    fi
}

action="${1:-}"
shift || true
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi

case "$action" in
    build)
        run docker build --build-arg "BASE_IMAGE=$L4T_JETPACK_IMAGE" -t "$TAG" \
            -f "$SCRIPT_DIR/Dockerfile" "$REPO"
        ;;
    run)
        if [[ $# -eq 0 ]]; then
            set -- doctor --deep
        fi
        HOST_ROOT="${AMALIA_EDGE_ROOT:-/}"
        HOST_ROOT="${HOST_ROOT%/}"
        COPIES="${TMPDIR:-/tmp}/amalia-edge-dt"
        BOARD_MOUNTS=()
        if [[ -f "$HOST_ROOT/etc/nv_tegra_release" ]]; then
            BOARD_MOUNTS+=(-v "$HOST_ROOT/etc/nv_tegra_release:/etc/nv_tegra_release:ro")
        else
            echo "container.sh: warning: no $HOST_ROOT/etc/nv_tegra_release: the container will not know the L4T release" >&2
        fi
        for name in model compatible; do
            if [[ -f "$HOST_ROOT/proc/device-tree/$name" ]]; then
                run mkdir -p "$COPIES"
                run cp "$HOST_ROOT/proc/device-tree/$name" "$COPIES/nv_jetson_$name"
                BOARD_MOUNTS+=(-v "$COPIES/nv_jetson_$name:/tmp/nv_jetson_$name:ro")
            fi
        done
        run docker run --rm -it --runtime nvidia --network host \
            --env NVIDIA_DRIVER_CAPABILITIES=compute,utility \
            "${BOARD_MOUNTS[@]}" \
            -v "$MODELS:/models" "$TAG" "$@"
        ;;
    *)
        echo "usage: jetson/container.sh build|run [--dry-run] [ARGS...]" >&2
        exit 2
        ;;
esac
