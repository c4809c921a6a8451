"""cull: find the out-of-focus photos in a photo library.

Pipeline, one module per stage: discover -> decode -> patches -> score -> decide -> (xmp / move / report).
"""

__version__ = "0.1.0"
