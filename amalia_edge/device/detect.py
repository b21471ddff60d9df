"""Print what :func:`amalia_edge.device.probe` found as shell variables, for ``jetson/setup.sh``.

``python3 -m amalia_edge.device.detect [ROOT]`` prints ``KEY='value'`` lines (safe to
``eval``) so the setup script uses the same board table and L4T → JetPack table as the
package, from one source. It needs only the standard library, so it runs before anything
is installed.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from amalia_edge.device.probe import probe


def shell_vars(root: str | None = None) -> dict[str, str]:
    info = probe(root)
    gib = 1 << 30

    def s(v: object) -> str:
        return "" if v is None else str(v)

    return {
        "IS_JETSON": "1" if info.is_jetson else "0",
        "L4T": s(info.l4t_release),
        "JETPACK": s(info.jetpack),
        "JETPACK_MAJOR": s(info.jetpack_major),
        "MODULE_ID": s(info.module_id),
        "BOARD_NAME": s(info.board.name if info.board else info.model),
        "CUDA_CC": s(info.cuda_cc),
        "MEM_TOTAL_GIB": s(info.mem_total // gib if info.mem_total else None),
        "MEM_AVAILABLE_GIB": s(info.mem_available // gib if info.mem_available else None),
        "SWAP_TOTAL_GIB": s(info.swap_total // gib if info.swap_total is not None else None),
        "POWER_MODE": s(info.power_mode),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for key, value in shell_vars(args[0] if args else None).items():
        print(f"DETECTED_{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
