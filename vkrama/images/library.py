"""What an image's libraries read: the environment switches its ggml (and rocBLAS) know.

Stage: images (read side, beside provenance). `switches_read` runs the image once, with no
network and nothing mounted, to list the variable names of `backends.env_switches.PREFIXES`
found in its shipped libraries (ggml's backends, rocBLAS); `parse` is the pure half. The
build runs it once and keeps the names with the image's provenance (`KEY`, a label like
the others), which `recorded` reads back; an image built before that has no such field,
and tune runs the probe instead. A switch is offered by tune only if its name is in the
library that reads it: the names are copied from ggml's sources, and a build that dropped
or renamed one would otherwise be "tuned" over a variable nobody reads. Must not print.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
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
# The provenance field (label vkrama.image.env_switches) of the names, comma-separated,
# sorted; NONE when the libraries hold none (an empty value is read as "not recorded").
KEY = "env_switches"
NONE = "none"


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


def as_field(names: frozenset[str]) -> str:
    """The provenance value of a probe's names: "GGML_VK_DISABLE_F16,GGML_VK_..." or NONE."""
    return ",".join(sorted(names)) or NONE


def recorded(provenance: Mapping[str, str]) -> frozenset[str] | None:
    """The switch names the image's build recorded; None when it recorded none (an image
    built before vkrama kept them: run the probe)."""
    value = provenance.get(KEY)
    if value is None:
        return None
    return frozenset() if value == NONE else parse(value.replace(",", "\n"))


def switches_of(engine: Engine, image: str, provenance: Mapping[str, str]) -> frozenset[str]:
    """The switch names `image`'s libraries contain: as its build recorded them with its
    provenance (no container), else from the probe (an image built before that)."""
    found = recorded(provenance)
    return found if found is not None else switches_read(engine, image)
