"""Tracks without a click: detectors, and the policy that turns their detections into objects.

``detections`` says what a detector returns and how boxes compare; ``policy`` decides, after each
detector run, which detections start objects, which objects they keep alive or re-prompt, and
which objects end (and why); ``detectors`` loads a detector by name (the built-in ones in
``coco``, ``owl`` and ``faces``) or by import path. Nothing here touches a tracker or a stream:
``live/auto.py`` runs the detector beside a stream and applies the policy's plans.
"""
