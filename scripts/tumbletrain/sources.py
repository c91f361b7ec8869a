"""Which folders a class reads, and which class owns a file that several classes read.

A class's annotation files are looked for in its `annotations_dir`, in its
`folders` (LabelImg saves beside the images) and in its LabelImg folder
(`data/{class}`, where the `label` rule copies the store's images). A labelimg class with no other
image source takes its images from its `annotations_dir` too: a LabelImg
folder needs no second declaration.

Several classes may read the same folder (a Pascal-VOC-style folder whose
images each hold a cup and a ball, named by both classes). Each annotation
file there is then listed by exactly one of them, by `OWNER_RULE`, so every
image is trained on once, with all its objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from . import config as tt_config

OWNER_RULE = (
    "a file in a folder several classes read is listed by the first of them in "
    "`classes:` order that has an object in it (a file with none of theirs, or a "
    "rejected one, by the first of them)"
)


def resolved(folder: str) -> str:
    return os.path.realpath(os.path.expanduser(folder))


def takes_images_from_annotations(cls: tt_config.ClassConfig) -> bool:
    return cls.annotation == "labelimg" and not (cls.tumblr or cls.folders or cls.demo)


def image_folders(cls: tt_config.ClassConfig) -> tuple[str, ...]:
    """The local folders the harvest takes the class's images from."""
    return (cls.annotations_dir,) if takes_images_from_annotations(cls) else cls.folders


def labelling_folder(name: str) -> str:
    """The class's LabelImg folder: its hand-off, and the images copied from the store."""
    return tt_config.LABELLING_FOLDER.format(name=name)


def annotation_folders(cls: tt_config.ClassConfig) -> tuple[str, ...]:
    """The folders scanned for the class's annotation files, without repeats.

    The LabelImg folder is one of them whatever the annotations_dir: its images
    (copies of store images) are what LabelImg names in the XML it saves.
    """
    if cls.annotation != "labelimg":
        return ()
    return tuple(dict.fromkeys((cls.annotations_dir, *cls.folders, labelling_folder(cls.name))))


def resolved_folders(cls: tt_config.ClassConfig) -> list[str]:
    return [resolved(f) for f in annotation_folders(cls)]


def contains(folder: str, path: str) -> bool:
    """Whether `path` is `folder` or lies under it (both resolved)."""
    return path == folder or path.startswith(os.path.join(folder, ""))


def overlap(first: Iterable[str], second: Iterable[str]) -> bool:
    second = list(second)
    return any(contains(a, b) or contains(b, a) for a in first for b in second)


def owner(reading: Sequence[str], object_names: Iterable[str]) -> str:
    """`OWNER_RULE` for one file read by the classes `reading` (in config order)."""
    present = set(object_names)
    return next((name for name in reading if name in present), reading[0])


def sharing_specs(raw_classes: Mapping[str, dict], class_name: str) -> dict[str, dict]:
    """The folder settings of the other classes that read a folder `class_name` reads.

    The annotations stage of one class gets these (and nothing of the classes
    it shares nothing with), so that a change to another class's folders
    re-runs it only when the two share a folder.
    """

    def folders(name: str) -> list[str]:
        spec = raw_classes[name] or {}
        if spec.get("annotation", "labelimg") != "labelimg":
            return []
        own = spec.get("annotations_dir") or tt_config.default_annotations_dir(name, spec)
        return [resolved(f) for f in (own, *spec.get("folders", []), labelling_folder(name))]

    mine = folders(class_name)
    shared = {}
    for name, spec in raw_classes.items():
        if name != class_name and overlap(mine, folders(name)):
            spec = spec or {}
            shared[name] = {
                "annotation": spec.get("annotation", "labelimg"),
                "annotations_dir": spec.get("annotations_dir")
                or tt_config.default_annotations_dir(name, spec),
                "folders": list(spec.get("folders", [])),
            }
    return shared
