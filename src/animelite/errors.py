"""Exceptions that carry a message a person can act on.

Every error the CLI, the Python API or the server reports derives from
:class:`AnimeliteError`; the CLI prints ``str(err)`` without a traceback.
"""


class AnimeliteError(Exception):
    """Base class: the message names the problem (file, size, format, style)."""


class ImageError(AnimeliteError):
    """An input image could not be read, or is too large, or an output could not be written."""


class ModelError(AnimeliteError):
    """A model file is missing, corrupt, of an unknown format, or cannot be run."""


class StyleError(AnimeliteError):
    """An unknown style name or an unusable catalog entry."""


class DownloadError(ModelError):
    """A model could not be fetched (offline, HTTP error) or failed its checksum."""
