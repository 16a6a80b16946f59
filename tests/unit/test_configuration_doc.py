"""docs/configuration.md is generated, and the README table and `DiscoSettings` agree.

The configuration is described once by hand (the README table's meanings); names, types and
defaults come from the code. These tests fail when either copy drifts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from langchain_disco.config import DiscoSettings, env_var

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_configuration", ROOT / "docs" / "gen_configuration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_lists_exactly_the_settings() -> None:
    documented = set(_generator().readme_meanings((ROOT / "README.md").read_text()))
    settings = {env_var(name) for name in DiscoSettings.model_fields}
    assert documented - settings == set(), "README documents variables that do not exist"
    assert settings - documented == set(), "README's table misses variables"


def test_configuration_page_is_up_to_date() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == _generator().render(), "run .venv/bin/python docs/gen_configuration.py"


def test_configuration_page_has_one_row_per_setting_with_its_default() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in DiscoSettings.model_fields.items():
        rows = [line for line in page.splitlines() if line.startswith(f"| `{env_var(name)}` |")]
        assert len(rows) == 1, name
        if isinstance(field.default, bool):
            assert f"`{str(field.default).lower()}`" in rows[0]
        elif isinstance(field.default, (int, str)):
            assert f"`{field.default}`" in rows[0]
