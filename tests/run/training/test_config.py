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


_FIELDS = [f for f in TrainConfig.model_fields if f != "device"]
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
    stored = getattr(config, field)
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
