"""Every table the project writes holds any text: one writer and one reader (fileio)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tumbletrain import fileio

HEADER = ("a", "b", "c")
# Any character but NUL, with the ones that break a naive table made likely.
CELL = st.text(
    st.one_of(
        st.sampled_from("\t\r\n,\"' "),
        st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    ),
    max_size=30,
)


@given(st.lists(st.tuples(CELL, CELL, CELL), max_size=8), st.sampled_from(["\t", ","]))
@settings(max_examples=400, deadline=None)
def test_any_text_round_trips(tmp_path_factory, rows, delimiter):
    path = tmp_path_factory.mktemp("t") / "t.tsv"
    fileio.write_table(path, HEADER, rows, delimiter)
    assert [tuple(r.values()) for r in fileio.read_table(path, delimiter)] == rows


@given(st.lists(st.tuples(*[st.text("abc xyz.:/-_0123456789")] * 3), max_size=8))
@settings(max_examples=100, deadline=None)
def test_plain_text_is_written_as_csv_writes_it(tmp_path_factory, rows):
    """The bytes of every table without special characters are what they always were."""
    path = tmp_path_factory.mktemp("t") / "t.tsv"
    fileio.write_tsv(path, HEADER, rows)
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([HEADER, *rows])
    assert path.read_bytes() == buffer.getvalue().encode()


def test_a_carriage_return_stays_in_its_cell(tmp_path):
    path = tmp_path / "m.tsv"
    rows = [("tag\rsplit", "x", "y"), ("one", "", "two\r\n")]
    fileio.write_tsv(path, HEADER, rows)
    assert [tuple(r.values()) for r in fileio.read_tsv(path)] == rows
    assert b'"tag\rsplit"' in path.read_bytes()


def test_a_single_empty_cell_is_a_row(tmp_path):
    fileio.write_tsv(tmp_path / "t.tsv", ("only",), [("\r",), ("",)])
    assert fileio.read_tsv(tmp_path / "t.tsv") == [{"only": "\r"}, {"only": ""}]


def test_very_long_fields_round_trip(tmp_path):
    long = "x" * 3_000_000 + '\t\r\n"' + "y" * 1000
    fileio.write_tsv(tmp_path / "t.tsv", HEADER, [(long, "b", long[:200_000])])
    (row,) = fileio.read_tsv(tmp_path / "t.tsv")
    assert row == {"a": long, "b": "b", "c": long[:200_000]}


def test_nul_is_rejected_with_a_reason_and_nothing_is_written(tmp_path):
    with pytest.raises(fileio.TableError, match="row 2 column 'b' holds a NUL"):
        fileio.write_tsv(tmp_path / "t.tsv", HEADER, [("1", "2", "3"), ("x", "a\0b", "z")])
    assert list(tmp_path.iterdir()) == []


def test_text_that_is_not_unicode_is_rejected(tmp_path):
    with pytest.raises(fileio.TableError, match="not valid Unicode"):
        fileio.write_tsv(tmp_path / "t.tsv", HEADER, [("tag", "\ud800", "")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text", ["a\tb\tc\n1\t2\n", 'a\tb\tc\n"1\t2\t3\n', "a\tb\tc\n1\t2\t3\t4\n"]
)
def test_a_damaged_table_is_one_clear_error(tmp_path, text):
    (tmp_path / "t.tsv").write_text(text)
    with pytest.raises(fileio.TableError, match="delete .* re-run the stage that writes it"):
        fileio.read_tsv(tmp_path / "t.tsv")


def test_a_manifest_row_with_a_nul_is_skipped_with_a_reason(tmp_path):
    from tumbletrain import store

    good = store.ManifestRow("a" * 64, "x.jpg", "tumblr", tags="cats,dogs")
    bad = store.ManifestRow("b" * 64, "y.jpg", "tumblr", image_url="http://h/y.jpg", tags="c\0t")
    kept, skipped = store.storable([good, bad])
    assert kept == [good]
    assert skipped == [
        ("http://h/y.jpg", "tumblr", "nul_character", "the post's text holds a NUL character")
    ]
    store.write_manifest(tmp_path / "m.tsv", kept)
    store.write_skipped(tmp_path / "s.tsv", skipped)
    assert fileio.read_tsv(tmp_path / "s.tsv")[0]["reason"] == "nul_character"
