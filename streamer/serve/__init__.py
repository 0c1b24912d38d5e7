"""The server: HTTP and the websocket on one port (``server``), the messages (``protocol``), the
WebRTC viewers (``webrtc``), https certificates (``tls``) and STUN/TURN servers (``ice``)."""
