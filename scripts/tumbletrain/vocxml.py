"""Pascal VOC XML as LabelImg reads and writes it, parsed safely.

LabelImg files come from many machines and sometimes from strangers, so the
parser resolves no entities, loads no DTD, touches no network and refuses huge
trees: an XML bomb or an external-entity file fails to parse instead of
expanding.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

MAX_XML_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class VocObject:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: int = 0
    truncated: int = 0
    pose: str = "Unspecified"


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


# lxml parsers may be reused but not shared between threads: one per thread.
_parsers = threading.local()


def parse(data: bytes) -> etree._ElementTree:
    """Parse bytes safely; raises etree.XMLSyntaxError on anything malformed."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = safe_parser()
    return etree.ElementTree(etree.fromstring(data, parser))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def labelimg_xml(
    folder: str,
    filename: str,
    path: str,
    size: tuple[int, int, int] | None,
    objects: Sequence[VocObject],
) -> bytes:
    """XML laid out exactly as LabelImg's pascal_voc_io writes it (tabs and all).

    `size` is (width, height, depth); None leaves `<size>` out, as some
    LabelImg versions did.
    """
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = folder
    etree.SubElement(root, "filename").text = filename
    etree.SubElement(root, "path").text = path
    source = etree.SubElement(root, "source")
    etree.SubElement(source, "database").text = "Unknown"
    if size is not None:
        size_el = etree.SubElement(root, "size")
        for tag, value in zip(("width", "height", "depth"), size, strict=True):
            etree.SubElement(size_el, tag).text = str(value)
    etree.SubElement(root, "segmented").text = "0"
    for obj in objects:
        element = etree.SubElement(root, "object")
        etree.SubElement(element, "name").text = obj.name
        etree.SubElement(element, "pose").text = obj.pose
        etree.SubElement(element, "truncated").text = str(obj.truncated)
        etree.SubElement(element, "difficult").text = str(obj.difficult)
        bndbox = etree.SubElement(element, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            etree.SubElement(bndbox, tag).text = _number(getattr(obj, tag))
    text = etree.tostring(root, pretty_print=True, encoding="utf-8").decode("utf-8")
    return text.replace("  ", "\t").encode("utf-8")
