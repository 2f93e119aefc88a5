"""`vkrama devices` and `vkrama doctor`: what this machine has and whether vkrama can use it.

Stage: CLI. Calls `hardware.detect`, `backends.support/choose` and `doctor`, and renders
their data; both outputs are meant to be pasted into bug reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vkrama import backends, doctor, hardware
from vkrama.cli.app import App, pass_app
from vkrama.cli.console import echo_json, echo_table
from vkrama.cli.flags import gpu_type
from vkrama.errors import ExitStatus
from vkrama.hardware import HardwareProfile


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--backend",
    type=click.Choice(["auto", *backends.BACKENDS]),
    default="auto",
    help="Show the passthrough this backend would get.",
)
@click.option(
    "--gpu",
    metavar="N|N,M|all",
    callback=gpu_type(),
    help="Pick GPU N, or several to split over (see the GPU table).",
)
@click.option("--vk-driver", type=click.Choice(backends.VK_DRIVERS), help="Pick the Vulkan driver.")
@click.option("--hsa-override", is_flag=True, help="Allow HSA_OVERRIDE_GFX_VERSION for ROCm.")
@pass_app
def devices(
    app: App,
    as_json: bool,
    backend: str,
    gpu: backends.GpuSelection,
    vk_driver: str | None,
    hsa_override: bool,
) -> None:
    """List GPUs, their device nodes, and which backends can use each, with reasons."""
    profile = hardware.detect_host(app.settings)
    cells = backends.support(profile, hsa_override)
    choice = backends.choose(profile, backend, gpu, vk_driver, hsa_override)
    if as_json:
        echo_json(
            {
                "gpus": profile.gpus,
                "nodes": profile.nodes,
                "kfd": profile.kfd,
                "nvidia_nodes": profile.nvidia_nodes,
                "cdi_specs": profile.cdi_specs,
                "pci_ids": profile.pci_ids,
                "problems": profile.problems,
                "gpu_key": profile.gpu_key(),
                "backends": [
                    {
                        "backend": c.backend,
                        "driver": c.driver,
                        "gpu": c.gpu.index if c.gpu else None,
                        "usable": c.ok,
                        "reason": c.reason,
                    }
                    for c in cells
                ],
                "choice": _choice_json(choice),
                "splits": [_choice_json(c) for c in backends.splits(profile)],
            }
        )
        return
    if profile.gpus:
        echo_table(
            [
                (
                    g.index,
                    g.name,
                    g.ids,
                    g.kernel_driver or "-",
                    g.pci_address or "-",
                    _memory(g),
                    g.render_node or "-",
                    g.card_node or "-",
                    g.gfx_target or "-",
                )
                for g in profile.gpus
            ],
            ("GPU", "Name", "Ids", "Driver", "PCI", "VRAM", "Render node", "Card", "gfx"),
        )
        click.echo()
        echo_table(
            [
                (n.path, f"{n.mode:04o}", n.gid, "yes" if n.accessible else "no")
                for n in profile.nodes
            ],
            ("Device node", "Mode", "Group id", "You can open it"),
        )
    else:
        click.echo(
            "No GPU found: vkrama runs on the CPU here, or Vulkan (lavapipe) and SYCL (Intel's "
            "OpenCL CPU device) in software."
        )
    specs = profile.cdi_specs
    cdi = ", ".join(n for s in specs for n in s.devices) if specs else "none"
    click.echo(f"\nCDI devices: {cdi}   /dev/kfd: {'present' if profile.kfd else 'absent'}\n")
    echo_table(
        [
            (
                c.backend,
                c.driver or "-",
                c.gpu.index if c.gpu else "-",
                "yes" if c.ok else "no",
                c.reason,
            )
            for c in cells
        ],
        ("Backend", "Driver", "GPU", "Usable", "Why"),
    )
    _echo_splits(profile)
    click.echo(f"\nChosen ({backend}): {choice.cell} on {choice.device_label}: {choice.reason}")
    flags = [
        *(f"--device {d}" for d in choice.devices),
        *(f"--group-add {g}" for g in choice.group_add),
    ]
    flags += [f"--env {k}={v}" for k, v in sorted(choice.env.items())]
    click.echo(f"Passes: {' '.join(flags) or 'no device, no environment'}")
    for problem in profile.problems:
        click.echo(f"Problem: {problem}")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def doctor_command(
    app: App,
    as_json: bool,
) -> int:
    """Check podman, OCI runtime, ulimits, device permissions, CDI and images; say how to fix."""
    profile = hardware.detect_host(app.settings)
    sysfs_root = Path(app.settings["hardware.sysfs_root"])
    facts = doctor.gather(app.settings, sysfs_root=sysfs_root, profile=profile)
    checks = doctor.diagnose(profile, facts)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        echo_json({"ok": not failed, "checks": checks})
    else:
        echo_table([(c.status.upper(), c.name, c.detail) for c in checks], ("", "Check", "Detail"))
        fixes = [c for c in checks if c.fix]
        if fixes:
            click.echo()
        for check in fixes:
            click.echo(f"Fix {check.name}: {check.fix}")
    return int(ExitStatus.ERROR if failed else ExitStatus.OK)


def _gib(size: int | None) -> str:
    return f"{size / 1024**3:.1f} GiB" if size else "-"


def _memory(gpu: hardware.Gpu) -> str:
    """VRAM; on an APU also the GTT it can use, which is where a model mostly lives."""
    if gpu.apu and gpu.gtt_bytes:
        return f"{_gib(gpu.vram_bytes)} + {_gib(gpu.gtt_bytes)} GTT (APU)"
    return _gib(gpu.vram_bytes)


def _echo_splits(profile: HardwareProfile) -> None:
    """Which GPUs one llama.cpp process can split a model over, per stack."""
    if len(profile.gpus) < 2:
        return
    found = backends.splits(profile)
    click.echo("\nSplits (one model over several GPUs: --gpu 0,1 or --gpu all):")
    for c in found:
        gpus = ",".join(str(i) for i in c.gpu_indices)
        click.echo(f"  {c.cell}: GPUs {gpus} ({c.device_label})")
    if not found:
        click.echo("  none: no GPU stack here can use two of these GPUs at once")
    click.echo(
        "  One process loads one GPU stack: CUDA, ROCm and oneAPI split only over their own "
        "vendor's GPUs; Vulkan can mix vendors, each GPU through its own driver."
    )


def _choice_json(choice: backends.Choice) -> dict[str, Any]:
    return {
        "backend": choice.backend,
        "driver": choice.driver,
        "gpu": choice.gpu.index if choice.gpu else None,
        "gpus": list(choice.gpu_indices),
        "device_label": choice.device_label,
        "devices": choice.devices,
        "group_add": choice.group_add,
        "env": choice.env,
        "reason": choice.reason,
    }
