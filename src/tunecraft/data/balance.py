"""Class imbalance: class weights for a weighted cross-entropy (sklearn's `compute_class_weight`)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from ..errors import ConfigError


def class_weights(setting: str | dict[str, float] | None, labels: list[int], names: list[str]) -> torch.Tensor | None:
    """One weight per class id (the order of `names`), or None for unweighted. `balanced`: sklearn's
    n_samples / (n_classes * count) over the training labels `labels` (so the weights of all training examples
    sum to n_samples); a class with no training example weighs 1. A mapping names labels; the others weigh 1."""
    if setting is None:
        return None
    weights = np.ones(len(names))
    if setting == "balanced":
        present = np.unique(np.asarray(labels, dtype=np.int64))
        weights[present] = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
        return torch.tensor(weights, dtype=torch.float32)
    index = {name: i for i, name in enumerate(names)}
    for name, weight in setting.items():
        if name not in index:
            raise ConfigError(f"train.class_weights.{name}: unknown label '{name}'; the training data has: "
                              f"{', '.join(names)}")
        weights[index[name]] = weight
    return torch.tensor(weights, dtype=torch.float32)
