"""The configuration contract: the schema's defaults, and bad configs stopped at start."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from tumbletrain import config


def test_default_config_is_the_offline_demo():
    cfg = config.load()
    assert cfg.class_names == ["circle", "square", "triangle"]
    assert all(c.demo is not None for c in cfg.classes)
    assert cfg.model.checkpoint is None, "the demo must not download anything"
    assert [c.label_id for c in cfg.classes] == [1, 2, 3]


def test_schema_fills_defaults():
    cfg = config.parse(
        {"classes": {"pose": {"tumblr": [{"blog": "artcive.tumblr.com", "tag": "pose"}]}}}
    )
    pose = cfg.get_class("pose")
    assert pose.annotation == "labelimg"
    assert pose.annotations_dir == "data/pose"
    assert pose.tumblr == (config.TumblrQuery(tag="pose", blog="artcive.tumblr.com"),)
    assert cfg.tumblr.media_hosts == ("media.tumblr.com",)
    assert cfg.tumblr.full_paging is False, "re-harvests page incrementally by default"
    assert cfg.split.verification_percent == 20
    assert cfg.model.checkpoint.url.endswith("mobilenetv2_ssd_i256_ckpt.tar.gz")
    assert cfg.model.effective_freeze_backbone is True


def test_full_paging_is_a_boolean():
    raw = {"classes": {"pose": {}}, "tumblr": {"full_paging": True}}
    assert config.parse(raw).tumblr.full_paging is True
    with pytest.raises(config.ConfigError, match="full_paging"):
        config.parse({**raw, "tumblr": {"full_paging": "yes"}})


def test_example_tumblr_config_is_valid(repo):
    cfg = config.load(repo / "config" / "tumblr.example.yaml")
    assert cfg.class_names == ["pose"]
    assert cfg.get_class("pose").tumblr[0].blog == "artcive.tumblr.com"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"classes": {"a": {"demo": {"images": 3}}}, "trian": {}}, "trian"),
        ({"classes": {"a": {"max_images": "many"}}}, "many"),
        ({"split": {"verification_percent": 20}}, "classes"),
        ({"classes": {"a": {"annotation": "boxes"}}}, "boxes"),
        ({"classes": {"a": {}}, "train": {"steps": 0}}, "steps"),
    ],
    ids=["unknown-key", "wrong-type", "missing-classes", "bad-enum", "out-of-range"],
)
def test_bad_config_names_the_key(raw, named):
    with pytest.raises(config.ConfigError) as error:
        config.parse(raw)
    assert named in str(error.value)


def test_stage_config_narrows_to_what_the_stage_reads():
    raw = config.validate(
        {
            "classes": {
                "a": {"demo": {"images": 2}},
                "b": {"aliases": ["B"], "tumblr": [{"tag": "x"}]},
            }
        }
    )
    harvest_a = config.stage_config(raw, "harvest", "a")
    assert set(harvest_a) == {"classes", "tumblr"}
    assert list(harvest_a["classes"]) == ["a"]
    annotations_a = config.stage_config(raw, "annotations", "a")
    # Every class name and alias (objects of b can appear in a's XML), in order.
    assert list(annotations_a["classes"]) == ["a", "b"]
    assert annotations_a["classes"]["b"] == {"aliases": ["B"]}
    assert config.parse(annotations_a).get_class("b").label_id == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"classes": {"a": {"demo": {"images": 3}}}, "trian": {"steps": 1}}, "trian"),
        ({"classes": {"a": {"demo": {"images": "lots"}}}}, "lots"),
        ({"train": {"steps": 5}}, "classes"),
    ],
    ids=["unknown-key", "wrong-type", "missing-classes"],
)
def test_snakemake_stops_at_start_on_a_bad_config(repo, tmp_path, tool_env, bad, message):
    # The Snakefile's configfile is relative to the working directory, as a
    # user's own project directory would have it.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        ["snakemake", "-n", "-s", str(repo / "Snakefile"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output, output[-2000:]
    assert not (tmp_path / "results").exists()
