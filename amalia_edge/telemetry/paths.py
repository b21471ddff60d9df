"""Sysfs paths and names the telemetry samplers read: one row per path, with its source.

Every path is relative to an injectable root (``/`` on a real machine, a fake tree in tests).
"""

from __future__ import annotations

# INA3221 power monitors: one hwmon directory per chip under its I2C device. Seen as
# 1-0040/hwmon/hwmon3 + 1-0041/hwmon/hwmon4 on AGX Orin JetPack 5 (L4T r35) and
# 1-0040/hwmon/hwmon1 + 1-0041/hwmon/hwmon2 on JetPack 6 (L4T r36); jetson_stats
# jtop/core/power.py (find_all_i2c_power_monitor) walks the same place.
INA3221_GLOB = "sys/bus/i2c/devices/*/hwmon/hwmon*"
# The hwmon "name" file reads "ina3221" (kernel drivers/hwmon/ina3221.c).
INA3221_DRIVER_NAME = "ina3221"

# RAPL: one directory per zone, intel-rapl:N (package-N, or psys on client CPUs) and
# intel-rapl:N:M (a package's subzones: core, uncore, dram). Linux
# Documentation/power/powercap/powercap.rst; cpupower powercap-info (see rapl.py).
RAPL_GLOB = "sys/class/powercap/intel-rapl:*"

# Jetson GPU load in tenths of a percent (0..1000). The GPU device sits directly under
# /sys/devices on L4T r32-r35 (/sys/devices/gpu.0 links to it; on Orin L4T 35 it is
# /sys/devices/17000000.ga10b: jetson_stats tests/nvpmodel lists that board's GPU clocks at
# /sys/devices/17000000.ga10b/devfreq_dev/, and JP5 Orin scripts read
# /sys/devices/gpu.0/devfreq/17000000.ga10b/cur_freq); JetPack 6 moved it under
# platform/bus@0 (jetson_stats jtop/core/gpu.py reads "<gpu devfreq device>/load").
GPU_LOAD_PATHS = (
    "sys/devices/gpu.0/load",  # L4T r32-r35 (JetPack 4-5): a link to the GPU device
    "sys/devices/17000000.ga10b/load",  # L4T r35 (JetPack 5), Orin's ga10b GPU
    "sys/devices/platform/bus@0/17000000.gpu/load",  # L4T r36 (JetPack 6), Orin
)
# GPU frequency through devfreq (Hz): the GPU's devfreq node, one table with the clock check
# (amalia_edge.device.power.GPU_DEVFREQ, is_gpu_devfreq).

# Thermal zones: type + temp (millidegrees C), Linux Documentation/driver-api/thermal/sysfs-api.rst.
THERMAL_GLOB = "sys/class/thermal/thermal_zone*"
# AGX Orin reports zones with no sensor behind them (CV0..CV2, GPU when power-gated) as
# -256 C in tegrastats and -256000 in sysfs (seen on JetPack 5.1 AGX Orin 64GB); skip them.
THERMAL_INVALID_MILLI_C = -256000
