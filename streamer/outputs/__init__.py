"""What leaves as data: a tracked frame measured (``results``), the events it makes (``events``),
the hub handing both to every consumer (``hub``), the JSON Lines file (``jsonl``) and MQTT (``mqtt``)."""
