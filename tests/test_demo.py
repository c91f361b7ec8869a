"""The built-in demo: deterministic, LabelImg-shaped, with LabelImg's real faults."""

from __future__ import annotations

from lxml import etree
from PIL import Image
from tumbletrain import config, demo

DEMO = config.DemoConfig(seed=7, min_side=96, max_side=160, max_objects=3)


def test_same_seed_same_bytes(tmp_path):
    demo.write_demo("circle", 24, DEMO, tmp_path / "a")
    demo.write_demo("circle", 24, DEMO, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 48
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    demo.write_demo("circle", 24, config.DemoConfig(8, 96, 160, 3), tmp_path / "c")
    assert (tmp_path / "c" / "circle_0000.jpg").read_bytes() != (
        tmp_path / "a" / "circle_0000.jpg"
    ).read_bytes()


def test_xml_is_labelimg_with_its_faults(tmp_path):
    demo.write_demo("square", 40, DEMO, tmp_path)
    zero = missing = windows = outside = 0
    for xml in sorted(tmp_path.glob("*.xml")):
        root = etree.parse(str(xml)).getroot()
        assert [c.tag for c in root][:4] == ["folder", "filename", "path", "source"]
        image = Image.open(tmp_path / root.findtext("filename"))
        size = root.find("size")
        if size is None:
            missing += 1
        elif size.findtext("width") == "0":
            zero += 1
        else:
            assert (int(size.findtext("width")), int(size.findtext("height"))) == image.size
        windows += root.findtext("path").startswith("C:\\")
        objects = root.findall("object")
        assert 1 <= len(objects) <= DEMO.max_objects
        for obj in objects:
            assert obj.findtext("name") == "square"
            if int(obj.findtext("bndbox/xmax")) > image.size[0]:
                outside += 1
    assert zero and missing and windows and outside, (zero, missing, windows, outside)


def test_other_class_names_get_a_shape():
    assert demo.shape_for("triangle") == "triangle"
    assert demo.shape_for("pose") in demo.SHAPES
    assert demo.shape_for("pose") == demo.shape_for("pose")
