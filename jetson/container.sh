#!/usr/bin/env bash
# Build or run the amalia-edge JetPack 6 container.
#
#   jetson/container.sh build [--dry-run]
#   jetson/container.sh run [--dry-run] [AMALIA-EDGE ARGS...]   (default: doctor --deep)
#
# The base image comes from jetson/versions.env (L4T_JETPACK_IMAGE), the same file setup.sh
# reads. `run` gives the container the GPU with --runtime nvidia (the NVIDIA Container
# Runtime that JetPack installs) and mounts $AMALIA_EDGE_MODELS (default ./models) at /models.
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
        run docker run --rm -it --runtime nvidia --network host \
            -v "$MODELS:/models" "$TAG" "$@"
        ;;
    *)
        echo "usage: jetson/container.sh build|run [--dry-run] [ARGS...]" >&2
        exit 2
        ;;
esac
