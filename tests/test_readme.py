"""The README shows what the repository holds."""

from __future__ import annotations

import textwrap


def test_the_readme_s_tumblr_config_is_the_example_file(repo):
    page = (repo / "docs" / "tumblr.md").read_text()
    step = page.split("2. Start from `config/tumblr.example.yaml`")[1]
    shown = step.split("```yaml\n")[1].split("```")[0].rstrip(" ")
    example = (repo / "config" / "tumblr.example.yaml").read_text()
    assert textwrap.dedent(shown) == example[example.index("classes:") :]


def test_the_development_page_and_design_name_every_module(repo):
    """The layout paragraph a newcomer navigates by, and DESIGN's module list, stay whole."""
    page = (repo / "docs" / "development.md").read_text()
    development = page.split("# Development")[1].split("\n## ")[0]
    design = (repo / "docs" / "DESIGN.md").read_text().split("## Layout")[1].split("\n## ")[0]
    for module in sorted((repo / "scripts" / "tumbletrain").glob("*.py")):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in development, f"docs/development.md: {module.stem}"
            assert f"`{module.name}`" in design, f"DESIGN.md's Layout: {module.name}"
