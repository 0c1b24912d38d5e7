"""A real RTSP server on 127.0.0.1 serving an MP4 clip, for tests and benchmarks.

Run by the *system* Python (Debian's python3-gi with gir1.2-gst-rtsp-server-1.0), not the venv:
    /usr/bin/python3 tests/rtsp_server.py PORT CLIP
Each client gets its own session playing the clip in real time from the start. Prints "ready PORT".
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, clip = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( filesrc location="{clip}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
)
factory.set_shared(False)
server.get_mount_points().add_factory("/clip", factory)
server.attach(None)
print("ready", server.get_bound_port(), flush=True)
GLib.MainLoop().run()
