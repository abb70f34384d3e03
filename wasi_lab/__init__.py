"""wasi-lab: watch a Rust/WASI guest classify images, and how bytes reach its memory."""

__version__ = "0.1.0"
