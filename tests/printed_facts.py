"""What the prose of notebooks 01-03, 05, 07 and 08 says, checked against what their cells printed.

`tests/test_notebooks.py` executes each notebook; for a notebook named in `PRINTED_FACTS` it
then hands the executed copy to that notebook's checker, which returns the sentences the run
no longer supports (empty when all hold). A checker finds a cell by a piece of its source
(`printed_by`), so inserting a cell above it does not break the test, and it compares the
printed numbers with the facts the prose states, computed afresh here (the build record, the
prebuilt module, the model file) rather than pasted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import nbformat

from tests.nbrun import printed
from wasi_lab import buildrecord
from wasi_lab.models.labels import labels_for
from wasi_lab.models.registry import get_model
from wasi_lab.paths import PREBUILT_MODULE
from wasi_lab.rayon_lesson import ARTICLE_PANIC

#: The article's command guest printed `result: Some((0.32560226, 654))`.
ARTICLE_PROBABILITY, ARTICLE_CLASS = 0.32560226, 654


class Facts:
    """Collects the failed facts of one executed notebook, each with the line it read."""

    def __init__(self, nb: nbformat.NotebookNode) -> None:
        self.nb = nb
        self.problems: list[str] = []

    def cell(self, marker: str) -> nbformat.NotebookNode:
        found = [c for c in self.nb.cells if c.cell_type == "code" and marker in c.source]
        assert len(found) == 1, f"{len(found)} code cells contain {marker!r}"
        return found[0]

    def printed_by(self, marker: str) -> str:
        """stdout of the one code cell whose source contains `marker`."""
        return printed(self.cell(marker))

    def search(self, pattern: str, text: str) -> re.Match | None:
        found = re.search(pattern, text)
        if found is None:
            self.problems.append(f"nothing printed matches {pattern!r} in: {text[:300]!r}")
        return found

    def expect(self, ok: bool, fact: str) -> None:
        if not ok:
            self.problems.append(fact)


def facts_01(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    rec = buildrecord.load()
    prebuilt_size = PREBUILT_MODULE.stat().st_size
    # [1] "the build cell says ... whether their release module is still ... guest/prebuilt"
    out = f.printed_by("builds.prebuilt_line()")
    f.expect(rec.prebuilt_line() in out.splitlines(), f"the build cell's prebuilt line: {out!r}")
    # [14], key point [43]: the factor, and [15] "most of it is debug info ... several times"
    out = f.printed_by("code_ratio =")
    got = f.search(r"debug / release: ([\d,]+) / ([\d,]+) bytes = ([\d.]+)x", out)
    if got:
        debug, release = (int(g.replace(",", "")) for g in got.groups()[:2])
        f.expect((debug, release) == (rec.size("debug"), rec.size("release")), out)
        f.expect(float(got.group(3)) == round(debug / release, 1), out)
        if rec.matches_prebuilt():  # then 01's release size is the one 02 prints
            f.expect(release == prebuilt_size, f"guest/prebuilt is {prebuilt_size:,}: {out!r}")
    got = f.search(r"debug: (\d+)% of its .* code section alone is ([\d.]+)x", out)
    if got:
        f.expect(int(got.group(1)) > 50, f"'most of the debug module is debug info': {out!r}")
        f.expect(float(got.group(2)) >= 2, f"'its code is several times larger': {out!r}")
    # [16]/[21]: the article's panic, word for word; the guest's answers
    f.expect(f.printed_by("print(ARTICLE_PANIC)").strip() == ARTICLE_PANIC, "ARTICLE_PANIC")
    out = f.printed_by("format_rayon(builds.rayon_demo)")
    for said in ("BadArgument", "ThreadPoolBuildError", "global thread pool has not been"):
        f.expect(said in out, f"the rayon cell should print {said!r}: {out!r}")
    # [35]: one lower than the article's 654, and another probability (another model)
    out = f.printed_by("def run_classify(")
    f.expect("exit code: 0" in out, f"the granted run should exit 0: {out!r}")
    got = f.search(r"class (\d+) is '([^']+)', probability ([\d.]+)%", out)
    if got:
        f.expect(int(got.group(1)) == ARTICLE_CLASS - 1, f"'one lower' than 654: {out!r}")
        f.expect(got.group(2) == labels_for(1000)[int(got.group(1)) - 1], f"label: {out!r}")
        kit = float(got.group(3)) / 100
        f.expect(abs(kit - ARTICLE_PROBABILITY) > 0.005, f"'the probability differs': {out!r}")
    # [37]: nothing granted -> exit code 2, and no file read
    out = f.printed_by("preopen=False")
    f.expect("exit code: 2" in out, f"the refused run exits with 2: {out!r}")
    # [42]: the successful run read the whole model file
    out = f.printed_by("the successful run above read")
    size = get_model("efficientnet-lite0").path.resolve().stat().st_size
    f.expect(f"read {size:,} bytes of model" in out, f"the model's {size:,} bytes: {out!r}")
    return f.problems


def facts_02(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    # [1]: the module notebook 01's record describes (01 says so when it does not)
    out = f.printed_by("report = inspect_module(default_module())")
    size = PREBUILT_MODULE.stat().st_size
    f.expect(f"{size:,} bytes" in out, f"02 opens guest/prebuilt ({size:,} bytes): {out!r}")
    rec = buildrecord.load()
    f.expect(
        (rec.size("release") == size) == rec.matches_prebuilt(),
        "01's record and 02's module: same size but not the same bytes, or the reverse",
    )
    # [29]: the second free is refused
    out = f.printed_by("guest.dealloc(p, 21)  # the same block, a second time")
    f.expect("BadPointerError (code -1)" in out, f"the double free is refused: {out!r}")
    # [40]: the WAT interface assembles to the same exports
    out = f.printed_by("wat_interface(report)")
    f.expect("same exports as the guest: True" in out, out)
    return f.problems


HOST_CALL = re.compile(r"\b(?:alloc|memory\.write|infer_from_ptrs)\(store\b")


def facts_03(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    # [1]: "Five objects": Engine, Module, Linker, Store, WasiConfig, each made in cell 2
    src = f.cell("linker.define_wasi()").source
    made = [k for k in ("Engine(", "Module.", "Linker(", "Store(", "WasiConfig(") if k in src]
    f.expect(len(made) == 5, f"five objects made in section 1: {made}")
    # [3], [5]: "the article's five calls"; the class 653 = labels[652], the article's 654
    cell = f.cell("cls = infer_from_ptrs(")
    calls = HOST_CALL.findall(cell.source)
    f.expect(len(calls) == 5, f"section 1 makes five host calls, not {len(calls)}: {calls}")
    out = printed(cell)
    got = f.search(r"infer_from_ptrs returned (\d+)", out)
    cls = int(got.group(1)) if got else None
    if got:
        f.expect(cls == ARTICLE_CLASS - 1, f"1-based 653, the article's 654 - 1: {out!r}")
        f.expect(f"labels[{cls - 1}] = 'military uniform'" in out, out)
    # [16]-[18]: a snapshot before the first call and after each; same offsets, both freed
    out = f.printed_by("replay_article_stages(guest, model_bytes, image_bytes)")
    got = f.search(r"(\d+) snapshots, pages per stage:", out)
    if got:
        f.expect(int(got.group(1)) == len(calls) + 1, f"snapshots = calls + 1: {out!r}")
    got = f.search(
        r"class (\d+) \(the plain run said (\d+)\); blocks at (\S+) and (\S+) "
        r"\(plain run: (\S+), (\S+)\)",
        out,
    )
    if got:
        g = got.groups()
        f.expect(g[0] == g[1] and (g[2], g[3]) == (g[4], g[5]), f"'the same offsets': {out!r}")
    f.expect("live blocks after the call: 0" in out, out)
    # [22]: alloc(model) changes almost nothing (compared with the model's size)
    out = f.printed_by("StageStepper(replay.snapshots)")
    model_size = get_model("efficientnet-lite0").path.resolve().stat().st_size
    got = f.search(r"alloc\(model\): +([\d,]+) bytes changed", out)
    if got:
        changed = int(got.group(1).replace(",", ""))
        f.expect(changed < model_size / 1000, f"'alloc(model) changes almost nothing': {out!r}")
    # [26]: the image's first page holds the model's last bytes and the image's first
    out = f.printed_by("blocks_on_page(replay.snapshots[4], page)")
    blocks = re.findall(r"bytes of the (\w+) block", out)
    f.expect(blocks == ["model", "image"], f"the page holds model then image: {out!r}")
    # [34]: not one byte of the image changed; the model's first bytes did
    out = f.printed_by("img_changed = memviz.changed_offsets(")
    f.expect(re.search(r"image block: 0 of [\d,]+ bytes changed", out) is not None, out)
    # [41]/[42]: the Node host's call is refused, nothing taken or freed
    out = f.printed_by("code_seen = ex4[")
    f.expect("infer_from_ptrs -> -2 = LengthMismatchError" in out, out)
    f.expect("live blocks: 2" in out, out)
    return f.problems


def facts_05(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    out = f.printed_by("reproduction.format_table(rows)")
    # [33]: the file-reading guest's `result:` line is measured here too (a stand-in model).
    got = f.search(
        r"2\. `result:` of the file-read\S*\s+Some\(\(0\.32560226, 654\)\)\s+(\S+)\s", out
    )
    if got:
        f.expect(got.group(1).startswith("Some(("), f"row 2 is filled: {got.group(0)!r}")
    # The instantiation row is like for like: compile + instantiate, as the article's server.
    f.expect("a cold Cranelift compile" in out, "row 7 says it adds the cold compile")
    return f.problems


def facts_07(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    out = f.printed_by("mhz = plan_profile.cpu_mhz()")
    if "no CPU clock" in out:
        return f.problems
    # The key point says the cell names the ceiling that binds: above the first, it says so.
    got = f.search(r"SIMD128 ceilings ([\d.]+) G/s", out)
    done = f.search(r"([\d.]+) G/s counting only those done", out)
    if got and done:
        above = float(done.group(1)) > float(got.group(1))
        f.expect(above == ("above the first ceiling" in out), f"the ceiling sentence: {out!r}")
    return f.problems


def facts_08(nb: nbformat.NotebookNode) -> list[str]:
    f = Facts(nb)
    # [7]: "the next cell prints how many bytes" and "raw output bytes (1000 float32 ...)"
    out = f.printed_by("host = BrowserHost()")
    got = f.search(
        r"module ([\d,]+) \+ model ([\d,]+) bytes; raw output: (\d+) float32 = ([\d,]+)", out
    )
    if got:
        module, model, n, raw = (int(g.replace(",", "")) for g in got.groups())
        f.expect(module == PREBUILT_MODULE.stat().st_size, f"module size: {out!r}")
        model_size = get_model("efficientnet-lite0").path.resolve().stat().st_size
        f.expect(model == model_size, f"model size: {out!r}")
        f.expect(n == 1000 and raw == 4 * n, f"1000 float32 of raw output: {out!r}")
    return f.problems


#: Notebook stem -> the checker of its printed facts.
PRINTED_FACTS: dict[str, Callable[[nbformat.NotebookNode], list[str]]] = {
    "01_compile_the_guest": facts_01,
    "02_inspect_the_exports": facts_02,
    "03_linear_memory": facts_03,
    "05_hosts_and_timing": facts_05,
    "07_deep_dive_performance": facts_07,
    "08_browser_host": facts_08,
}
