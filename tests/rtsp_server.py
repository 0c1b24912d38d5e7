"""A real RTSP server on 127.0.0.1 (GStreamer's), for tests and benchmarks, in one of two modes:

    /usr/bin/python3 tests/rtsp_server.py PORT CLIP           serves the MP4 CLIP on /clip
    /usr/bin/python3 tests/rtsp_server.py PORT --record OUT   takes a published stream on /live

Run by the *system* Python (Debian's python3-gi with gir1.2-gst-rtsp-server-1.0), not the venv.
Serving, each client gets its own session playing the clip in real time from the start. Recording
(ANNOUNCE and RECORD, as go2rtc, mediamtx or an NVR takes a camera), what arrives is written to
the MPEG-TS file OUT, one session after another. Prints "ready PORT" once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, target = sys.argv[1], sys.argv[-1]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
if sys.argv[2] == "--record":
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_launch(f'( rtph264depay name=depay0 ! h264parse ! mpegtsmux ! filesink location="{target}" )')
    factory.set_latency(0)
    mount = "/live"
else:
    pipeline = f'( filesrc location="{target}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
    factory.set_launch(pipeline)
    factory.set_shared(False)
    mount = "/clip"
server.get_mount_points().add_factory(mount, factory)
server.attach(None)
print("ready", server.get_bound_port(), flush=True)
GLib.MainLoop().run()
