"""Tests for unmask/recipe.py: spec strings (presets, `+` items, errors) and their round trip.

Policy behaviour is tested in the policies' own test files; here only how recipes are spelled.
"""

from __future__ import annotations

import pytest

from unmask.policies.base import SpecError
from unmask.recipe import PRESETS, Recipe, parse

VANILLA = (
    "blocks=fixed:len=none,steps=none+refresh=none+scorer=maxprob:probs=float64+unmask=quota"
    "+temperature=0+seed=0"
)


def test_vanilla_expands_to_every_hyperparameter():
    r = parse("vanilla")
    assert r.name == "vanilla"
    assert r.spec == VANILLA
    assert (r.gen_len, r.temperature, r.seed, r.eos_exit) == (None, 0.0, 0, False)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip(name):
    r = parse(name)
    assert r.name == name
    again = parse(r.spec)
    assert again.spec == r.spec
    assert again.policies == r.policies
    assert [p.role for p in r.policies] == ["blocks", "refresh", "scorer", "unmask"]


def test_items_override_the_preset_in_order():
    spec = "vanilla+blocks=fixed:len=8,steps=12+gen_len=24+temperature=0.5+seed=3"
    r = parse(spec)
    assert r.name == spec
    assert (r.blocks.len, r.blocks.steps) == (8, 12)
    assert (r.gen_len, r.temperature, r.seed) == (24, 0.5, 3)
    assert r.spec == (
        "blocks=fixed:len=8,steps=12+refresh=none+scorer=maxprob:probs=float64+unmask=quota"
        "+gen_len=24+temperature=0.5+seed=3"
    )
    assert parse(r.spec).spec == r.spec


def test_items_without_a_preset_start_from_the_defaults():
    r = parse("unmask=quota+blocks=fixed:len=4")
    assert r.spec == VANILLA.replace("fixed:len=none", "fixed:len=4")


def test_spaces_and_booleans():
    r = parse(" vanilla + gen_len = 8 + eos_exit=yes ")
    assert (r.gen_len, r.eos_exit) == (8, True)
    assert r.spec.endswith("+gen_len=8+temperature=0+seed=0+eos_exit=true")
    assert parse(r.spec).eos_exit is True
    assert parse("vanilla+eos_exit=off").eos_exit is False


@pytest.mark.parametrize(
    "spec",
    [
        "vanilla+temperature=0.7+seed=11",
        "vanilla+temperature=0.123456789",
        "vanilla+temperature=1e-7+gen_len=5",
    ],
)
def test_spec_rebuilds_the_same_recipe(spec):
    r = parse(spec)
    again = parse(r.spec)
    assert again.spec == r.spec
    assert (again.gen_len, again.temperature, again.seed) == (r.gen_len, r.temperature, r.seed)


def test_hand_built_recipe_round_trips():
    r = Recipe("mine", gen_len=7, temperature=0.25, seed=5)
    assert parse(r.spec).spec == r.spec
    assert parse(r.spec).fresh().spec == r.spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty recipe spec"),
        ("  ", "empty recipe spec"),
        ("nope", "unknown recipe 'nope'; presets: vanilla"),
        ("nope+gen_len=8", "unknown recipe 'nope'"),
        ("gen_len=8+vanilla", "recipe item 'vanilla' is not key=value"),
        ("vanilla+foo=1", "unknown recipe key 'foo'; keys: blocks, refresh, scorer, unmask"),
        ("vanilla+refresh=nope", "unknown refresh policy 'nope'; known: "),
        ("vanilla+unmask=", "unknown unmask policy ''"),
        ("vanilla+blocks=fixed:foo=1", "fixed: unknown parameter 'foo' (parameters: len, steps)"),
        ("vanilla+blocks=fixed:len", "fixed: expected key=value, got 'len'"),
        ("vanilla+blocks=fixed:len=abc", "fixed: len='abc' is not a valid int"),
        ("vanilla+blocks=fixed:len=2.5", "fixed: len='2.5' is not a valid int"),
        ("vanilla+blocks=fixed:len=0", "fixed: len must be >= 1, got 0"),
        ("vanilla+blocks=fixed:steps=-2", "fixed: steps must be >= 1, got -2"),
        ("vanilla+unmask=threshold:tau=high", "threshold: tau='high' is not a valid float"),
        ("gen_len=-1", "gen_len must be > 0, got -1"),
        ("vanilla+gen_len=0", "gen_len must be > 0, got 0"),
        ("vanilla+gen_len=abc", "gen_len='abc' is not a valid int"),
        ("vanilla+seed=1.5", "seed='1.5' is not a valid int"),
        ("vanilla+temperature=-1", "temperature must be >= 0, got -1.0"),
        ("vanilla+temperature=nan", "temperature"),
        ("vanilla+eos_exit=maybe", "eos_exit='maybe' is not a valid true/false"),
        # Out-of-range values name the valid range; NaN and infinities never pass.
        ("fast-dllm+unmask=threshold:tau=1.5", "threshold: tau must be [0, 1], got 1.5"),
        ("fast-dllm+unmask=threshold:tau=-0.1", "threshold: tau must be [0, 1], got -0.1"),
        ("fast-dllm+unmask=threshold:tau=nan", "threshold: tau must be a finite number"),
        ("fast-dllm+unmask=factor:factor=0", "factor: factor must be > 0, got 0"),
        ("fast-dllm+unmask=factor:factor=-1", "factor: factor must be > 0, got -1"),
        ("fast-dllm+unmask=factor:factor=inf", "factor: factor must be a finite number"),
        ("dynamic-dllm+unmask=apd:alpha=-0.1", "apd: alpha must be >= 0, got -0.1"),
        ("dynamic-dllm+unmask=apd:beta=-1e-3", "apd: beta must be >= 0, got -0.001"),
        ("dynamic-dllm+unmask=apd:tau=2", "apd: tau must be [0, 1], got 2"),
        ("cadllm+unmask=cadllm:tau_min=1.2", "cadllm: tau_min must be [0, 1], got 1.2"),
        ("dynamic-dllm+refresh=dcu:budget=-1", "dcu: budget must be >= 0, got -1"),
        ("dynamic-dllm+refresh=dcu:prompt_interval=0", "dcu: prompt_interval must be >= 1"),
        ("dllm-cache+refresh=dllm-cache:rho=1.5", "dllm-cache: rho must be [0, 1], got 1.5"),
        ("dkv-cache+refresh=dkv:interval=0", "dkv: interval must be >= 1, got 0"),
        ("cadllm+scorer=topv:v_min=0", "topv: v_min must be >= 1, got 0"),
        ("cadllm+blocks=cadllm:min_len=9,max_len=8", "need min_len <= max_len"),
        # A key given twice is an error, not "the last one wins".
        ("fast-dllm+unmask=threshold:tau=0.5,tau=0.9", "threshold: tau is given twice"),
        ("vanilla+gen_len=20+gen_len=24", "recipe key 'gen_len' is given twice"),
        ("vanilla+refresh=dual+refresh=prefix", "recipe key 'refresh' is given twice"),
        ("vanilla+seed=99999999999999999999", "seed must be in [0, 2^63 - 1]"),
        ("vanilla+seed=-1", "seed must be in [0, 2^63 - 1]"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(SpecError) as e:
        parse(spec)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_split_specs_keeps_commas_inside_policy_parameters():
    from unmask.recipe import split_specs

    text = (
        "vanilla,fast-dllm+unmask=threshold:tau=0.7,dynamic-dllm+refresh=dcu:budget=16,window=8,"
        "blocks=fixed:len=16,steps=32+refresh=dual, cadllm,"
    )
    assert split_specs(text) == [
        "vanilla",
        "fast-dllm+unmask=threshold:tau=0.7",
        "dynamic-dllm+refresh=dcu:budget=16,window=8",
        "blocks=fixed:len=16,steps=32+refresh=dual",
        "cadllm",
    ]
