"""A live stream, from camera frame to what is published of it: ``stream`` (one camera with its
feeder and display), ``display`` (every frame with the newest masks carried onto it, along
``motion``), ``pipeline`` (every stream, scheduled in batched rounds on the ``engine``, which owns
the trackers and the one inference thread), ``landing`` (where a click lands), ``status`` (a
stream's figures) and ``serving`` (what a server serves: this pipeline, or a cluster's front)."""
