"""The focus networks (TensorFlow / Keras; only the [train] extra needs them).

``seed`` is the source study's network exactly: three Conv2D(k×k)+ReLU+MaxPool blocks, Flatten,
Dense 128 ReLU, Dropout 0.5, Dense 1 sigmoid.  ``focus`` (shipped) is the same trunk with a
second head naming the blur kind (sharp / defocus / motion) for reports.
"""

from __future__ import annotations

VARIANTS = ("seed", "focus")
FILTERS = (32, 64, 64)


def build_model(variant: str = "focus", kernel: int = 3, patch_size: int = 64):  # -> keras.Model
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    inputs = keras.Input((patch_size, patch_size, 1), name="patches")
    x = inputs
    for filters in FILTERS:
        x = layers.Conv2D(filters, kernel, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = {"p_sharp": layers.Dense(1, activation="sigmoid", name="p_sharp")(x)}
    if variant == "focus":
        outputs["kind"] = layers.Dense(3, activation="softmax", name="kind")(x)
    return keras.Model(inputs, outputs, name=f"{variant}_k{kernel}")
