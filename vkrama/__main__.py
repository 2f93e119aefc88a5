"""`python -m vkrama` is the same as the `vkrama` console script.

Stage: entry point. Must do nothing but run the CLI and repair the one CPython flaw below.
"""

from vkrama.cli import main

try:
    main()
finally:
    # CPython 3.11 flaw: a KeyboardInterrupt that lands inside exec() of a string (a
    # dataclass or namedtuple being made by an import the command does late) sets the
    # interpreter's "unhandled KeyboardInterrupt" flag even when vkrama handles it, and
    # under `python -m` the flag outlives the exec: after printing "Interrupted." and
    # exiting 130, the process killed itself with SIGINT (returncode -2; 1 run in ~10 when
    # a Ctrl-C came 1 ms after a bench cell began). Every exec of a string clears that
    # flag first, so one more, here, leaves the exit status vkrama chose.
    exec("None")  # a constant: nothing is evaluated from input
