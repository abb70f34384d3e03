"""The `wasi-lab` command: one subcommand per capability, each a thin call into the package."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from wasi_lab.user_errors import network_reason, os_error_line


def user_error_line(exc: BaseException) -> str | None:
    """One line for an error a user's input can cause, or None for a bug (keep the traceback).

    The subcommands catch what they expect; this is the net under all of them, so a wrong
    path or a broken file never ends in a traceback whichever subcommand met it.
    """
    import wasmtime

    from wasi_lab.build import BuildError
    from wasi_lab.hosts import HostError
    from wasi_lab.images import ImageError
    from wasi_lab.inspect import WasmFormatError
    from wasi_lab.models.fetch import ModelError
    from wasi_lab.runtime import GuestError, GuestTrap
    from wasi_lab.toolchain import ToolchainError

    if isinstance(exc, OSError):
        return os_error_line(exc)
    if isinstance(exc, GuestError):
        return exc.message
    if isinstance(exc, wasmtime.WasmtimeError):
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        return f"not a valid WebAssembly module ({first.strip()})"
    if isinstance(
        exc,
        ModelError
        | ImageError
        | WasmFormatError
        | GuestTrap
        | BuildError
        | ToolchainError
        | HostError,
    ):
        return next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
    return None


def positive_int(text: str) -> int:
    """argparse type for counts (``--top``, ``--repeat``): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _cmd_build(args: argparse.Namespace) -> int:
    from wasi_lab.build import BuildError, build_guest
    from wasi_lab.inspect import WasmFormatError
    from wasi_lab.toolchain import ToolchainError

    try:
        res = build_guest(
            release=not args.debug,
            features=args.features or (),
            update_prebuilt=args.update_prebuilt,
            progress=sys.stderr.isatty(),
            echo=(lambda line: print(line, file=sys.stderr)) if args.verbose else None,
        )
    except (ToolchainError, BuildError, WasmFormatError) as exc:
        print(f"wasi-lab build: {exc}", file=sys.stderr)
        return 1
    print(
        f"built {res.module} ({res.size:,} bytes, {res.profile}) in {res.seconds:.1f} s "
        f"with {res.toolchain.version} for {res.toolchain.target}"
    )
    if res.folded:
        print(f"post-link: {res.folded} address adds folded into load offsets")
    if res.fused:
        print(
            f"relaxed SIMD: {res.fused.rewritten} multiply-add calls became "
            f"f32x4.relaxed_madd in {res.fused.functions_touched} functions"
        )
    if args.update_prebuilt:
        print("updated guest/prebuilt/")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from wasi_lab.inspect import WasmFormatError, format_report, inspect_module
    from wasi_lab.paths import default_module

    path = Path(args.wasm) if args.wasm else default_module()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "not found"
        print(
            f"wasi-lab inspect: {path}: {problem} (give a .wasm file, or no argument for "
            "the kit's guest)",
            file=sys.stderr,
        )
        return 1
    try:
        rep = inspect_module(path)
    except OSError as exc:
        print(f"wasi-lab inspect: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except WasmFormatError as exc:
        print(f"wasi-lab inspect: {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rep.to_dict(), indent=2) if args.json else format_report(rep))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from wasi_lab.doctor import diagnose, doctor_json, format_doctor

    rep = diagnose(check_network=args.network)
    print(doctor_json(rep) if args.json else format_doctor(rep))
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from wasi_lab.setup import ensure_test_deps, run_setup

    return ensure_test_deps() if args.test_deps else run_setup()


def _predict_sources(sources: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Each argument as images to classify: a directory stands for its JPEG and PNG files.

    Returns the images, one error per argument that yields none, and notes about image
    files in a directory that the guest cannot decode (skipped).
    """
    from wasi_lab.images import IMAGE_SUFFIXES
    from wasi_lab.predict import GUEST_IMAGE_SUFFIXES, images_in

    images: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    for src in sources:
        if src.startswith(("http://", "https://")) or not Path(src).is_dir():
            images.append(src)
            continue
        try:
            found = images_in(src)
            other = sorted(
                p.name
                for p in Path(src).iterdir()
                if p.is_file()
                and p.suffix.lower() in set(IMAGE_SUFFIXES) - set(GUEST_IMAGE_SUFFIXES)
            )
        except OSError as exc:
            problems.append(f"{src}: cannot list the directory: {os_error_line(exc)}")
            continue
        skipped = f"skipped {', '.join(other)}: " if other else ""
        if not found:
            problems.append(
                f"{src}: no {', '.join(GUEST_IMAGE_SUFFIXES)} files in this "
                f"directory ({skipped}the guest decodes JPEG and PNG)"
            )
        elif other:
            notes.append(f"{src}: {skipped}the guest decodes JPEG and PNG")
        images += [str(p) for p in found]
    return images, problems, notes


def _cmd_predict(args: argparse.Namespace) -> int:
    from wasi_lab.images import ImageError
    from wasi_lab.models.fetch import ModelError
    from wasi_lab.models.labels import LabelsError
    from wasi_lab.predict import Classifier
    from wasi_lab.runtime import GuestError, GuestTrap

    images, problems, notes = _predict_sources(args.images)
    for line in notes + problems:
        print(f"wasi-lab predict: {line}", file=sys.stderr)
    if not images:
        return 1
    try:
        clf = Classifier(args.model, labels=args.labels)
    except LabelsError as exc:
        where = f"--labels {args.labels}" if args.labels else f"--model {args.model}"
        print(f"wasi-lab predict: {where}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"wasi-lab predict: --model {args.model}: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except (ModelError, GuestError, GuestTrap, ValueError) as exc:
        print(f"wasi-lab predict: cannot load --model {args.model}: {exc}", file=sys.stderr)
        return 1
    if args.top > clf.output_len:
        print(
            f"wasi-lab predict: --top {args.top} is more than the {clf.output_len} classes "
            f"of {clf.spec.name}",
            file=sys.stderr,
        )
        return 2
    results, failed = [], len(problems)
    for image in images:
        try:
            pred = clf.classify(image, top=args.top, mode=args.mode)
        except GuestError as exc:
            print(f"wasi-lab predict: {image}: {exc.message}", file=sys.stderr)
            failed += 1
            continue
        except GuestTrap as exc:
            print(f"wasi-lab predict: {image}: {exc}", file=sys.stderr)
            failed += 1
            clf.reset()
            continue
        except OSError as exc:
            print(f"wasi-lab predict: {os_error_line(exc)}", file=sys.stderr)
            failed += 1
            continue
        except ValueError as exc:  # ImageError (a URL that failed, a file too big) and kin
            cause = exc.__cause__ if isinstance(exc, ImageError) else None
            line = f"cannot fetch {image}: {network_reason(cause)}" if cause else str(exc)
            print(f"wasi-lab predict: {line}", file=sys.stderr)
            failed += 1
            continue
        results.append(pred)
        if not args.json:
            print(f"{image}  ({pred.model}, {pred.mode} preprocessing)")
            for t in pred.top:
                print(f"  {t.prob:7.2%}  {t.label}  [{t.index}]")
            tm = pred.timings_ms
            print(
                f"  decode {tm['decode']:.1f} ms, infer {tm['infer']:.1f} ms, "
                f"guest memory {pred.pages['after_infer']} pages"
            )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return 1 if failed else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from wasi_lab.bench import bench_json, format_table, run_bench

    if args.layers:
        from wasi_lab.plan_profile import format_layers, layers_json, profile_layers

        prof = profile_layers(
            model=args.model, repeat=args.repeat, module=args.module, progress=not args.json
        )
        print(layers_json(prof) if args.json else format_layers(prof))
        return 0
    if args.wasm_peers:  # the peers' npm packages are no workshop dependency: fetched here
        from wasi_lab.setup import ensure_node_packages

        print(f"[bench] wasm peers (npm): {ensure_node_packages()}", file=sys.stderr)
    res = run_bench(
        model=args.model,
        repeat=args.repeat,
        module=args.module,
        progress=not args.json or sys.stderr.isatty(),
        wasm_peers=args.wasm_peers,
    )
    print(bench_json(res) if args.json else format_table(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wasi-lab", description="Build, inspect and run the wasi-lab WebAssembly guest."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="compile the guest with cargo for wasm32-wasi(p1)")
    p.add_argument("--debug", action="store_true", help="debug profile instead of release")
    p.add_argument(
        "--features", nargs="*", help="cargo features (e.g. scalar, rayon-demo, relaxed-fma)"
    )
    p.add_argument(
        "--update-prebuilt",
        action="store_true",
        help="copy the release module over guest/prebuilt/",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show cargo's output")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("inspect", help="sections, imports, exports and memory of a module")
    p.add_argument("wasm", nargs="?", help="module to read (default: the kit's guest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("doctor", help="which toolchain, runtime, models and images were found")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--network", action="store_true", help="also check whether crates.io is reachable"
    )
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("setup", help="toolchain, guest, models and images (idempotent)")
    p.add_argument(
        "--test-deps",
        action="store_true",
        help="only install what the tests need beyond Python (Chromium)",
    )
    p.set_defaults(func=_cmd_setup)

    p = sub.add_parser("predict", help="classify images with the wasm guest")
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image file, directory of images, or http(s) URL"
    )
    p.add_argument(
        "--model",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (default), mobilenet-v2-1.4, or a .pb path",
    )
    p.add_argument(
        "--labels",
        metavar="FILE|N",
        help="class names for a .pb: a text file with one label per line, or N "
        "for numbered labels (default: from the model's output width, "
        "ImageNet's for 1000 or 1001)",
    )
    p.add_argument("--top", type=positive_int, default=5, help="classes to show (default 5)")
    p.add_argument(
        "--mode",
        default="model",
        choices=["model", "article", "efficientnet", "inception"],
        help="preprocessing: the model's own (default) or the article's",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="guest inference against tract and ONNX Runtime")
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--repeat", type=positive_int, default=20, help="timed runs per engine")
    p.add_argument("--module", help="guest module to measure (default: the kit's)")
    p.add_argument(
        "--layers",
        action="store_true",
        help="time each step of the guest's plan instead (where the time goes)",
    )
    p.add_argument(
        "--wasm-peers",
        action="store_true",
        help="also ONNX Runtime Web and TF.js wasm (and the guest) in Node",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands that live next to their capability (models, predict, serve, bench ...)."""
    regs: list[Callable[[argparse._SubParsersAction], None]] = []
    from wasi_lab.model_check import add_check_parser
    from wasi_lab.models.cli import add_images_parser, add_models_parser

    regs += [lambda sub: add_models_parser(sub, more=[add_check_parser]), add_images_parser]
    from wasi_lab.server.cli import add_serve_parser

    regs.append(add_serve_parser)
    from wasi_lab.reproduction import add_article_parser
    from wasi_lab.views.render import add_figures_parser

    regs += [add_article_parser, add_figures_parser]
    from wasi_lab.preflight import add_preflight_parser

    regs.append(add_preflight_parser)
    from wasi_lab.setup import add_lab_parser

    regs.append(add_lab_parser)
    from wasi_lab.hosts_check import add_hosts_parser

    regs.append(add_hosts_parser)
    return regs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # subcommands registered elsewhere (article, figures) take --repeat as a plain int
    repeat = getattr(args, "repeat", None)
    if isinstance(repeat, int) and repeat < 1:
        print(
            f"wasi-lab {args.command}: error: argument --repeat: must be at least 1, not {repeat}",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `wasi-lab ... | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        line = user_error_line(exc)
        if line is None:
            raise
        print(f"wasi-lab {args.command}: {line}", file=sys.stderr)
        return 1
