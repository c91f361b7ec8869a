"""Outputs get the permissions the umask says, as a plain open() or mkdir would give.

On a shared file system the group's jobs and the other users read what a run
wrote; owner-only files (what `tempfile.mkstemp` makes) would lock them out.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tumbletrain import config as tt_config
from tumbletrain import demo, fileio, labelimg, store

UMASKS = (0o022, 0o002)


@pytest.fixture(params=UMASKS, ids=lambda u: f"umask{u:03o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plain_file_mode(folder: Path) -> int:
    """What the kernel gives a file created with open() under the current umask."""
    probe = folder / "plain-open"
    probe.write_text("")
    return mode(probe)


def test_atomic_writes_have_a_plain_open_s_permissions(tmp_path, umask):
    expected = 0o666 & ~umask
    assert plain_file_mode(tmp_path) == expected
    fileio.write_text(tmp_path / "a.txt", "a")
    fileio.write_bytes(tmp_path / "a.bin", b"a")
    fileio.write_json(tmp_path / "sub" / "a.json", {})
    fileio.write_tsv(tmp_path / "a.tsv", ["x"], [[1]])
    fileio.copy_file(tmp_path / "a.txt", tmp_path / "copy.txt")
    with fileio.atomic_path(tmp_path / "a.png", suffix=".png") as tmp:
        tmp.write_bytes(b"png")
    for name in ("a.txt", "a.bin", "sub/a.json", "a.tsv", "copy.txt", "a.png"):
        assert mode(tmp_path / name) == expected, name
    assert mode(tmp_path / "sub") == 0o777 & ~umask


def test_an_atomic_folder_has_a_plain_mkdir_s_permissions(tmp_path, umask):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "old").write_text("replaced")
    with fileio.atomic_dir(target) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert mode(target) == 0o777 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left"


def test_a_failed_atomic_folder_leaves_the_old_one(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "old").write_text("kept")
    with pytest.raises(RuntimeError), fileio.atomic_dir(target) as staging:
        (staging / "half").write_text("")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    assert [p.name for p in target.iterdir()] == ["old"]


def test_the_demo_folder_follows_the_umask(tmp_path, umask):
    demo.write_demo(
        "circle",
        2,
        tt_config.DemoConfig(seed=1, min_side=64, max_side=96, max_objects=1),
        tmp_path / "circle",
    )
    assert mode(tmp_path / "circle") == 0o777 & ~umask
    assert {mode(p) for p in (tmp_path / "circle").iterdir()} == {0o666 & ~umask}


def test_labelimg_folder_files_follow_the_umask(tmp_path, umask):
    stored = tmp_path / "store" / "ab.jpg"
    fileio.write_bytes(stored, b"jpeg")
    rows = [store.ManifestRow(sha256="ab" * 32, file=str(stored), source="folder")]
    counts = labelimg.materialise(rows, tmp_path / "data" / "circle", ["circle"])
    assert counts["copied"] == 1
    expected = 0o666 & ~umask
    folder = tmp_path / "data" / "circle"
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        f"{'ab' * 8}.jpg": expected,
        "predefined_classes.txt": expected,
        labelimg.MARKER: expected,
    }
    assert mode(folder) == 0o777 & ~umask
