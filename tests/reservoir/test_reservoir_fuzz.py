"""Bad input to bptt.reservoir and ``bptt esn``: a result, or an error that names the
argument (ValueError/TypeError in the API; one line and exit code 2 on the command
line), never an error from deep inside NumPy, SciPy or torch."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bptt.reservoir import (
    Reservoir,
    Ridge,
    generate,
    japanese_vowels,
    mackey_glass,
    nrmse,
    series_features,
)
from bptt.run import ConfigError, ESNConfig, run_esn
from helpers import load_benchmark

# --- values of every kind --------------------------------------------------------------

_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.bool,
    torch.complex64,
]


@st.composite
def tensors(draw, max_dims: int = 4) -> torch.Tensor:
    """A tensor of any small shape (0-sized axes too) and dtype, sometimes poisoned."""
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=max_dims)))
    dtype = draw(st.sampled_from(_DTYPES))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    poison = draw(st.sampled_from([None, math.nan, math.inf, -math.inf]))
    if poison is not None and x.numel() and dtype.is_floating_point:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = poison
    return x


arrays = tensors().map(lambda t: t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([10**400, -(10**400), 2**63, 0.5, -0.5, 1e-12, 1e300]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, -1.0]),
    st.sampled_from(["", "x", "1", "tanh", "mean", "float32"]),
    st.sampled_from([np.int64(2), np.float32(0.5), np.float64(math.nan), np.bool_(True)]),
)
anything = st.one_of(
    scalars,
    tensors(),
    arrays,
    st.sampled_from([[1, 2], [[0.5]], (), {}, {"W": 1}, object(), torch.float32, torch.int8]),
)


def _mentions(message: str, name: str) -> bool:
    """Whether the message names ``name``: as a word, or for a one- or two-letter name
    (x, y, W, a, n, h, x0: words such as "a" occur anyway) at its start or as ``name=``."""
    if len(name) > 2:
        return re.search(rf"(?<![\w']){re.escape(name)}(?![\w'])", message) is not None
    return message.startswith((f"{name} ", f"{name}: ")) or f"{name}=" in message


def _names_it(err: Exception, *names: str) -> None:
    message = str(err)
    assert isinstance(err, (ValueError, TypeError)), repr(err)
    assert any(_mentions(message, name) for name in names), (names, message)
    assert "\n" not in message, message


def _answer(call, *names: str):
    """call() -> its result, or None after an error naming one of ``names``."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        _names_it(err, *names)
        return None


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Reservoir --------------------------------------------------------------------------

_VALID = {
    "units": 6,
    "spectral_radius": 0.9,
    "leak_rate": 0.5,
    "input_scaling": 1.0,
    "density": 0.5,
    "input_density": 0.5,
    "bias": 0.1,
    "activation": "tanh",
    "seed": 0,
    "dtype": torch.float64,
    "W": None,
    "W_in": None,
    "input_size": None,
}


@FUZZ
@given(name=st.sampled_from(sorted(_VALID)), value=anything)
def test_the_reservoir_constructor_answers_any_argument(name, value):
    kwargs = {**_VALID, name: value}
    reservoir = _answer(lambda: Reservoir(**kwargs), name)
    if reservoir is not None:  # a reservoir that runs
        features = reservoir.W_in.shape[1] if reservoir.W_in is not None else 2
        states = reservoir.run(torch.rand(2, 3, features), reset=True)
        assert states.shape == (2, 3, reservoir.units) and torch.isfinite(states).all()


@FUZZ
@given(
    x=st.one_of(tensors(), arrays, anything),
    lengths=st.one_of(st.none(), tensors(max_dims=2), st.sampled_from([[1, 2], [3, "a"], 2])),
    reset=st.one_of(st.booleans(), scalars),
    reduce=st.sampled_from(["mean", "last", "max", None, 1]),
    single=st.booleans(),
)
def test_running_a_reservoir_answers_any_input(x, lengths, reset, reduce, single):
    # sparse W (a quarter nonzero): one series runs in the compiled loop, a batch in torch
    reservoir = Reservoir(12, 0.9, 0.5, density=0.25, seed=1, input_size=2)
    if single:  # a carried state from one series
        reservoir.run(torch.rand(1, 2, 2))
    states = _answer(lambda: reservoir.run(x, lengths, reset=reset), "x", "lengths", "reset")
    if states is not None:
        assert states.shape == (*x.shape[:2], 12) and torch.isfinite(states).all()
    means = _answer(lambda: reservoir.features(x, lengths, reduce), "x", "lengths", "reduce")
    if means is not None:
        assert means.shape == (x.shape[0], 12) and torch.isfinite(means).all()


@FUZZ
@given(
    state=st.one_of(
        anything,
        st.fixed_dictionaries({"W": anything, "bias": anything}),
        st.fixed_dictionaries(
            {"W": st.just(np.eye(6)), "bias": st.just(np.zeros(6))},
            optional={"W_in": anything, "state": anything, "other": anything},
        ),
    ),
    device=st.one_of(st.none(), st.sampled_from(["cpu", "cuda", "meta", "gpu", torch.float32])),
    dtype=st.one_of(st.none(), st.sampled_from([torch.float32, torch.float64, torch.int64, "x"])),
)
def test_loading_and_converting_a_reservoir_answers_any_input(state, device, dtype):
    reservoir = Reservoir(6, 0.9, 0.5, density=0.5, seed=2)
    if _answer(lambda: reservoir.load_state_dict(state), "state_dict") is not None:
        states = reservoir.run(torch.rand(1, 3, reservoir.W_in.shape[1]) if reservoir.W_in
                               is not None else torch.rand(1, 3, 2))  # fmt: skip
        assert torch.isfinite(states).all()
    moved = _answer(lambda: reservoir.to(device, dtype), "device", "dtype")
    if moved is not None:
        assert moved is reservoir and reservoir.W.dtype in (np.float32, np.float64)


# --- the readout, its features and the error measure ------------------------------------


@FUZZ
@given(
    alpha=st.one_of(scalars, st.floats(0, 10)),
    fit_bias=st.one_of(st.booleans(), scalars),
    states=st.one_of(tensors(), arrays, anything),
    y=st.one_of(tensors(), arrays, anything),
    washout=st.one_of(st.integers(-1, 4), scalars),
    lengths=st.one_of(st.none(), tensors(max_dims=1), st.sampled_from([[1, 2], [2]])),
)
def test_the_readout_answers_any_input(alpha, fit_bias, states, y, washout, lengths):
    readout = _answer(lambda: Ridge(alpha, fit_bias), "alpha", "fit_bias")
    if readout is None:
        return
    fitted = _answer(
        lambda: readout.fit(states, y, washout, lengths),
        "states",
        "y",
        "washout",
        "lengths",
        "alpha",
    )
    if fitted is not None:
        assert np.isfinite(fitted.weight).all()
        predicted = fitted.predict(states)
        assert predicted.shape[:-1] == tuple(states.shape[:-1])
    _answer(lambda: readout.predict(y), "states", "readout")


@FUZZ
@given(
    states=st.one_of(tensors(), arrays, anything),
    lengths=st.one_of(st.none(), tensors(max_dims=2), st.sampled_from([[1, 2], [0], 1])),
    reduce=st.one_of(st.sampled_from(["mean", "last"]), scalars),
)
def test_series_features_answer_any_input(states, lengths, reduce):
    out = _answer(lambda: series_features(states, lengths, reduce), "states", "lengths", "reduce")
    if out is not None:
        assert out.shape == (states.shape[0], states.shape[2]) and torch.isfinite(out).all()


@FUZZ
@given(prediction=st.one_of(tensors(), arrays, anything), target=st.one_of(tensors(), anything))
def test_nrmse_answers_any_input(prediction, target):
    value = _answer(lambda: nrmse(prediction, target), "prediction", "target")
    if value is not None:
        assert math.isfinite(value) and value >= 0


@pytest.fixture(scope="module")
def fitted_pair():
    """A small reservoir and a readout fitted on its states, one input and one output."""
    series = mackey_glass(300, seed=0)
    reservoir = Reservoir(20, 0.9, 0.5, seed=3)
    states = reservoir.run(series[:-1][None], reset=True)
    return reservoir, Ridge(1e-4).fit(states, series[1:][None], washout=20), series


@FUZZ
@given(
    warmup=st.one_of(tensors(), arrays, anything),
    steps=st.one_of(st.integers(-5, 5), scalars),
    swap=st.sampled_from([None, "reservoir", "readout", "unfitted", "wide"]),
)
def test_generate_answers_any_input(fitted_pair, warmup, steps, swap):
    reservoir, readout, _ = fitted_pair
    if isinstance(steps, int) and steps > 1000:
        return  # a valid but long free run: not what this test is about
    if swap == "reservoir":
        reservoir = "a reservoir"
    elif swap == "readout":
        readout = object()
    elif swap == "unfitted":
        readout = Ridge()
    elif swap == "wide":  # a readout of another reservoir size
        readout = Ridge(1e-3).fit(torch.rand(30, 7), torch.rand(30, 1))
    free = _answer(
        lambda: generate(reservoir, readout, warmup, steps),
        "reservoir",
        "readout",
        "warmup",
        "steps",
    )
    if free is not None:
        assert free.shape == (steps, 1) and torch.isfinite(free).all()


# --- the data ---------------------------------------------------------------------------

_MG = ("n_timesteps", "tau", "a", "b", "n", "x0", "h", "seed", "history")


@FUZZ
@given(name=st.sampled_from(_MG), value=st.one_of(anything, st.floats(-1e3, 1e3)))
def test_mackey_glass_answers_any_argument(name, value):
    kwargs = {"n_timesteps": 40, "seed": 0, name: value}
    if name == "n_timesteps" and isinstance(value, int) and value > 1000:
        return  # a valid but long series: not what this test is about
    series = _answer(lambda: mackey_glass(**kwargs), name)
    if series is not None:
        assert series.shape == (kwargs["n_timesteps"], 1) and torch.isfinite(series).all()


def test_japanese_vowels_takes_no_argument_and_returns_fresh_copies():
    first = japanese_vowels()
    first["train"][0].fill_(math.nan)  # a caller's change stays with the caller
    again = japanese_vowels()
    assert torch.isfinite(again["train"][0]).all() and again["test"][0].shape[0] == 370


# --- ESNConfig and run_esn --------------------------------------------------------------

_FIELDS = [f for f in inspect.signature(ESNConfig).parameters]


@settings(max_examples=300, deadline=None)
@given(
    task=st.sampled_from(["mackey-glass", "japanese-vowels"]),
    name=st.sampled_from([*_FIELDS, "unknown"]),
    value=st.one_of(scalars, st.integers(-10, 30_000), st.floats(-10, 1e7)),
)
def test_any_single_esn_setting_gives_a_config_or_an_error_naming_it(task, name, value):
    values = {"task": task, name: value}
    try:
        config = ESNConfig.from_dict(values)
    except ConfigError as err:
        assert str(err).startswith(f"{err.field}: ") and "\n" not in str(err)
        assert _mentions(str(err), name), str(err)
        return
    assert config.task == values["task"] or name == "task"
    used = {k: v for k, v in vars(config).items() if v is not None}
    assert ESNConfig.from_dict(used) == config  # what a run directory records loads back


_SMALL_MG = {"units": 20, "steps": 300, "train_steps": 200, "washout": 20, "free_steps": 10}
_RUN_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 40),
    st.sampled_from([0.0, 1e-9, 1e-3, 0.05, 0.5, 1.0, 2.0, 99.0, 1e6, math.nan, -1.0, "x"]),
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(set(_FIELDS) - {"out", "task"})), value=_RUN_VALUES)
def test_run_esn_answers_any_single_setting(name, value):
    values = {**_SMALL_MG, name: value}
    try:
        summary = run_esn(values)
    except ConfigError as err:
        assert _mentions(str(err), name) and "\n" not in str(err), str(err)
        return
    assert all(math.isfinite(summary[k]) for k in ("nrmse", "nrmse_84", "nrmse_free"))


def test_run_esn_refuses_bad_keyword_arguments():
    with pytest.raises(TypeError, match="overwrite"):
        run_esn(_SMALL_MG, overwrite="yes")
    with pytest.raises(TypeError, match="progress"):
        run_esn(_SMALL_MG, progress=1)
    with pytest.raises(ConfigError, match="config"):
        run_esn(["units", 20])


# --- bptt esn on the command line -------------------------------------------------------


def _bad_outs(tmp: Path) -> dict[str, list[str]]:
    afile = tmp / "afile.txt"
    afile.write_text("not a directory\n")
    return {
        "/dev/null": ["--out", "/dev/null"],
        "a file": ["--out", str(afile)],
        "under /proc": ["--out", "/proc/x"],
        "under a file": ["--out", str(afile / "run")],
    }


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--units", "1"], "density"),
        (["--density", "1e-9"], "density"),
        (["--ensemble", "5"], "ensemble"),
        (["--reduce", "last"], "reduce"),
        (["--task", "japanese-vowels", "--washout", "10"], "washout"),
        (["--task", "japanese-vowels", "--free-steps", "10"], "free_steps"),
        (["--units", "0"], "units"),
        (["--leak-rate", "nan"], "leak_rate"),
        (["--train-steps", "9990"], "train_steps"),
        (["--washout", "8000"], "washout"),
        (["--task", "lorenz"], "task"),
    ],
)
def test_a_bad_bptt_esn_setting_is_one_line_and_exit_code_2(args, field):
    from click.testing import CliRunner

    from bptt.cli import app

    result = CliRunner().invoke(app, ["esn", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), result.output


def test_a_bad_bptt_esn_out_is_one_line_and_exit_code_2(tmp_path):
    from click.testing import CliRunner

    from bptt.cli import app

    small = ["--units", "20", "--steps", "300", "--train-steps", "200", "--free-steps", "10"]
    cases = _bad_outs(tmp_path)
    first = CliRunner().invoke(app, ["esn", *small, "--out", str(tmp_path / "run")])
    assert first.exit_code == 0, first.output
    cases["an earlier run"] = ["--out", str(tmp_path / "run")]
    for case, args in cases.items():
        result = CliRunner().invoke(app, ["esn", *small, *args])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (case, result.output)
        assert lines[0].startswith("error: out: "), (case, result.output)
    assert (tmp_path / "afile.txt").read_text() == "not a directory\n"


def test_the_bptt_process_says_one_line_and_exits_2():
    # the real process, not the test runner: no traceback reaches the terminal
    result = subprocess.run(
        [sys.executable, "-m", "bptt", "esn", "--units", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "density" in lines[0] and "raise density or units" in lines[0]


# --- the validated Japanese Vowels defaults ---------------------------------------------


def test_the_japanese_vowels_defaults_are_the_searched_choice_and_score_as_documented():
    search = load_benchmark("esn_vowels")
    config = ESNConfig(task="japanese-vowels")
    chosen = {**search.CHOSEN, "ridge": search.CHOSEN_RIDGE}
    assert {k: getattr(config, k) for k in chosen} == chosen
    # every chosen value lies on the searched grid
    assert all(chosen[k] in search.GRID[k] for k in search.GRID)
    assert chosen["ridge"] in search.RIDGES
    # what the search left at Reservoir's defaults (and its mean-state features)
    defaults = inspect.signature(Reservoir).parameters
    for name in ("density", "input_density", "bias"):
        assert getattr(config, name) == defaults[name].default, name
    assert config.reduce == inspect.signature(Reservoir.features).parameters["reduce"].default
    assert config.ensemble == 1 and config.dtype == "float64"
    # the documented result of the default command: 2-5 test errors of 370 (seed 0: 2)
    summary = run_esn({"task": "japanese-vowels"})
    assert summary["test_size"] == 370 and summary["test_errors"] <= 5
