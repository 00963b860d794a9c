"""The README's examples, run as they stand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from helpers import rounding_tol

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_plain_loop_example_runs_in_at_most_15_lines():
    code = _block_after("## In your own training loop")
    assert len([line for line in code.splitlines() if line.strip()]) <= 15
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own code, nothing else
    row, clip, by_distance = namespace["row"], namespace["clip"], namespace["by_distance"]
    assert row["step"] == 300 and math.isfinite(row["grad_norm"]) and not row["nonfinite"]
    assert any(name.startswith("grad_norm/0.weight_hh") for name in row)  # the LSTM's own
    assert clip.threshold > 0 and math.isfinite(clip.threshold)
    norms = by_distance["norms"]
    # the loss projects on a float32 unit vector: norm 1 within H = 32 roundings of it
    assert norms.shape == (20,)
    assert abs(norms[0].item() - 1.0) <= rounding_tol(2 * 32, 1.0, torch.float32)
    assert torch.isfinite(norms).all()
