"""GloVe files a user got wrong: each a LowlabelError naming the file and the line."""

from __future__ import annotations

import pytest

from lowlabel.errors import LowlabelError
from lowlabel.nn.text import GloveEmbeddings


@pytest.mark.parametrize(("content", "problem"), [
    (b"red 1 0 2\nball 3 x 0\n", "line 2: a value is not a number"),
    (b"red 1 0 2\nball 3 nan 0\n", "line 2: NaN or infinite"),
    (b"red 1 0 2\nball 3 4\n", "line 2: 2 values, expected 3"),
    (b"red 1 0 2\nba\xffll 3 4 0\n", "not UTF-8"),
    (b"\xff\xfe 1 2\n", "not UTF-8"),
])
def test_bad_glove_file_is_named(tmp_path, content, problem):
    path = tmp_path / "vectors.txt"
    path.write_bytes(content)
    with pytest.raises(LowlabelError, match=problem) as err:
        GloveEmbeddings(path).embed(["red ball"])
    assert "vectors.txt" in str(err.value)
