"""The catalog as data: every entry is well formed and the lookups behave."""

from __future__ import annotations

import re

import pytest

from animelite import styles
from animelite.errors import StyleError
from animelite.options import MIN_SIZE


def test_every_entry_is_well_formed():
    assert styles.CATALOG, "the catalog is empty"
    for name, s in styles.CATALOG.items():
        assert name == s.name
        assert re.fullmatch(r"(sha256:[0-9a-f]{64}|gitsha1:[0-9a-f]{40})", s.checksum), name
        assert s.layout in ("NCHW", "NHWC"), name
        assert s.source_format in ("tflite", "pt", "onnx"), name
        assert s.kind in ("style", "detector"), name
        assert 1 <= s.size_multiple <= MIN_SIZE and MIN_SIZE % s.size_multiple == 0, name
        lo, hi = s.value_range
        assert lo < hi, name
        assert s.licence and s.description, name
        assert s.embedded or s.url.startswith("https://"), f"{name}: a downloadable entry needs an https URL"
        assert s.runtime_file.endswith(".onnx"), name
        if s.int8_file:
            assert s.embedded and s.int8_checksum.startswith("sha256:"), name


def test_names_and_aliases_are_unique_and_resolve():
    seen: dict[str, str] = {}
    for s in styles.CATALOG.values():
        for n in (s.name, *s.aliases):
            key = n.lower().replace("-", "_")
            assert key not in seen, f"{n} of {s.name} clashes with {seen.get(key)}"
            seen[key] = s.name
            assert styles.get_style(n) is s
            assert styles.get_style(f"  {n.upper()} ") is s  # case and spaces ignored
    assert styles.get_style("face-paint").name == "face_paint_512_v2"  # '-' and '_' alike


def test_the_default_is_an_embedded_style_that_runs_offline():
    default = styles.get_style(styles.DEFAULT_STYLE)
    assert default.kind == "style" and default.embedded and not default.url


def test_unknown_style_lists_only_styles():
    with pytest.raises(StyleError, match="unknown style 'nope'") as err:
        styles.get_style("nope")
    assert "hayao" in str(err.value) and "yunet" not in str(err.value)


def test_register_refuses_a_duplicate():
    with pytest.raises(StyleError, match="already in the catalog"):
        styles.register(styles.get_style("hayao"))


def test_non_commercial_weights_say_so():
    for s in styles.CATALOG.values():
        if s.family.startswith("animegan") or s.family == "v2-lite":
            assert s.non_commercial and "non-commercial" in s.licence.lower(), s.name
