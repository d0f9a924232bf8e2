"""Noise: validation, the string parser, and noise specifications per layer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noiseprop import KINDS, Noise
from noiseprop.noise import per_layer


def test_defaults_are_noise_free_after_activation():
    noise = Noise()
    assert noise.is_zero
    assert (noise.AU, noise.AC, noise.MU, noise.MC, noise.injection) == (0, 0, 0, 0, "after")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [-1e-3, math.nan, math.inf, -math.inf])
def test_bad_intensity_names_the_kind(kind, bad):
    with pytest.raises(ValueError, match=rf"Noise\.{kind} must be a finite variance >= 0; got"):
        Noise(**{kind: bad})


def test_non_number_intensity_is_a_type_error():
    with pytest.raises(TypeError, match=r"Noise\.AU must be a finite variance"):
        Noise(AU="1e-3")  # type: ignore[arg-type]


def test_bad_injection():
    with pytest.raises(ValueError, match=r"Noise\.injection must be one of 'after', 'before'"):
        Noise(injection="inside")  # type: ignore[arg-type]


def test_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        Noise(1e-3)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Noise().AU = 1.0  # type: ignore[misc]


def test_parse_examples():
    assert Noise.parse("AU=1e-3,MC=1e-4") == Noise(AU=1e-3, MC=1e-4)
    assert Noise.parse(" au = 0.5 , Ac=2 ") == Noise(AU=0.5, AC=2.0)
    assert Noise.parse("MU=1e-2,injection=before") == Noise(MU=1e-2, injection="before")
    assert Noise.parse("") == Noise()
    assert Noise.parse("none") == Noise()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("XY=1e-3", r"unknown kind 'XY'"),
        ("AU=1e-3,ZZ=1", r"unknown kind 'ZZ'"),
        ("AU", r"item 'AU' .* is malformed"),
        ("AU=", r"item 'AU=' .* is malformed"),
        ("=1e-3", r"is malformed"),
        ("AU=abc", r"'abc' is not a number"),
        ("AU=1e-3,,MC=1", r"item '' .* is malformed"),
        ("AU=1,AU=2", r"gives AU more than once"),
        ("AU=-1e-3", r"Noise\.AU must be a finite variance >= 0; got -0\.001"),
        ("MC=nan", r"Noise\.MC must be a finite variance >= 0; got nan"),
        ("AC=inf", r"Noise\.AC must be a finite variance >= 0; got inf"),
        ("injection=sideways", r"Noise\.injection must be one of"),
    ],
)
def test_parse_errors_name_the_offending_part(text, message):
    with pytest.raises(ValueError, match=message):
        Noise.parse(text)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="expects a string"):
        Noise.parse(1e-3)  # type: ignore[arg-type]


_variances = st.floats(min_value=0, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(
    values=st.fixed_dictionaries({kind: _variances for kind in KINDS}),
    injection=st.sampled_from(["after", "before"]),
)
def test_parse_round_trips_str(values, injection):
    noise = Noise(**values, injection=injection)
    parsed = Noise.parse(repr_free := ",".join(f"{k}={v!r}" for k, v in values.items()))
    assert parsed == Noise(**values), repr_free
    assert Noise.parse(f"{repr_free},injection={injection}") == noise


@given(st.text(max_size=30))
def test_parse_never_fails_with_anything_but_value_error(text):
    try:
        noise = Noise.parse(text)
    except ValueError as error:
        assert str(error)
    else:
        assert all(getattr(noise, kind) >= 0 for kind in KINDS)


def test_scaled_only_and_str():
    noise = Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=4e-3)
    assert noise.scaled(2) == Noise(AU=2e-3, AC=4e-3, MU=6e-3, MC=8e-3)
    assert noise.only("MU") == Noise(MU=3e-3)
    assert str(Noise(AU=1e-3, injection="before")) == "AU=0.001,injection=before"
    with pytest.raises(ValueError, match="kind must be one of"):
        noise.only("XX")
    with pytest.raises(ValueError, match="factor must be a finite number >= 0"):
        noise.scaled(-1)


def test_per_layer_forms():
    noise = Noise(AU=1e-3)
    assert per_layer(noise, 3) == (noise, noise, noise)
    assert per_layer([Noise(), noise], 2) == (Noise(), noise)
    assert per_layer(noise.on_layers([1, 3]), 3) == (noise, Noise(), noise)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ({0: Noise()}, ValueError, r"layer numbers 1\.\.3"),
        ({4: Noise()}, ValueError, r"layer numbers 1\.\.3"),
        ({1: "AU=1"}, TypeError, r"noise\[1\] must be a Noise"),
        ([Noise(), Noise()], ValueError, r"one Noise per layer \(3 for this network\); got 2"),
        ([Noise(), Noise(), 1.0], TypeError, r"noise\[2\] must be a Noise"),
        ("AU=1e-3", TypeError, r"noise must be a Noise"),
    ],
)
def test_per_layer_errors(spec, error, message):
    with pytest.raises(error, match=message):
        per_layer(spec, 3)
