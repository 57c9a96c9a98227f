"""Flickr30k Entities reader: sentence markup, XML annotations, splits, and bad inputs."""

from __future__ import annotations

import pytest
from test_data_fixtures import annotation_xml, object_xml, write_flickr_image, write_main_flickr

from ovd.data.errors import DataError
from ovd.data.flickr30k import load_flickr30k, parse_sentence, read_annotation, read_sentences


def test_parse_sentence_spans_types_and_punctuation():
    caption, phrases = parse_sentence(
        "[/EN#18/people A man] with [/EN#123/people/other pierced ears] , [/EN#0/notvisual glasses] ; ok !"
    )
    assert caption == "A man with pierced ears , glasses ; ok !"
    assert [(p.text, p.chain_id, p.types) for p in phrases] == [
        ("A man", "18", ("people",)),
        ("pierced ears", "123", ("people", "other")),
        ("glasses", "0", ("notvisual",)),
    ]
    for p in phrases:
        assert caption[p.char_start : p.char_end] == p.text
        assert p.spans == ((p.char_start, p.char_end),)


def test_parse_sentence_without_phrases_and_with_adjacent_punctuation():
    assert parse_sentence("Nothing marked here .") == ("Nothing marked here .", [])
    caption, phrases = parse_sentence('"[/EN#7/other the cat]", said [/EN#8/people she].')
    assert caption == '"the cat", said she.'
    assert [caption[p.char_start : p.char_end] for p in phrases] == ["the cat", "she"]


@pytest.mark.parametrize(
    "line",
    [
        "[/EN#1/people A man with [/EN#2/other a hat] .",  # unclosed
        "[/EN#1/people A man] ] runs .",  # stray close
        "[A man] runs .",  # not /EN# markup
        "[/EN#x/people A man] runs .",  # non-numeric chain id
        "[/EN#1/people] runs .",  # no words
    ],
)
def test_malformed_markup_names_file_and_line(tmp_path, line):
    path = tmp_path / "Sentences" / "9.txt"
    path.parent.mkdir()
    path.write_text("[/EN#1/people A man] is fine .\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"9\.txt:2: malformed phrase markup"):
        read_sentences(path)


def test_read_annotation_multi_name_multi_box_and_no_box_chains(tmp_path):
    write_main_flickr(tmp_path)
    ann = read_annotation(tmp_path / "Annotations" / "100.xml")
    assert (ann.width, ann.height) == (200, 100)
    assert [(b.xyxy, sorted(b.chain_ids)) for b in ann.boxes] == [
        ((10.0, 20.0, 50.0, 60.0), ["1", "2"]),  # 1-based corners -> 0-based xyxy
        ((60.0, 10.0, 100.0, 40.0), ["3"]),
        ((100.0, 10.0, 140.0, 40.0), ["3"]),
    ]
    assert ann.no_box_chains == {"4": {"nobndbox": 1, "scene": 0}, "5": {"nobndbox": 0, "scene": 1}}


def test_load_flickr30k_records_and_unknown_chain_counted(tmp_path):
    records = load_flickr30k(write_main_flickr(tmp_path), "train")
    assert [(r.image_id, r.sentence_id) for r in records] == [("100", i) for i in range(4)]
    assert records[0].caption == "A man and two dogs play in the park ."
    assert records[0].image_path == (tmp_path / "Images" / "100.jpg").resolve()
    assert [r.notes["unknown_chain_id"] for r in records] == [0, 0, 0, 1]


def test_flickr30k_images_folder_alias_and_other_splits(tmp_path):
    write_flickr_image(tmp_path, "5", ["[/EN#1/other a box] ."], annotation_xml(20, 20, [object_xml(["1"], (1, 1, 10, 10))]), size=(20, 20), split="novel")
    (tmp_path / "Images").rename(tmp_path / "flickr30k-images")
    (records,) = load_flickr30k(tmp_path, "novel")
    assert records.image_path.parent.name == "flickr30k-images"


def test_malformed_xml_names_file(tmp_path):
    write_flickr_image(tmp_path, "7", ["[/EN#1/other a box] ."], "<annotation><size><width>20</width></size")
    with pytest.raises(DataError, match=r"7\.xml: malformed XML"):
        load_flickr30k(tmp_path, "train")


def test_xml_without_size_or_bad_number(tmp_path):
    write_flickr_image(tmp_path, "7", ["[/EN#1/other a box] ."], "<annotation></annotation>")
    with pytest.raises(DataError, match=r"7\.xml: no <size>"):
        load_flickr30k(tmp_path, "train")
    (tmp_path / "Annotations" / "7.xml").write_text(annotation_xml(20, 20, [object_xml(["1"], (1, "a", 3, 4))]))
    with pytest.raises(DataError, match=r"7\.xml: <ymin> is not a number"):
        load_flickr30k(tmp_path, "train")


def test_split_id_without_files_names_the_id(tmp_path):
    write_main_flickr(tmp_path)
    with open(tmp_path / "train.txt", "a") as f:
        f.write("4242\n")
    with pytest.raises(DataError, match=r"image id '4242'.*Sentences/4242\.txt"):
        load_flickr30k(tmp_path, "train")


def test_split_id_without_image_names_the_id(tmp_path):
    write_flickr_image(tmp_path, "8", ["[/EN#1/other a box] ."], annotation_xml(20, 20, []), image=False)
    with pytest.raises(DataError, match=r"image id '8'.*8\.jpg"):
        load_flickr30k(tmp_path, "train")


def test_missing_split_file_lists_available_splits(tmp_path):
    write_main_flickr(tmp_path)
    with pytest.raises(DataError, match=r"nope\.txt: split file not found.*'train'"):
        load_flickr30k(tmp_path, "nope")


def test_non_utf8_sentence_file_names_file(tmp_path):
    write_main_flickr(tmp_path)
    (tmp_path / "Sentences" / "100.txt").write_bytes(b"[/EN#1/people A caf\xe9 man] .\n")
    with pytest.raises(DataError, match=r"100\.txt: not valid UTF-8"):
        load_flickr30k(tmp_path, "train")


def test_split_id_escaping_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    write_main_flickr(root)
    (root / "train.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DataError, match="escapes the data root"):
        load_flickr30k(root, "train")


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999", "nan"])
def test_xml_with_a_non_finite_number_names_file_and_tag(tmp_path, value):
    write_flickr_image(tmp_path, "7", ["[/EN#1/other a box] ."], annotation_xml(20, 20, [object_xml(["1"], (value, 2, 3, 4))]))
    with pytest.raises(DataError, match=r"7\.xml: <xmin> is not a (finite )?number: '" + value):
        load_flickr30k(tmp_path, "train")


def test_xml_with_a_non_integer_nobndbox_flag_names_file_and_tag(tmp_path):
    write_flickr_image(tmp_path, "7", ["[/EN#1/other a box] ."], annotation_xml(20, 20, [object_xml(["1"], nobndbox="yes")]))
    with pytest.raises(DataError, match=r"7\.xml: <nobndbox> is not an integer flag"):
        load_flickr30k(tmp_path, "train")
