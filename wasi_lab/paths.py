"""Where things live, so no module has to guess relative paths.

Two installs, one rule (`data_root`):

* **A checkout** (wasi_lab imported from a clone: `pyproject.toml` beside the package and a
  `guest/` folder): everything is in the clone: models/, images/, notebooks/, the guest's
  sources and guest/prebuilt/, the committed guest modules.
* **An installed wheel**: what the kit reads ships inside the package, under `wasi_lab/kit/`
  in the checkout's layout (guest/prebuilt/*.wasm, guest/Cargo.toml and src/, hosts/node/,
  notebooks/), copied there when the wheel is built (setup.py); what the kit writes (models,
  images, the learner's copy of the notebooks) goes to a user data directory:
  ``$WASI_LAB_HOME``, else the platform's usual place (`user_data_dir`).

So `KIT_ROOT` is where the kit's own files are read and `REPO_ROOT` where its data is
written; in a checkout both are the clone.

The prebuilt guest module is here too, not in `build`: every part of the kit runs it
(runtime, hosts, benchmark, CLI), and only the build writes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: The installed package itself (in a wheel, its kit/ holds the package data).
PACKAGE_DIR = Path(__file__).resolve().parent
#: Outside a checkout, the user data directory is $WASI_LAB_HOME when set.
HOME_ENV = "WASI_LAB_HOME"
APP_NAME = "wasi-lab"


def checkout_root(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The clone wasi_lab was imported from, or None for an installed wheel.

    A clone is recognised by what only a clone has next to the package: `pyproject.toml`
    and the guest's sources. site-packages has neither, so a wheel never mistakes the
    directory it was installed into for a checkout.
    """
    root = package_dir.parent
    if (root / "pyproject.toml").is_file() and (root / "guest").is_dir():
        return root
    return None


def user_data_dir(
    env: Mapping[str, str] | None = None, platform: str = sys.platform, home: Path | None = None
) -> Path:
    """The per-user data directory of an installed kit (what platformdirs would answer).

    $WASI_LAB_HOME wins; else Linux and the BSDs use $XDG_DATA_HOME or ~/.local/share,
    macOS ~/Library/Application Support and Windows %LOCALAPPDATA%, each with `wasi-lab`.
    """
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().absolute()  # fixed even if the cwd changes
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    if platform.startswith(("win", "cygwin")):
        local = env.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / APP_NAME
    xdg = env.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share") / APP_NAME


def data_root(package_dir: Path = PACKAGE_DIR, env: Mapping[str, str] | None = None) -> Path:
    """Where models/, images/ and the notebooks live: the checkout when there is one (its
    models/ and images/ are where the tests, notebooks and docs expect them), else
    `user_data_dir` (so an installed kit runs from any directory, and writes nothing
    into site-packages or the current directory)."""
    return checkout_root(package_dir) or user_data_dir(env)


#: The clone, or None when wasi_lab runs from an installed wheel.
CHECKOUT = checkout_root()
#: The kit's own files, read-only: the checkout, or the wheel's copy in the package.
KIT_ROOT = CHECKOUT or PACKAGE_DIR / "kit"
#: Where the kit writes: the checkout, else the user data directory. Things only a checkout
#: has (docs/, benchmarks/) are missing under it outside a checkout.
REPO_ROOT = data_root()
MODELS_DIR = REPO_ROOT / "models"
IMAGES_DIR = REPO_ROOT / "images"
#: The guest crate (Cargo.toml, src/); outside a checkout a read-only copy for the listings:
#: building it needs a checkout (`wasi_lab.build` says so).
GUEST_DIR = KIT_ROOT / "guest"
#: The course as shipped; `wasi-lab lab` copies it to a working folder outside a checkout.
NOTEBOOKS_SOURCE = KIT_ROOT / "notebooks"
#: The Node host (`wasi_lab.hosts`).
NODE_HOST_DIR = KIT_ROOT / "hosts" / "node"

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
