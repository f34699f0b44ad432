"""animelite: photo-to-anime style transfer (AnimeGANv2/v3) that runs fast on any CPU.

>>> import animelite
>>> anime = animelite.stylize("photo.jpg", style="hayao", size=512)   # doctest: +SKIP
>>> anime.save("anime.png")                                          # doctest: +SKIP
>>> animelite.stylize_video("clip.mp4", "anime.mp4", style="hayao")  # doctest: +SKIP
"""

from .errors import AnimeliteError, DownloadError, ImageError, ModelError, StyleError
from .pipeline import Result, Stylizer, stylize
from .styles import CATALOG, DEFAULT_STYLE

__version__ = "0.1.0"

#: keyword arguments of :func:`stylize_video` that go to the video driver; the rest build the Stylizer
_VIDEO_KEYS = ("temporal", "crf", "preset", "keep_size", "max_duration", "frames_dir", "overwrite", "progress",
               "cancel", "notice")


def stylize_video(src, dst, style: str = DEFAULT_STYLE, *, workers: int | None = None, **options):
    """Stylize the clip *src* into *dst* (.mp4 or .webm) and return an :class:`animelite.video.VideoSummary`.

    Video options (``temporal``, ``crf``, ``preset``, ``keep_size``,
    ``max_duration``, ``frames_dir``, ``overwrite``, ``progress``, ``cancel``,
    ``notice``) go to :func:`animelite.video.stylize_video`; the others
    (``size``, ``faces``, ``precision``, ``threads``, ``models_dir``, ...) build
    the :class:`Stylizer`, with one session per worker (``workers``, default
    one per core) and one thread each unless ``threads`` says otherwise.
    """
    from .engine import default_threads
    from .video import stylize_video as run

    video = {k: options.pop(k) for k in _VIDEO_KEYS if k in options}
    workers = workers or default_threads()
    options.setdefault("threads", 1)
    if video.get("notice") is not None:
        options.setdefault("notice", video["notice"])
    stylizer = Stylizer(style, sessions=workers, **options)
    return run(src, dst, stylizer=stylizer, workers=workers, **video)


__all__ = [
    "AnimeliteError", "DownloadError", "ImageError", "ModelError", "StyleError",
    "Result", "Stylizer", "stylize", "stylize_video", "CATALOG", "DEFAULT_STYLE", "__version__",
]
