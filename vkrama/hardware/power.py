"""Power counters: which energy or power counter each GPU and the CPU has, and reading one.

Stage: hardware (/sys, NVML ─► `PowerCounters`). Finding the counters reads files under the
configured sysfs root (and asks NVML, through nvidia-ml-py where it is installed); a
`Counter.read()` returns the counter's present value, nothing else. Never prints, never
touches `os.environ`, caches nothing, and does no arithmetic over time (that is
`bench.energy`). A counter that is absent or unreadable is a reason in
`PowerCounters.missing`, never a counter that reads 0.

Sources, each the device's own counter (the kernel's or the driver's, no wall plug):
- CPU: RAPL through powercap, `intel-rapl:N/energy_uj` (µJ), one per package; it wraps at
  `max_energy_range_uj`. Root-only since Linux 5.10 (CVE-2020-8694, "Platypus").
- amdgpu: hwmon `energy1_input` (µJ) where the driver has it, else `power1_average` or
  `power1_input` (µW, a power reading, sampled).
- Intel i915/xe: hwmon `energy1_input` (µJ).
- NVIDIA: NVML's total energy since the driver loaded (mJ, Volta and later), else its power
  reading (mW). nvidia-ml-py (NVIDIA's own binding: ctypes over the driver's libnvidia-ml,
  no compiled part) rather than `nvidia-smi`: one call costs microseconds in our process,
  where each `nvidia-smi` call starts a process that initialises NVML anew (tens of ms of
  CPU, ten times a second, beside the benchmark), and nvidia-smi's queries offer the power
  reading but not the energy counter.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from vkrama.config import Settings
from vkrama.hardware.profile import Gpu, HardwareProfile

Kind = Literal["energy", "power"]
ENERGY: Literal["energy"] = "energy"  # read() is joules since some origin: differences count
POWER: Literal["power"] = "power"  # read() is watts now
RAPL_ROOT_ONLY = "readable by root only (Linux 5.10 and later, CVE-2020-8694)"
NVML_MISSING = "nvidia-ml-py is not installed (pip install 'vkrama[nvidia]')"
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # intel-rapl:0:0 (core, uncore) lie inside


@dataclass(frozen=True)
class Counter:
    """One device's counter: `read()` gives joules (kind "energy") or watts ("power")."""

    name: str  # what the row and `doctor` call it: "RAPL package-0", "NVML 0000:01:00.0"
    kind: Kind
    read: Callable[[], float] = field(compare=False, repr=False)
    wrap_joules: float | None = None  # an energy counter starts again from 0 past this


@dataclass(frozen=True)
class PowerCounters:
    """Every counter this host has, by what it measures, and why the others are missing."""

    gpus: dict[int, Counter] = field(default_factory=dict)  # by Gpu.index
    cpu: tuple[Counter, ...] = ()  # one per CPU package
    missing: dict[str, str] = field(default_factory=dict)  # "GPU 0 (name)" or "CPU" -> why

    def for_cell(self, gpus: tuple[int, ...]) -> tuple[tuple[Counter, ...], str]:
        """(the counters of a cell on these host GPUs, or of the CPU when none; why not).

        A cell on several GPUs needs all of their counters: part of its draw is no figure."""
        if not gpus:
            return (self.cpu, "") if self.cpu else ((), self.missing.get("CPU", "none found"))
        found = [self.gpus.get(index) for index in gpus]
        if all(counter is not None for counter in found):
            return tuple(c for c in found if c is not None), ""
        why = [
            f"{key}: {reason}"
            for index in gpus
            if index not in self.gpus
            for key, reason in self.missing.items()
            if key.startswith(f"GPU {index} ")
        ]
        return (), "; ".join(why) or "none found"

    def lines(self) -> list[str]:
        """What `doctor` says: each counter found, and each device without one, and why."""
        said = [f"GPU {index}: {counter.name}" for index, counter in sorted(self.gpus.items())]
        said += [f"CPU: {counter.name}" for counter in self.cpu]
        said += [f"{key}: no power counter: {why}" for key, why in self.missing.items()]
        return said


def sysfs_root(settings: Settings) -> Path:
    """Where counters are read: the configured `hardware.sysfs_root`, as every sysfs read."""
    return Path(settings["hardware.sysfs_root"])


def find_counters(
    profile: HardwareProfile,
    sysfs_root: Path = Path("/sys"),
    nvml: Callable[[], Any] | None = None,
) -> PowerCounters:
    """The counters of `profile`'s GPUs and of the CPU, read under `sysfs_root`.

    `nvml` imports NVML's binding (tests pass a fake); by default `pynvml` from nvidia-ml-py."""
    gpus: dict[int, Counter] = {}
    missing: dict[str, str] = {}
    nvidia = [gpu for gpu in profile.gpus if gpu.vendor_id == "10de"]
    opened = _nvml(nvml or _import_pynvml) if nvidia else None
    for gpu in profile.gpus:
        key = f"GPU {gpu.index} ({gpu.name})"
        if gpu.vendor_id == "10de":
            assert opened is not None
            counter, why = _nvml_counter(opened, gpu)
        else:
            counter, why = _hwmon_counter(sysfs_root, gpu)
        if counter is not None:
            gpus[gpu.index] = counter
        else:
            missing[key] = why
    cpu, why = _rapl_counters(sysfs_root)
    if not cpu:
        missing["CPU"] = why
    return PowerCounters(gpus, cpu, missing)


# -- RAPL ---------------------------------------------------------------------------------


def _rapl_counters(sysfs_root: Path) -> tuple[tuple[Counter, ...], str]:
    powercap = sysfs_root / "class" / "powercap"
    if not powercap.is_dir():
        return (), f"no {powercap} (no RAPL driver: a VM or a container does not expose one)"
    zones = sorted(p for p in powercap.iterdir() if _PACKAGE_ZONE.match(p.name))
    if not zones:
        return (), f"no RAPL package zone under {powercap}"
    counters = []
    for zone in zones:
        path = zone / "energy_uj"
        try:
            path.read_text()
        except PermissionError:
            return (), f"{path} is {RAPL_ROOT_ONLY}"
        except OSError as error:
            return (), f"{path}: {error.strerror or error}"
        name = _text(zone / "name") or zone.name
        wrap = _number(zone / "max_energy_range_uj")
        counters.append(
            Counter(
                f"RAPL {name} ({path})",
                ENERGY,
                _file_reader(path, 1e-6),
                None if wrap is None else (wrap + 1) * 1e-6,
            )
        )
    return tuple(counters), ""


# -- hwmon (amdgpu, i915, xe) -------------------------------------------------------------


def _hwmon_counter(sysfs_root: Path, gpu: Gpu) -> tuple[Counter | None, str]:
    if not gpu.pci_address:
        return None, f"{gpu.kernel_driver or 'its driver'} has no PCI device to read hwmon of"
    hwmon = sysfs_root / "bus" / "pci" / "devices" / gpu.pci_address / "hwmon"
    monitors = sorted(hwmon.iterdir()) if hwmon.is_dir() else []
    if not monitors:
        return None, f"{gpu.kernel_driver or 'its driver'} exposes no hwmon under {hwmon}"
    # An energy counter first: it integrates every change; a power reading sampled at our
    # period misses what happens between two reads.
    wanted: list[tuple[str, Kind, float]] = [("energy1_input", ENERGY, 1e-6)]
    if gpu.kernel_driver == "amdgpu":
        wanted += [("power1_average", POWER, 1e-6), ("power1_input", POWER, 1e-6)]
    denied = []
    for name, kind, scale in wanted:
        for monitor in monitors:
            path = monitor / name
            if not path.is_file():
                continue
            try:
                float(path.read_text().strip())
            except PermissionError:
                denied.append(str(path))
                continue
            except (OSError, ValueError) as error:
                denied.append(f"{path} ({error})")
                continue
            return Counter(f"hwmon {path.name} ({path})", kind, _file_reader(path, scale)), ""
    if denied:
        return None, f"not readable by this user: {', '.join(denied)}"
    names = " or ".join(name for name, _kind, _scale in wanted)
    return None, f"{gpu.kernel_driver or 'its driver'} has no {names} under {hwmon}"


# -- NVML ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Nvml:
    module: Any  # pynvml, or a fake with its functions; None when NVML cannot be used
    why: str  # why NVML cannot be used ("" when it can)


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _nvml(load: Callable[[], Any]) -> _Nvml:
    try:
        module = load()
    except ImportError:
        return _Nvml(None, NVML_MISSING)
    try:
        module.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: say it
        return _Nvml(None, f"NVML could not start: {_nvml_error(error)}")
    return _Nvml(module, "")


def _nvml_counter(nvml: _Nvml, gpu: Gpu) -> tuple[Counter | None, str]:
    module = nvml.module
    if module is None:
        return None, nvml.why
    try:
        handle = module.nvmlDeviceGetHandleByPciBusId(gpu.pci_address)
    except Exception as error:
        handle = _by_bus_id(module, gpu.pci_address)
        if handle is None:
            return None, f"NVML knows no GPU at {gpu.pci_address}: {_nvml_error(error)}"
    try:
        module.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as energy_error:  # before Volta: no energy counter, a power reading
        try:
            module.nvmlDeviceGetPowerUsage(handle)
        except Exception as error:
            return None, (
                f"NVML answered {_nvml_error(energy_error)} for the energy counter and "
                f"{_nvml_error(error)} for the power reading"
            )
        return Counter(
            f"NVML power {gpu.pci_address}",
            POWER,
            lambda: float(module.nvmlDeviceGetPowerUsage(handle)) * 1e-3,
        ), ""
    return Counter(
        f"NVML energy {gpu.pci_address}",
        ENERGY,
        lambda: float(module.nvmlDeviceGetTotalEnergyConsumption(handle)) * 1e-3,
    ), ""


def _by_bus_id(module: Any, address: str) -> Any:
    """The handle whose PCI bus id is `address`, by walking NVML's devices: it spells the
    domain with 8 digits ("00000000:01:00.0") where sysfs has 4."""
    try:
        for index in range(module.nvmlDeviceGetCount()):
            handle = module.nvmlDeviceGetHandleByIndex(index)
            bus = module.nvmlDeviceGetPciInfo(handle).busId
            bus = bus.decode() if isinstance(bus, bytes) else str(bus)
            if bus.lower().split(":", 1)[-1] == address.lower().split(":", 1)[-1]:
                return handle
    except Exception:  # NVML's own errors: no handle, the caller says why
        return None
    return None


def _nvml_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


# -- files --------------------------------------------------------------------------------


def _file_reader(path: Path, scale: float) -> Callable[[], float]:
    def read() -> float:
        return float(path.read_text().strip()) * scale

    return read


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None
