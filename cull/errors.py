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


class MoveError(CullError):
    """A move or undo cannot start (bad target, nothing to undo ...)."""


class NotWritable(CullError):
    """A file cull would rewrite is not ours to change (read-only, another user's, folder locked)."""


class SidecarRefused(CullError):
    """Something named like an XMP sidecar is not a regular file or is too large to read safely."""
