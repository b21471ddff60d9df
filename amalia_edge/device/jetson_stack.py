"""What the Jetson kit installs on each L4T release: the software stack as data.

``jetson/setup.sh`` and ``amalia-edge doctor`` read this one table (through
:mod:`amalia_edge.device.detect`), so the onnxruntime-gpu wheel, its index, cuda-python and
the TensorRT support decision follow the L4T *release*, not only the JetPack major: JetPack
6.0 (L4T 36.2-36.3) and 6.1+ (36.4+) ship different CUDA and TensorRT.

Rows are matched by L4T (major, minor) range; a release newer than every row of its major
uses that major's newest row, and a major newer than the table uses the newest row (the
rule in :func:`stack_for`), each with a note saying so.

Sources, cited per row:

* [jc-ort] dusty-nv/jetson-containers packages/ml/onnxruntime/config.py: onnxruntime 1.16.3
  for L4T ``==35.*``; 1.17 for ``>=36`` with CUDA ``<=12.2``; 1.22-1.24 for CUDA >= 12.6
  (dusty-nv/jetson-containers@a36ac890560c1b86ffeb7490fe52c35df02b2574).
* [ort-126] onnxruntime-gpu 1.23.0 for Python 3.10 on the ``jp6/cu126`` index, seen as the
  index's own content-addressed file
  ``https://pypi.jetson-ai-lab.io/jp6/cu126/+f/4eb/e6a8902dc7708/onnxruntime_gpu-1.23.0-cp310-cp310-linux_aarch64.whl``
  (sha256 ``4ebe6a8902dc7708434b2e1541b3fe629ebf434e16ab5537d1d6a622b42c622b``) in several
  public install scripts for JetPack 6.2 boards, one recording that it loads with the
  TensorRT and CUDA providers on a JetPack 6 board (the index itself was not reachable from
  here to list it).
  1.21.0 was the earlier pin, taken from jetson-containers' recipes: no file of it on the
  index was found anywhere, so it is not used. 1.23.0 was reported missing in July 2025
  (ultralytics/ultralytics issue #21463) and was built for ``jp6/cu126`` by September 2025
  (dusty-nv/jetson-containers issue #1403). The index is not stable (packages vanished from
  ``jp6/cu126`` for days in October 2025: dusty-nv/jetson-containers issue #1462), hence the
  ``--onnx-index``/``ONNXRUNTIME_GPU_VERSION`` override. Older: 1.22.0 on the same channel of
  the former host, ``https://pypi.jetson-ai-lab.dev/jp6/cu126/+f/869/e41abdc35e093/onnxruntime_gpu-1.22.0-cp310-cp310-linux_aarch64.whl``
  (Seeed-Studio/wiki-documents@e40fa9e30649f995e70d2d96b1119f7b1a9a4db6:sites/en/docs/Edge/NVIDIA_Jetson/Application/Computer_Vision/Multi-GMSL_Cameras_for_Real-Time_Object_Detection_and_3D_Reconstruction_on_Jetson_AGX_Orin.md,
  for JetPack 6.2 on an AGX Orin).
* [ort-zoo] onnxruntime-gpu 1.17.0 for JetPack 6.0 (CUDA 12.2, Python 3.10) from NVIDIA's
  Jetson Zoo (https://elinux.org/Jetson_Zoo#ONNX_Runtime, where ONNX Runtime's maintainers
  send JetPack users: microsoft/onnxruntime issue #21232), as jetson-containers downloaded it
  for L4T 36: ``https://nvidia.box.com/shared/static/i7n40ki3pl2x57vyn4u7e9asyiqlnl7n.whl``
  saved as ``onnxruntime_gpu-1.17.0-cp310-cp310-linux_aarch64.whl``
  (dusty-nv/jetson-containers@7a22b5266219dd4a2db1b771878583021ae92ea8:packages/onnxruntime/config.py).
  Not the ``jp6/cu122`` index any more: the same 1.17.0 wheel was a file of that channel on
  the index's first host (``http://jetson.webredirect.org/jp6/cu122/+f/54d/5094104195427/...``,
  sha256 ``54d509410419542764627aebf6542734a7c5b4d260ad0860b650e05f38b1b47a``, in public
  install scripts; dusty-nv/jetson-containers issue #1404 ties that host to the index), but
  the channels listed on pypi.jetson-ai-lab.io in September 2026 are ``jp6/cu126``,
  ``jp6/cu128``, ``jp6/cu129`` and ``sbsa/cu130`` (mirrorz-org/mirrorz-docs pull request
  #62, documenting a mirror of it), with no ``jp6/cu122``.
* [jc-cp] jetson-containers packages/cuda/cuda-python/config.py: cuda-python 11.4 for
  JetPack 5, 12.x (matching CUDA) for JetPack 6.
* [jc-cuda] jetson-containers jetson_containers/l4t_version.py get_cuda_version(): CUDA 12.2
  for L4T 36.2, 12.6 for 36.4.x, 13.0 for r38+.
* [jp6.0] NVIDIA JetPack 6.0 release notes: CUDA 12.2, TensorRT 8.6.2, cuDNN 8.9.4.
* [jp6.1] NVIDIA JetPack 6.1/6.2 release notes: CUDA 12.6, TensorRT 10.3, cuDNN 9.3
  (jetson_release on L4T 36.4.3 prints CUDA 12.6.68, TensorRT 10.3.0.30).
* [jp5] JetPack 5.1.x: CUDA 11.4, TensorRT 8.5.2 (jetson_release on L4T 35.6.0 prints
  TensorRT 8.5.2.2), Ubuntu 20.04 with Python 3.8.
* [jp7.2] JetPack 7.2 (L4T 39.2): CUDA 13.2, TensorRT 10.16, Ubuntu 24.04 with Python 3.12:
  OE4T/meta-tegra pull request #2224 (NVIDIA: "JetPack 7.2 / L4T R39.2.0 support: both Orin
  and Thor", CUDA 13.2, cuDNN 9.20, TensorRT 10.16); roboflow/inference pull request #2531
  (read off a JetPack 7.2 board: L4T 39.2.0, CUDA 13.2, cuDNN 9.20.0.46, TensorRT 10.16.2.10);
  a real AGX Orin devkit on R39.2 runs Ubuntu 24.04, kernel 6.8.12-1021-tegra and Python
  3.12.3 (rbonghi/jetson_stats issue #864). No onnxruntime-gpu for Orin on CUDA 13 was
  found: NVIDIA staff point JetPack 7.2 users at the ``sbsa/cu130`` index (forum thread
  372521), whose wheels are built for Thor/Spark only (sm_110/sm_121, no sm_87 kernels:
  wendylabsinc/WendyOS pull request #1379, for its PyTorch wheels), and the ``jp7/cu132``
  index was reported incomplete on an Orin Nano with JetPack 7.2, common packages missing
  (dusty-nv/jetson-containers issue #1711); no onnxruntime-gpu wheel there was seen.
* [pypi] cuda-python wheels on PyPI, checked with ``pip download --platform
  manylinux2014_aarch64``: 12.2.1 and 12.6.2.post1 (cp310), 13.0.3 (pure meta-package).
"""

from __future__ import annotations

from dataclasses import dataclass

from amalia_edge.device.l4t import L4TRelease

JETSON_AI_LAB = "https://pypi.jetson-ai-lab.io"


@dataclass(frozen=True)
class JetsonStack:
    """The software stack of one L4T range and what the kit installs on it.

    ``ort_version`` and ``ort_index`` (or ``ort_wheel_url``) are ``None`` when the kit skips
    onnxruntime-gpu there by default, and ``ort_note`` says why. ``tensorrt_ok`` is False
    where the kit's TensorRT backend cannot work, and ``tensorrt_note`` says why and what to
    do.
    """

    name: str
    l4t_major: int
    minor_from: int
    minor_to: int  # inclusive
    cuda: str
    tensorrt: str
    system_python: str
    ort_version: str | None
    ort_index: str | None
    ort_note: str
    ort_numpy: str | None  # a NumPy pin installed with the wheel, where it was built for 1.x
    cuda_python: str | None
    cuda_python_note: str
    tensorrt_ok: bool
    tensorrt_note: str
    source: str
    # A wheel file to download where no index carries the build (``ort_index`` is then None):
    # its URL, and the file name pip needs to read its tags (the URL's own name is opaque).
    ort_wheel_url: str | None = None
    ort_wheel_file: str | None = None

    def covers(self, rel: L4TRelease) -> bool:
        return rel.major == self.l4t_major and self.minor_from <= rel.minor <= self.minor_to


STACKS: tuple[JetsonStack, ...] = (
    JetsonStack(
        name="JetPack 5.1.x (L4T 35)",
        l4t_major=35,
        minor_from=0,
        minor_to=99,
        cuda="11.4",
        tensorrt="8.5",
        system_python="3.8",
        ort_version=None,
        ort_index=None,
        ort_note=(
            "skipped on JetPack 5: the only onnxruntime-gpu built for L4T 35 is 1.16.3 for "
            "JetPack 5's Python 3.8 (jetson-containers), and the kit's environment is Python "
            "3.10; pass --onnx-index URL and ONNXRUNTIME_GPU_VERSION=X to try a wheel you have"
        ),
        ort_numpy=None,
        cuda_python=None,
        cuda_python_note=(
            "TensorRT's Python bindings on JetPack 5 exist for Python 3.8 only, so the TensorRT "
            "backend is unavailable there"
        ),
        tensorrt_ok=False,
        tensorrt_note=(
            "JetPack 5's TensorRT Python bindings (python3-libnvinfer) are for Python 3.8, the "
            "kit runs on 3.10: flash JetPack 6.1 or newer (L4T 36.4+) for the TensorRT backend"
        ),
        source="[jp5] [jc-ort] [jc-cp]",
    ),
    JetsonStack(
        name="JetPack 6.0 / 6.0 DP (L4T 36.2-36.3)",
        l4t_major=36,
        minor_from=0,
        minor_to=3,
        cuda="12.2",
        tensorrt="8.6",
        system_python="3.10",
        ort_version="1.17.0",
        ort_index=None,
        ort_note=(
            "CUDA 12.2 build from NVIDIA's Jetson Zoo (the jp6/cu122 index channel is no longer "
            "listed); jetson-containers installs 1.17 for L4T 36 with CUDA <= 12.2"
        ),
        # onnxruntime 1.17 (January 2024) predates NumPy 2.0 (June 2024); NumPy 2 support came
        # with onnxruntime 1.19 (its release notes).
        ort_numpy="numpy<2",
        cuda_python="12.2.1",
        cuda_python_note="matches JetPack 6.0's CUDA 12.2",
        tensorrt_ok=True,
        tensorrt_note=(
            "TensorRT 8.6: engines are built with an explicit-batch network and the FP16 flag "
            "(no strongly typed networks before TensorRT 9); not verified on a 6.0 board"
        ),
        source="[jp6.0] [jc-ort] [ort-zoo] [jc-cp] [jc-cuda] [pypi]",
        ort_wheel_url="https://nvidia.box.com/shared/static/i7n40ki3pl2x57vyn4u7e9asyiqlnl7n.whl",
        ort_wheel_file="onnxruntime_gpu-1.17.0-cp310-cp310-linux_aarch64.whl",
    ),
    JetsonStack(
        name="JetPack 6.1 / 6.2.x (L4T 36.4-36.5)",
        l4t_major=36,
        minor_from=4,
        minor_to=99,
        cuda="12.6",
        tensorrt="10.3",
        system_python="3.10",
        ort_version="1.23.0",
        ort_index=f"{JETSON_AI_LAB}/jp6/cu126",
        ort_note="CUDA 12.6 build on the jp6/cu126 index (a file of it is cited in [ort-126])",
        ort_numpy=None,
        cuda_python="12.6.2.post1",
        cuda_python_note="matches JetPack 6.1+'s CUDA 12.6",
        tensorrt_ok=True,
        tensorrt_note="TensorRT 10.3: strongly typed FP16 networks",
        source="[jp6.1] [jc-ort] [ort-126] [jc-cp] [jc-cuda] [pypi]",
    ),
    JetsonStack(
        name="JetPack 7.0 / 7.1 (L4T 38, Jetson Thor only)",
        l4t_major=38,
        minor_from=0,
        minor_to=99,
        cuda="13.0",
        tensorrt="10.x",
        system_python="3.12",
        ort_version=None,
        ort_index=None,
        ort_note="skipped: L4T r38 runs only on Jetson Thor, which this kit does not target",
        ort_numpy=None,
        cuda_python=None,
        cuda_python_note="L4T r38 is Jetson Thor only",
        tensorrt_ok=False,
        tensorrt_note="L4T r38 (JetPack 7.0/7.1) is for Jetson Thor; the kit targets Orin",
        source="[jc-cuda] (r38 → CUDA 13.0, Thor sm_110)",
    ),
    JetsonStack(
        name="JetPack 7.2+ (L4T 39)",
        l4t_major=39,
        minor_from=0,
        minor_to=99,
        cuda="13.2",
        tensorrt="10.16",
        system_python="3.12",
        ort_version=None,
        ort_index=None,
        ort_note=(
            "skipped on JetPack 7: no onnxruntime-gpu wheel for Orin on CUDA 13 is confirmed "
            f"(NVIDIA points JetPack 7.2 at {JETSON_AI_LAB}/sbsa/cu130); pass --onnx-index URL "
            "and ONNXRUNTIME_GPU_VERSION=X to try one"
        ),
        ort_numpy=None,
        cuda_python="13.0.3",
        cuda_python_note="CUDA 13 bindings for JetPack 7's CUDA 13.2",
        tensorrt_ok=True,
        tensorrt_note="TensorRT 10.16: strongly typed FP16 networks; not verified on a board",
        source="[jp7.2] [pypi]",
    ),
)


def stack_for(rel: L4TRelease) -> tuple[JetsonStack | None, str]:
    """The stack row for ``rel`` and a note ("" when the release is inside a row's range).

    A major below every row (L4T 32/34) has no row: the kit does not support it.
    """
    for row in STACKS:
        if row.covers(rel):
            if rel.in_table:
                return row, ""
            return row, (
                f"L4T {rel.version} is not in the L4T table: JetPack {rel.jetpack} by its major, "
                f"planned with the {row.name} row"
            )
    same_major = [r for r in STACKS if r.l4t_major == rel.major]
    if same_major:
        row = max(same_major, key=lambda r: r.minor_to)
        return row, f"L4T {rel.version} is newer than the table: using the {row.name} row"
    newest = max(STACKS, key=lambda r: (r.l4t_major, r.minor_to))
    if rel.major > newest.l4t_major:
        return newest, f"L4T {rel.version} is newer than the table: using the {newest.name} row"
    return None, f"L4T {rel.version} is older than JetPack 5.1: not supported by the kit"
