"""Fuzzing the YAML configs: TrainConfig and BenchConfig files and --set overrides (issue 13).

A config is a user file (hand-edited, a preset copied from somewhere); whatever it
holds (wrong types, anchors and aliases, deep nesting, numbers too big for a float),
loading ends in a config or a one-line ConfigError naming the field, quickly.
Seeds are fixed (`derandomize`) and no example database is written.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.config import BenchConfig
from medalpaca_desktop.core.typed_config import ConfigError
from trainer.config import TrainConfig

FUZZ = settings(max_examples=80, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
CONFIGS = [TrainConfig, BenchConfig]

VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 1100), 1 << 1100) | st.floats() | st.text(max_size=12)
    | st.dates(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(), inner,
                                                                max_size=3),
    max_leaves=8,
)
KEYS = sorted({f.name for cls in CONFIGS for f in dataclasses.fields(cls)} | {"preset", "preset_source"})

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-configs")


def _load(cls, path: Path, *args) -> None:
    try:
        config = cls.load(path, *args)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)[:200]
    else:
        assert isinstance(config, cls)


@settings(FUZZ, max_examples=100)
@given(raw=st.binary(max_size=120) | st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"\n #%?,\t1.")),
                                           max_size=60))
@example(raw=b"[" * 5000)  # regression: RecursionError out of yaml.safe_load
def test_random_text_as_config(work, raw):
    path = work / "random.yaml"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw, encoding="utf-8")
    for cls in CONFIGS:
        _load(cls, path)


@settings(FUZZ, max_examples=100)
@given(data=st.dictionaries(st.sampled_from(KEYS) | VALUE.filter(lambda v: isinstance(v, (str, int, type(None)))),
                            VALUE, max_size=6))
@example(data={"epochs": 10 ** 400, "temperature": 10 ** 400})  # regression: OverflowError (int to float)
@example(data={1: 2, "a": 3})  # regression: TypeError sorting unknown keys of mixed types
@example(data={"preset": ["x"]})  # regression: TypeError (unhashable preset)
@example(data={"epochs": float("nan"), "temperature": float("nan")})  # regression: NaN passed every limit
def test_configs_with_values_of_every_type(work, data):
    path = work / "values.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    for cls in CONFIGS:
        _load(cls, path)


def test_nan_limits_are_refused(work):
    path = work / "nan.yaml"
    path.write_text("epochs: .nan\nbase_model: m\ndata: [d]\noutput_dir: o\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="epochs: nan"):
        TrainConfig.load(path)


@pytest.mark.parametrize("key", ["data", "lora_target_modules", "mapping", "model", "data_weights"])
def test_alias_bombs_end_quickly_in_a_config_error(key):
    """Nine nested anchors of nine aliases: str() or repr() of the value would build 9**9 items (a hang)."""
    data = yaml.safe_load(ALIAS_BOMB + f"{key}: *i\n")
    tried = 0
    for cls in CONFIGS:
        if key in {f.name for f in dataclasses.fields(cls)}:
            tried += 1
            with pytest.raises(ConfigError) as caught:
                cls.from_dict({key: data[key]})
            assert len(str(caught.value)) < 500
    assert tried


@FUZZ
@given(items=st.lists(st.text(alphabet=st.sampled_from(list("ab=[]{}:&*!'\" ,\n1.-")), max_size=20)
                      | st.sampled_from(["epochs=[", "seed=*x", "lr=", "=1", "epochs=1e999", "data=[" * 2000]),
                      max_size=3))
@example(items=["epochs=["])  # regression: yaml ParserError out of --set
def test_set_overrides(work, items):
    path = work / "base.yaml"
    path.write_text("base_model: m\ndata: [d.jsonl]\noutput_dir: out\n", encoding="utf-8")
    _load(TrainConfig, path, items)
