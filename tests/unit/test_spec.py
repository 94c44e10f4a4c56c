"""Dataset spec files (YAML and TOML): what they declare and the errors they get."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from serverless_ml.datasets import BUILTIN, get_dataset, load_spec_file
from serverless_ml.datasets.spec import SyntheticSpec, parse_spec
from serverless_ml.errors import SpecError

pytestmark = pytest.mark.unit

WINE_YAML = """\
name: wine
description: Wine cultivars from chemical analysis
source: {path: wine.csv}
label: cultivar
classes: [class_0, class_1, class_2]
class_names: [Barolo, Grignolino, Barbera]
primary_key: null
features:
  alcohol: {type: double, min: 10, max: 16}
  malic_acid: {type: double, min: 0, max: 7, source_column: "Malic acid"}
  magnesium: {type: bigint, min: 50, max: 200}
  color: {type: string, categories: [red, white], nullable: true}
synthetic: {jitter: 0.2, jitter_features: [alcohol]}
backfill_event_time: "2023-06-01"
"""

WINE_TOML = """\
name = "wine"
description = "Wine cultivars from chemical analysis"
source = {path = "wine.csv"}
label = "cultivar"
classes = ["class_0", "class_1", "class_2"]
class_names = ["Barolo", "Grignolino", "Barbera"]
backfill_event_time = "2023-06-01"

[synthetic]
jitter = 0.2
jitter_features = ["alcohol"]

[features.alcohol]
type = "double"
min = 10
max = 16

[features.malic_acid]
type = "double"
min = 0
max = 7
source_column = "Malic acid"

[features.magnesium]
type = "bigint"
min = 50
max = 200

[features.color]
type = "string"
categories = ["red", "white"]
nullable = true
"""


def _check_wine(spec: Any, path: Path) -> None:
    assert spec.name == "wine"
    assert spec.label == "cultivar"
    assert spec.label_type == "string"
    assert spec.classes == ("class_0", "class_1", "class_2")
    assert spec.class_name("class_1") == "Grignolino"
    assert spec.primary_key == "row_id" and spec.primary_key_source is None
    assert spec.feature_names == ["alcohol", "malic_acid", "magnesium", "color"]
    assert spec.feature("malic_acid").source_column == "Malic acid"
    assert (spec.feature("alcohol").min, spec.feature("alcohol").max) == (10, 16)
    assert spec.feature("magnesium").type == "bigint"
    assert spec.feature("color").categories == ("red", "white")
    assert spec.feature("color").nullable and not spec.feature("alcohol").nullable
    assert spec.synthetic.jitter == 0.2 and spec.synthetic.jitter_features == ("alcohol",)
    assert spec.raw_columns == ("alcohol", "Malic acid", "magnesium", "color", "cultivar")
    assert spec.source_path == "wine.csv"
    assert spec.spec_path == path.resolve()
    assert spec.backfill_event_time == "2023-06-01"
    assert spec.store_columns == ["row_id", "event_time", "alcohol", "malic_acid", "magnesium", "color", "cultivar", "origin"]
    assert [(f.name, f.type) for f in spec.store_schema()] == [
        ("row_id", "bigint"),
        ("event_time", "timestamp"),
        ("alcohol", "double"),
        ("malic_acid", "double"),
        ("magnesium", "bigint"),
        ("color", "string"),
        ("cultivar", "string"),
        ("origin", "string"),
    ]
    raw = pd.DataFrame(
        {"alcohol": [13.2, 12.1], "Malic acid": [1.8, 2.2], "magnesium": [100, 90], "color": ["red", None], "cultivar": ["class_0", "class_2"], "ignored": [1, 2]}
    )
    out = spec.transform(raw)
    assert out["row_id"].tolist() == [1, 2]
    assert out["malic_acid"].tolist() == [1.8, 2.2]
    assert "ignored" not in out.columns


@pytest.mark.parametrize(("suffix", "text"), [(".yaml", WINE_YAML), (".yml", WINE_YAML), (".toml", WINE_TOML)])
def test_spec_file_is_parsed(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"wine{suffix}"
    path.write_text(text)
    _check_wine(load_spec_file(path), path)
    _check_wine(get_dataset(str(path)), path)


def test_yaml_and_toml_give_the_same_spec(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(WINE_YAML)
    (tmp_path / "a.toml").write_text(WINE_TOML)
    a, b = load_spec_file(tmp_path / "a.yaml"), load_spec_file(tmp_path / "a.toml")
    assert a.features == b.features
    assert (a.classes, a.class_names, a.primary_key, a.raw_columns, a.synthetic) == (
        b.classes,
        b.class_names,
        b.primary_key,
        b.raw_columns,
        b.synthetic,
    )


def test_integer_classes_and_a_named_primary_key() -> None:
    data = yaml.safe_load(WINE_YAML)
    data.update(classes=[0, 1, 2], primary_key={"column": "sample", "type": "string"})
    spec = parse_spec(data, "inline")
    assert spec.label_type == "bigint" and spec.classes == (0, 1, 2)
    assert spec.primary_key == spec.primary_key_source == "sample"
    assert spec.primary_key_type == "string"
    assert spec.raw_columns[0] == "sample"
    data["primary_key"] = "sample"
    assert parse_spec(data, "inline").primary_key_type == "bigint"


def test_numeric_products_is_off_unless_the_spec_asks() -> None:
    assert parse_spec(_GOOD, "inline").numeric_products is False
    assert parse_spec({**_GOOD, "numeric_products": True}, "inline").numeric_products is True
    assert get_dataset("iris").numeric_products is True
    assert get_dataset("titanic").numeric_products is False


def test_positive_class_defaults_to_the_second_class_and_is_typed_like_the_classes() -> None:
    binary = {**_without(_GOOD, "class_names"), "classes": ["malignant", "benign"]}
    assert parse_spec(binary, "inline").positive_class == "benign"
    assert parse_spec({**binary, "positive_class": "malignant"}, "inline").positive_class == "malignant"
    integers = {**binary, "classes": [1, 0]}
    assert parse_spec(integers, "inline").positive_class == 0
    explicit = parse_spec({**integers, "positive_class": 1}, "inline").positive_class
    assert explicit == 1 and type(explicit) is int
    # Quoted, yes/no are the labels as written.
    words = parse_spec({**binary, **yaml.safe_load('classes: ["yes", "no"]\npositive_class: "yes"')}, "inline")
    assert words.classes == ("yes", "no") and words.positive_class == "yes"
    assert parse_spec(_GOOD, "inline").positive_class is None


def test_values_compared_with_the_file_are_text_as_written() -> None:
    spec = parse_spec(yaml.safe_load(
        'name: codes\nlabel: kind\nclasses: ["007", "7"]\nprimary_key: {column: code, type: string}\n'
        'missing_values: ["", "?"]\n'
        'features:\n  grade: {type: string, categories: ["01", "NA"], missing_values: []}\n  n: {type: double}\n'
    ), "inline")
    assert spec.classes == ("007", "7") and spec.feature("grade").categories == ("01", "NA")
    assert spec.missing_for("string", spec.feature("grade")) == frozenset()
    assert spec.missing_for("double", spec.feature("n")) == frozenset({"", "?"})
    defaults = parse_spec(_GOOD, "inline")
    assert defaults.missing_for("string", defaults.feature("color")) == frozenset({""})
    assert {"", "NA", "N/A", "NaN", "nan", "null", "None"} <= defaults.missing_for("double", defaults.feature("alcohol"))


def test_store_names_may_come_from_file_columns_of_other_names() -> None:
    spec = parse_spec({**_GOOD, "label": {"column": "cultivar", "source_column": "Cultivar name"},
                       "primary_key": {"column": "sample", "type": "string", "source_column": 'Sample "Id"'}}, "inline")
    assert (spec.label, spec.raw_label, spec.primary_key, spec.primary_key_source) == (
        "cultivar", "Cultivar name", "sample", 'Sample "Id"'
    )
    assert {"Cultivar name", 'Sample "Id"'} <= set(spec.raw_columns) and "cultivar" not in spec.raw_columns


def test_builtins_pass_the_checks_of_spec_files() -> None:
    """Built-in specs are checked on construction, named by the dataset."""
    for bad, expected in (
        ({"name": "titanic_predictions"}, "dataset 'titanic_predictions': name 'titanic_predictions' ends in '_predictions'"),
        ({"backfill_event_time": "now"}, "dataset 'titanic': backfill_event_time 'now' is not a date"),
        ({"primary_key": 'passenger"id'}, "dataset 'titanic': primary key 'passenger\"id' must start"),
    ):
        with pytest.raises(SpecError) as info:
            dataclasses.replace(BUILTIN["titanic"], **bad)
        assert expected in str(info.value)
    with pytest.raises(SpecError, match="synthetic jitter must be a finite number >= 0, got nan"):
        SyntheticSpec(jitter=float("nan"))


def test_builtin_names_resolve_without_files() -> None:
    assert get_dataset("titanic") is BUILTIN["titanic"]
    assert get_dataset("iris") is BUILTIN["iris"]


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _feature(data: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["features"][name].update(changes)
    return data


_GOOD = yaml.safe_load(WINE_YAML)

SPEC_ERRORS = {
    "unknown top-level key": ({**_GOOD, "lable": "x"}, ["unknown key(s) lable"]),
    "missing label": (_without(_GOOD, "label"), ["missing required key 'label'"]),
    "missing classes": (_without(_GOOD, "classes"), ["missing required key 'classes'"]),
    "missing features": (_without(_GOOD, "features"), ["missing required key 'features'"]),
    "one class": ({**_GOOD, "classes": ["a"]}, ["at least two"]),
    "duplicate classes": ({**_GOOD, "classes": ["a", "a"]}, ["duplicates"]),
    "class names do not match": ({**_GOOD, "class_names": ["x"]}, ["one name per class"]),
    "bad name": ({**_GOOD, "name": "Wine Data"}, ["name 'Wine Data'", "lower case"]),
    "empty features": ({**_GOOD, "features": {}}, ["non-empty mapping"]),
    "unknown feature key": (_feature(_GOOD, "alcohol", unit="%"), ["feature 'alcohol'", "unknown key(s) unit"]),
    "bad type": (_feature(_GOOD, "alcohol", type="float"), ["feature 'alcohol'", "'float'", "bigint, double, string"]),
    "no type": (_feature(_GOOD, "alcohol", type=None), ["feature 'alcohol'", "type None"]),
    "min greater than max": (_feature(_GOOD, "alcohol", min=20), ["feature 'alcohol'", "min 20 greater than max 16"]),
    "min not a number": (_feature(_GOOD, "alcohol", min="ten"), ["feature 'alcohol'", "min must be a number", "'ten'"]),
    "range on a string": (_feature(_GOOD, "color", min=1), ["feature 'color'", "numeric features only"]),
    "categories on a number": (_feature(_GOOD, "alcohol", categories=["a"]), ["feature 'alcohol'", "categories"]),
    "nullable not a bool": (_feature(_GOOD, "color", nullable="yes"), ["feature 'color'", "nullable must be true or false"]),
    "feature not a mapping": ({**_GOOD, "features": {"alcohol": "double"}}, ["feature 'alcohol' must be a mapping"]),
    "feature clashes with label": (
        {**_GOOD, "features": {**_GOOD["features"], "cultivar": {"type": "string"}}},
        ["cultivar", "clash"],
    ),
    "reserved column": ({**_GOOD, "features": {**_GOOD["features"], "origin": {"type": "string"}}}, ["origin", "clash"]),
    "negative jitter": ({**_GOOD, "synthetic": {"jitter": -1}}, ["jitter must be a finite number >= 0, got -1.0"]),
    "jitter on a string": ({**_GOOD, "synthetic": {"jitter_features": ["color"]}}, ["'color' is not a numeric feature"]),
    "bad version": ({**_GOOD, "version": 0}, ["version must be a positive integer"]),
    "bad backfill date": ({**_GOOD, "backfill_event_time": "someday"}, ["backfill_event_time 'someday'"]),
    "bad primary key": ({**_GOOD, "primary_key": {"type": "bigint"}}, ["primary_key must be"]),
    "bad source": ({**_GOOD, "source": ["wine.csv"]}, ["'source' must be"]),
    "not a mapping": (["name", "wine"], ["expected a mapping at the top level"]),
    "products not a bool": ({**_GOOD, "numeric_products": "yes"}, ["numeric_products must be true or false"]),
    "positive class of three classes": (
        {**_GOOD, "positive_class": "class_1"}, ["positive_class applies to two classes only", "this spec has 3"],
    ),
    "positive class not a class": (
        {**_without(_GOOD, "class_names"), "classes": ["malignant", "benign"], "positive_class": "Benign"},
        ["positive_class 'Benign' must be a label listed in classes (malignant, benign)"],
    ),
    "positive class text for integer classes": (
        {**_without(_GOOD, "class_names"), "classes": [0, 1], "positive_class": "1"},
        ["positive_class '1' must be an integer label listed in classes (0, 1)"],
    ),
    "positive class a boolean for integer classes": (
        {**_without(_GOOD, "class_names"), "classes": [0, 1], "positive_class": True},
        ["positive_class True must be an integer label"],
    ),
    "positive class a list": (
        {**_without(_GOOD, "class_names"), "classes": ["a", "b"], "positive_class": ["a"]},
        ["positive_class ['a'] must be a label listed in classes (a, b)"],
    ),
    "products of one number": (
        {**_GOOD, "numeric_products": True, "features": {"alcohol": {"type": "double"}, "color": {"type": "string"}}},
        ["numeric_products needs 2 to 10 numeric features", "the spec has 1"],
    ),
    # Issue 16: nothing a spec says may change the data silently.
    "categories read by YAML as numbers": (
        _feature(_GOOD, "color", categories=[1, 2]), ["feature 'color': categories: 1 is not text", 'quote every item, e.g. ["01", "02"]'],
    ),
    "categories twice": (_feature(_GOOD, "color", categories=["01", "01"]), ["feature 'color': categories list a value twice"]),
    "text classes read by YAML as booleans": (
        {**_without(_GOOD, "class_names"), "classes": [True, False]}, ["'classes' of a text label: True is not text"],
    ),
    "mixed classes": ({**_without(_GOOD, "class_names"), "classes": ["a", 1]}, ["'classes' of a text label: 1 is not text"]),
    "positive class read by YAML as a boolean": (
        {**_without(_GOOD, "class_names"), "classes": ["yes", "no"], "positive_class": True},
        ["positive_class True must be a label listed in classes (yes, no); quote it"],
    ),
    "missing_values not a list": ({**_GOOD, "missing_values": "NA"}, ["missing_values must be a list of quoted texts"]),
    "missing_values with null": ({**_GOOD, "missing_values": ["", None]}, ["missing_values: null is not text"]),
    "missing_values twice": ({**_GOOD, "missing_values": ["?", "?"]}, ["missing_values lists a text twice"]),
    "feature missing_values with a number": (
        _feature(_GOOD, "alcohol", missing_values=[-999]), ["feature 'alcohol': missing_values: -999 is not text"],
    ),
    "jitter nan": ({**_GOOD, "synthetic": {"jitter": float("nan")}}, ["synthetic jitter must be a finite number >= 0, got nan"]),
    "jitter inf": ({**_GOOD, "synthetic": {"jitter": float("inf")}}, ["synthetic jitter must be a finite number >= 0, got inf"]),
    "name of another dataset's predictions": (
        {**_GOOD, "name": "wine_predictions"}, ["name 'wine_predictions' ends in '_predictions'", "predictions of dataset 'wine'"],
    ),
    "relative backfill time": ({**_GOOD, "backfill_event_time": "now"}, ["backfill_event_time 'now' is not a date", "2024-01-01"]),
    "backfill today": ({**_GOOD, "backfill_event_time": "today"}, ["backfill_event_time 'today' is not a date"]),
    "key name with a quote": (
        {**_GOOD, "primary_key": {"column": 'a"b', "type": "string"}},
        ["primary key 'a\"b' must start with a letter or underscore", "source_column"],
    ),
    "key name with a space": ({**_GOOD, "primary_key": "sample id"}, ["primary key 'sample id' must start with a letter"]),
    "key with an unknown key": ({**_GOOD, "primary_key": {"column": "id", "sourcecolumn": "x"}}, ["primary_key must be"]),
    "label name with a space": ({**_GOOD, "label": "wine kind"}, ["label 'wine kind' must start with a letter"]),
    "label mapping with an unknown key": ({**_GOOD, "label": {"column": "kind", "from": "x"}}, ["label has unknown key(s) from"]),
    "feature name with a backtick": (
        {**_GOOD, "features": {**_GOOD["features"], "a`b": {"type": "double"}}}, ["feature 'a`b' must start with a letter"],
    ),
    "products of too many numbers": (
        {**_without(_GOOD, "synthetic"), "numeric_products": True,
         "features": {f"x{i}": {"type": "double"} for i in range(11)}},
        ["numeric_products needs 2 to 10 numeric features", "the spec has 11"],
    ),
}


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
def test_spec_errors_name_what_is_wrong(case: str, tmp_path: Path) -> None:
    data, expected = SPEC_ERRORS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), "the message names the spec file"
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        ("bad.toml", 'name = "wine"\nlabel = \n', "cannot be parsed"),
        ("bad.yaml", "name: wine\nfeatures: {a: [\n", "cannot be parsed"),
        ("bad.toml", WINE_TOML.replace('type = "double"', 'type = "decimal"', 1), "type 'decimal'"),
        ("bad.toml", WINE_TOML.replace("min = 10\n", "min = 30\n"), "min 30 greater than max 16"),
        ("bad.toml", WINE_TOML.replace('label = "cultivar"\n', ""), "missing required key 'label'"),
        ("bad.toml", WINE_TOML + '\n[features.alcohol2]\ntype = "double"\nscale = 3\n', "unknown key(s) scale"),
        ("bad.json", "{}", "expected a .yaml, .yml or .toml file"),
    ],
)
def test_spec_file_errors(tmp_path: Path, filename: str, text: str, expected: str) -> None:
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(WINE_YAML.replace("Wine", "Vin\xe9").encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec_file(path)


def test_unknown_dataset_and_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown dataset 'wine'.*built-in: iris, titanic"):
        get_dataset("wine")
    with pytest.raises(SpecError, match="does not exist"):
        get_dataset(str(tmp_path / "wine.yaml"))
