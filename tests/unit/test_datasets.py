"""`anonymizer datasets`: the publishers' own annotation formats (WIDER FACE's ground-truth text,
MOTChallenge's gt.txt) read into the annotations.json that `anonymizer eval` loads."""

import json

import numpy as np
from PIL import Image

from anonymizer_tools.cli import main
from anonymizer_tools.evaluation import load_dataset

# Two images as wider_face_train_bbx_gt.txt lists them: one with three faces (one invalid, one
# 6 px high), one with none (a row of zeros follows its count).
WIDER_GT = "".join(
    f"{line}\n"
    for line in [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "3",
        "449 330 122 149 0 0 0 0 0 0 ",  # the official file ends box rows with a space
        "10 20 30 6 2 0 0 0 0 0 ",
        "100 100 40 50 0 0 0 1 0 0 ",
        "2--Demonstration/2_Demonstration_Political_Rally_2_444.jpg",
        "0",
        "0 0 0 0 0 0 0 0 0 0 ",
    ]
)


def picture(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)


def test_wider_faces_become_boxes_with_the_small_and_invalid_ones_ignored(tmp_path):
    images = tmp_path / "WIDER_train" / "images"
    for name in (
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "2--Demonstration/2_Demonstration_Political_Rally_2_444.jpg",
    ):
        picture(images / name, (1024, 768))
    (tmp_path / "gt.txt").write_text(WIDER_GT)
    out = tmp_path / "wider"
    assert main(["datasets", "wider", str(images), str(tmp_path / "gt.txt"), str(out), "--events", "Parade"]) == 0
    content = load_dataset(out, None)
    assert [image["file"] for image in content["images"]] == ["images/0--Parade__0_Parade_marchingband_1_849.jpg"]
    boxes = content["images"][0]["boxes"]
    assert boxes[0] == {"label": "face", "x1": 449, "y1": 330, "x2": 571, "y2": 479, "ignore": False}
    assert [box["ignore"] for box in boxes] == [False, True, True]  # 6 px high; marked invalid
    assert (content["images"][0]["width"], content["images"][0]["height"]) == (1024, 768)
    assert (out / content["images"][0]["file"]).is_file()


def test_a_mot_sequence_keeps_the_active_pedestrians_of_every_nth_frame(tmp_path):
    sequence = tmp_path / "TUD-Campus"
    for frame in range(1, 5):
        picture(sequence / "img1" / f"{frame:06d}.jpg")
    rows = [
        "1,1,10,20,30,60,1,-1,-1,-1",  # MOT15: no class column, -1 after the box
        "1,2,50,20,30,60,0,-1,-1,-1",  # inactive: left out
        "3,1,12,20,30,60,1,-1,-1,-1",
        "2,1,11,20,30,60,1,-1,-1,-1",  # an odd frame, skipped with --step 2
    ]
    (sequence / "gt").mkdir()
    (sequence / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "mot"
    assert main(["datasets", "mot", str(sequence), str(out), "--step", "2"]) == 0
    content = json.loads((out / "annotations.json").read_text())
    assert [len(image["boxes"]) for image in content["images"]] == [1, 1]
    assert content["images"][0]["boxes"][0] == {
        "label": "person",
        "x1": 10,
        "y1": 20,
        "x2": 40,
        "y2": 80,
        "ignore": False,
    }
    assert content["classes"] == ["person"] and len(content["images"]) == 2  # frames 1 and 3
