"""The README documents what exists: every DISCO_* variable, and the two set-up commands."""

from __future__ import annotations

from pathlib import Path

from langchain_disco.config import DiscoSettings, env_var

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [env_var(f) for f in DiscoSettings.model_fields if f"`{env_var(f)}`" not in readme]
    assert not missing, f"README.md does not document {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "\nmake test\n" in ci


def test_the_license_file_is_the_mit_license_the_package_metadata_declares() -> None:
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
    text = " ".join((ROOT / "LICENSE").read_text().split())
    assert text.startswith("MIT License Copyright (c) 2026 langchain-disco developers ")
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert "The above copyright notice and this permission notice shall be included" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
