"""Where things live in a checkout, so no module has to guess relative paths."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
IMAGES_DIR = REPO_ROOT / "images"
GUEST_DIR = REPO_ROOT / "guest"
