"""Print what :func:`amalia_edge.device.probe` found as shell variables, for ``jetson/setup.sh``.

``python3 -m amalia_edge.device.detect [ROOT] [--l4t VERSION]`` prints ``KEY='value'`` lines
(safe to ``eval``) so the setup script uses the same board table, L4T → JetPack table and
software-stack table (:mod:`amalia_edge.device.jetson_stack`) as the package, from one
source. ``--l4t`` names the release to plan for when the tree has no
``/etc/nv_tegra_release`` (a container build on a workstation). It needs only the standard
library, so it runs before anything is installed.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from amalia_edge.device.jetson_stack import stack_for
from amalia_edge.device.l4t import parse_l4t_version
from amalia_edge.device.probe import probe


def shell_vars(
    root: str | None = None, l4t: str | None = None, plan: str | None = None
) -> dict[str, str]:
    """``l4t``: the release to plan for when the tree has none; ``plan``: plan for this
    release whatever the tree says (``setup.sh --force`` on an unsupported release)."""
    info = probe(root)
    gib = 1 << 30

    def s(v: object) -> str:
        return "" if v is None else str(v)

    out = {
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
    planned = info.l4t_release or l4t
    rel = parse_l4t_version(planned) if planned else None
    stack, note = stack_for(rel) if rel is not None else (None, "")
    if plan is not None:
        planned_rel = parse_l4t_version(plan)
        stack = stack_for(planned_rel)[0] if planned_rel is not None else None
        note = f"planned as L4T {plan} (--plan)"
    if rel is not None and not info.l4t_release:
        out["L4T"] = rel.version
        out["JETPACK"] = s(rel.jetpack)
        out["JETPACK_MAJOR"] = s(rel.jetpack_major)
        note = (
            f"planned for L4T {rel.version} (--l4t); " + note
            if note
            else (f"planned for L4T {rel.version} (--l4t)")
        )
    out.update(
        {
            "THOR_ONLY": "1" if rel is not None and rel.thor_only else "0",
            "STACK": s(stack.name if stack else None),
            "STACK_NOTE": note,
            "STACK_CUDA": s(stack.cuda if stack else None),
            "STACK_TENSORRT": s(stack.tensorrt if stack else None),
            "STACK_SYSTEM_PYTHON": s(stack.system_python if stack else None),
            "ORT_VERSION": s(stack.ort_version if stack else None),
            "ORT_INDEX": s(stack.ort_index if stack else None),
            "ORT_WHEEL_URL": s(stack.ort_wheel_url if stack else None),
            "ORT_WHEEL_FILE": s(stack.ort_wheel_file if stack else None),
            "ORT_NOTE": s(stack.ort_note if stack else None),
            "ORT_NUMPY": s(stack.ort_numpy if stack else None),
            "CUDA_PYTHON_VERSION": s(stack.cuda_python if stack else None),
            "CUDA_PYTHON_NOTE": s(stack.cuda_python_note if stack else None),
            "TENSORRT_OK": "1" if stack and stack.tensorrt_ok else "0",
            "TENSORRT_NOTE": s(stack.tensorrt_note if stack else None),
        }
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts: dict[str, str | None] = {"--l4t": None, "--plan": None}
    for flag in opts:
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1] if i + 1 < len(args) else None
            del args[i : i + 2]
    values = shell_vars(args[0] if args else None, opts["--l4t"], opts["--plan"])
    for key, value in values.items():
        print(f"DETECTED_{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
