"""Sources: each layout read from files written here, boxes mapped exactly, bad input skipped
with a message naming it and counted."""
import os

import pytest
from engine_layouts import corrupt, cub, fgvc_aircraft, image_folder, picture

from dprl.config import ConfigError, EngineDataConfig, EngineSourceConfig, load_config
from dprl.data.engine.sources import DatasetImage, cub_category_name, read_source
from dprl.data.validate import DataError

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def _by_reason(read):
    out = {}
    for s in read.skipped:
        out.setdefault(s.reason, []).append(s)
    return out


def test_image_folder_categories_crop_and_bad_input(tmp_path, capsys):
    root = image_folder(str(tmp_path / "tree"), {"alpha": [RED, RED], "beta": [GREEN, GREEN, GREEN],
                                                 "gamma": [BLUE], "empty": []}, size=(40, 30))
    corrupt(str(tmp_path / "tree" / "beta" / "broken.png"))
    cfg = EngineSourceConfig(kind="image_folder", path=root, domain="bird", crop=0.5)
    read = read_source(cfg)
    reasons = _by_reason(read)
    assert read.listed == 7  # the corrupt file is listed (it has an image extension), then screened out
    assert {e.category for e in read.entities} == {"alpha", "beta", "gamma"}  # one picture is enough
    assert len(read.entities) == 6 and all(e.domain == "bird" and e.box is None for e in read.entities)
    # the central half of a 40x30 picture (20x15; the odd row left over goes below)
    assert {e.region for e in read.entities} == {(10, 7, 30, 22)}
    (empty,) = reasons["empty_category"]
    assert empty.where == os.path.join(root, "empty") and "'empty'" in empty.message
    (bad,) = reasons["corrupt_image"]
    assert "broken.png" in bad.message and "does not decode" in bad.message
    assert set(reasons) == {"empty_category", "corrupt_image"}

    # a category with fewer usable pictures than asked for is skipped, named
    read = read_source(EngineSourceConfig(kind="image_folder", path=root, domain="bird", min_per_category=2))
    (few,) = _by_reason(read)["too_few_images"]
    assert "gamma" in few.message and {e.category for e in read.entities} == {"alpha", "beta"}
    # the first N usable pictures per category, in the tree's order
    read = read_source(EngineSourceConfig(kind="image_folder", path=root, domain="bird", max_per_category=1))
    assert [os.path.basename(e.image) for e in read.entities] == ["0.png"] * 3


def test_image_folder_split_subfolder(tmp_path):
    image_folder(str(tmp_path / "d" / "train"), {"a": [RED], "b": [GREEN]})
    image_folder(str(tmp_path / "d" / "test"), {"c": [BLUE]})
    read = read_source(EngineSourceConfig(kind="image_folder", path=str(tmp_path / "d"), domain="dog",
                                          split="test"))
    assert [e.category for e in read.entities] == ["c"] and read.entities[0].region == (0, 0, 40, 30)
    with pytest.raises(DataError, match="no category folders"):
        read_source(EngineSourceConfig(kind="image_folder", path=str(tmp_path / "d" / "test" / "c"),
                                       domain="dog"))


def test_cub_layout_boxes_and_splits(tmp_path):
    root = cub(str(tmp_path / "CUB_200_2011"), [
        ("001.Black_footed_Albatross", "a1.jpg", (5, 4, 20, 10), 1),
        ("001.Black_footed_Albatross", "a2.jpg", (0, 0, 60, 40), 0),
        ("002.Laysan_Albatross", "b1.jpg", (10.5, 3, 30, 20), 1),
        ("002.Laysan_Albatross", "b2.jpg", (50, 30, 20, 20), 1),  # runs 10 px past both borders
    ])
    # the data set's parent folder works too
    read = read_source(EngineSourceConfig(kind="cub", path=str(tmp_path), domain="bird"))
    regions = {os.path.basename(e.image): (e.category, e.box, e.region) for e in read.entities}
    assert regions == {
        "a1.jpg": ("Black footed Albatross", (5.0, 4.0, 25.0, 14.0), (5, 4, 25, 14)),
        "a2.jpg": ("Black footed Albatross", (0.0, 0.0, 60.0, 40.0), (0, 0, 60, 40)),
        "b1.jpg": ("Laysan Albatross", (10.5, 3.0, 40.5, 23.0), (10, 3, 41, 23)),  # whole pixels covered
    }
    (outside,) = read.skipped
    assert outside.reason == "box_outside_image" and "b2.jpg" in outside.message and "60x40" in outside.message
    train = read_source(EngineSourceConfig(kind="cub", path=root, domain="bird", split="train"))
    assert sorted(os.path.basename(e.image) for e in train.entities) == ["a1.jpg", "b1.jpg"]
    test = read_source(EngineSourceConfig(kind="cub", path=root, domain="bird", split="test"))
    assert [os.path.basename(e.image) for e in test.entities] == ["a2.jpg"]
    assert [s.reason for s in test.skipped] == ["empty_category"] and "Laysan" in test.skipped[0].message
    # without boxes the whole picture is the entity
    whole = read_source(EngineSourceConfig(kind="cub", path=root, domain="bird", use_boxes=False))
    assert len(whole.entities) == 4 and {e.region for e in whole.entities} == {(0, 0, 60, 40)}


def test_cub_bad_lines_and_missing_pictures(tmp_path):
    root = cub(str(tmp_path), [("001.A", "a.jpg", (1, 1, 5, 5), 1), ("002.B", "b.jpg", (1, 1, 5, 5), 1)])
    with open(os.path.join(root, "images.txt"), "a") as fh:
        fh.write("3 002.B/gone.jpg\n4\n")
    with open(os.path.join(root, "image_class_labels.txt"), "a") as fh:
        fh.write("3 2\n")
    read = read_source(EngineSourceConfig(kind="cub", path=root, domain="bird"))
    reasons = _by_reason(read)
    assert len(read.entities) == 2
    assert "gone.jpg" in reasons["missing_image"][0].message
    assert {s.where.rsplit(":", 1)[-1] for s in reasons["bad_line"]} >= {"4"}  # the line without a name
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(DataError, match="classes.txt"):
        read_source(EngineSourceConfig(kind="cub", path=root, domain="bird"))
    assert cub_category_name("200.Common_Yellowthroat") == "Common Yellowthroat"


def test_fgvc_aircraft_one_based_boxes_and_trainval(tmp_path):
    fgvc_aircraft(str(tmp_path / "fgvc-aircraft-2013b"), {
        "train": [("0001", "Boeing 707-320", (1, 1, 10, 5)), ("0002", "A300B4", (11, 21, 60, 50))],
        "val": [("0003", "Boeing 707-320", (5, 6, 7, 8))],
        "test": [("0004", "A300B4", (1, 1, 61, 50))],  # one past the 60-pixel width: clipped
    }, variants=["Boeing 707-320", "A300B4", "Cessna 172"])
    read = read_source(EngineSourceConfig(kind="fgvc_aircraft", path=str(tmp_path), domain="aircraft",
                                          split="trainval"))
    got = {os.path.basename(e.image): (e.category, e.box, e.region) for e in read.entities}
    assert got == {
        "0001.jpg": ("Boeing 707-320", (0.0, 0.0, 10.0, 5.0), (0, 0, 10, 5)),
        "0002.jpg": ("A300B4", (10.0, 20.0, 60.0, 50.0), (10, 20, 60, 50)),
        "0003.jpg": ("Boeing 707-320", (4.0, 5.0, 7.0, 8.0), (4, 5, 7, 8)),
    }
    assert [(s.reason, s.where) for s in read.skipped] == [("empty_category", "Cessna 172")]
    test = read_source(EngineSourceConfig(kind="fgvc_aircraft", path=str(tmp_path / "fgvc-aircraft-2013b" / "data"),
                                          domain="aircraft", split="test"))
    assert [e.region for e in test.entities] == [(0, 0, 60, 50)]
    # the object's pixels are where the 1-based box says: inside the region, and nowhere else
    import numpy as np
    from PIL import Image
    e = next(e for e in read.entities if e.image.endswith("0002.jpg"))
    with Image.open(e.image) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.int16)  # (H, W, 3)
    blue = (px == np.array([20, 20, 220])).all(axis=2)  # (H, W)
    x1, y1, x2, y2 = e.region
    inside = np.zeros_like(blue)
    inside[y1:y2, x1:x2] = True
    assert blue[inside].all() and not blue[~inside].any()


def _hf_rows(tmp_path):
    paths = [picture(str(tmp_path / "px" / f"{i}.png"), (40, 30), c) for i, c in enumerate((RED, GREEN, BLUE))]
    return {"image": paths, "label": [0, 1, 1], "bbox": [[2, 3, 10, 5], None, [35, 0, 10, 10]]}


def test_hf_dataset_saved_to_disk_with_class_labels_and_boxes(tmp_path):
    import datasets

    rows = _hf_rows(tmp_path)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["kite", "hawk"]),
                                  "bbox": datasets.Sequence(datasets.Value("float32"), length=4)})
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(tmp_path / "ds"))
    cfg = EngineSourceConfig(kind="hf_dataset", path=str(tmp_path / "ds"), domain="bird", split="train",
                             box_column="bbox", box_format="xywh")
    read = read_source(cfg)
    assert [(e.category, e.region) for e in read.entities] == [("kite", (2, 3, 12, 8)), ("hawk", (0, 0, 40, 30))]
    assert isinstance(read.entities[0].image, DatasetImage)  # pixels read from the table's bytes
    (outside,) = read.skipped
    assert outside.reason == "box_outside_image" and "row 2" in outside.message


def test_hf_dataset_file_with_text_labels(tmp_path):
    import datasets

    rows = _hf_rows(tmp_path)
    rows["label"] = ["kite", "hawk", "hawk"]
    path = str(tmp_path / "birds.parquet")
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(path)
    read = read_source(EngineSourceConfig(kind="hf_dataset", path=path, domain="bird", crop=0.5))
    assert [(e.category, e.region) for e in read.entities] == [("kite", (10, 7, 30, 22))] * 1 + \
        [("hawk", (10, 7, 30, 22))] * 2
    rows["label"] = [3, 1, 1]  # numbers without class names cannot name a category
    datasets.Dataset.from_dict(rows).to_parquet(path)
    with pytest.raises(DataError, match="ClassLabel"):
        read_source(EngineSourceConfig(kind="hf_dataset", path=path, domain="bird"))


def test_config_checks_name_the_key(tmp_path):
    image_folder(str(tmp_path / "t"), {"a": [RED]})
    good = {"sources": [{"kind": "image_folder", "path": str(tmp_path / "t"), "domain": "dog"}]}
    cfg = load_config(EngineDataConfig, None, [f"sources={good['sources']}"])
    assert cfg.sources[0].kind == "image_folder" and cfg.composition.max_entities == 4
    assert load_config(EngineDataConfig).sources == []  # loads, so a config may hold it unused
    for override, key in ((f"sources=[{{kind: cub, path: {tmp_path}, domain: d, split: val}}]", "sources[0].split"),
                          ("sources=[{kind: image_folder, path: /no/such/dir, domain: d}]", "sources[0].path"),
                          (f"sources=[{{kind: image_folder, path: {tmp_path}, domain: d, crop: 0}}]", "sources[0].crop"),
                          ("composition.max_entities=7", "composition.min_entities"),
                          ("composition.layouts.grid=-1", "composition.layouts.grid")):
        overrides = [override] if override.startswith("sources") else [f"sources={good['sources']}", override]
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(EngineDataConfig, None, overrides)
