"""The README shows what the repository holds."""

from __future__ import annotations

import textwrap


def test_the_readme_s_tumblr_config_is_the_example_file(repo):
    readme = (repo / "README.md").read_text()
    step = readme.split("2. Start from `config/tumblr.example.yaml`")[1]
    shown = step.split("```yaml\n")[1].split("```")[0].rstrip(" ")
    example = (repo / "config" / "tumblr.example.yaml").read_text()
    assert textwrap.dedent(shown) == example[example.index("classes:") :]
