"""rpfm.memory.PeakMemory: per-stage peaks that see an allocation inside the stage and forget it after a reset."""
import torch

from rpfm.memory import PeakMemory


def test_cpu_peak_sees_a_stage_allocation_and_resets():
    tracker = PeakMemory(torch.device("cpu"))
    tracker.start()
    idle = tracker.peak_mb()
    tracker.start()
    block = torch.ones(64 * 2 ** 20 // 4 * 4)           # 256 MiB of float32, touched (ones), so resident
    busy = tracker.peak_mb()
    del block
    assert busy - idle > 200, (idle, busy)
    tracker.start()
    after = tracker.peak_mb()
    if tracker.resettable:                               # VmHWM reset: the freed block no longer counts
        assert after < busy - 200, (busy, after)
    else:                                                # getrusage only grows
        assert after >= busy
