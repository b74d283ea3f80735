"""The stored text of a published metric value (the tail layout of mlforge.online.base)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mlforge.online.base import TAIL, Tail, decode_row, encode_row
from mlforge.online.publication import Publication, value_at

DAY = 86400


def test_a_tail_is_plain_json_with_one_row_per_line():
    tail = Tail(DAY, [0, DAY], ["n_2d", "note"], rows=[[1, "a\nb"], [2, "]}}"]])
    text = encode_row({"user_id": "u1", TAIL: tail})
    # any JSON reader reads it; a newline inside a value stays escaped, so lines are rows
    assert json.loads(text) == {"user_id": "u1", TAIL: {"interval": DAY, "labels": [0, DAY], "columns": ["n_2d", "note"], "rows": [[1, "a\nb"], [2, "]}}"]]}}
    assert text.count("\n") == 3
    stored = decode_row(text)[TAIL]
    assert stored.row(0) == {"n_2d": 1, "note": "a\nb"} and stored.row(1) == {"n_2d": 2, "note": "]}}"}


def test_a_plain_row_ending_like_a_tail_is_still_a_plain_row():
    row = {"user_id": "u1", "note": "\n]}}"}
    assert decode_row(encode_row(row)) == row


def test_a_value_of_the_earlier_column_wise_layout_still_reads_at_a_time():
    # format 1 (mlforge 0.8.0 before this layout): the tail's values column by column
    text = json.dumps({"user_id": "u1", TAIL: {"interval": DAY, "labels": [0, DAY], "values": {"n_2d": [1, 2]}}})
    publication = Publication("f", "1.0.0", ("user_id",), "ts", DAY, None, 0, ("n_2d",), (("n_2d", 0),))
    reading = value_at(publication, {"user_id": "u1"}, decode_row(text), datetime(1970, 1, 2, 5, tzinfo=UTC), published=True)
    assert reading.values == {"n_2d": 2} and reading.known
    later = value_at(publication, {"user_id": "u1"}, decode_row(text), datetime(1970, 1, 9, tzinfo=UTC), published=True)
    assert later.values == {"n_2d": 0}  # past the tail: empty windows (W4)


def test_an_answer_has_the_columns_of_the_record_it_was_read_with():  # contract O1, O2
    # mid-publish of a MINOR: an entity already written holds the new column, the record
    # (read in the same round trip) still names the old columns
    text = json.dumps({"user_id": "u1", TAIL: {"interval": DAY, "labels": [DAY], "values": {"n_2d": [2], "new_2d": [5]}}})
    publication = Publication("f", "1.0.0", ("user_id",), "ts", DAY, None, 0, ("n_2d",), (("n_2d", 0),))
    reading = value_at(publication, {"user_id": "u1"}, decode_row(text), datetime(1970, 1, 2, 5, tzinfo=UTC), published=True)
    unknown = value_at(publication, {"user_id": "u2"}, None, datetime(1970, 1, 2, 5, tzinfo=UTC), published=True)
    assert reading.values == {"n_2d": 2} and list(reading.row) == list(unknown.row)
    # the record already names the new column, the entity is not written yet: its value is
    # not known (null), which is not an empty window (W4 would say 0)
    old_text = json.dumps({"user_id": "u1", TAIL: {"interval": DAY, "labels": [DAY], "values": {"n_2d": [2]}}})
    newer = Publication("f", "1.1.0", ("user_id",), "ts", DAY, None, 0, ("n_2d", "new_2d"), (("n_2d", 0), ("new_2d", 0)))
    for at in (datetime(1970, 1, 2, 5, tzinfo=UTC), datetime(1970, 1, 9, tzinfo=UTC)):  # a label in the tail, and one past it
        assert value_at(newer, {"user_id": "u1"}, decode_row(old_text), at, published=True).values["new_2d"] is None


def test_a_record_of_format_1_is_read_and_a_newer_format_is_refused():
    from mlforge.errors import OnlineStoreError

    row = Publication("f", "1.0.0", ("user_id",), "ts", DAY, None, 0, ("n_2d",)).to_row()
    assert Publication.from_row({**row, "format": 1}).format == 1
    with pytest.raises(OnlineStoreError, match="newer than this mlforge reads"):
        Publication.from_row({**row, "format": 99})


def test_integers_past_64_bits_keep_their_value_and_type():
    for value in (2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30):
        got = decode_row(encode_row({"k": "a", "n": value, "ns": [value, 1]}))
        assert got == {"k": "a", "n": value, "ns": [value, 1]} and type(got["n"]) is int


def test_a_string_that_looks_like_the_tag_stays_a_string():
    row = {"k": '"$t"', "note": '{"$t": "ts", "v": "2024-01-01"}'}
    assert decode_row(encode_row(row)) == row


def test_an_answer_renders_as_jsonable_describes_it_even_past_what_orjson_writes():
    from datetime import date
    from decimal import Decimal

    from mlforge.serve import jsonable, render_json

    answer = {"n": 2**70, "ts": datetime(2024, 1, 2, 3), "x": float("nan"), "d": Decimal("1.10"), "b": b"\x00", "day": date(2024, 1, 2)}
    expected = jsonable(answer)
    assert json.loads(render_json(answer)) == expected
    assert json.loads(render_json({k: v for k, v in answer.items() if k != "n"})) == {k: v for k, v in expected.items() if k != "n"}


def test_each_row_of_a_tail_reads_back_by_its_index_from_either_end():
    for length in range(8):
        rows = [[i, f"r{i}", {"nested": [i, None]}, datetime(2024, 1, 1 + i, tzinfo=UTC)] for i in range(length)]
        tail = Tail(DAY, [i * DAY for i in range(length)], ["n", "s", "m", "ts"], rows=rows)
        stored = decode_row(encode_row({"user_id": "u1", TAIL: tail}).encode())[TAIL]
        assert [stored.row_values(i) for i in range(length)] == rows
        assert decode_row(encode_row({"user_id": "u1", TAIL: tail}))[TAIL].rows() == rows
        for either in (stored, tail):  # read from stored text, or made from rows
            for outside in (-1, length):
                with pytest.raises(IndexError, match=f"a tail of {length} labels has no row {outside}"):
                    either.row_values(outside)


def test_a_tail_whose_rows_do_not_match_its_labels_is_not_read():
    text = encode_row({"user_id": "u1", TAIL: Tail(DAY, [0, DAY], ["n"], rows=[[1], [2]])})
    damaged = text.replace("[1],\n", "")
    with pytest.raises(ValueError, match="a tail of 2 labels holds 1 rows"):
        decode_row(damaged)


def test_a_damaged_row_line_is_an_online_store_error_when_read():
    from mlforge.errors import OnlineStoreError

    text = encode_row({"user_id": "u1", TAIL: Tail(DAY, [0, DAY], ["n", "s"], rows=[[1, "a"], [2, "b"]])})
    publication = Publication("f", "1.0.0", ("user_id",), "ts", DAY, None, 0, ("n", "s"), (("n", 0),))
    at = datetime(1970, 1, 2, 5, tzinfo=UTC)  # label DAY: the second row
    for damaged in (text.replace('[2,"b"]', '[2,"b"'), text.replace('[2,"b"]', "[2]")):
        stored = decode_row(damaged)  # the head is intact: the row is read only when asked for
        with pytest.raises(OnlineStoreError, match=r"stored value of 'f' for \{'user_id': 'u1'\} is not an mlforge row"):
            value_at(publication, {"user_id": "u1"}, stored, at, published=True)
        assert value_at(publication, {"user_id": "u1"}, stored, datetime(1970, 1, 1, 5, tzinfo=UTC), published=True).values == {"n": 1, "s": "a"}


def test_values_past_orjson_read_back_exactly():
    from datetime import timedelta

    for row in ({"d": timedelta.max, "t": datetime(2024, 1, 1)}, {"d": timedelta(microseconds=2**64 + 1)}, {"s": "\ud800"}, {"s": "\udc00", "t": datetime(2024, 1, 1)}):
        assert decode_row(encode_row(row)) == row
        tail = Tail(DAY, [0], list(row), rows=[list(row.values())])
        assert decode_row(encode_row({"k": 1, TAIL: tail}))[TAIL].row(0) == row
