"""The private names of torch that bptt needs: each still there and doing what bptt
relies on, and named nowhere but ``bptt._torch_compat``."""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import pytest
import torch

from bptt import _torch_compat
from bptt._torch_compat import (
    PRIVATE,
    foreach_mul_,
    foreach_norm,
    functorch_transforms_active,
    resolve,
)

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bptt"
COMPAT = SOURCE / "_torch_compat.py"
DT = torch.float64


@pytest.mark.parametrize("name", sorted(PRIVATE))
def test_every_private_name_is_still_in_torch(name):
    try:
        found = resolve(name)
    except RuntimeError as missing:
        pytest.fail(
            f"torch {torch.__version__} moved or removed {name}, which bptt uses "
            f"{PRIVATE[name]}: find its new name and change src/bptt/_torch_compat.py "
            f"({missing})"
        )
    assert callable(found), f"torch {torch.__version__}: {name} is no longer a function"


def test_a_missing_name_is_a_runtime_error_that_names_it():
    with pytest.raises(RuntimeError, match=r"has no torch\._no_such_thing.*_torch_compat"):
        resolve("torch._no_such_thing")


def test_the_functorch_question_sees_every_transform():
    x = torch.ones(3, dtype=DT)
    seen: list[bool] = []

    def probe(v):
        seen.append(functorch_transforms_active())
        return (v * v).sum()

    assert functorch_transforms_active() is False
    torch.func.vmap(probe)(x.unsqueeze(0).expand(2, 3))
    torch.func.grad(probe)(x)
    with warnings.catch_warnings():  # torch 2.13's jvp scripts a helper and warns about it
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated")
        torch.func.jvp(probe, (x,), (x,))
    assert seen == [True, True, True], (
        f"torch {torch.__version__}: torch._C._are_functorch_transforms_active no longer "
        f"reports vmap, grad and jvp (it said {seen}); the engines' guards depend on it"
    )
    assert functorch_transforms_active() is False


@pytest.mark.parametrize("ord", [1.0, 2.0, 3.5, math.inf])
@pytest.mark.parametrize("dtype", [None, DT])
def test_foreach_norm_is_each_tensors_vector_norm(ord, dtype, gen):
    tensors = [torch.randn(shape, generator=gen) * 3 for shape in [(3, 4), (5,), ()]]
    got = foreach_norm(tensors, ord, dtype=dtype)
    assert isinstance(got, list) and len(got) == len(tensors)
    for t, norm in zip(tensors, got, strict=True):
        expected = torch.linalg.vector_norm(t, ord, dtype=dtype)
        assert norm.shape == () and norm.dtype == expected.dtype, (norm, expected)
        torch.testing.assert_close(norm, expected, rtol=1e-6, atol=0)


def test_foreach_norm_in_float64_keeps_a_float32_overflow_finite():
    big = torch.full((4,), 1e20)  # finite float32 elements whose squares are not
    assert math.isinf(foreach_norm([big])[0].item())
    exact = 2 * float(big[0])  # sqrt(4 e^2), e the float32 nearest 1e20
    assert foreach_norm([big], dtype=DT)[0].item() == pytest.approx(exact, rel=1e-15)


def test_foreach_mul_takes_one_factor_or_one_per_tensor(gen):
    tensors = [torch.randn(shape, generator=gen, dtype=DT) for shape in [(2, 3), (4,)]]
    before = [t.clone() for t in tensors]
    foreach_mul_(tensors, torch.tensor(0.5, dtype=DT))
    for t, b in zip(tensors, before, strict=True):
        assert torch.equal(t, b * 0.5)
    foreach_mul_(tensors, [torch.tensor(2.0, dtype=DT), torch.tensor(-1.0, dtype=DT)])
    assert torch.equal(tensors[0], before[0]) and torch.equal(tensors[1], -0.5 * before[1])


def _private_torch_names(path: Path, root: Path = SOURCE.parent) -> list[str]:
    """``torch`` names a module uses that have a part starting with one underscore."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch"):
            dotted = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            dotted = [a.name for a in node.names if a.name.startswith("torch")]
        elif isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if not (isinstance(inner, ast.Name) and inner.id == "torch"):
                continue
            dotted = [".".join(["torch", *reversed(parts)])]
        else:
            continue
        for name in dotted:
            if any(p.startswith("_") and not p.startswith("__") for p in name.split(".")):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_no_module_but_the_compat_module_names_a_private_part_of_torch():
    assert _private_torch_names(COMPAT) == []  # it spells them as strings, for resolve
    assert _torch_compat.__file__ is not None and Path(_torch_compat.__file__) == COMPAT
    found = [hit for path in sorted(SOURCE.rglob("*.py")) for hit in _private_torch_names(path)]
    assert not found, (
        "private torch names outside bptt._torch_compat (add them there, with the reason): "
        + "; ".join(found)
    )


def test_the_scan_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import torch\nfrom torch.utils._foreach_utils import f\n"
        "torch._C._are_functorch_transforms_active()\ntorch.linalg.vector_norm\n"
        "torch.__version__\n"
    )
    hits = {hit.split(": ")[1] for hit in _private_torch_names(sample, tmp_path)}
    assert hits == {
        "torch.utils._foreach_utils",
        "torch.utils._foreach_utils.f",
        "torch._C._are_functorch_transforms_active",
        "torch._C",
    }
