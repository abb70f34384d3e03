"""The wasm peers of `wasi-lab bench --wasm-peers`: other engines that run in WebAssembly.

ONNX Runtime Web (on the ONNX export) and TensorFlow.js's wasm backend (on a tfjs graph
model the kit writes itself, `tfjs_convert`) run in Node beside the guest (`node_peers`),
on the same tensor, so the comparison is wasm against wasm on the same machine.
"""
