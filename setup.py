"""The wheel's build hook: copy the kit's files that live outside the package into it.

Everything else about the build is in pyproject.toml. The prebuilt guest, its sources, the
Node host, the notebooks and notebook 01's build record stay where they are committed (a
checkout reads them there, see wasi_lab/paths.py); package-data cannot reach outside the
package, so `build_py` copies them into the built package under `wasi_lab/kit/`, in the
checkout's layout, where an installed wheel finds them. An editable install
(`pip install -e .`) copies nothing: it runs from the checkout.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Copied to wasi_lab/kit/ under the same relative paths; each pattern must match a file.
KIT_FILES = (
    "guest/prebuilt/*.wasm",
    "guest/Cargo.toml",
    "guest/src/**/*.rs",
    "hosts/node/*.mjs",
    "notebooks/*.ipynb",
    "docs/build-results/build-results.json",
)


class build_py_with_kit(build_py):  # noqa: N801 (setuptools' naming)
    """`build_py`, then the kit's files that live outside the package."""

    def _kit_copies(self) -> list[tuple[Path, Path]]:
        pairs = []
        kit = Path(self.build_lib) / "wasi_lab" / "kit"
        for pattern in KIT_FILES:
            found = sorted(p for p in ROOT.glob(pattern) if p.is_file())
            if not found:
                raise SystemExit(
                    f"wheel build: nothing matches {pattern}; the wheel would "
                    "not run (build the guest or restore the committed files)"
                )
            pairs += [(src, kit / src.relative_to(ROOT)) for src in found]
        return pairs

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for src, dest in self._kit_copies():
            self.mkpath(str(dest.parent))
            self.copy_file(str(src), str(dest))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, *(str(dest) for _, dest in self._kit_copies())]


setup(cmdclass={"build_py": build_py_with_kit})
