"""Expressions in video files: frames decoded in the background (reader), faces followed from frame to frame
(tracker), optional smoothing of each face's probabilities (smoothing), one row per face per frame written as it
goes and read back for ``resume=true`` (rows), the loop that ties them together (analysis), the optional annotated
copy (annotate) and timeline figure (timeline), and a batch of files as ``fer.predict`` runs it (batch).
"""
