"""A stream's video: the displayed frame (``frame``), drawing masks (``overlay``), one encoder per
stream and codec (``encoder``, ``codecs``) reading a ``feed``, the packets kept for viewers
(``packets``) and each viewer's WebRTC track (``track``)."""
