"""`utils.malloc.keep_freed_memory`: freed blocks stay in the heap, so reallocating them costs no
page faults; the user's own glibc settings and the opt-out win. Each case runs in a fresh
interpreter, since the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

SCRIPT = """
import resource, sys
import numpy as np
from panopticdepth.utils.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "apply" else False

def cycle():  # four 1 MiB blocks at the heap's top, pages touched, then all freed
    blocks = [np.ones(1 << 17) for _ in range(4)]
    del blocks

for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(mode: str, **env: str) -> tuple[bool, int]:
    import os

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_blocks_are_reused_without_page_faults():
    applied, faults = _run("apply")
    default_applied, default_faults = _run("default")
    assert applied and not default_applied
    # glibc's defaults trim the freed 4 MiB off the heap's top every cycle: ~1000 faults per cycle
    assert default_faults > 5000
    assert faults < 200


@pytest.mark.parametrize(
    "env", [{"PANOPTICDEPTH_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}]
)
def test_the_opt_out_and_the_users_own_settings_win(env):
    applied, faults = _run("apply", **env)
    assert not applied
    assert faults > 5000
