"""Sources: fine-grained recognition data sets already on disk -> entity pictures.

Four layouts, each read as the data set's own documentation (or the library that already reads
it) defines it; nothing is ever downloaded:
  image_folder   root/<category>/**/<picture>, listed with torchvision's ImageFolder functions
                 (find_classes, make_dataset), so a tree that ImageFolder or `datasets`'
                 imagefolder reads is read the same way.
  cub            CUB-200-2011: images.txt "<image_id> <image_name>", classes.txt "<class_id>
                 <class_name>", image_class_labels.txt "<image_id> <class_id>",
                 bounding_boxes.txt "<image_id> <x> <y> <width> <height>" (pixels, top-left
                 origin), train_test_split.txt "<image_id> <is_training_image>"; pictures in
                 images/<image_name>.
  fgvc_aircraft  FGVC-Aircraft (fgvc-aircraft-2013b): data/images_variant_<split>.txt "<image>
                 <variant>" (variants may hold spaces), data/variants.txt (one variant a line),
                 data/images_box.txt "<image> <xmin> <ymin> <xmax> <ymax>" (1-based, inclusive);
                 pictures in data/images/<image>.jpg.
  hf_dataset     any `datasets` table (a save_to_disk folder, or a local file load_dataset reads)
                 with an image column and a label column (class names from its ClassLabel
                 feature when it has one), optionally a box column.

Every picture becomes an EntityImage: the domain, the category, where its pixels are, its object
box when the source has one. `read_source` then screens each one (decodes it fully, checks its
box lies inside it) and sets the region of the picture that becomes the entity's tile. A
picture that cannot be used is skipped with a message naming it and counted per reason; a
source that cannot be read at all (a listed file missing, no category folders) raises a
DataError naming the file.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache

from dprl.config import EngineSourceConfig
from dprl.data.validate import DataError, image_size

# Why a picture, category or sample was skipped (the keys of the counts a run reports).
SKIP_REASONS = (
    "bad_line",  # a line of a source's text file that does not parse, or names an unknown id
    "missing_image",  # a listed picture that is not on disk
    "corrupt_image",  # a picture that does not decode
    "box_outside_image",  # an object box outside its picture, or of zero area
    "empty_category",  # a category folder or class without pictures
    "too_few_images",  # a category with fewer usable pictures than min_per_category
    "small_domain",  # a domain with fewer categories than composition.min_entities
    "compose_failed",  # a composite whose pictures failed to load after screening
)
# A box may cross its picture's border by this much and is clipped: inclusive and 1-based
# conventions put a box that touches the border one pixel over. Further out it is skipped.
BOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class DatasetImage:
    """A picture held in a `datasets` table: reopened, row by row, by whichever process needs it."""

    path: str  # the save_to_disk folder or the data file
    split: str
    column: str
    row: int


@dataclass(frozen=True)
class EntityImage:
    """One picture of one entity of a fine-grained category."""

    domain: str
    category: str
    image: str | DatasetImage  # a file path, or a row of a datasets table
    # The object in the picture's pixels: x1 y1 x2 y2, origin top-left, x2/y2 exclusive (a PIL
    # crop box). None: the source has no box (or use_boxes is off).
    box: tuple[float, float, float, float] | None
    source_id: str  # names the picture in messages and in the samples (path or id in the source)
    # Set by screening: the pixels of the picture that become the entity's tile (x1 y1 x2 y2).
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Skipped:
    """Something a source or the composition could not use: why (one of SKIP_REASONS), what it
    was (a file, a category, a sample id) and a message for people."""

    reason: str
    where: str
    message: str

    def to_dict(self) -> dict:
        return {"reason": self.reason, "where": self.where, "message": self.message}


@dataclass
class SourceRead:
    """A source's usable entities (screened, in the source's order) and what was skipped."""

    entities: list[EntityImage]
    skipped: list[Skipped]
    listed: int  # pictures the source lists (before screening)


# ---------------------------------------------------------------------------------------------
# Reading the layouts
# ---------------------------------------------------------------------------------------------
def _image_folder(cfg: EngineSourceConfig) -> tuple[list[EntityImage], list[Skipped]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = os.path.join(cfg.path, cfg.split) if cfg.split else cfg.path
    if not os.path.isdir(root):
        raise DataError(f"image folder {root!r} does not exist")
    try:
        classes, class_to_idx = find_classes(root)
    except FileNotFoundError as err:
        raise DataError(f"image folder {root!r} has no category folders ({err})") from None
    # allow_empty: an empty category is skipped and counted here, not an error for the tree.
    items = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    entities = [EntityImage(cfg.domain, classes[label], path, None, os.path.relpath(path, root))
                for path, label in items]
    found = {e.category for e in entities}
    skipped = [Skipped("empty_category", os.path.join(root, c),
                       f"category folder {os.path.join(root, c)!r} holds no pictures "
                       f"({', '.join(IMG_EXTENSIONS)}); category {c!r} skipped")
               for c in classes if c not in found]
    return entities, skipped


def _id_lines(path: str, fields: int, skipped: list[Skipped]) -> dict[str, list[str]]:
    """{first field: the other `fields` fields} of a whitespace-separated text file, in file
    order; the last field takes the rest of the line (names with spaces). A line with too few
    fields is skipped as bad_line. A missing file raises a DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path!r} does not exist (the source's layout needs it)")
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split(None, fields)
            if len(parts) != fields + 1:
                skipped.append(Skipped("bad_line", f"{path}:{lineno}",
                                       f"{path} line {lineno}: expected an id and {fields} field(s), "
                                       f"got {line.strip()!r}; line skipped"))
                continue
            out[parts[0]] = [p.strip() for p in parts[1:]]
    return out


def _numbers(values: list[str], where: str, skipped: list[Skipped]) -> list[float] | None:
    try:
        return [float(v) for v in " ".join(values).split()]
    except ValueError:
        skipped.append(Skipped("bad_line", where, f"{where}: {' '.join(values)!r} are not numbers; "
                               "picture skipped"))
        return None


def _cub_root(path: str) -> str:
    """The folder holding images.txt: `path` itself, or its CUB_200_2011 subfolder."""
    nested = os.path.join(path, "CUB_200_2011")
    if not os.path.isfile(os.path.join(path, "images.txt")) and os.path.isdir(nested):
        return nested
    return path


def cub_category_name(class_name: str) -> str:
    """CUB's "001.Black_footed_Albatross" -> "Black footed Albatross"."""
    head, dot, tail = class_name.partition(".")
    name = tail if dot and head.isdigit() else class_name
    return name.replace("_", " ").strip()


def _cub(cfg: EngineSourceConfig) -> tuple[list[EntityImage], list[Skipped]]:
    root = _cub_root(cfg.path)
    skipped: list[Skipped] = []
    images = _id_lines(os.path.join(root, "images.txt"), 1, skipped)
    classes = _id_lines(os.path.join(root, "classes.txt"), 1, skipped)
    labels = _id_lines(os.path.join(root, "image_class_labels.txt"), 1, skipped)
    box_file = os.path.join(root, "bounding_boxes.txt")
    boxes = _id_lines(box_file, 4, skipped) if cfg.use_boxes and os.path.isfile(box_file) else {}
    split_file = os.path.join(root, "train_test_split.txt")
    in_split = _id_lines(split_file, 1, skipped) if cfg.split else {}
    wanted = {"train": "1", "test": "0"}.get(cfg.split)
    entities = []
    for image_id, (name,) in images.items():
        where = f"{os.path.join(root, 'images.txt')} id {image_id}"
        if cfg.split:
            if image_id not in in_split:
                skipped.append(Skipped("bad_line", where, f"{where} ({name}): not in {split_file}; "
                                       "picture skipped"))
                continue
            if in_split[image_id][0] != wanted:
                continue
        class_id = labels.get(image_id, [None])[0]
        if class_id not in classes:
            skipped.append(Skipped("bad_line", where, f"{where} ({name}): no class in "
                                   f"image_class_labels.txt/classes.txt (got {class_id!r}); picture skipped"))
            continue
        path = os.path.join(root, "images", name)
        if not os.path.isfile(path):
            skipped.append(Skipped("missing_image", path, f"{path!r} (images.txt id {image_id}) does not "
                                   "exist; picture skipped"))
            continue
        box = None
        if cfg.use_boxes and image_id in boxes:
            xywh = _numbers(boxes[image_id], f"{box_file} id {image_id}", skipped)
            if xywh is None:
                continue
            x, y, w, h = xywh
            box = (x, y, x + w, y + h)
        entities.append(EntityImage(cfg.domain, cub_category_name(classes[class_id][0]), path, box,
                                    os.path.join("images", name)))
    found = {e.category for e in entities}
    for (class_name,) in classes.values():
        if cub_category_name(class_name) not in found:
            skipped.append(Skipped("empty_category", class_name,
                                   f"CUB class {class_name!r} has no pictures"
                                   + (f" in split {cfg.split!r}" if cfg.split else "") + "; skipped"))
    return entities, skipped


def _fgvc_data(path: str) -> str:
    """The folder holding variants.txt: `path`, its data/, or fgvc-aircraft-2013b/data."""
    for folder in (path, os.path.join(path, "data"), os.path.join(path, "fgvc-aircraft-2013b", "data")):
        if os.path.isfile(os.path.join(folder, "variants.txt")):
            return folder
    raise DataError(f"{path!r} is not an FGVC-Aircraft folder: no variants.txt in it, its data/ or "
                    "fgvc-aircraft-2013b/data/")


def _fgvc_aircraft(cfg: EngineSourceConfig) -> tuple[list[EntityImage], list[Skipped]]:
    data = _fgvc_data(cfg.path)
    skipped: list[Skipped] = []
    with open(os.path.join(data, "variants.txt"), encoding="utf-8") as fh:
        variants = [line.strip() for line in fh if line.strip()]
    split_files = [f"images_variant_{cfg.split}.txt"]
    if cfg.split == "trainval" and not os.path.isfile(os.path.join(data, split_files[0])):
        split_files = ["images_variant_train.txt", "images_variant_val.txt"]
    listed: dict[str, list[str]] = {}
    for name in split_files:
        listed.update(_id_lines(os.path.join(data, name), 1, skipped))
    box_file = os.path.join(data, "images_box.txt")
    boxes = _id_lines(box_file, 4, skipped) if cfg.use_boxes else {}
    known = set(variants)
    entities = []
    for image, (variant,) in listed.items():
        where = f"{os.path.join(data, split_files[0])} image {image}"
        if variant not in known:
            skipped.append(Skipped("bad_line", where, f"{where}: variant {variant!r} is not in "
                                   "variants.txt; picture skipped"))
            continue
        path = os.path.join(data, "images", f"{image}.jpg")
        if not os.path.isfile(path):
            skipped.append(Skipped("missing_image", path, f"{path!r} does not exist; picture skipped"))
            continue
        box = None
        if cfg.use_boxes:
            if image not in boxes:
                skipped.append(Skipped("bad_line", f"{box_file} image {image}",
                                       f"{box_file}: no box for image {image}; picture skipped"))
                continue
            corners = _numbers(boxes[image], f"{box_file} image {image}", skipped)
            if corners is None:
                continue
            x1, y1, x2, y2 = corners
            # 1-based inclusive pixel indices -> 0-based corners with exclusive ends
            box = (x1 - 1, y1 - 1, x2, y2)
        entities.append(EntityImage(cfg.domain, variant, path, box, os.path.join("images", f"{image}.jpg")))
    found = {e.category for e in entities}
    skipped += [Skipped("empty_category", v, f"FGVC-Aircraft variant {v!r} has no pictures in split "
                        f"{cfg.split!r}; skipped") for v in variants if v not in found]
    return entities, skipped


_TABLE_FILES = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def load_table(path: str, split: str):
    """The `datasets.Dataset` of a save_to_disk folder, another local folder load_dataset reads,
    or a local data file; `split` picks one of a DatasetDict's splits ("" when there is one)."""
    import datasets

    if os.path.isdir(path):
        saved = any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json"))
        loaded = datasets.load_from_disk(path) if saved else datasets.load_dataset(path)
    else:
        builder = _TABLE_FILES.get(os.path.splitext(path)[1].lower())
        if builder is None:
            raise DataError(f"{path!r}: expected a datasets folder or a {'/'.join(_TABLE_FILES)} file")
        loaded = datasets.load_dataset(builder, data_files=path)
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if not split and len(names) == 1:
            split = names[0]
        if split not in loaded:
            raise DataError(f"{path!r} has splits {names}; set the source's split to one of them")
        loaded = loaded[split]
    return loaded


@lru_cache(maxsize=4)
def _arrow_rows(path: str, split: str):
    """The table with rows as pyarrow tables: reading a row's image gives its stored bytes, not
    a decoded picture (cached: every process opens a table once)."""
    return load_table(path, split).with_format("arrow")


def _hf_dataset(cfg: EngineSourceConfig) -> tuple[list[EntityImage], list[Skipped]]:
    import datasets

    table = load_table(cfg.path, cfg.split)
    for column in (cfg.image_column, cfg.label_column, cfg.box_column):
        if column and column not in table.column_names:
            raise DataError(f"{cfg.path!r} has no column {column!r}; it has {table.column_names}")
    label_feature = table.features[cfg.label_column]
    labels = table[cfg.label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        labels = [label_feature.int2str(v) if v is not None and v >= 0 else None for v in labels]
    elif not all(isinstance(v, str) or v is None for v in labels):
        raise DataError(f"{cfg.path!r}: label column {cfg.label_column!r} holds "
                        f"{type(next(v for v in labels if v is not None)).__name__} values without "
                        "class names; give it a ClassLabel feature or text labels")
    is_image = isinstance(table.features[cfg.image_column], datasets.Image)
    paths = None if is_image else table[cfg.image_column]
    folder = cfg.path if os.path.isdir(cfg.path) else os.path.dirname(os.path.abspath(cfg.path))
    boxes = table[cfg.box_column] if cfg.box_column and cfg.use_boxes else [None] * len(table)
    entities, skipped = [], []
    for i, (label, raw_box) in enumerate(zip(labels, boxes)):
        where = f"{cfg.path} row {i}"
        if not label:
            skipped.append(Skipped("bad_line", where, f"{where}: no label; picture skipped"))
            continue
        if is_image:
            image = DatasetImage(cfg.path, cfg.split, cfg.image_column, i)
        elif isinstance(paths[i], str) and paths[i]:
            image = paths[i] if os.path.isabs(paths[i]) else os.path.join(folder, paths[i])
        else:
            skipped.append(Skipped("missing_image", where, f"{where}: no image path; picture skipped"))
            continue
        box = None
        if raw_box is not None:
            if not (isinstance(raw_box, (list, tuple)) and len(raw_box) == 4
                    and all(isinstance(v, (int, float)) for v in raw_box)):
                skipped.append(Skipped("bad_line", where, f"{where}: box {raw_box!r} is not 4 numbers; "
                                       "picture skipped"))
                continue
            x1, y1, a, b = (float(v) for v in raw_box)
            box = (x1, y1, x1 + a, y1 + b) if cfg.box_format == "xywh" else (x1, y1, a, b)
        entities.append(EntityImage(cfg.domain, str(label), image, box, f"row {i}"))
    return entities, skipped


LAYOUT_READERS = {"image_folder": _image_folder, "cub": _cub, "fgvc_aircraft": _fgvc_aircraft,
                  "hf_dataset": _hf_dataset}


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------
def image_input(image: str | DatasetImage):
    """What PIL opens for an entity's picture: a file path, or the stored bytes of a table row."""
    if isinstance(image, str):
        return image
    stored = _arrow_rows(image.path, image.split)[image.row][image.column][0].as_py()
    if isinstance(stored, dict) and stored.get("bytes"):
        return io.BytesIO(stored["bytes"])
    path = stored.get("path") if isinstance(stored, dict) else stored
    if not path:
        raise ValueError("the row holds no image")
    folder = image.path if os.path.isdir(image.path) else os.path.dirname(os.path.abspath(image.path))
    return path if os.path.isabs(path) else os.path.join(folder, path)


def describe(entity: EntityImage) -> str:
    """The entity as messages name it: its file, or its table and row."""
    where = entity.image if isinstance(entity.image, str) else f"{entity.image.path} {entity.source_id}"
    return f"{where!r} ({entity.domain} / {entity.category})"


def screen(entity: EntityImage, crop: float) -> EntityImage | Skipped:
    """The entity with its tile region set, or why it cannot be used. Decodes the whole picture
    (a truncated file fails only when its pixels are read); the region is the object box when
    there is one, else the central `crop` fraction."""
    try:
        source = image_input(entity.image)
        width, height = image_size(source if isinstance(source, str) else {"bytes": source.getvalue()})
    except FileNotFoundError as err:
        return Skipped("missing_image", describe(entity), f"{describe(entity)}: {err}; picture skipped")
    except (ValueError, OSError) as err:
        return Skipped("corrupt_image", describe(entity), f"{describe(entity)}: {err}; picture skipped")
    if entity.box is None:
        w, h = max(1, round(width * crop)), max(1, round(height * crop))
        x, y = (width - w) // 2, (height - h) // 2
        return replace(entity, region=(x, y, x + w, y + h))
    x1, y1, x2, y2 = entity.box
    tol = BOX_TOLERANCE_PX
    if not (x2 > x1 and y2 > y1) or x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return Skipped("box_outside_image", describe(entity),
                       f"{describe(entity)}: box ({x1:g},{y1:g}),({x2:g},{y2:g}) is not inside its "
                       f"{width}x{height} picture; picture skipped")
    region = (max(0, math.floor(x1)), max(0, math.floor(y1)), min(width, math.ceil(x2)),
              min(height, math.ceil(y2)))
    if region[2] <= region[0] or region[3] <= region[1]:
        return Skipped("box_outside_image", describe(entity),
                       f"{describe(entity)}: box ({x1:g},{y1:g}),({x2:g},{y2:g}) covers no pixel of its "
                       f"{width}x{height} picture; picture skipped")
    return replace(entity, region=region)


def _screen_one(args: tuple[EntityImage, float]) -> EntityImage | Skipped:
    return screen(*args)


def read_source(cfg: EngineSourceConfig, map_fn=map) -> SourceRead:
    """The source's usable entities and what was skipped. `map_fn(fn, items)`: how the pictures
    are screened (a process pool's map for speed); results keep the source's order, so the
    entities are the same whatever does the work. Per category, the first `max_per_category`
    usable pictures are kept; a category left with fewer than `min_per_category` is skipped."""
    listed, skipped = LAYOUT_READERS[cfg.kind](cfg)
    by_category: dict[str, list[EntityImage]] = {}
    for result in map_fn(_screen_one, [(e, cfg.crop) for e in listed]):
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        kept = by_category.setdefault(result.category, [])
        if not cfg.max_per_category or len(kept) < cfg.max_per_category:
            kept.append(result)
    entities = []
    for category, kept in by_category.items():
        if len(kept) < cfg.min_per_category:
            skipped.append(Skipped("too_few_images", f"{cfg.domain} / {category}",
                                   f"category {category!r} of {cfg.domain} ({cfg.path}) has {len(kept)} "
                                   f"usable picture(s), fewer than min_per_category="
                                   f"{cfg.min_per_category}; category skipped"))
            continue
        entities += kept
    return SourceRead(entities, skipped, len(listed))
