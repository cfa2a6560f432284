"""Pixels and faces: decoding any image to 48x48 grayscale faces (:mod:`fer.vision.images`) and
finding faces in photos (:mod:`fer.vision.faces`). The bottom layer: it imports no other part of fer."""
