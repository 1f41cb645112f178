"""The image pipeline: localise every planned entry with one inference call per (server, model),
all concurrently, then hide each entry's regions in order.

Fail closed: localisation either returns the results of every call or raises, so an image is
never anonymised with some of its entries missing.
"""

import asyncio

import cv2
import numpy as np

from anonymization_api.configuration import Plan, PlannedEntry
from anonymization_api.inference import InferenceRouter
from anonymization_api.regions import Region, RegionStyle, apply_regions, box_regions, mask_regions
from anonymization_api.schemas import EntryAudit, RegionAudit
from anonymization_api.techniques import TECHNIQUES
from anonymizer_shared.images import shrink
from anonymizer_shared.wire import Task

Results = dict[tuple[str, str, str], list[np.ndarray]]


async def localise(
    plan: Plan,
    images: list[np.ndarray],
    router: InferenceRouter,
    detection_size: tuple[int, int] | None = None,
) -> Results:
    """Run every call the plan needs on images (H, W, 3) of one size; per call, one result per image,
    in the images' own pixels. With `detection_size` the servers see copies shrunk to fit it."""
    batch = await asyncio.to_thread(_detection_batch, images, detection_size)
    by_key = {entry.call_key: entry for entry in plan.entries}
    keys = list(plan.calls)
    answers = await asyncio.gather(*(router.infer(by_key[key], batch, plan.calls[key]) for key in keys))
    height, width = images[0].shape[:2]
    return _to_image_size(plan, dict(zip(keys, answers, strict=True)), batch.shape[1:3], height, width)


def _detection_batch(images: list[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    shrunk = [shrink_to_fit(image, size) for image in images]
    return shrunk[0][None] if len(shrunk) == 1 else np.stack(shrunk)


def shrink_to_fit(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`image` scaled down to fit within `size` (width, height), keeping its proportions; as it is
    where it fits already or no size is given. Detecting on fewer pixels is faster, and the
    inference server is sent a quarter of the bytes at half the size; small faces are lost first."""
    height, width = image.shape[:2]
    factor = detection_factor(width, height, size)
    if factor == 1:
        return image
    target = (max(1, round(width * factor)), max(1, round(height * factor)))
    return shrink(image, target)


def detection_factor(width: int, height: int, size: tuple[int, int] | None) -> float:
    """The scale (at most 1) that fits a `width` x `height` image within `size` (width, height)."""
    return 1.0 if size is None else min(1.0, size[0] / width, size[1] / height)


def _to_image_size(plan: Plan, results: Results, sent: tuple[int, ...], height: int, width: int) -> Results:
    """Results on images of `sent` (height, width) mapped to images of `height` x `width`: boxes
    scaled, label maps enlarged."""
    if tuple(sent) == (height, width):
        return results
    tasks = {entry.call_key: entry.model.task for entry in plan.entries}
    scale = np.array([width / sent[1], height / sent[0]] * 2, np.float32)
    mapped: Results = {}
    for key, per_image in results.items():
        if tasks[key] is Task.DETECTION:
            mapped[key] = [np.concatenate([found[:, :4] * scale, found[:, 4:]], axis=1) for found in per_image]
        else:
            mapped[key] = [cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST) for labels in per_image]
    return mapped


def entry_detections(entry: PlannedEntry, result: np.ndarray) -> np.ndarray:
    """The rows (N, 6) of a detection result that `entry` hides: its class, above its threshold,
    not centred in one of its keep boxes."""
    dets = _class_rows(entry, result)
    return dets[~_kept(entry, dets)]


def _class_rows(entry: PlannedEntry, result: np.ndarray) -> np.ndarray:
    dets = result[result[:, 5].astype(np.int64) == entry.class_index]
    if entry.info.score_threshold is not None:
        dets = dets[dets[:, 4] >= entry.info.score_threshold]
    return dets


def _kept(entry: PlannedEntry, dets: np.ndarray) -> np.ndarray:
    """Per row, whether its centre lies in one of the entry's keep boxes."""
    if not entry.info.keep or not len(dets):
        return np.zeros(len(dets), bool)
    keep = np.asarray(entry.info.keep, np.float32)
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    inside = (keep[:, 0] <= cx[:, None]) & (cx[:, None] <= keep[:, 2])
    inside &= (keep[:, 1] <= cy[:, None]) & (cy[:, None] <= keep[:, 3])
    return inside.any(axis=1)


def entry_mask(entry: PlannedEntry, label_map: np.ndarray) -> np.ndarray:
    """The (H, W) bool mask `entry` hides in a label map: its class, less its keep boxes."""
    mask = label_map == entry.class_index
    for x1, y1, x2, y2 in entry.info.keep:
        mask[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = False
    return mask


def manual_regions(entry: PlannedEntry, width: int, height: int) -> list[Region]:
    """The entry's hide boxes as regions: exactly the box, with the entry's soft edge."""
    if not entry.info.hide:
        return []
    rows = np.asarray([[*box, 1.0, entry.class_index] for box in entry.info.hide], np.float32)
    return box_regions(rows, RegionStyle(feather=entry.style.feather), width, height)


def hide(image: np.ndarray, entry: PlannedEntry, regions: list[Region]) -> None:
    """Apply the entry's technique and degree to `regions` of `image`, in place."""
    technique = TECHNIQUES[entry.info.anonymization_technique]
    apply_regions(image, regions, technique, entry.info.anonymization_degree, entry.options)


def _detection_audit(row: np.ndarray, hidden: list[Region], shape: str) -> RegionAudit:
    return RegionAudit(
        box=[round(float(v), 1) for v in row[:4]],
        score=round(float(row[4]), 4),
        hidden=[[r.x1, r.y1, r.x2, r.y2] for r in hidden],
        outline=[list(r.outline) for r in hidden],  # box_regions sets every outline
        shape=shape,
    )


def entry_regions(entry: PlannedEntry, result: np.ndarray, width: int, height: int) -> tuple[list[Region], EntryAudit]:
    """The regions one entry hides in one image, and their audit record."""
    regions: list[Region] = []
    audit = EntryAudit(
        entry=entry.index,
        class_name=entry.info.class_name,
        model_name=entry.model.name,
        preset=entry.info.preset,
        technique=entry.info.anonymization_technique,
        regions=[],
    )
    if entry.model.task is Task.DETECTION:
        rows = _class_rows(entry, result)
        kept = _kept(entry, rows)
        for row in rows[~kept]:
            hidden = box_regions(row[None], entry.style, width, height)
            regions.extend(hidden)
            audit.regions.append(_detection_audit(row, hidden, entry.style.shape))
        if entry.info.keep:
            audit.kept = [_detection_audit(row, [], entry.style.shape) for row in rows[kept]]
    else:
        for region in mask_regions(entry_mask(entry, result), entry.style):
            regions.append(region)
            box = [region.x1, region.y1, region.x2, region.y2]
            audit.regions.append(
                RegionAudit(box=box, hidden=[box], shape="mask", pixels=int((region.alpha >= 1).sum()))
            )
    for region in manual_regions(entry, width, height):
        regions.append(region)
        box = [region.x1, region.y1, region.x2, region.y2]
        audit.regions.append(
            RegionAudit(box=box, hidden=[box], outline=[list(region.outline)], shape="box", source="hide")
        )
    return regions, audit


def audit(plan: Plan, results: Results, index: int, width: int, height: int) -> list[EntryAudit]:
    """What `anonymise` would hide in image `index` of the batch, its pixels left alone: the answer
    to a request for the detections only."""
    return [entry_regions(entry, results[entry.call_key][index], width, height)[1] for entry in plan.entries]


def anonymise(
    image: np.ndarray, plan: Plan, results: Results, index: int, in_place: bool = False
) -> tuple[np.ndarray, list[EntryAudit]]:
    """Hide every entry's regions in image `index` of the batch; returns the image (a new one unless
    `in_place`: a request that no longer needs the original saves a copy of it) and the audit."""
    output = image if in_place else image.copy()
    height, width = image.shape[:2]
    audit = []
    for entry in plan.entries:
        regions, found = entry_regions(entry, results[entry.call_key][index], width, height)
        hide(output, entry, regions)
        audit.append(found)
    return output, audit
