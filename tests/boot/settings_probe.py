"""Run as a script: load boot.settings.Prod once per variable and print the settings each produced.

Usage: python -m tests.boot.settings_probe '<json list of [variable, value(, {companion: value})]>'
-> JSON {variable: {setting: repr}}.
A fresh module per variable, because django-configurations resolves values once per class.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "boot" / "settings.py"


def load(env: dict) -> dict:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(f"probe_{len(env)}_{id(env)}", SETTINGS_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.Prod.setup()
        return {name: repr(getattr(module.Prod, name)) for name in dir(module.Prod) if name.isupper()}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    os.environ.update(DJANGO_SETTINGS_MODULE="boot.settings", DJANGO_CONFIGURATION="Prod")
    from configurations import importer

    importer.install()
    pairs = json.loads(sys.argv[1])
    report = {"": load({})}
    for variable, value, *companions in pairs:  # companions: variables it needs to start, e.g. a bucket
        report[variable] = load({variable: value, **(companions[0] if companions else {})})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
