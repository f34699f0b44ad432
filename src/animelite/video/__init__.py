"""Video: clips in, stylized clips out, with their sound (PyAV in-process), and one frame at a time for live feeds.

``stylize_video(src, dst, stylizer=...)`` runs a whole clip (:mod:`.driver`);
:class:`FrameStream` stylizes a live feed frame by frame; :mod:`.io` probes,
decodes and encodes; :mod:`.temporal` keeps the frames steady.
"""

from __future__ import annotations

from .driver import (STAGES, FrameStream, VideoCancelled, VideoProgress, VideoSummary, stylize_video,
                     video_format_for)
from .io import VideoError, VideoInfo, is_video, probe_video

__all__ = ["STAGES", "FrameStream", "VideoCancelled", "VideoError", "VideoInfo", "VideoProgress", "VideoSummary",
           "is_video", "probe_video", "stylize_video", "video_format_for"]
