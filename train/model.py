"""The focus networks (TensorFlow / Keras; only the [train] extra needs them).

``seed`` is the source study's network exactly: three Conv2D(k×k)+ReLU+MaxPool blocks, Flatten,
Dense 128 ReLU, Dropout 0.5, Dense 1 sigmoid.  ``focus`` (shipped) is the same trunk with a
second head naming the blur kind (sharp / defocus / motion) for reports.

``filters`` slims the trunk (the seed's 32/64/64 is the baseline; 16/32/32 costs about a third of
it per patch) and ``stride=2`` makes the first convolution strided (about a quarter of the work
again, at the price of the finest sampling); ``separable`` makes the second and third convolutions
depthwise-separable (a 3x3 filter per channel, then a 1x1 mix: a fraction of the multiply-adds of a
full convolution at the same width), while the first, which sees the pixels, stays a full
convolution at full resolution. The head stays Dense 128 + Dropout 0.5.
"""

from __future__ import annotations

from typing import Any

VARIANTS = ("seed", "focus")
FILTERS = (32, 64, 64)  # the seed's trunk
DENSE = 128
DROPOUT = 0.5


def build_model(
    variant: str = "focus", kernel: int = 3, patch_size: int = 64, filters: tuple[int, ...] = FILTERS, stride: int = 1,
    separable: bool = False,
):  # -> keras.Model
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    inputs = keras.Input((patch_size, patch_size, 1), name="patches")
    if len(filters) != 3 or min(filters) < 1 or stride not in (1, 2):
        raise ValueError(f"need three positive filter counts and stride 1 or 2, got {filters}, {stride}")
    x = inputs
    for i, width in enumerate(filters):
        if separable and i > 0:
            x = layers.SeparableConv2D(int(width), kernel, activation="relu")(x)
        else:
            x = layers.Conv2D(int(width), kernel, strides=stride if i == 0 else 1, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(DENSE, activation="relu")(x)
    x = layers.Dropout(DROPOUT)(x)
    outputs = {"p_sharp": layers.Dense(1, activation="sigmoid", name="p_sharp")(x)}
    if variant == "focus":
        outputs["kind"] = layers.Dense(3, activation="softmax", name="kind")(x)
    return keras.Model(inputs, outputs, name=f"{variant}_k{kernel}")


def architecture(
    variant: str, kernel: int, filters: tuple[int, ...] = FILTERS, stride: int = 1, separable: bool = False,
    members: int = 1,
) -> dict[str, object]:
    """The card's description of a network built by build_model (``members`` > 1: the mean of that
    many such networks, trained alike from different seeds; train/ensemble.py)."""
    arch: dict[str, object] = {"variant": variant, "kernel": kernel, "filters": [int(f) for f in filters],
                               "dense": DENSE, "dropout": DROPOUT}
    if stride != 1:
        arch["first_stride"] = stride
    if separable:
        arch["separable"] = True  # convolutions 2 and 3 depthwise-separable
    if members > 1:
        arch["ensemble"] = members
    return arch


def architecture_args(arch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``architecture`` that a card's description was written from (its inverse)."""
    return {"variant": str(arch["variant"]), "kernel": int(arch["kernel"]), "filters": tuple(int(f) for f in arch["filters"]),
            "stride": int(arch.get("first_stride", 1)), "separable": bool(arch.get("separable", False)),
            "members": int(arch.get("ensemble", 1))}
