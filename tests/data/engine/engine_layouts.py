"""Small fine-grained data sets written in each source layout, from solid-colour pictures.

Each picture is one colour (the "background" of the photo) with, where a layout has boxes, an
object rectangle of another colour: a test can then find in a composite exactly which pixels
came from which picture, and whether the crop took the box.
"""
import math
import os

from PIL import Image


def picture(path: str, size=(40, 30), colour=(200, 30, 30), box=None, box_colour=(20, 20, 220),
            lossless: bool = False) -> str:
    """Writes a `size` picture of `colour`, with `box` (x1, y1, x2, y2, exclusive ends) filled
    with `box_colour`; PNG or JPEG by the file's extension, PNG data whatever the name with
    `lossless` (PIL reads a file by its content), so a test can check pixels exactly."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.new("RGB", size, colour)
    if box is not None:  # the pixels the box covers, clipped to the picture
        x1, y1, x2, y2 = box
        im.paste(box_colour, (max(0, math.floor(x1)), max(0, math.floor(y1)), min(size[0], math.ceil(x2)),
                              min(size[1], math.ceil(y2))))
    if path.endswith(".jpg") and not lossless:
        im.save(path, quality=98)
    else:
        im.save(path, format="PNG")
    return path


def corrupt(path: str) -> str:
    """A file with an image's extension and a PNG signature whose data stops short."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    return path


def image_folder(root: str, categories: dict[str, list[tuple[int, int, int]]], size=(40, 30)) -> str:
    """root/<category>/<i>.png, one picture per colour listed; an empty list: an empty folder."""
    for name, colours in categories.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i, colour in enumerate(colours):
            picture(os.path.join(root, name, f"{i}.png"), size, colour)
    return root


def write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))


def cub(root: str, images: list[tuple[str, str, tuple, int]], size=(60, 40)) -> str:
    """CUB_200_2011's files under root. `images`: (class_name, file name, (x, y, w, h), is_train);
    a class's id is its rank in sorted order, as in CUB ("001.Black_footed_Albatross")."""
    classes = sorted({c for c, *_ in images})
    os.makedirs(root, exist_ok=True)
    write_lines(os.path.join(root, "classes.txt"), [f"{i + 1} {c}" for i, c in enumerate(classes)])
    lines = {"images.txt": [], "image_class_labels.txt": [], "bounding_boxes.txt": [],
             "train_test_split.txt": []}
    for i, (cls, name, (x, y, w, h), train) in enumerate(images, 1):
        rel = f"{cls}/{name}"
        picture(os.path.join(root, "images", rel), size, (200, 200, 40), (x, y, x + w, y + h), lossless=True)
        lines["images.txt"].append(f"{i} {rel}")
        lines["image_class_labels.txt"].append(f"{i} {classes.index(cls) + 1}")
        lines["bounding_boxes.txt"].append(f"{i} {float(x)} {float(y)} {float(w)} {float(h)}")
        lines["train_test_split.txt"].append(f"{i} {train}")
    for name, rows in lines.items():
        write_lines(os.path.join(root, name), rows)
    return root


def fgvc_aircraft(root: str, splits: dict[str, list[tuple[str, str, tuple]]], variants: list[str],
                  size=(60, 50)) -> str:
    """fgvc-aircraft-2013b's data/ under root. `splits`: {split: [(image id, variant, (xmin, ymin,
    xmax, ymax) 1-based inclusive)]}; variants.txt lists `variants`."""
    data = os.path.join(root, "data")
    os.makedirs(os.path.join(data, "images"), exist_ok=True)
    write_lines(os.path.join(data, "variants.txt"), variants)
    boxes = []
    for split, rows in splits.items():
        write_lines(os.path.join(data, f"images_variant_{split}.txt"), [f"{i} {v}" for i, v, _ in rows])
        for image, _, (x1, y1, x2, y2) in rows:
            # the object's pixels: columns x1-1 .. x2-1, rows y1-1 .. y2-1 (0-based)
            picture(os.path.join(data, "images", f"{image}.jpg"), size, (200, 200, 40), (x1 - 1, y1 - 1, x2, y2),
                    lossless=True)
            boxes.append(f"{image} {x1} {y1} {x2} {y2}")
    write_lines(os.path.join(data, "images_box.txt"), boxes)
    return root
