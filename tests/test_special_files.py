"""Special files in the folders the stages scan: FIFOs, sockets, devices, broken and
looping links, unreadable and oversized files are skipped with a reason, never read.

Commands that could hang on a FIFO run as subprocesses with a timeout, so a
regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fake_tumblr import bomb_png, image_bytes
from PIL import Image
from tumbletrain import annotations, fileio, predict, store, vocxml

TIMEOUT_S = 120


def make_special_files(folder: Path, suffix: str, outside: Path) -> dict[str, str]:
    """One of each kind of file a scan must not read; returns name -> reason."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / f"fifo{suffix}")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / f"socket{suffix}"))
    server.close()  # the socket file stays
    if os.geteuid() == 0:
        os.mknod(folder / f"device{suffix}", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    else:
        (folder / f"device{suffix}").symlink_to("/dev/null")
    (folder / f"dangling{suffix}").symlink_to(folder / "nothing-here")
    (folder / f"loop{suffix}").symlink_to(folder / f"loop2{suffix}")
    (folder / f"loop2{suffix}").symlink_to(folder / f"loop{suffix}")
    (folder / f"folder{suffix}").mkdir()
    outside.mkdir(parents=True, exist_ok=True)
    (outside / f"private{suffix}").write_bytes(image_bytes(99))
    (folder / f"link_out{suffix}").symlink_to(outside / f"private{suffix}")
    return {
        f"fifo{suffix}": "special_file",
        f"socket{suffix}": "special_file",
        f"device{suffix}": "special_file",
        f"dangling{suffix}": "dangling_symlink",
        f"loop{suffix}": "symlink_loop",
        f"loop2{suffix}": "symlink_loop",
        f"link_out{suffix}": "image_outside_sources",
    }


def run_stage(module: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"tumbletrain.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )


def test_fileio_names_each_kind_of_file(tmp_path):
    expected = make_special_files(tmp_path / "f", ".jpg", tmp_path / "out")
    del expected["link_out.jpg"]  # a link out is a rule of the sources, not of the file
    (tmp_path / "f" / "ok.jpg").write_bytes(b"12345")
    found = {}
    for path in sorted((tmp_path / "f").iterdir()):
        problem = fileio.file_problem(path)
        found[path.name] = problem and problem.reason
        if path.name in expected:
            with pytest.raises(fileio.FileProblem) as raised:
                fileio.read_regular(path)
            assert raised.value.reason == expected[path.name]
    assert found == {**expected, "folder.jpg": "special_file", "ok.jpg": None, "link_out.jpg": None}
    assert fileio.read_regular(tmp_path / "f" / "ok.jpg") == b"12345"
    assert fileio.file_problem(tmp_path / "f" / "ok.jpg", max_bytes=4).reason == "too_large"
    with pytest.raises(fileio.FileProblem, match="more than 4"):
        fileio.read_regular(tmp_path / "f" / "ok.jpg", max_bytes=4)


def in_child_as_nobody(function) -> object:
    """Run `function` in a forked child without root's right to read anything; its result."""
    if os.geteuid() != 0:
        return function()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(result)


def test_unreadable_files_are_skipped_with_a_reason():
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        for name in ("secret.jpg", "secret.xml"):
            (folder / name).write_bytes(b"<annotation/>")
            (folder / name).chmod(0)

        def check():
            problem = fileio.file_problem(folder / "secret.jpg")
            try:
                fileio.read_regular(folder / "secret.jpg")
                read = None
            except fileio.FileProblem as error:
                read = error.reason
            return [problem and problem.reason, read, annotations.read_xml(folder / "secret.xml")]

        assert in_child_as_nobody(check) == ["unreadable", "unreadable", "unreadable"]


def test_harvest_folder_skips_special_links_out_and_oversized_files(tmp_path, tool_env):
    folder = tmp_path / "pics"
    expected = make_special_files(folder, ".jpg", tmp_path / "private")
    (folder / "good.jpg").write_bytes(image_bytes(1))
    noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    noise.save(folder / "huge.jpg", quality=95)
    assert (folder / "huge.jpg").stat().st_size > 0.05 * 1024 * 1024
    expected["huge.jpg"] = "too_large"
    raw = {
        "classes": {"pose": {"folders": [str(folder)]}},
        "tumblr": {"max_image_mb": 0.05},
    }
    manifests = tmp_path / "manifests"
    result = run_stage(
        "harvest",
        "--config-json",
        json.dumps(raw),
        "--class",
        "pose",
        "--store",
        tmp_path / "images",
        "--manifest",
        manifests / "pose.tsv",
        env=tool_env,
    )
    assert result.returncode == 0, result.stderr
    rows = store.read_manifest(manifests / "pose.tsv")
    assert [Path(r.image_url).name for r in rows] == ["good.jpg"]
    skipped = {
        Path(r["image_url"]).name: r["reason"]
        for r in fileio.read_tsv(manifests / "pose.skipped.tsv")
    }
    assert skipped == expected
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1, "only good.jpg is stored"


def test_annotations_scan_skips_special_files_with_reasons(tmp_path, tool_env):
    root = tmp_path / "data" / "pose"
    images = make_special_files(root, ".jpg", tmp_path / "private")
    xmls = make_special_files(root / "x", ".xml", tmp_path / "private")
    # An XML file linked from outside the folder is never read (issue #27).
    xmls["link_out.xml"] = "outside_folders"
    labelled_image(root, "good")
    labelled_image(root, "asks_fifo", image="fifo.jpg")
    outdir = tmp_path / "out"
    result = run_stage(
        "annotations",
        "--config-json",
        json.dumps({"classes": {"pose": {"annotations_dir": str(root)}}}),
        "--class",
        "pose",
        "--outdir",
        outdir,
        env=tool_env,
    )
    assert result.returncode == 0, result.stderr
    rejected = {Path(r["file"]).name: r["reason"] for r in fileio.read_tsv(outdir / "rejected.tsv")}
    del images["link_out.jpg"]  # a regular file: found only if an XML names it, then refused
    assert rejected == {
        **images,
        **xmls,
        "asks_fifo.xml": "image_not_found",
    }
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["kept"] == 1 and summary["skipped_files"] == len(images) + len(xmls)


def test_predict_scans_skip_special_files_and_bombs_and_name_prelabels_apart(tmp_path):
    folder = tmp_path / "in"
    expected = make_special_files(folder, ".png", tmp_path / "private")
    for name in ("a.jpg", "a.png", "b.jpg", "sub/a.jpg"):
        (folder / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (20, 10)).save(folder / name)
    (folder / "bomb.png").write_bytes(bomb_png())
    paths, skipped = predict.scan_images(folder)
    assert {p.name: problem.reason for p, problem in skipped} == expected
    relatives = [p.relative_to(folder) for p in paths]
    stems = predict.output_stems(relatives)
    assert {str(r): str(s) for r, s in stems.items()} == {
        "a.jpg": "a.jpg",
        "a.png": "a.png",
        "b.jpg": "b",
        "bomb.png": "bomb",
        "sub/a.jpg": "sub/a",
    }
    assert predict.load_upright(folder / "b.jpg").shape == (10, 20, 3)
    with pytest.raises(store.RejectedImage) as raised:
        predict.load_upright(folder / "bomb.png")
    assert raised.value.reason == "decompression_bomb"


HANG_AT_RENAME = (
    "import os, runpy, sys, time\n"
    "os.replace = lambda *a, **k: time.sleep(3600)  # hold every output at its temporary name\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def killed_then_rerun(folder: Path, module: str, argv: list, env: dict) -> None:
    """Run a stage until its first output waits under a temporary name; kill -9 it there;
    run it again: the partial file must be gone, and the log must say so."""
    process = subprocess.Popen(
        [sys.executable, "-c", HANG_AT_RENAME, f"tumbletrain.{module}", *map(str, argv)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            partial = [p for p in folder.glob(".*") if f"-{process.pid}." in p.name]
        assert partial, f"no partial output appeared: {process.stderr.read().decode()}"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.wait()
    assert partial[0].exists()
    result = run_stage(module, *argv, env=env)
    assert result.returncode == 0, result.stderr
    assert not partial[0].exists()
    assert "removed 1 partial files a killed run left" in result.stderr


def labelled_image(folder: Path, name: str, image: str | None = None) -> None:
    """`name`.xml, a LabelImg file with one box on `image` (default `name`.jpg, made here)."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = f"{name}.jpg"
        Image.new("RGB", (40, 30)).save(folder / image)
    box = vocxml.VocObject("pose", 1, 1, 9, 9)
    (folder / f"{name}.xml").write_bytes(vocxml.labelimg_xml("pose", image, "", (40, 30, 3), [box]))


def test_a_killed_annotations_run_leaves_nothing_behind_after_the_next(tmp_path, tool_env):
    root = tmp_path / "data" / "pose"
    labelled_image(root, "a")
    outdir = tmp_path / "lists"
    argv = ["--config-json", json.dumps({"classes": {"pose": {"annotations_dir": str(root)}}})]
    argv += ["--class", "pose", "--outdir", outdir]
    killed_then_rerun(outdir, "annotations", argv, tool_env)
    assert sorted(p.name for p in outdir.iterdir()) == [
        "rejected.tsv",
        "summary.json",
        "training.tsv",
        "verification.tsv",
    ]


def test_a_killed_records_run_leaves_nothing_behind_after_the_next(tmp_path, tool_env):
    from tumbletrain import lists

    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    box = lists.ListedObject("pose", 1, 1, 9, 9)
    listed = lists.ListedImage(str(tmp_path / "a.jpg"), "ab" * 32, "jpeg", 40, 30, 1, "", (box,))
    lists.write_list(tmp_path / "training.tsv", [listed])
    records = tmp_path / "records"
    argv = ["write", "--config-json", json.dumps({"classes": {"pose": {}}})]
    argv += ["--list", tmp_path / "training.tsv", "--output", records / "pose_training.tfrecord"]
    argv += ["--stats", records / "pose_training.json"]
    killed_then_rerun(records, "records", argv, tool_env)
    assert sorted(p.name for p in records.iterdir()) == [
        "pose_training.json",
        "pose_training.tfrecord",
    ]


def test_snakemake_runs_past_special_xml_files(tmp_path, tool_env):
    """The annotations rule's inputs are the class's XML files: a FIFO or a broken link
    among them must neither hang Snakemake nor stop it with a missing input."""
    from conftest import snakemake, write_project

    data = tmp_path / "data" / "pose"
    labelled_image(data, "a")
    os.mkfifo(data / "fifo.xml")
    (data / "dangling.xml").symlink_to(data / "gone.xml")
    write_project(tmp_path, {"classes": {"pose": {"folders": ["data/pose"]}}})
    result = snakemake(tmp_path, tool_env, "results/lists/pose/summary.json", timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    rejected = fileio.read_tsv(tmp_path / "results/lists/pose/rejected.tsv")
    assert {(Path(r["file"]).name, r["reason"]) for r in rejected} == {
        ("fifo.xml", "special_file"),
        ("dangling.xml", "dangling_symlink"),
    }


def test_a_fifo_as_a_yolo_class_list_is_rejected_not_read(tmp_path, tool_env):
    root = tmp_path / "data" / "pose"
    root.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(root / "a.jpg")
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # as LabelImg's YOLO writer saves
    os.mkfifo(root / "classes.txt")
    outdir = tmp_path / "out"
    argv = ["--config-json", json.dumps({"classes": {"pose": {"annotations_dir": str(root)}}})]
    result = run_stage("annotations", *argv, "--class", "pose", "--outdir", outdir, env=tool_env)
    assert "special_file" in result.stderr, result.stderr
    rows = fileio.read_tsv(outdir / "rejected.tsv")
    assert [(Path(r["file"]).name, r["reason"]) for r in rows] == [("a.txt", "special_file")]


def test_every_data_stage_removes_what_a_killed_run_of_it_left(tmp_path, tool_env, dead_writer):
    """A dead writer's temporary file and folder in each stage's output folder are gone
    after the stage runs (annotations and records: killed for real above)."""
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "a.jpg").write_bytes(image_bytes(1))
    classes = json.dumps({"classes": {"pose": {"folders": [str(pics)]}}})
    manifest = tmp_path / "manifests" / "pose.tsv"
    demo = json.dumps({"classes": {"pose": {"demo": {"images": 2}}}})
    stages = [
        ("harvest", tmp_path / "manifests", ["--config-json", classes, "--class", "pose"]),
        ("labelimg", tmp_path / "data" / "pose", ["--config-json", classes, "--class", "pose"]),
        ("neardup", tmp_path / "sig", ["--manifest", manifest]),
        ("demo", tmp_path / "demo", ["--config-json", demo, "--class", "pose"]),
    ]
    outputs = {
        "harvest": ["--store", tmp_path / "images", "--manifest", manifest],
        "labelimg": ["--manifest", manifest, "--folder", tmp_path / "data" / "pose"],
        "neardup": ["--output", tmp_path / "sig" / "s.tsv", "--cache", tmp_path / "sig" / "c.tsv"],
        "demo": ["--output", tmp_path / "demo" / "pose"],
    }
    for stage, folder, argv in stages:
        folder.mkdir(parents=True, exist_ok=True)
        stale_file = folder / f".x.tsv.{dead_writer}.ab12cd34.tmp"
        stale_dir = folder / f".pose.{dead_writer}.ab12cd34.tmpdir"
        stale_file.write_text("partial")
        stale_dir.mkdir()
        (stale_dir / "half.jpg").write_bytes(b"half")
        result = run_stage(stage, *argv, *outputs[stage], env=tool_env)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
        assert not stale_file.exists() and not stale_dir.exists(), stage
        assert "removed 2 partial files a killed run left" in result.stderr, stage
