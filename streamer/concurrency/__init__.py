"""Running things side by side safely: timed waits that never lose a cancellation and bounded
stops (``waits``), and a thread of its own for a native context (``thread``)."""
