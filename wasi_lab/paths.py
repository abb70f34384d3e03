"""Where things live in a checkout, so no module has to guess relative paths.

The prebuilt guest module is here too, not in `build`: every part of the kit runs it
(runtime, hosts, benchmark, CLI), and only the build writes it.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
IMAGES_DIR = REPO_ROOT / "images"
GUEST_DIR = REPO_ROOT / "guest"

#: The release modules built from `guest/src`, committed so the kit runs without Rust.
PREBUILT_DIR = GUEST_DIR / "prebuilt"
#: The library module (the engine behind `Classifier`) and the WASI command (`_start`).
LIB_NAME = "wasi_lab_guest.wasm"
CLI_NAME = "wasi-lab-classify.wasm"
PREBUILT_MODULE = PREBUILT_DIR / LIB_NAME
PREBUILT_COMMAND = PREBUILT_DIR / CLI_NAME


def default_module() -> Path:
    """The module the kit runs: $WASI_LAB_MODULE, else the prebuilt release module.

    The prebuilt module is the reference; a learner who rebuilds the guest passes the new
    path explicitly (or sets WASI_LAB_MODULE), so results never change behind their back.
    """
    env = os.environ.get("WASI_LAB_MODULE")
    return Path(env) if env else PREBUILT_MODULE
