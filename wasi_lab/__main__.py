"""`python -m wasi_lab` is the `wasi-lab` command."""

from wasi_lab.cli import main

raise SystemExit(main())
