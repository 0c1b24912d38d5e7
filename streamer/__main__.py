"""The ``sam2-stream`` command (also ``python -m streamer`` and ``run_stream.py``).

``doctor``, ``export`` and ``--version`` are answered before torch and the server are imported, so
that they work, and can say what is wrong, on an install where those imports fail.
"""

from __future__ import annotations

import sys

from . import version_text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        from .doctor import main as doctor

        return doctor(argv[1:])
    if argv[:1] == ["export"]:
        from .export import main as export

        return export(argv[1:])
    if argv[:1] == ["--version"]:
        print(version_text())
        return 0
    from .cli import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
