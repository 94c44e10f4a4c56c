"""Reading sources strictly and validating rows against a spec, in process (the CLI
catalogue in tests/integration/test_bad_input.py covers the same paths end to end)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from serverless_ml.datasets import iris, titanic
from serverless_ml.datasets.sources import Source, load_source, read_csv_file
from serverless_ml.datasets.spec import parse_spec
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import DataValidationError, NotFoundError

pytestmark = pytest.mark.unit

IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width,variety\n"


def _iris_file(tmp_path: Path, body: str, header: str = IRIS_HEADER, name: str = "iris.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def _build(path: Path, spec=iris.SPEC) -> pd.DataFrame:
    return build_feature_rows(Source(read_csv_file(path), str(path), True), spec, "backfill", "2024-01-01")


def _refused(path: Path, spec=iris.SPEC) -> str:
    with pytest.raises(DataValidationError) as info:
        _build(path, spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_blank_lines_bom_and_padding_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_bytes(("\ufeff" + IRIS_HEADER + "5.1,3.5,1.4,0.2, Setosa \n\n7.0,3.2,4.7,1.4,Versicolor\n").encode("utf-8"))
    rows = _build(path)
    assert rows["variety"].tolist() == ["Setosa", "Versicolor"]
    assert rows["iris_id"].tolist() == [1, 2]


def test_an_extra_field_on_every_line_is_not_taken_as_an_index(tmp_path: Path) -> None:
    # pandas would silently use the first field as the index and shift every column.
    path = _iris_file(tmp_path, "1,5.1,3.5,1.4,0.2,Setosa\n2,7.0,3.2,4.7,1.4,Versicolor\n")
    with pytest.raises(DataValidationError, match="line 2 has 6 fields, expected 5"):
        read_csv_file(path)


def test_a_short_line_is_refused_not_padded(tmp_path: Path) -> None:
    path = _iris_file(tmp_path, "5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,4.7\n")
    with pytest.raises(DataValidationError, match="line 3 has 3 fields, expected 5"):
        read_csv_file(path)


def test_quoted_fields_with_commas_and_newlines_count_as_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('a,b\n"x, y",1\n"multi\nline",2\n')
    # Fields are text: the spec's types are applied by validation.
    assert read_csv_file(path)["b"].tolist() == ["1", "2"]


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_csv_file(tmp_path / "missing.csv")
    with pytest.raises(DataValidationError, match="is a directory"):
        read_csv_file(tmp_path)
    (tmp_path / "blank.csv").write_text("\n  \n")
    with pytest.raises(DataValidationError, match="is empty"):
        read_csv_file(tmp_path / "blank.csv")
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2\n3,\xff\n")
    with pytest.raises(DataValidationError, match=r"byte 0xff on line 3 \(offset 10\)"):
        read_csv_file(tmp_path / "bad.csv")
    (tmp_path / "quote.csv").write_text('a,b\n1,"2\n')
    with pytest.raises(DataValidationError, match="not well-formed CSV"):
        read_csv_file(tmp_path / "quote.csv")


def test_explicit_source_wins_and_nothing_is_downloaded(tmp_path: Path, data_dir: Path) -> None:
    path = _iris_file(tmp_path, "5.1,3.5,1.4,0.2,Setosa\n", name="mine.csv")
    source = load_source(iris.SPEC, str(path), data_dir=data_dir)
    assert source.location == str(path) and len(source.frame) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,4.7,1.4,Rose\n", "column 'variety', row 2 (line 3): label 'Rose' is not one of Setosa, Versicolor, Virginica"),
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,,4.7,1.4,Versicolor\n", "column 'sepal_width', row 2 (line 3): value is missing"),
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,1e400,1.4,Versicolor\n", "column 'petal_length', row 2 (line 3): '1e400' is not a finite number"),
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,-inf,1.4,Versicolor\n", "column 'petal_length', row 2 (line 3): -inf is not a finite number"),
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,4.7,11,Versicolor\n", "column 'petal_width', row 2 (line 3): 11.0 is outside the allowed range [0.0, 10.0]"),
        ("5.1,3.5,1.4,0.2,Setosa\n7.0,3.2,4.7,1.4cm,Versicolor\n", "'1.4cm' is not a number"),
    ],
)
def test_iris_rows_are_checked(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _refused(_iris_file(tmp_path, body))


def test_long_values_are_shortened_in_messages(tmp_path: Path) -> None:
    message = _refused(_iris_file(tmp_path, "5.1,3.5,1.4,0.2," + "X" * 500 + "\n"))
    assert "label 'XXXX" in message and "..." in message and len(message) < 300


def _spec(**features: dict) -> object:
    return parse_spec(
        {"name": "things", "label": "y", "classes": [0, 1], "primary_key": "id", "features": features},
        "things.yaml",
    )


def test_integers_that_do_not_fit_64_bits_are_refused(tmp_path: Path) -> None:
    spec = _spec(count={"type": "bigint"})  # no range: only the storage type limits it
    path = tmp_path / "things.csv"
    path.write_text("id,count,y\n1,5,0\n2,99999999999999999999,1\n")
    assert "column 'count', row 2 (line 3): 99999999999999999999 is too large for a 64-bit integer" in _refused(path, spec)
    path.write_text("id,count,y\n1,5,0\n18446744073709551615,6,1\n")
    assert "primary key 18446744073709551615 is too large" in _refused(path, spec)
    path.write_text("id,count,y\n1,5,0\n9223372036854775807,-9223372036854775807,1\n")
    rows = _build(path, spec)
    assert rows["id"].tolist() == [1, 2**63 - 1] and rows["count"].tolist() == [5, -(2**63) + 1]


def test_numbers_a_forest_cannot_take_are_refused(tmp_path: Path) -> None:
    """Found by a user trial: 1e39 (beyond float32, which scikit-learn's trees compare) was
    stored, then training failed and every later batch, each with a traceback."""
    from serverless_ml.datasets import validation
    from serverless_ml.serving import schema
    from serverless_ml.serving.schema import Field, check_number

    assert schema.FLOAT32_MAX == validation.FLOAT32_MAX

    spec = _spec(v={"type": "double"}, w={"type": "double", "nullable": True})
    path = tmp_path / "things.csv"
    path.write_text("id,v,w,y\n1,3.4e38,,0\n2,-3.5e38,1,1\n")
    assert _refused(path, spec).endswith(
        "column 'v', row 2 (line 3): -3.5e+38 is beyond what the model takes: its trees compare 32-bit floats, "
        "so a value is at most 3.403e+38 in size")
    path.write_text("id,v,w,y\n1,3.4e38,,0\n2,-3.4e38,1,1\n")
    assert _build(path, spec)["v"].tolist() == [3.4e38, -3.4e38]
    # With numeric_products a product of two values must fit too.
    products = parse_spec({"name": "things", "label": "y", "classes": [0, 1], "primary_key": "id",
                           "numeric_products": True, "features": {"v": {"type": "double"}, "w": {"type": "double"}}},
                          "things.yaml")
    path.write_text("id,v,w,y\n1,1.8e19,1,0\n2,2e19,1,1\n")
    assert _refused(path, products).endswith("is at most 1.845e+19 in size (with numeric_products a product of two "
                                             "values must fit too)")
    # Served values are held to the same limit.
    field = Field("v", "double", None, None, None, False)
    assert check_number(field, 3.4e38) == (3.4e38, None)
    assert check_number(field, -1e39)[1] == "-1e+39 is beyond what the model takes (at most 3.403e+38 in size)"


def test_whole_numbers_only_in_integer_features(tmp_path: Path) -> None:
    spec = _spec(count={"type": "bigint", "min": 0, "max": 10})
    path = tmp_path / "things.csv"
    path.write_text("id,count,y\n1,5.0,0\n2,2.5,1\n")
    assert "column 'count', row 2 (line 3): 2.5 is not a whole number" in _refused(path, spec)
    path.write_text("id,count,y\n1,5.0,0\n2.0,2,1\n")
    rows = _build(path, spec)
    assert rows["count"].dtype == np.int64 and rows["id"].dtype == np.int64


def test_primary_keys_are_checked(tmp_path: Path) -> None:
    spec = _spec(v={"type": "double"})
    path = tmp_path / "things.csv"
    for body, expected in [
        ("1,0.5,0\n,0.5,1\n", "column 'id', row 2 (line 3): primary key is missing"),
        ("1,0.5,0\nA7,0.5,1\n", "primary key 'A7' is not a whole number"),
        ("1,0.5,0\n2,0.5,1\n1.0,0.1,1\n", "row 3 (line 4): duplicate primary key 1.0 (first seen in row 1 (line 2))"),
    ]:
        path.write_text("id,v,y\n" + body)
        assert expected in _refused(path, spec)


def test_string_categories_and_nullable_features(tmp_path: Path) -> None:
    spec = _spec(colour={"type": "string", "categories": ["red", "white"], "nullable": True}, v={"type": "double", "nullable": True})
    path = tmp_path / "things.csv"
    path.write_text("id,colour,v,y\n1, red ,,0\n2,,1.5,1\n")
    rows = _build(path, spec)
    assert rows["colour"].tolist() == ["red", None]
    assert np.isnan(rows["v"].iloc[0])
    path.write_text("id,colour,v,y\n1,rose,,0\n")
    assert "column 'colour', row 1 (line 2): 'rose' is not one of red, white" in _refused(path, spec)


def test_renamed_columns_are_named_both_ways(tmp_path: Path) -> None:
    data = yaml.safe_load(
        "name: things\nlabel: y\nclasses: [a, b]\nfeatures:\n  alcohol: {type: double, max: 20, source_column: Alcohol %}\n"
    )
    spec = parse_spec(data, "things.yaml")
    path = tmp_path / "things.csv"
    path.write_text("Alcohol %,y\n12,a\n25,b\n")
    assert "column 'Alcohol %' (feature 'alcohol'), row 2 (line 3): 25 is above the allowed maximum 20" in _refused(path, spec)
    data["features"]["alcohol"] = {"type": "double", "min": 5, "source_column": "Alcohol %"}
    path.write_text("Alcohol %,y\n12,a\n-1,b\n")
    assert "row 2 (line 3): -1 is below the allowed minimum 5" in _refused(path, parse_spec(data, "things.yaml"))


def test_a_misspelled_column_names_the_files_name_as_the_one_meant(tmp_path: Path) -> None:
    """The spec says ``Approved``, the file ``Approved?``: the file's name is the one to
    write in the spec, so the message offers it (not the other way round)."""
    data = yaml.safe_load("name: loans\nlabel: {column: approved, source_column: Approved}\nclasses: ['0', '1']\n"
                          "features:\n  income: {type: double}\n")
    spec = parse_spec(data, "loans.yaml")
    path = tmp_path / "loans.csv"
    path.write_text("income,Approved?\n12,1\n25,0\n")
    message = _refused(path, spec)
    assert "missing column(s) 'Approved' (did you mean 'Approved?'?)" in message, message
    assert "misspelling" not in message
    path.write_text("incme,Approved?\n12,1\n25,0\n")  # two: each hint says which column it is for
    message = _refused(path, spec)
    assert "(for 'income' did you mean 'incme'?; for 'Approved' did you mean 'Approved?'?)" in message, message


@pytest.mark.parametrize(("sep", "said"), [(";", "semicolon"), ("\t", "tab"), ("|", "'|'")])
def test_another_delimiter_is_refused_with_a_command_that_converts_it(tmp_path: Path, sep: str, said: str) -> None:
    """``sml features`` reads comma-separated files only; the error's command converts the
    file, and the converted file passes with every field as written."""
    path = _iris_file(tmp_path, "5.1;3.5;1.4;0.2;Setosa\n7.0;3.2;4.7;1.4;Versicolor\n".replace(";", sep),
                      header=IRIS_HEADER.replace(",", sep), name="semi colon.csv")
    message = _refused(path, iris.SPEC)
    assert f"the file seems to be {said}-separated; sml reads comma-separated files only: convert it, e.g. `" in message
    command = message.split("`")[1]
    converted = tmp_path / "semi colon_commas.csv"
    assert f"and use {converted} (or save it as CSV with commas)" in message
    done = subprocess.run(["bash", "-c", command.replace("python ", f"{shlex.quote(sys.executable)} ", 1)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert converted.read_text().splitlines()[0] == IRIS_HEADER.strip()
    assert _build(converted)["variety"].tolist() == ["Setosa", "Versicolor"]


def test_titanic_rows_name_the_raw_column(tmp_path: Path, data_dir: Path) -> None:
    raw = read_csv_file(data_dir / "titanic.csv")
    raw.loc[3, "Name"] = None  # a name without a title is a Rare title, not an error
    rows = build_feature_rows(Source(raw, "frame", False), titanic.SPEC, "backfill", "2024-01-01")
    assert rows.loc[3, "title"] == "Rare"
    raw.loc[4, "SibSp"] = 11
    with pytest.raises(DataValidationError, match=r"^frame: column 'SibSp' \(feature 'sibsp'\), row 5: 11 is outside"):
        build_feature_rows(Source(raw, "frame", False), titanic.SPEC, "backfill", "2024-01-01")


def test_a_value_in_another_unicode_form_is_refused_saying_so(tmp_path: Path) -> None:
    """Found by a user trial: 'café noir' with a combining accent was refused as "not one of
    café noir, ..." — the same text to the eye."""
    import unicodedata

    spec = parse_spec({"name": "drinks", "label": "y", "classes": ["café noir", "thé"], "primary_key": "id",
                       "features": {"cup": {"type": "string", "categories": ["grande", "petite"]}, "v": {"type": "double"}}},
                      "drinks.yaml")
    decomposed = unicodedata.normalize("NFD", "café noir")
    path = tmp_path / "drinks.csv"
    path.write_text(f"id,cup,v,y\n1,grande,1.0,thé\n2,petite,2.0,{decomposed}\n", encoding="utf-8")
    message = _refused(path, spec)
    assert message.endswith(f"label {decomposed!r} is not one of café noir, thé ({decomposed!r} is 'café noir' written "
                            "with other Unicode characters, e.g. an accent as a separate character; values are compared "
                            "exactly: write it as the spec does, e.g. in Unicode NFC form)")
    path.write_text("id,cup,v,y\n1,grande,1.0,thé\n2,tall,2.0,thé\n", encoding="utf-8")
    assert _refused(path, spec).endswith("'tall' is not one of grande, petite")  # no hint where none applies


def test_a_label_given_by_its_display_name_or_in_other_case_is_refused_saying_which_class(tmp_path: Path) -> None:
    """Found by a user trial: a labels file written with the names the site shows
    (``class_names``) was refused as "not one of bajo riesgo, ..." with no word why."""
    spec = parse_spec({"name": "risk", "label": "y", "classes": ["bajo riesgo", "alto"], "primary_key": "id",
                       "class_names": ["Bajo Riesgo", "High"], "features": {"v": {"type": "double"}}}, "risk.yaml")
    path = tmp_path / "risk.csv"
    path.write_text("id,v,y\n1,1.0,alto\n2,2.0,High\n", encoding="utf-8")
    assert _refused(path, spec).endswith("label 'High' is not one of bajo riesgo, alto ('High' is the display name of "
                                         "class 'alto' in class_names: files give the classes)")
    path.write_text("id,v,y\n1,1.0,alto\n2,2.0,ALTO\n", encoding="utf-8")
    assert _refused(path, spec).endswith("label 'ALTO' is not one of bajo riesgo, alto (classes are matched exactly, "
                                         "letter case too: 'alto')")
    path.write_text("id,v,y\n1,1.0,alto\n2,2.0,low\n", encoding="utf-8")
    assert _refused(path, spec).endswith("label 'low' is not one of bajo riesgo, alto")


def test_a_label_column_spelled_otherwise_is_found() -> None:
    """Found by user trials: "Risk level" for "Risk Level" first, then "Lable" and "Labe1"
    for "Label" (difflib's ratio is 0.8 there) were not taken for the label."""
    from serverless_ml.datasets.validation import label_lookalike

    for other in ("label", "LABEL", "Lable", "Labe1", "Lbel", "Labels", "Label_", "la bel"):
        assert label_lookalike("Label", ["id", other, "x"]) == other, other
    assert label_lookalike("Risk Level", ["Risk level"]) == "Risk level"
    assert label_lookalike("Survived", ["Survied"]) == "Survied"
    for unrelated in ("Ladle x", "Table2", "cabel3", "id", "x"):
        assert label_lookalike("Label", [unrelated]) is None, unrelated
    assert label_lookalike("y", ["x", "z"]) is None  # a short name: only its other spellings (case, spaces)
