"""Model card: what a checkpoint was trained on and what it expects, checked before it drives a robot.

A checkpoint's card.yaml travels with its weights and ONNX file. The policy node loads it first and
refuses to start when the card disagrees with its own configuration (another base frame, point count,
horizon, step duration, action layout, camera set or point-cloud crop), because such a model would run and
output plausible-looking but wrong targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flow2one import spec
from flow2one.fileio import write_text_atomic
from flow2one.perception.crop import CloudCrop
from flow2one.yamlio import load_yaml

CARD_FILE = "card.yaml"
POLICY_KINDS = ("teacher", "student", "l1flow", "regression")
# dtype of every model input/output, by name (the export form's argument names).
IO_DTYPES: dict[str, str] = {
    "points": "float32", "points_prev": "float32", "proprio": "float32", "rgb": "uint8", "depth": "float32",
    "noise": "float32", "actions": "float32",
}
INPUT_ORDER = ("points", "points_prev", "proprio", "rgb", "depth", "noise")  # the policy's export_forward order
REQUIRED_INPUTS = ("noise",)


class CardError(ValueError):
    """A card is malformed or disagrees with the configuration it is loaded into."""


@dataclass(frozen=True)
class ModelCard:
    """Shapes are per sample (no batch axis); the batch axis is always first and free."""

    name: str
    kind: str  # policy kind: teacher | student | l1flow | regression
    trained_on: str  # dataset and task description, free text
    inputs: dict[str, tuple[int, ...]]  # e.g. points: (4096, 3), proprio: (10,), noise: (32, 10)
    outputs: dict[str, tuple[int, ...]]  # actions: (32, 10)
    action_names: tuple[str, ...]
    horizon: int
    dt: float
    base_frame: str
    normalizer: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # {key: {stat: values}}
    cameras: tuple[str, ...] = ()  # view order of rgb/depth inputs
    history_steps: int = 0  # points_prev is the cloud history_steps * dt before points
    motion_steps: int = 0  # > 0: proprio is followed by its change over motion_steps * dt (width doubles)
    # The crop box and voxel size of the training clouds (CloudCrop.to_dict()); {}: not recorded.
    cloud_crop: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    parameters: int = 0
    created_utc: str = ""
    export: dict[str, Any] = field(default_factory=dict)  # filled by `flow2one export`
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept so a re-save loses nothing

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in POLICY_KINDS:
            problems.append(f"kind {self.kind!r} is not one of {POLICY_KINDS}")
        unknown = sorted(set(self.inputs) - set(IO_DTYPES))
        if unknown:
            problems.append(f"unknown inputs {unknown}; known: {sorted(IO_DTYPES)}")
        missing = [k for k in REQUIRED_INPUTS if k not in self.inputs]
        if missing:
            problems.append(f"inputs lack {missing}")
        a = len(self.action_names)
        if self.horizon < 1 or not (self.dt > 0 and math.isfinite(self.dt)):
            problems.append(f"horizon {self.horizon} and dt {self.dt} must be positive")
        if self.outputs.get("actions") != (self.horizon, a):
            problems.append(f"outputs.actions {self.outputs.get('actions')} != (horizon, actions) "
                            f"{(self.horizon, a)}")
        if "noise" in self.inputs and self.inputs["noise"] != (self.horizon, a):
            problems.append(f"inputs.noise {self.inputs['noise']} != (horizon, actions) {(self.horizon, a)}")
        pts = self.inputs.get("points")
        if pts is not None and (len(pts) != 2 or pts[1] != 3 or pts[0] < 1):
            problems.append(f"inputs.points {pts} is not (N, 3)")
        if ("points_prev" in self.inputs) != (self.history_steps > 0) or (
                "points_prev" in self.inputs and self.inputs["points_prev"] != pts):
            problems.append(f"inputs.points_prev {self.inputs.get('points_prev')} must equal inputs.points {pts} "
                            f"exactly when history_steps ({self.history_steps}) > 0")
        if "proprio" in self.inputs and self.inputs["proprio"] != (spec.PROPRIO_DIM * (2 if self.motion_steps else 1),):
            problems.append(f"inputs.proprio {self.inputs['proprio']} must be ({spec.PROPRIO_DIM},), or "
                            f"({2 * spec.PROPRIO_DIM},) exactly when motion_steps ({self.motion_steps}) > 0")
        if self.motion_steps < 0 or self.history_steps < 0:
            problems.append(f"history_steps ({self.history_steps}) and motion_steps ({self.motion_steps}) must be >= 0")
        views = [self.inputs[k][0] for k in ("rgb", "depth") if k in self.inputs]
        if any(v != len(self.cameras) for v in views):
            problems.append(f"image inputs have {views} views but cameras lists {list(self.cameras)}")
        if self.cloud_crop:
            try:
                CloudCrop.from_params(self.cloud_crop, "cloud_crop")
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise CardError(f"model card '{self.name}': " + "; ".join(problems))

    @property
    def n_points(self) -> int:
        return self.inputs["points"][0]

    @property
    def crop(self) -> CloudCrop | None:
        return CloudCrop.from_params(self.cloud_crop, "cloud_crop") if self.cloud_crop else None

    @property
    def image_inputs(self) -> tuple[str, ...]:
        return tuple(k for k in ("rgb", "depth") if k in self.inputs)

    def input_names(self) -> tuple[str, ...]:
        """The export form's argument order: points, [points_prev], proprio, [rgb], [depth], noise."""
        return tuple(k for k in INPUT_ORDER if k in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        d["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        d["outputs"] = {k: list(v) for k, v in self.outputs.items()}
        d["action_names"] = list(self.action_names)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "card") -> ModelCard:
        if not isinstance(d.get("inputs"), Mapping):
            raise CardError(f"{source}: inputs must map each input name to its shape; this card lacks the "
                            "runtime fields: complete it with `flow2one export MODEL_DIR` (see models/README.md)")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        try:
            return cls(
                name=str(d["name"]),
                kind=str(d["kind"]),
                trained_on=str(d["trained_on"]),
                inputs={str(k): tuple(int(x) for x in v) for k, v in d["inputs"].items()},
                outputs={str(k): tuple(int(x) for x in v) for k, v in d["outputs"].items()},
                action_names=tuple(str(x) for x in d["action_names"]),
                horizon=int(d["horizon"]),
                dt=float(d["dt"]),
                base_frame=str(d["base_frame"]),
                normalizer={str(k): {str(s): [float(x) for x in vals] for s, vals in v.items()}
                            for k, v in (d.get("normalizer") or {}).items()},
                cameras=tuple(str(x) for x in d.get("cameras") or ()),
                history_steps=int(d.get("history_steps", 0)),
                motion_steps=int(d.get("motion_steps", 0)),
                cloud_crop=dict(d.get("cloud_crop") or {}),
                notes=str(d.get("notes", "")),
                parameters=int(d.get("parameters", 0)),
                created_utc=str(d.get("created_utc", "")),
                export=dict(d.get("export") or {}),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except KeyError as exc:
            raise CardError(f"{source}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CardError):
                raise
            raise CardError(f"{source}: malformed field: {exc}") from exc

    def check(self, base_frame: str = spec.BASE_FRAME, n_points: int = spec.N_POINTS,
              cameras: Sequence[str] | None = None, action_names: Sequence[str] = spec.ACTION_NAMES,
              horizon: int = spec.HORIZON, dt: float = spec.STEP_DT, crop: CloudCrop | None = None) -> None:
        """Raise CardError listing every way this card disagrees with the loading configuration. `crop`: the
        point-cloud pipeline's (None: not known here); a card that does not record its crop passes."""
        problems = []
        if self.base_frame != base_frame:
            problems.append(f"base_frame {self.base_frame!r} != configured {base_frame!r}")
        if "points" in self.inputs and self.n_points != n_points:
            problems.append(f"model takes {self.n_points} points, configured clouds have {n_points}")
        if tuple(self.action_names) != tuple(action_names):
            problems.append(f"action_names {list(self.action_names)} != {list(action_names)}")
        if self.horizon != horizon:
            problems.append(f"horizon {self.horizon} != {horizon}")
        if not math.isclose(self.dt, dt, rel_tol=1e-6):
            problems.append(f"dt {self.dt} != {dt}")
        if crop is not None and "points" in self.inputs and self.crop is not None and not self.crop.same(crop):
            problems.append(f"trained on clouds cropped to {self.crop}, the point-cloud pipeline crops to {crop}")
        if self.image_inputs and cameras is not None and tuple(cameras) != self.cameras:
            problems.append(f"model needs images from cameras {list(self.cameras)} (in this order), "
                            f"configured cameras are {list(cameras)}")
        if problems:
            raise CardError(f"model '{self.name}' does not fit this configuration: " + "; ".join(problems))


def save_card(model_dir: str | Path, card: ModelCard) -> Path:
    path = Path(model_dir) / CARD_FILE
    write_text_atomic(path, yaml.safe_dump(card.to_dict(), sort_keys=False, default_flow_style=None))
    return path


def load_card(model_dir: str | Path) -> ModelCard:
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise CardError(f"{path}: no model card; every model directory needs one (see models/README.md)")
    try:
        data = load_yaml(path, "model card")
    except ValueError as exc:
        raise CardError(str(exc)) from exc
    return ModelCard.from_dict(data, source=str(path))


def normalizer_stats(state_dict: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """{module prefix: {center, half_range}} of every normaliser buffer in a policy's state dict.

    The statistics live in the weights (flow2one/data/normalize.py); the card repeats them so a reader
    sees the ranges a model was trained on without loading it.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for key, value in state_dict.items():
        prefix, _, stat = key.rpartition(".")
        if stat in ("center", "half_range"):
            out.setdefault(prefix, {})[stat] = [float(x) for x in value.reshape(-1).tolist()]
    return out


def policy_io(policy: Any) -> dict[str, tuple[int, ...]]:
    """Per-sample input shapes of a flow2one.policy module's export form."""
    cfg = policy.cfg
    enc = cfg.encoder
    shapes = {"points": (spec.N_POINTS, 3), "points_prev": (spec.N_POINTS, 3), "proprio": (enc.proprio_in,),
              "rgb": (enc.n_views, *enc.image_size, 3), "depth": (enc.n_views, *enc.image_size),
              "noise": (cfg.horizon, cfg.action_dim)}
    unknown = [k for k in policy.export_input_names if k not in shapes]
    if unknown:
        raise CardError(f"{type(policy).__name__} takes inputs {unknown} no robot observation provides "
                        f"(a vector-encoder model is not deployable)")
    return {k: shapes[k] for k in policy.export_input_names}


def card_for_policy(policy: Any, name: str, trained_on: str, cameras: Sequence[str] = (), notes: str = "",
                    **fields: Any) -> ModelCard:
    """The card of a flow2one.policy module; `fields` override the rest (dt, base_frame, ...)."""
    inputs = policy_io(policy)
    n_views = policy.cfg.encoder.n_views
    if any(k in inputs for k in ("rgb", "depth")):
        cameras = tuple(cameras) or tuple(f"view{i}" for i in range(n_views))
    else:
        cameras = ()
    values = dict(name=name, kind=policy.cfg.kind, trained_on=trained_on, inputs=inputs,
                  outputs={"actions": (policy.cfg.horizon, policy.cfg.action_dim)}, action_names=spec.ACTION_NAMES,
                  horizon=policy.cfg.horizon, dt=spec.STEP_DT, base_frame=spec.BASE_FRAME,
                  normalizer=normalizer_stats(policy.state_dict()), cameras=cameras,
                  history_steps=getattr(policy.cfg.encoder, "history_steps", 0),
                  motion_steps=getattr(policy.cfg.encoder, "motion_steps", 0), notes=notes,
                  parameters=sum(p.numel() for p in policy.parameters()))
    return ModelCard(**{**values, **fields})


def complete_card(model_dir: str | Path, policy: Any) -> ModelCard:
    """The full card of a checkpoint: shapes and statistics from its module, the rest kept from its
    card.yaml (name, trained_on, cameras, notes, dt, base frame, ... as the trainer recorded them)."""
    path = Path(model_dir) / CARD_FILE
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    keep = {k: raw[k] for k in ("dt", "base_frame", "created_utc", "export", "cloud_crop") if k in raw}
    extra = {k: v for k, v in raw.items() if k not in ModelCard.__dataclass_fields__ and k != "action_dim"}
    card = card_for_policy(policy, name=str(raw.get("name") or Path(model_dir).resolve().name),
                           trained_on=str(raw.get("trained_on") or "not recorded"),
                           cameras=tuple(raw.get("cameras") or ()), notes=str(raw.get("notes") or ""),
                           extra=extra, **keep)
    return card


def example_inputs(card: ModelCard, batch: int, candidates: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the card's shapes on plausible scales (a tabletop cloud, metres, 8-bit images);
    noise (batch, candidates, H, A)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in card.input_names():
        shape = (batch, candidates, *card.inputs[name]) if name == "noise" else (batch, *card.inputs[name])
        if name in ("points", "points_prev"):
            arr = rng.uniform([0.2, -0.4, 0.0], [0.8, 0.4, 0.4], size=shape)
        elif name == "proprio":
            arr = rng.normal(0.0, 0.3, size=shape)
        elif name == "rgb":
            arr = rng.integers(0, 256, size=shape)
        elif name == "depth":
            arr = rng.uniform(0.3, 1.5, size=shape)
        else:  # noise
            arr = rng.standard_normal(shape)
        out[name] = arr.astype(IO_DTYPES[name])
    return out
