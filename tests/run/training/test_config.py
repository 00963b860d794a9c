"""Configuration: every invalid value is refused with its field named."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.run import ConfigError, TrainConfig, load_toml


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    config = TrainConfig(clip_norm=1.5, out="runs/x")
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert TrainConfig.from_dict(load_toml(path)) == config


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"lenght": 3}, "lenght"),
        ({"length": 0}, "length"),
        ({"length": 2.5}, "length"),
        ({"length": "10"}, "length"),
        ({"hidden": True}, "hidden"),
        ({"lr": 0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"clip_norm": -1}, "clip_norm"),
        ({"cell": "transformer"}, "cell"),
        ({"task": "parity"}, "task"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"engine": "turbo"}, "engine"),
        ({"dtype": "float16"}, "dtype"),
        ({"device": "gpu:0"}, "device"),
        ({"flush_denormal": "yes"}, "flush_denormal"),
        ({"threads": -1}, "threads"),
        ({"out": ""}, "out"),
        ({"steps": None}, "steps"),
    ],
)
def test_invalid_values_name_their_field(values, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_integral_floats_are_accepted_for_integer_fields():
    assert TrainConfig.from_dict({"length": 100.0}).length == 100


def test_unreadable_or_invalid_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("length = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


_FIELDS = [f for f in TrainConfig.flag_fields() if f != "device"]
_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_ANY_VALUE)
def test_any_single_value_gives_a_valid_config_or_an_error_naming_it(field, value):
    try:
        config = TrainConfig.from_dict({field: value})
    except ConfigError as err:
        assert err.field == field
        return
    stored = config.flat()[field]
    if value is None:
        derived = {("clip", "none"), ("length", 100)}  # fields with a derived default
        assert stored is None or (field, stored) in derived
    elif isinstance(stored, float) and not isinstance(value, bool):
        assert stored == float(value) and math.isfinite(stored)
    else:
        assert stored == value


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"task": "adding", "length": 1}, "length"),
        ({"device": "meta"}, "device"),
        ({"clip": "norm", "clip_norm": 1.0, "clip_z": 3.0}, "clip_z"),
        ({"optimizer": "adam", "momentum": 0.5}, "momentum"),
        ({"monitor": False, "spike_z": 3.0}, "spike_z"),
        ({"optimizer": "adam", "hf_damping": 3.0}, "hf_damping"),
        ({"optimizer": "hf", "lr": 0.1}, "lr"),
        ({"optimizer": "hf", "clip": "norm", "clip_norm": 1.0}, "clip"),
        ({"optimizer": "hf", "engine": "fast"}, "engine"),
        ({"optimizer": "hf", "task": "text", "tbptt_k1": 10}, "optimizer"),
    ],
)
def test_cross_field_mistakes_name_their_field(values, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert info.value.field == field


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('task = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_toml(bad)


def test_a_config_error_survives_pickling():
    """Errors raised in a worker process reach the parent through pickle."""
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"steps": 0})
    again = pickle.loads(pickle.dumps(info.value))
    assert (type(again), again.field, str(again)) == (ConfigError, "steps", str(info.value))


def test_differing_fields_names_each_changed_field_and_counts_a_missing_one_at_its_default():
    config = TrainConfig(task="copy", length=20, cell="gru", optimizer="rmsprop", out="runs/a")
    assert config.differing_fields(config.replace(out="runs/b")) == ["out"]
    assert config.differing_fields(config.replace(out="runs/b"), ignore=("out",)) == []
    other = config.replace(lr=2e-3, hidden=config.hidden + 1)
    assert config.differing_fields(other) == ["hidden", "lr"]
    # a checkpoint written before a field existed: the field had its default then
    saved = config.to_dict()
    del saved["rmsprop_alpha"]
    assert config.differing_fields(saved) == []
    assert config.replace(rmsprop_alpha=0.5).differing_fields(saved) == ["rmsprop_alpha"]
    assert config.differing_fields({**saved, "retired_field": 1}) == ["retired_field"]


def test_saved_in_reads_a_run_directory_and_refuses_a_missing_or_bad_file(tmp_path):
    config = TrainConfig(task="copy", length=20, cell="gru", out="elsewhere")
    (tmp_path / "config.toml").write_text(config.to_toml())
    assert TrainConfig.saved_in(tmp_path) == config.replace(out=str(tmp_path))
    with pytest.raises(ConfigError, match=r"config\.toml"):
        TrainConfig.saved_in(tmp_path / "nothing-here")
    (tmp_path / "config.toml").write_text("hidden = [")
    with pytest.raises(ConfigError):
        TrainConfig.saved_in(tmp_path)


# --- the nested settings and their flat form ----------------------------------------------


def test_the_nested_settings_are_tables_of_config_toml_and_read_back_flat_or_nested(tmp_path):
    flat = {"clip": "percentile", "clip_percentile": 5, "optimizer": "sgd", "lr": 0.5}
    flat.update({"momentum": 0.5, "lr_schedule": "cosine", "lr_end_factor": 0.1})
    config = TrainConfig.from_dict(flat)
    text = config.to_toml()
    assert '[clip]\nkind = "percentile"\np = 5.0\n' in text
    assert '[optimizer]\nkind = "sgd"\nlr = 0.5\n' in text and "momentum = 0.5" in text
    assert '[schedule]\nkind = "cosine"\nend_factor = 0.1\n' in text
    assert "clip_percentile" not in text and "lr_schedule" not in text
    (tmp_path / "c.toml").write_text(text)
    assert TrainConfig.from_dict(load_toml(tmp_path / "c.toml")) == config
    assert TrainConfig.from_dict(config.model_dump()) == config
    assert TrainConfig.from_dict(config.flat()) == config
    assert {k: config.flat()[k] for k in flat} == {**flat, "clip_percentile": 5.0}
    nested = {"clip": {"kind": "percentile", "p": 5}, "optimizer": config.optimizer}
    nested["schedule"] = {"kind": "cosine", "end_factor": 0.1}
    assert TrainConfig(**nested) == config


def test_differing_fields_compares_flat_and_nested_tables_key_by_key():
    config = TrainConfig(optimizer="sgd", lr=0.1, clip="zscore", clip_z=3.0)
    assert config.differing_fields(config.model_dump()) == []  # a nested table
    assert config.differing_fields(config.flat()) == []  # a checkpoint's flat table
    other = config.replace(clip_z=2.0, momentum=0.5).model_dump()
    assert config.differing_fields(other) == ["clip_z", "momentum"]
    before_agc = {k: v for k, v in config.flat().items() if not k.startswith("clip_agc")}
    assert config.differing_fields(before_agc) == []  # keys added since: at their defaults


def test_a_flat_key_beside_a_table_overrides_the_tables_setting():
    table = {"clip": {"kind": "percentile", "p": 5.0}, "optimizer": {"kind": "sgd", "lr": 0.5}}
    config = TrainConfig.from_dict({**table, "clip_percentile": 20, "lr": 0.1})
    assert (config.clip.p, config.optimizer.lr) == (20.0, 0.1)
    # a file's tables under flags (bptt train --config): merged key by key, flat, so a
    # shared setting stays (the file's lr under another optimizer) and one the new kind
    # does not read is refused, as in a flat file
    merged = {**TrainConfig.flatten(table), "optimizer": "rmsprop", "momentum": 0.0}
    assert TrainConfig.from_dict(merged).optimizer.lr == 0.5
    with pytest.raises(ConfigError, match=r"^clip_percentile: is used only with clip percentile"):
        TrainConfig.from_dict({**TrainConfig.flatten(table), "clip": "norm", "clip_norm": 2.0})


def test_a_tables_unknown_key_or_kind_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"^clip: unknown key 'q'; known keys are kind, "):
        TrainConfig.from_dict({"clip": {"kind": "calibrate", "q": 0.5}})
    with pytest.raises(ConfigError, match=r"^optimizer: must be one of adam, sgd, rmsprop, hf"):
        TrainConfig.from_dict({"optimizer": {"kind": "lbfgs"}})
    with pytest.raises(ConfigError, match=r"^schedule: must be a table"):
        TrainConfig.from_dict({"schedule": "cosine"})
    with pytest.raises(ConfigError, match=r"^clip_percentile: must be <= 100"):
        TrainConfig.from_dict({"clip": {"kind": "percentile", "p": 200}})
    with pytest.raises(ConfigError, match=r"^hf_max_cg: must be an integer"):
        TrainConfig.from_dict({"optimizer": {"kind": "hf", "max_cg": 2.5}})


_ONLY = "is used only with"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optimizer": "adam", "momentum": 0.5}, f"momentum: {_ONLY} optimizer sgd or rmsprop"),
        ({"optimizer": "sgd", "weight_decay": 0.1}, f"weight_decay: {_ONLY} optimizer adam"),
        ({"optimizer": "hf", "lr": 0.1}, f"lr: {_ONLY} optimizer adam, sgd or rmsprop"),
        (
            {"optimizer": "hf", "lr_schedule": "cosine"},
            f"lr_schedule: {_ONLY} optimizer adam, sgd or rmsprop",
        ),
        ({"lr_end_factor": 0.5}, f"lr_end_factor: {_ONLY} lr_schedule cosine, not constant"),
        (
            {"clip": "percentile", "clip_norm": 1.0},
            f"clip_norm: {_ONLY} clip norm or zscore, not percentile",
        ),
        ({"clip": "norm", "clip_value": 1.0}, f"clip_value: {_ONLY} clip value, not norm"),
        ({"clip": "norm"}, "clip_norm: must be given when clip is norm"),
        ({"clip": "value"}, "clip_value: must be given when clip is value"),
        ({"clip_agc_ratio": 0.1}, f"clip_agc_ratio: {_ONLY} clip agc, not none"),
        ({"clip": "agc", "clip_agc_ratio": 0}, "clip_agc_ratio: must be > 0"),
    ],
)
def test_a_flat_setting_the_kind_does_not_read_is_refused_as_before(values, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert str(info.value).startswith(message)


def _base(annotation):
    """``int``, ``float``, ``bool`` or ``str`` under Annotated and ``| None``; else None."""
    import typing

    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1:
        return _base(args[0])
    return annotation if annotation in (int, float, bool, str) else None


def test_the_defaults_are_the_library_classes_own():
    import inspect

    from bptt import clip
    from bptt.diagnose import Monitor
    from bptt.optim import HessianFree

    def default(cls, name):
        return inspect.signature(cls).parameters[name].default

    defaults = TrainConfig.flat_defaults()
    expected = {
        "clip_percentile": default(clip.Percentile, "p"),
        "clip_z": default(clip.ZScore, "z"),
        "clip_alpha": default(clip.ZScore, "alpha"),
        "clip_warmup": default(clip.ZScore, "warmup"),
        "clip_calibrate_steps": default(clip.Calibrate, "steps"),
        "clip_quantile": default(clip.Calibrate, "quantile"),
        "clip_agc_ratio": default(clip.AdaptiveClip, "clipping"),
        "clip_agc_eps": default(clip.AdaptiveClip, "eps"),
        "spike_window": default(Monitor, "window"),
        "spike_z": default(Monitor, "z"),
        "hf_damping": default(HessianFree, "damping"),
        "hf_mu": default(HessianFree, "mu"),
        "rmsprop_alpha": default(__import__("torch").optim.RMSprop, "alpha"),
    }
    assert {k: defaults[k] for k in expected} == expected
    for key, value in defaults.items():  # typed as their fields: a float is a float
        kind = _base(TrainConfig.flag_fields()[key].annotation)
        assert value is None or kind is None or type(value) is kind, key
    # today's values, which runs saved without these keys had in effect
    assert (defaults["clip_percentile"], defaults["clip_z"], defaults["spike_z"]) == (10, 2.5, 6)


def test_each_kind_builds_what_it_describes():
    from bptt import clip
    from bptt.run import make_clip_policy
    from bptt.run.training._config import CLIPS

    policies = {
        "none": ({}, clip.NoClip),
        "norm": ({"clip_norm": 2.0}, clip.Fixed),
        "value": ({"clip_value": 0.5}, clip.Value),
        "percentile": ({"clip_percentile": 20, "clip_history": 7}, clip.Percentile),
        "zscore": ({"clip_z": 3.0, "clip_norm": 9.0}, clip.ZScore),
        "calibrate": ({"clip_calibrate_steps": 5}, clip.Calibrate),
        "agc": ({"clip_agc_ratio": 0.05, "clip_agc_eps": 1e-4}, clip.AdaptiveClip),
    }
    assert set(policies) == set(CLIPS)
    for kind, (values, cls) in policies.items():
        policy = make_clip_policy(TrainConfig(clip=kind, **values))
        assert type(policy) is cls, kind
    assert make_clip_policy(TrainConfig(clip="percentile", clip_history=7)).history == 7
    assert make_clip_policy(TrainConfig(clip="percentile")).history is None  # 0: all of it
    agc = make_clip_policy(TrainConfig(clip="agc", clip_agc_ratio=0.05))
    assert (agc.clipping, agc.eps) == (0.05, 1e-3)


def test_the_kinds_are_public_and_a_config_of_them_equals_the_flat_one():
    """A program can write the nested settings with the exported kind models; the config
    equals the one of the flat flags, and each kind names the memory it keeps."""
    from bptt.run import ClipNorm, OptimizerHF, OptimizerSGD, ScheduleCosine, TrainConfig
    from bptt.run.training._footprint import train_memory

    nested = TrainConfig(
        task="adding",
        clip=ClipNorm(max_norm=0.5),
        optimizer=OptimizerSGD(lr=0.1, momentum=0.9),
        schedule=ScheduleCosine(),
    )
    flat = {"task": "adding", "clip": "norm", "clip_norm": 0.5, "optimizer": "sgd"}
    flat |= {"lr": 0.1, "momentum": 0.9, "lr_schedule": "cosine"}
    assert nested == TrainConfig.from_dict(flat)
    assert (OptimizerSGD.state_tensors, OptimizerHF.state_tensors) == (1, 4)

    def weights_bytes(config):
        need = train_memory(config, 2, 1)
        return next(b for what, _, b in need.parts if what.startswith("weights"))

    # weights and gradients (2) plus the optimizer's: sgd 1, adam 2
    adam = nested.replace(optimizer={"kind": "adam"})
    assert weights_bytes(nested) * 4 == weights_bytes(adam) * 3


def test_engine_triton_is_refused_where_no_triton_kernel_runs(monkeypatch):
    """The config checks engine="triton" as the first unroll would, before any file is
    written: a cell with no Triton kernel (the minimal GRU's parallel scan), Hessian-free
    (no forward-mode rule), a network of several unrolls (diagnosed with taps of its
    own), a CPU without Triton's interpreter, float64 and a hidden size past the on-chip
    limit are refused, naming the engine; in the interpreter the RNN, the LSTM and the GRU
    are accepted."""
    import bptt
    from bptt._kernels import _triton
    from bptt.engine import has_triton_kernel

    for cell in ("rnn", "lstm", "gru"):
        with pytest.raises(ConfigError, match="engine: triton cannot run this: x is on the CPU"):
            TrainConfig.from_dict({"task": "adding", "cell": cell, "engine": "triton"})
    monkeypatch.setattr(_triton, "interpreted", lambda: True)  # as under TRITON_INTERPRET=1
    monkeypatch.setattr(_triton, "available", lambda: True)
    for cell in ("rnn", "lstm", "gru"):
        settings = {"task": "adding", "cell": cell, "hidden": 64, "engine": "triton"}
        assert TrainConfig.from_dict(settings)
    refused = {
        "several unrolls": {"layers": 2, "hidden": 64},
        "float32": {"dtype": "float64", "hidden": 64},
        "hidden size 65 > 64": {"cell": "lstm", "hidden": 65},
    }
    for why, settings in refused.items():
        with pytest.raises(ConfigError, match=why):
            TrainConfig.from_dict({"task": "adding", "engine": "triton", **settings})
    assert not has_triton_kernel(bptt.cells.MinGRUCell(1, 2))
    with pytest.raises(ConfigError, match="cell mingru has no triton engine"):
        TrainConfig.from_dict({"task": "adding", "cell": "mingru", "engine": "triton"})
    with pytest.raises(ConfigError, match="not triton"):
        TrainConfig.from_dict({"task": "adding", "optimizer": "hf", "engine": "triton"})
