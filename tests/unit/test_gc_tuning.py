"""The server's garbage-collector settings (proxy/gc_tuning.py), in a fresh interpreter so
that the test process's own collector is left as it is."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from proxy.obs.gc_tuning import YOUNG_THRESHOLD, tune_gc
tune_gc()
tuned = gc.get_threshold()
frozen = gc.get_freeze_count()
gc.set_threshold(700, 10, 10)  # a later call must not apply the settings again
tune_gc()
print(json.dumps([tuned, frozen, gc.get_threshold(), gc.get_freeze_count(), YOUNG_THRESHOLD]))
"""


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold_once() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True)
    tuned, frozen, after, frozen_after, young = json.loads(done.stdout)
    assert tuned == [young, 20, 20]
    assert frozen > 1000  # the modules imported so far, no longer walked by full collections
    assert after == [700, 10, 10] and frozen_after == frozen  # the second call did nothing
    assert young == 10_000
