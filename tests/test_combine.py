from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.combine import interpolate, tune_weight
from seqlm.compare import per_token_frame
from seqlm.errors import SeqlmError


def test_em_finds_the_mixture_weight():
    # Targets drawn from 0.3·p_a + 0.7·p_b over 50 outcomes: EM should recover λ ≈ 0.3.
    rng = np.random.default_rng(0)
    p_a, p_b = rng.dirichlet(np.ones(50)), rng.dirichlet(np.ones(50))
    targets = rng.choice(50, size=200_000, p=0.3 * p_a + 0.7 * p_b)
    weight = tune_weight(np.log(p_a[targets]), np.log(p_b[targets]))
    assert weight == pytest.approx(0.3, abs=0.02)


def test_interpolate_is_the_mixture_in_log_space():
    a, b = np.log([0.5, 0.1]), np.log([0.1, 0.4])
    assert np.exp(interpolate(a, b, 0.25)) == pytest.approx([0.2, 0.325])
    assert interpolate(a, b, 1.0) == pytest.approx(a)


def write(folder, split, targets, logprobs):
    folder.mkdir(exist_ok=True)
    pl.DataFrame({"target": targets, "logprob": logprobs}).write_parquet(
        folder / f"{split}.parquet"
    )


def test_per_token_frame_refuses_other_targets(tmp_path):
    write(tmp_path / "a", "test", [3, 0, 2], [-1.0, -2.0, -0.5])
    write(tmp_path / "b", "test", [3, 0, 2], [-1.5, -1.0, -0.1])
    write(tmp_path / "c", "test", [3, 4, 2], [-1.5, -1.0, -0.1])
    write(tmp_path / "d", "test", [3, 0], [-1.5, -1.0])
    frame = per_token_frame({"a": tmp_path / "a", "b": tmp_path / "b"})
    assert frame.columns == ["position", "target", "is_unk", "a", "b"]
    assert frame["is_unk"].to_list() == [False, True, False]
    with pytest.raises(SeqlmError, match="c and a were scored on different test targets"):
        per_token_frame({"a": tmp_path / "a", "c": tmp_path / "c"})
    with pytest.raises(SeqlmError, match="d was scored on 2 test targets, a on 3"):
        per_token_frame({"a": tmp_path / "a", "d": tmp_path / "d"})
