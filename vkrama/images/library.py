"""What an image's libraries read: the environment switches its ggml (and rocBLAS) know.

Stage: images (read side, beside provenance). `switches_read` runs the image once, with no
network and nothing mounted, to list the variable names of `backends.env_switches.PREFIXES`
found in its shipped libraries (ggml's backends, rocBLAS); `parse` is the pure half. A
switch is offered by tune only if its name is in the library that reads it: the names are
copied from ggml's sources, and a build that dropped or renamed one would otherwise be
"tuned" over a variable nobody reads. Must not print.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from vkrama.backends.env_switches import PREFIXES
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError

if TYPE_CHECKING:
    from vkrama.engine import Engine

# Where the images keep their libraries: Debian's multiarch dir (cpu, vulkan), /usr/local
# and /app (a source build), /opt/rocm (rocBLAS, hipBLASLt).
LIBRARY_DIRS = ("/usr/lib", "/usr/local/lib", "/opt/rocm/lib", "/app")
LIBRARY_NAMES = ("libggml*.so*", "librocblas.so*", "libhipblaslt.so*")
PROBE_TIMEOUT_S = 300.0


def probe_spec(image: str) -> ContainerSpec:
    """The container that lists the switch names: grep over the libraries, sorted."""
    names = " -o ".join(f"-name '{n}'" for n in LIBRARY_NAMES)
    words = "|".join(PREFIXES)
    script = (
        f"find {' '.join(LIBRARY_DIRS)} \\( {names} \\) -type f 2>/dev/null"
        f" | xargs -r grep -aohE '({words})[A-Z0-9_]+' | sort -u"
    )
    return ContainerSpec(
        image=image,
        entrypoint=("/bin/sh", "-c"),
        command=(script,),
        name=f"vkrama-switches-{secrets.token_hex(4)}",
        labels={"vkrama.role": "probe"},
        network="none",
    )


def parse(stdout: str) -> frozenset[str]:
    """The variable names the probe printed, one a line; anything else is not one."""
    return frozenset(line for line in stdout.split() if re.fullmatch(r"[A-Z][A-Z0-9_]+", line))


def switches_read(engine: Engine, image: str) -> frozenset[str]:
    """Every switch name the image's libraries contain (one short container run)."""
    done = engine.run_to_completion(probe_spec(image), PROBE_TIMEOUT_S)
    if done.exit_code != 0:
        raise VkramaError(
            f"could not list the environment switches {image}'s libraries read "
            f"(exit {done.exit_code}: {done.stderr.strip()[-200:]})",
            hint="`vkrama images build` rebuilds the image",
            status=ExitStatus.ERROR,
        )
    return parse(done.stdout)
