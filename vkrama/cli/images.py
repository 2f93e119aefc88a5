"""`vkrama images build | list | inspect | rm | save | load`: the per-backend images.

Stage: CLI shell over `vkrama.images`. Parses flags, calls one images function per
backend, renders tables/JSON on stdout and build progress on stderr.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click

from vkrama import images
from vkrama.cli.app import App, dry_run_option, pass_app, refuses_dry_run
from vkrama.cli.console import echo_json, echo_table
from vkrama.cli.progress import ConsoleReporter, reporting
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images.recipes import available


@click.group("images")
def images_group() -> None:
    """Build, list and describe the llama.cpp images (one per backend)."""


@images_group.command()
@click.argument("backends", nargs=-1, metavar="[BACKEND]...")
@click.option("--all", "all_", is_flag=True, help="Every backend with a recipe.")
@click.option("--no-cache", is_flag=True, help="Rebuild every step instead of reusing layers.")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V", help="Extra build arg.")
@click.option("--base", metavar="IMAGE", help="Base image (default: settings images.base).")
@click.option(
    "--gfx",
    metavar="gfxN,…|all",
    help="rocm: compile with ROCm 7 for these targets (default: the AMD GPUs found here).",
)
@click.option(
    "--llama-source",
    metavar="URL|FILE",
    help="rocm: compile this llama.cpp release tarball (e.g. upstream's b11669, the other "
    "images' build) instead of PyPI's 11434.",
)
@dry_run_option
@pass_app
def build(
    app: App,
    backends: tuple[str, ...],
    all_: bool,
    no_cache: bool,
    build_args: tuple[str, ...],
    base: str | None,
    gfx: str | None,
    llama_source: str | None,
) -> None:
    """Build backend images, tagged localhost/vkrama/BACKEND:VERSION and :latest."""
    wanted = _backends(backends, all_)
    args = dict(_key_value(arg) for arg in build_args)
    targets, asked = images.rocm_targets(app.settings, gfx, wanted)
    source = images.llama_source(llama_source, wanted, args.get("LLAMA_CPP_BUILD"))
    plans = {b: images.plan(b, app.settings, build_args=args, base=base, no_cache=no_cache,
                            gfx=targets, gfx_asked=asked, source=source)
             for b in wanted}  # fmt: skip
    if app.dry_run:
        for planned in plans.values():
            for line in planned.staging_commands():
                click.echo(line)
            click.echo(shlex.join(planned.podman_argv()))
        return
    failures: list[tuple[str, VkramaError]] = []
    for backend, planned in plans.items():
        display = ConsoleReporter(app.verbose, every_build_line=True)
        started = time.monotonic()
        try:
            image = images.build(app.engine, planned, on_progress=display)
        except VkramaError as error:
            display.close()
            if len(plans) == 1:
                raise
            click.echo(f"Error: {error.message}", err=True)
            failures.append((backend, error))
            continue
        display.close()
        size = images.status(app.engine, backend).size or 0
        click.echo(
            f"built {image.ref}  {image.id[:12]}  {_mb(size)}  "
            f"llama.cpp {image.provenance.get('llama_cpp_build', '?')}  "
            f"in {time.monotonic() - started:.1f} s"
        )
    if failures:
        names = ", ".join(backend for backend, _ in failures)
        raise VkramaError(
            f"{len(failures)} of {len(plans)} images failed to build: {names}",
            hint=failures[0][1].hint,
            status=failures[0][1].status,
        )


@images_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Every backend's image, with llama.cpp build and stack versions."""
    found = images.list_images(app.engine)
    if as_json:
        echo_json([_document(status) for status in found])
        return
    rows = [
        (s.backend, s.ref, s.image.id[:12], _mb(s.size or 0), _when(s), _build(s), s.stack,
         _rpc(s))
        if s.image
        else (s.backend, s.ref, "(not built)", "-", "-", "-", "-", "-")
        for s in found
    ]  # fmt: skip
    echo_table(rows, ("backend", "image", "id", "size", "created", "llama.cpp", "stack", "rpc"))


@images_group.command()
@click.argument("backend")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def inspect(app: App, backend: str, as_json: bool) -> None:
    """One backend's image: tags, size and everything it recorded at build time."""
    status = images.inspect(app.engine, backend)
    if as_json:
        echo_json(_document(status))
        return
    assert status.image is not None
    rows = [
        ("backend", status.backend),
        ("image", status.ref),
        ("id", status.image.id),
        ("tags", ", ".join(status.tags)),
        ("size", _mb(status.size or 0)),
        ("created", _when(status)),
        ("stack", status.stack),
        *sorted((k, v) for k, v in status.image.provenance.items() if k != "backend"),
    ]
    echo_table(rows, tablefmt="plain")


@images_group.command()
@click.argument("backends", nargs=-1, required=True, metavar="BACKEND...")
@dry_run_option
@pass_app
def rm(app: App, backends: tuple[str, ...]) -> None:
    """Remove backend images (every vkrama tag of each)."""
    missing = []
    for backend in backends:
        if app.dry_run:
            removed = images.tags(app.engine, backend)
            for tag in removed:
                click.echo(shlex.join(["podman", "rmi", tag]))
        else:
            removed = images.remove(app.engine, [backend])
            for name in removed:
                click.echo(f"removed {name}")
        if not removed:
            missing.append(backend)
    if missing:
        raise VkramaError(
            f"no image to remove for: {', '.join(missing)}",
            hint="`vkrama images list` shows what is built",
            status=ExitStatus.NOT_FOUND,
        )


@images_group.command()
@click.argument("backends", nargs=-1, required=True, metavar="BACKEND...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Archive to write (docker-archive tar).")  # fmt: skip
@pass_app
@refuses_dry_run("save writes the archive as it reads the images")
def save(app: App, backends: tuple[str, ...], output: Path) -> None:
    """Write backend images into one archive, for `images load` on an air-gapped host."""
    with reporting(app.verbose) as reporter:
        refs = images.save(app.engine, backends, output, reporter)
    click.echo(f"saved {', '.join(refs)} to {output} ({_mb(output.stat().st_size)})")


@images_group.command()
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
@refuses_dry_run("load reads the archive into podman as it goes")
def load(app: App, archive: Path) -> None:
    """Load images from an archive written by `images save`."""
    for name in images.load(app.engine, archive):
        click.echo(f"loaded {name}")


def _backends(given: tuple[str, ...], all_: bool) -> list[str]:
    known = available()
    if all_:
        return list(known)
    if not given:
        raise click.UsageError(f"name a backend ({', '.join(known)}) or pass --all")
    return list(dict.fromkeys(given))


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not K=V", param_hint="--build-arg")
    return key, value


def _document(status: images.ImageStatus) -> dict[str, Any]:
    """The `images list` / `inspect` document of one image (encoded by console.to_json)."""
    image = status.image
    return {
        "backend": status.backend,
        "image": status.ref,
        "built": image is not None,
        "id": image.id if image else None,
        "tags": status.tags,
        "size": status.size,
        "created": status.created,
        "llama_cpp_build": image.provenance.get("llama_cpp_build") if image else None,
        "stack": status.stack if image else None,
        "provenance": image.provenance if image else {},
    }


def _build(status: images.ImageStatus) -> str:
    return status.image.provenance.get("llama_cpp_build", "?") if status.image else "-"


def _rpc(status: images.ImageStatus) -> str:
    """ggml's RPC module: the llama.cpp build it was compiled from and its protocol."""
    found = status.image.provenance if status.image else {}
    if "rpc_protocol" not in found:
        return "-"
    return f"{found.get('rpc_llama_cpp_build', '?')} (protocol {found['rpc_protocol']})"


def _when(status: images.ImageStatus) -> str:
    return status.created.astimezone().strftime("%Y-%m-%d %H:%M") if status.created else "-"


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"
