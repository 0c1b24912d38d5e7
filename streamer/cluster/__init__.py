"""Streams on a Ray cluster: the front (``front``) places streams on workers (``placement``) and
serves them as ``remote_stream``s; each ``worker`` holds one model and sends ``reports``;
``join`` joins a cluster in bounded time."""
