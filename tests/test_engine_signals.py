"""engine.signals: Ctrl-C held back while podman creates a container, then delivered."""

from __future__ import annotations

import pytest


def test_a_signal_during_a_held_block_arrives_after_it_not_during_it() -> None:
    import os
    import signal

    from vkrama.engine import signals

    done = []
    with pytest.raises(KeyboardInterrupt), signals.held():
        os.kill(os.getpid(), signal.SIGINT)  # delivered to the recorder, not raised
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
