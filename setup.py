"""The wheel's build hook: copy the prebuilt guest and the notebooks into the package.

Everything else about the build is in pyproject.toml. guest/prebuilt/ and notebooks/ stay
the only committed copies (the kit reads them there in a checkout, see wasi_lab/paths.py);
package-data cannot reach outside the package, so `build_py` copies them into the built
package as `wasi_lab/prebuilt/` and `wasi_lab/notebooks/`, where an installed wheel finds
them. An editable install (`pip install -e .`) copies nothing: it runs from the checkout.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Package subfolder <- (folder of the checkout, files), each required to be non-empty.
KIT_FILES = {"prebuilt": ("guest/prebuilt", "*.wasm"), "notebooks": ("notebooks", "*.ipynb")}


class build_py_with_kit(build_py):  # noqa: N801 (setuptools' naming)
    """`build_py`, then the kit's files that live outside the package."""

    def _kit_copies(self) -> list[tuple[Path, Path]]:
        pairs = []
        for sub, (folder, pattern) in KIT_FILES.items():
            found = sorted((ROOT / folder).glob(pattern))
            if not found:
                raise SystemExit(f"wheel build: no {pattern} in {folder}/; the wheel would "
                                 "not run (build the guest or restore the committed files)")
            dest = Path(self.build_lib) / "wasi_lab" / sub
            pairs += [(src, dest / src.name) for src in found]
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
