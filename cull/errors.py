"""The one exception tree of cull. Library code raises these; only the CLI exits."""


class CullError(Exception):
    """Base of every error cull raises on purpose."""


class UnreadableImage(CullError):
    """A file could not be decoded as a photo (corrupt, truncated, not an image, no permission...)."""


class ModelError(CullError):
    """The ONNX model or its card is missing, corrupt or inconsistent."""


class DatasetError(CullError):
    """A labelled folder for evaluation or training is missing or malformed."""


class WorkerError(CullError):
    """Worker processes cannot run at all (they die while starting)."""
