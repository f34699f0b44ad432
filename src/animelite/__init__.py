"""animelite: photo-to-anime style transfer (AnimeGANv2/v3) that runs fast on any CPU.

>>> import animelite
>>> anime = animelite.stylize("photo.jpg", style="hayao", size=512)   # doctest: +SKIP
>>> anime.save("anime.png")                                          # doctest: +SKIP
"""

from .errors import AnimeliteError, DownloadError, ImageError, ModelError, StyleError
from .pipeline import Result, Stylizer, stylize
from .styles import CATALOG, DEFAULT_STYLE

__version__ = "0.1.0"

__all__ = [
    "AnimeliteError", "DownloadError", "ImageError", "ModelError", "StyleError",
    "Result", "Stylizer", "stylize", "CATALOG", "DEFAULT_STYLE", "__version__",
]
