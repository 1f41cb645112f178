"""`anonymizer datasets`: public annotated sets, as their publishers distribute them, turned into
the `annotations.json` that `anonymizer eval` and the benchmarks read (docs/privacy.md).

    anonymizer datasets wider WIDER_train/images wider_face_split/wider_face_train_bbx_gt.txt OUT
        [--events Interview,Family_Group,Couple,Dancing,Handshaking] [--count 400] [--seed 0]
    anonymizer datasets mot MOT15/train/TUD-Campus OUT [--step 2]

WIDER FACE: the ground-truth text file of the official split (a file name, a box count, then one
line per box: x y w h blur expression illumination invalid occlusion pose); boxes under 10 px high
or marked invalid are `ignore`, as the benchmarks count them. MOTChallenge: a sequence folder
(`img1/` and `gt/gt.txt`, lines frame,id,x,y,w,h,active,class,visibility); pedestrians (class 1, or
every box of the 2015 sets, which have no class) that are active are kept, every `--step`-th frame.
Images are copied beside the annotations, so the folder is complete on its own.
"""

import argparse
import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

SMALLEST_FACE_PX = 10  # WIDER boxes below this are too small to count for or against anyone


def _box(label: str, x: float, y: float, w: float, h: float, ignore: bool) -> dict:
    return {"label": label, "x1": x, "y1": y, "x2": x + w, "y2": y + h, "ignore": ignore}


def read_wider(ground_truth: Path) -> dict[str, list[dict]]:
    """Image path (relative to the images folder) -> its face boxes."""
    lines = iter(ground_truth.read_text().split("\n"))
    faces: dict[str, list[dict]] = {}
    for name in lines:
        name = name.strip()
        if not name:
            continue
        count = int(next(lines))
        rows = [next(lines).split() for _ in range(max(count, 1))]  # an image without faces has one row of zeros
        boxes = []
        for row in rows[:count]:
            x, y, w, h, invalid = (float(row[0]), float(row[1]), float(row[2]), float(row[3]), row[7] == "1")
            boxes.append(_box("face", x, y, w, h, invalid or h < SMALLEST_FACE_PX))
        faces[name] = boxes
    return faces


def read_mot(sequence: Path, step: int) -> dict[str, list[dict]]:
    """Frame image path (relative to the sequence) -> its pedestrian boxes, every `step`-th frame."""
    frames: dict[int, list[dict]] = defaultdict(list)
    for line in (sequence / "gt" / "gt.txt").read_text().splitlines():
        fields = [float(value) for value in line.split(",")[:9] if value.strip()]
        frame, x, y, w, h, active = int(fields[0]), *fields[2:7]
        pedestrian = len(fields) < 8 or fields[7] in (-1, 1)
        if active and pedestrian:
            frames[frame].append(_box("person", x, y, w, h, False))
    images = sorted((sequence / "img1").glob("*.jpg"))
    return {f"img1/{image.name}": frames.get(int(image.stem), []) for image in images[::step]}


def write_set(about: dict[str, str], label: str, root: Path, boxes: dict[str, list[dict]], out: Path) -> int:
    """Copy the images into OUT/images and write OUT/annotations.json (`about`: its source and
    licence); returns the image count."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for relative, found in boxes.items():
        stored = relative.replace("/", "__")
        shutil.copyfile(root / relative, out / "images" / stored)
        with Image.open(out / "images" / stored) as picture:
            width, height = picture.size
        images.append({"file": f"images/{stored}", "width": width, "height": height, "boxes": found})
    content = {"dataset": out.name, **about, "classes": [label], "images": images}
    (out / "annotations.json").write_text(json.dumps(content, indent=1))
    return len(images)


def _wider(args: argparse.Namespace) -> int:
    faces = read_wider(args.ground_truth)
    events = {event.strip() for event in args.events.split(",") if event.strip()}
    chosen = sorted(name for name in faces if not events or name.split("/")[0].split("--", 1)[-1] in events)
    if args.count and args.count < len(chosen):
        chosen = sorted(random.Random(args.seed).sample(chosen, args.count))
    about = {
        "source": f"WIDER FACE {args.ground_truth.name}, events {args.events or 'all'}, seed {args.seed}",
        "license": "WIDER FACE (Yang et al., CVPR 2016): non-commercial research purposes only",
    }
    written = write_set(
        about,
        "face",
        args.images,
        {name: faces[name] for name in chosen},
        args.out,
    )
    sys.stdout.write(f"{written} images, {sum(len(faces[n]) for n in chosen)} faces in {args.out}\n")
    return 0


def _mot(args: argparse.Namespace) -> int:
    persons = read_mot(args.sequence, args.step)
    about = {"source": f"MOTChallenge, {args.sequence.name}, every {args.step}", "license": "CC BY-NC-SA 3.0"}
    written = write_set(
        about,
        "person",
        args.sequence,
        persons,
        args.out,
    )
    sys.stdout.write(f"{written} images, {sum(map(len, persons.values()))} persons in {args.out}\n")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `datasets` on the CLI."""
    command = commands.add_parser(
        "datasets",
        help="turn WIDER FACE or a MOTChallenge sequence into an annotated set for `anonymizer eval`",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = command.add_subparsers(dest="dataset_kind", required=True)
    wider = kinds.add_parser("wider", help="WIDER FACE: its images folder and its ground-truth text file")
    wider.add_argument("images", type=Path, help="WIDER_train/images (or WIDER_val/images)")
    wider.add_argument("ground_truth", type=Path, help="wider_face_split/wider_face_train_bbx_gt.txt (or _val_)")
    wider.add_argument("out", type=Path, help="the folder to write annotations.json and images/ into")
    wider.add_argument("--events", default="", help="comma-separated event names, e.g. Interview,Dancing (default all)")
    wider.add_argument("--count", type=int, default=0, help="draw this many images at random (default: all)")
    wider.add_argument("--seed", type=int, default=0, help="the draw's seed (default 0)")
    wider.set_defaults(handler=_wider)
    mot = kinds.add_parser("mot", help="a MOTChallenge sequence folder (img1/, gt/gt.txt)")
    mot.add_argument("sequence", type=Path, help="e.g. MOT15/train/TUD-Campus")
    mot.add_argument("out", type=Path, help="the folder to write annotations.json and images/ into")
    mot.add_argument("--step", type=int, default=1, help="every n-th frame (default every frame)")
    mot.set_defaults(handler=_mot)
