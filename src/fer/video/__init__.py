"""Expressions in video files, one module a step: frames decoded in the background (reader), each stage of the
pipeline in a thread of its own (pipeline), faces followed from frame to frame (tracker), optional smoothing of
each face's probabilities (smoothing), one row per face per frame written as it goes and read back for
``resume=true`` (rows), the loop that ties them together (analysis), the optional annotated copy (annotate) and
timeline figure (timeline), and the videos of a ``fer.predict`` run (batch).
"""
