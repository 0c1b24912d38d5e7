"""Files shipped inside the package (package data in the wheel): the viewer page, the configs and
the results schema.

Found next to this module, so they are there for a wheel install as for a checkout.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WEB_DIR = PACKAGE_DIR / "serve" / "web"  # the viewer page: the only files the server serves
CONFIG_DIR = PACKAGE_DIR / "configs"  # defaults.yaml, and one small YAML per model size
RESULTS_SCHEMA = PACKAGE_DIR / "outputs" / "results.schema.json"  # results and events messages
