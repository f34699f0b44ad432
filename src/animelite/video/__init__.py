"""Video: clips in, steady anime clips out (the drivers layer, built on the pipeline).

Placeholder in this branch: the video I/O and driver own the real package
facade; the temporal-stability part lives in :mod:`animelite.video.temporal`
(frame to frame) and :mod:`animelite.video.context` (the per-frame statistics
of a style, split out of its graph so they can be smoothed over time).
"""
