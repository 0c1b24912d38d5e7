"""A real RTSP server in record mode on 127.0.0.1: it takes a published H.264 stream (ANNOUNCE and
RECORD, as go2rtc, mediamtx or an NVR does) and writes what arrives to an MPEG-TS file.

Run by the *system* Python (Debian's python3-gi with gir1.2-gst-rtsp-server-1.0), not the venv:
    /usr/bin/python3 tests/rtsp_record_server.py PORT OUT.ts
Prints "ready PORT" once it listens, on /live.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, out = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
factory.set_launch(f'( rtph264depay name=depay0 ! h264parse ! mpegtsmux ! filesink location="{out}" )')
factory.set_latency(0)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", server.get_bound_port(), flush=True)
GLib.MainLoop().run()
