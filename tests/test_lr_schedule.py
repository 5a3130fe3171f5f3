"""The shared learning-rate schedule (rpfm.train.schedule): constant by default, an optional cosine tail, checked
configs in both trainers. The logged lr and exact resume inside the tail are in test_codec_train.py."""
from __future__ import annotations

import math

import pytest

from rpfm.train.codec_config import from_dict as codec_from_dict
from rpfm.train.config import TrainConfig
from rpfm.train.schedule import lr_at



def test_default_is_constant():
    assert all(lr_at(s, lr=3e-4, steps=100, decay_start=None) == 3e-4 for s in range(0, 120, 7))


def test_cosine_tail_shape():
    lr, steps = 1e-3, 100
    values = [lr_at(s, lr=lr, steps=steps, decay_start=0.6, min_ratio=0.1) for s in range(steps + 1)]
    assert values[:61] == [lr] * 61                                   # flat until 0.6 * steps
    assert math.isclose(values[80], lr * (0.1 + 0.9 * 0.5), rel_tol=1e-12)   # half-way down the tail
    assert math.isclose(values[100], lr * 0.1, rel_tol=1e-12)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(0, lr=lr, steps=steps, decay_start=0.0) == lr and lr_at(steps, lr=lr, steps=steps,
                                                                         decay_start=0.0) == 0.0


@pytest.mark.parametrize("field,value", [("lr_decay_start", 1.0), ("lr_decay_start", -0.1),
                                         ("lr_decay_start", "0.5"), ("lr_min_ratio", 1.5),
                                         ("lr_min_ratio", float("nan"))])
def test_bad_schedule_names_the_field(field, value, tmp_path):
    with pytest.raises(ValueError, match=field):
        codec_from_dict({"data": {"root": "d"}, "out_dir": str(tmp_path), "batch_size": 1, "steps": 1,
                         field: value})
    with pytest.raises(ValueError, match=field):
        TrainConfig(model="RPFM-S/2", codec={"type": "pixel", "downsample": 4}, dataset={"name": "synthetic"},
                    out_dir=str(tmp_path), batch_size=1, steps=1, **{field: value})
