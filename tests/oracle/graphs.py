"""The graphs TensorFlow writes, one builder each: Keras applications and one graph per op.

Every builder is deterministic for a seed: Keras' and TensorFlow's seeds are set, constants
come from a NumPy generator, weights are random (``weights=None``: nothing is downloaded) and
the batch-norm statistics are randomised too, so folding them is really tested. A builder
returns the *frozen* GraphDef (variables turned into constants) the way a learner would
export one: `convert_variables_to_constants_v2` on a `tf.function` for Keras 3 and tf_keras,
`tf.compat.v1.graph_util.convert_variables_to_constants` on a Session for TF1 graph mode.

Only `build.py` (a child process) imports this module's TensorFlow side; the registry itself
(names, modes, shapes) is plain data the tests read without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The two ways graphs are made, each in its own child process: TF2 (tf.function, Keras 3,
#: tf_keras) and TF1 graph mode (`disable_v2_behavior()`, which cannot be undone).
V2, V1 = "v2", "v1"
INPUT = "input"
OUTPUT = "output"


@dataclass(frozen=True)
class Builder:
    """One graph: how to make it and the input it takes."""

    name: str
    mode: str
    shape: tuple[int, ...]
    make: Callable[[Any, int], tuple[bytes, str, str]]
    low: float = -1.0
    high: float = 1.0
    doc: str = ""

    def input_tensor(self, seed: int) -> np.ndarray:
        """The tensor both TensorFlow and the guest are fed (uniform in [low, high))."""
        rng = np.random.default_rng(seed + 1)
        return rng.uniform(self.low, self.high, self.shape).astype(np.float32)


# --------------------------------------------------------------------------- freezing


def freeze_function(
    tf: Any, fn: Callable[[Any], Any], shape: tuple[int, ...]
) -> tuple[bytes, str, str]:
    """Freeze `fn` traced as a tf.function on one float input named `input`."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT)])
    def traced(x: Any) -> Any:
        return fn(x)

    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
    graph = frozen.graph.as_graph_def()
    return (graph.SerializeToString(), frozen.inputs[0].op.name, frozen.outputs[0].op.name)


def freeze_graph_mode(
    tf: Any, fn: Callable[[Any], Any], shape: tuple[int, ...]
) -> tuple[bytes, str, str]:
    """Freeze `fn` built in a TF1 graph with a Session (the classic `freeze_graph` recipe)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape, name=INPUT)
        y = tf.identity(fn(x), name=OUTPUT)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [y.op.name]
            )
    return frozen.SerializeToString(), INPUT, OUTPUT


def run_graphdef(tf: Any, pb: bytes, inp: str, out: str, x: np.ndarray) -> np.ndarray:
    """TensorFlow's own output for the exact bytes the guest is given."""
    v1 = tf.compat.v1
    graph_def = v1.GraphDef()
    graph_def.ParseFromString(pb)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with v1.Session(graph=graph) as sess:
        return np.asarray(sess.run(f"{out}:0", {f"{inp}:0": x}), dtype=np.float32)


# --------------------------------------------------------------------------- applications


def _seed_everything(tf: Any, keras: Any, seed: int) -> None:
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)


def _randomise_batchnorm(model: Any, seed: int) -> int:
    """Random gamma, beta, mean and variance in every BatchNormalization (fresh ones are the
    identity, which would hide a wrong fold). Returns how many layers were changed."""
    rng = np.random.default_rng(seed)
    changed = 0
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        c = layer.get_weights()[-1].shape  # the moving variance: one per channel
        gamma = rng.uniform(0.7, 1.3, c)
        beta = rng.normal(0.0, 0.1, c)
        mean = rng.normal(0.0, 0.1, c)
        var = rng.uniform(0.6, 1.4, c)
        parts = ([gamma] if layer.scale else []) + ([beta] if layer.center else [])
        layer.set_weights([p.astype(np.float32) for p in (*parts, mean, var)])
        changed += 1
    return changed


#: Keras application constructor name, keyword arguments, input range.
APPS: dict[str, tuple[str, dict[str, Any], float, float]] = {
    "mobilenetv2-1.0": ("MobileNetV2", {"alpha": 1.0}, -1.0, 1.0),
    "mobilenetv2-1.4": ("MobileNetV2", {"alpha": 1.4}, -1.0, 1.0),
    "mobilenet": ("MobileNet", {}, -1.0, 1.0),
    "efficientnetb0": ("EfficientNetB0", {}, 0.0, 255.0),
    "resnet50": ("ResNet50", {}, -120.0, 150.0),
    # hard-swish and a hard-sigmoid squeeze-excite gate (input rescaled inside the model)
    "mobilenetv3small": ("MobileNetV3Small", {}, 0.0, 255.0),
}
SIZE = 224


def _keras_app(which: str, app: str, kwargs: dict[str, Any], seed: int) -> Any:
    """A Keras application with random weights, from Keras 3 or tf_keras."""
    import tensorflow as tf

    if which == "keras3":
        import keras

        if keras.config.backend() != "tensorflow":
            raise RuntimeError(
                f"Keras 3 uses the {keras.config.backend()} backend; set KERAS_BACKEND=tensorflow"
            )
    else:
        import tf_keras as keras
    _seed_everything(tf, keras, seed)
    model = getattr(keras.applications, app)(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=1000, **kwargs
    )
    _randomise_batchnorm(model, seed)
    return model


def _app_v2(
    which: str, app: str, kwargs: dict[str, Any]
) -> Callable[[Any, int], tuple[bytes, str, str]]:
    def make(tf: Any, seed: int) -> tuple[bytes, str, str]:
        model = _keras_app(which, app, kwargs, seed)
        return freeze_function(tf, lambda x: model(x, training=False), (1, SIZE, SIZE, 3))

    return make


def _app_tf1(app: str, kwargs: dict[str, Any]) -> Callable[[Any, int], tuple[bytes, str, str]]:
    """tf_keras in TF1 graph mode, frozen from its Session as TF1 tutorials did. The learning
    phase is left alone, so batch norm is a `cond` on `keras_learning_phase`
    (a PlaceholderWithDefault) — Switch and Merge in the frozen graph."""

    def make(tf: Any, seed: int) -> tuple[bytes, str, str]:
        import tf_keras
        from tf_keras.src import backend  # get_session is exported to tf.compat.v1 only

        v1 = tf.compat.v1
        tf_keras.backend.clear_session()
        v1.set_random_seed(seed)
        tf_keras.utils.set_random_seed(seed)
        model = getattr(tf_keras.applications, app)(
            weights=None, input_shape=(SIZE, SIZE, 3), **kwargs
        )
        _randomise_batchnorm(model, seed)
        sess = backend.get_session()
        graph = sess.graph
        frozen = v1.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), [model.output.op.name]
        )
        return frozen.SerializeToString(), model.input.op.name, model.output.op.name

    return make


def _apps() -> list[Builder]:
    out = []
    for key, (app, kwargs, low, high) in APPS.items():
        for which in ("keras3", "tfkeras"):
            out.append(
                Builder(
                    f"{which}-{key}",
                    V2,
                    (1, SIZE, SIZE, 3),
                    _app_v2(which, app, kwargs),
                    low,
                    high,
                    f"keras.applications.{app}({kwargs or ''}) from {which}",
                )
            )
    out.append(
        Builder(
            "tf1-mobilenetv2-1.4",
            V1,
            (1, SIZE, SIZE, 3),
            _app_tf1("MobileNetV2", {"alpha": 1.4}),
            -1.0,
            1.0,
            "tf_keras MobileNetV2(alpha=1.4) in TF1 graph mode",
        )
    )
    out.append(
        Builder(
            "tf1-mobilenet",
            V1,
            (1, SIZE, SIZE, 3),
            _app_tf1("MobileNet", {}),
            -1.0,
            1.0,
            "tf_keras MobileNet in TF1 graph mode",
        )
    )
    return out


# --------------------------------------------------------------------------- one op each

#: The small input every op graph is fed (unless it says otherwise): NHWC, odd sizes.
SMALL = (1, 5, 6, 4)


def _rand(seed: int, *shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


OpFn = Callable[[Any, Any, int], Any]


def _op(
    name: str,
    fn: OpFn,
    shape: tuple[int, ...] = SMALL,
    mode: str = V2,
    low: float = -1.0,
    high: float = 1.0,
    doc: str = "",
) -> Builder:
    def make(tf: Any, seed: int) -> tuple[bytes, str, str]:
        tf.random.set_seed(seed)
        freeze = freeze_function if mode == V2 else freeze_graph_mode
        return freeze(tf, lambda x: fn(tf, x, seed), shape)

    return Builder(f"op-{name}", mode, shape, make, low, high, doc)


def _c(seed: int, *shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return _rand(seed + 100, *shape, low=low, high=high)


def _switch_merge_const(tf: Any, x: Any, seed: int) -> Any:
    """Switch on a constant predicate, each branch its own op, Merge: what `tf.cond` on a
    known value becomes in TF1 graphs (and tf_keras' frozen learning phase)."""
    false, true = tf.raw_ops.Switch(data=x, pred=tf.constant(True))
    return tf.raw_ops.Merge(inputs=[tf.nn.relu(false), true * 2.0]).output


def _switch_merge_default(tf: Any, x: Any, seed: int) -> Any:
    """Switch on a PlaceholderWithDefault(False) predicate, as tf_keras writes the learning
    phase: the default decides."""
    pred = tf.compat.v1.placeholder_with_default(False, [], name="learning_phase")
    false, true = tf.raw_ops.Switch(data=x, pred=pred)
    return tf.raw_ops.Merge(inputs=[false - 1.0, tf.nn.relu(true)]).output


def _noop(tf: Any, x: Any, seed: int) -> Any:
    with tf.control_dependencies([tf.no_op(name="init_done")]):
        return tf.nn.relu(x)


def _flatten_by_shape(tf: Any, x: Any, seed: int) -> Any:
    """Keras' Flatten: Shape -> StridedSlice -> Pack -> Reshape, all constant once the input
    shape is known."""
    n = tf.raw_ops.Shape(input=x)[0]
    return tf.reshape(x, tf.stack([n, -1]))


def _identity_n(tf: Any, x: Any, seed: int) -> Any:
    a, b = tf.raw_ops.IdentityN(input=[x, tf.constant(_c(seed, 4))])
    return a + b


def _placeholder_with_default(tf: Any, x: Any, seed: int) -> Any:
    scale = tf.raw_ops.PlaceholderWithDefault(
        input=tf.constant(_c(seed, 4)), shape=[4], name="scale"
    )
    return x * scale


def _conv(tf: Any, x: Any, seed: int, cout: int = 6) -> Any:
    """A 3x3 SAME convolution with a bias: the step a fused activation joins."""
    w = _c(seed, 3, 3, int(x.shape[-1]), cout)
    return tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), _c(seed + 1, cout))


def _keras3_act(name: str) -> Callable[[Any, Any, int], Any]:
    """`keras.activations.<name>` (Keras 3, TensorFlow backend) after a convolution."""

    def fn(tf: Any, x: Any, seed: int) -> Any:
        import keras

        return getattr(keras.activations, name)(_conv(tf, x, seed))

    return fn


def _tfkeras_hard_swish(tf: Any, x: Any, seed: int) -> Any:
    """tf_keras' MobileNetV3 hard-swish (tf_keras has no activation of that name):
    `Multiply([x, ReLU(6.)(x + 3.) * (1. / 6.)])` after a depthwise convolution."""
    import tf_keras

    y = tf.nn.depthwise_conv2d(x, _c(seed, 3, 3, int(x.shape[-1]), 1), [1, 1, 1, 1], "SAME")
    gate = tf_keras.layers.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)
    return tf_keras.layers.Multiply()([y, gate])


def _squeeze_excite(tf: Any, x: Any, seed: int) -> Any:
    """EfficientNet's squeeze-excite: mean -> 1x1 conv -> swish -> 1x1 conv -> Sigmoid, the
    gate multiplied into x over H and W."""
    c = int(x.shape[-1])
    s = tf.reduce_mean(x, [1, 2], keepdims=True)
    s = tf.nn.silu(tf.nn.bias_add(tf.nn.conv2d(s, _c(seed, 1, 1, c, 2), 1, "SAME"), _c(seed, 2)))
    gate = tf.sigmoid(
        tf.nn.bias_add(tf.nn.conv2d(s, _c(seed + 1, 1, 1, 2, c), 1, "SAME"), _c(1, c))
    )
    return x * gate


def _swish_shared(tf: Any, x: Any, seed: int) -> Any:
    """silu(conv) + conv: the convolution's output has another reader, so the swish cannot
    be the convolution's activation (it runs as a step of its own)."""
    y = _conv(tf, x, seed)
    return tf.nn.silu(y) + y


def _ops() -> list[Builder]:
    s = SMALL
    c = s[-1]
    ops: list[Builder] = [
        # ---- element-wise binary ops, with each broadcasting case
        _op("mul-channel", lambda tf, x, k: x * _c(k, c), doc="Mul by a [C] constant"),
        _op("mul-self", lambda tf, x, k: x * tf.nn.relu(x), doc="Mul of two dynamic tensors"),
        _op("mul-scalar", lambda tf, x, k: x * 0.25, doc="Mul by a scalar"),
        _op(
            "mul-column",
            lambda tf, x, k: x * _c(k, 1, s[1], 1, 1),
            doc="Mul by a [1,H,1,1] constant",
        ),
        _op(
            "mul-se",
            lambda tf, x, k: x * tf.reduce_mean(x, [1, 2], keepdims=True),
            doc="squeeze-excite: [1,H,W,C] * [1,1,1,C], both dynamic",
        ),
        _op("sub-channel", lambda tf, x, k: x - _c(k, 1, 1, 1, c), doc="Sub a [1,1,1,C] const"),
        _op("sub-from-const", lambda tf, x, k: _c(k, c) - x, doc="const [C] - x"),
        _op(
            "realdiv-channel",
            lambda tf, x, k: x / _c(k, c, low=0.5, high=2.0),
            doc="RealDiv by a [C] constant",
        ),
        _op(
            "realdiv-by-input",
            lambda tf, x, k: _c(k, c) / x,
            low=0.5,
            high=2.0,
            doc="RealDiv of a constant by the input",
        ),
        _op("rsqrt", lambda tf, x, k: tf.math.rsqrt(x), low=0.1, high=4.0),
        _op("sqrt", lambda tf, x, k: tf.sqrt(x), low=0.0, high=4.0),
        _op("maximum", lambda tf, x, k: tf.maximum(x, _c(k, c))),
        _op("minimum-scalar", lambda tf, x, k: tf.minimum(x, 0.3)),
        _op("sigmoid", lambda tf, x, k: tf.sigmoid(x), low=-6.0, high=6.0),
        _op(
            "swish",
            lambda tf, x, k: x * tf.sigmoid(x),
            low=-6.0,
            high=6.0,
            doc="EfficientNet's activation: Sigmoid then Mul",
        ),
        # ---- activations fused into the step before (Keras' swish, hard-swish, gates)
        _op(
            "conv2d-silu",
            lambda tf, x, k: tf.nn.silu(_conv(tf, x, k)),
            low=-3.0,
            high=3.0,
            doc="conv + bias + tf.nn.silu (Mul/Sigmoid/Mul/IdentityN)",
        ),
        _op(
            "matmul-silu",
            lambda tf, x, k: tf.nn.silu(tf.matmul(tf.reshape(x, [5, 24]), _c(k, 24, 7)) + 0.5),
            doc="MatMul + scalar bias + tf.nn.silu",
        ),
        _op("squeeze-excite", _squeeze_excite, low=-2.0, high=2.0, doc="SE: swish, Sigmoid gate"),
        _op("swish-shared", _swish_shared, doc="silu(conv) + conv: not fusable"),
        _op(
            "conv2d-hardswish-keras3",
            _keras3_act("hard_swish"),
            low=-3.0,
            high=3.0,
            doc="conv + keras.activations.hard_swish (Keras 3)",
        ),
        _op(
            "conv2d-hardsigmoid-keras3",
            _keras3_act("hard_sigmoid"),
            low=-3.0,
            high=3.0,
            doc="conv + keras.activations.hard_sigmoid (Keras 3)",
        ),
        _op(
            "depthwise-hardswish-tfkeras",
            _tfkeras_hard_swish,
            low=-4.0,
            high=4.0,
            doc="depthwise + tf_keras MobileNetV3's hard_swish",
        ),
        _op("tanh", lambda tf, x, k: tf.tanh(x), low=-3.0, high=3.0),
        _op("leakyrelu", lambda tf, x, k: tf.nn.leaky_relu(x, alpha=0.2)),
        _op(
            "add-broadcast",
            lambda tf, x, k: x + _c(k, 1, 1, s[2], 1),
            doc="AddV2 with a [1,1,W,1] constant",
        ),
        # ---- the Keras 3 batch norm, spelled out: Rsqrt, Mul, Sub, AddV2
        _op(
            "batchnorm-unfused",
            lambda tf, x, k: tf.nn.batch_normalization(
                x, _c(k, c), _c(k + 1, c, low=0.5, high=1.5), _c(k + 2, c), _c(k + 3, c), 1e-3
            ),
            doc="tf.nn.batch_normalization: Rsqrt/Mul/Sub/AddV2",
        ),
        # ---- layout ops
        _op("concat-const", lambda tf, x, k: tf.concat([x, _c(k, *s[:3], 2)], axis=3)),
        _op("concat-self-axis1", lambda tf, x, k: tf.concat([x, tf.nn.relu(x)], axis=1)),
        _op("transpose", lambda tf, x, k: tf.transpose(x, [0, 3, 1, 2])),
        _op("expanddims", lambda tf, x, k: tf.expand_dims(x, 1)),
        _op("stridedslice", lambda tf, x, k: x[:, 1:4, ::2, :]),
        _op(
            "shape-stridedslice-pack",
            _flatten_by_shape,
            doc="Flatten via Shape/StridedSlice/Pack/Reshape",
        ),
        _op("placeholderwithdefault", _placeholder_with_default),
        _op("identityn", _identity_n, doc="IdentityN, reading its output :1"),
        _op("noop", _noop, mode=V1, doc="a control dependency on a NoOp"),
        _op("switch-merge-const", _switch_merge_const, mode=V1),
        _op("switch-merge-default", _switch_merge_default, mode=V1),
        # ---- convolutions (dilated ones are new; the others run today)
        _op(
            "conv2d-dilated-same",
            lambda tf, x, k: tf.nn.conv2d(x, _c(k, 3, 3, c, 5), 1, "SAME", dilations=2),
            shape=(1, 9, 8, 4),
        ),
        _op(
            "conv2d-dilated-valid",
            lambda tf, x, k: tf.nn.conv2d(x, _c(k, 3, 3, c, 5), 1, "VALID", dilations=2),
            shape=(1, 9, 8, 4),
        ),
        _op(
            "conv2d-same-s2",
            lambda tf, x, k: tf.nn.conv2d(x, _c(k, 3, 3, c, 6), 2, "SAME"),
            shape=(1, 9, 8, 4),
        ),
        _op(
            "conv2d-valid",
            lambda tf, x, k: tf.nn.conv2d(x, _c(k, 3, 3, c, 6), 1, "VALID"),
            shape=(1, 9, 8, 4),
        ),
        _op(
            "depthwise-s2",
            lambda tf, x, k: tf.nn.depthwise_conv2d(x, _c(k, 3, 3, c, 2), [1, 2, 2, 1], "SAME"),
            shape=(1, 9, 8, 4),
        ),
        _op(
            "fusedbatchnormv3-relu6",
            lambda tf, x, k: tf.nn.relu6(
                tf.compat.v1.nn.fused_batch_norm(
                    x,
                    _c(k, c),
                    _c(k + 1, c),
                    _c(k + 2, c),
                    _c(k + 3, c, low=0.5, high=1.5),
                    1e-3,
                    is_training=False,
                )[0]
            ),
            low=-4.0,
            high=4.0,
        ),
        _op("avgpool", lambda tf, x, k: tf.nn.avg_pool2d(x, 3, 2, "SAME")),
        _op("maxpool", lambda tf, x, k: tf.nn.max_pool2d(x, 3, 2, "VALID")),
        _op(
            "mean-matmul-biasadd-softmax",
            lambda tf, x, k: tf.nn.softmax(
                tf.nn.bias_add(tf.matmul(tf.reduce_mean(x, [1, 2]), _c(k, c, 7)), _c(k + 1, 7))
            ),
        ),
        _op("relu-pad", lambda tf, x, k: tf.pad(tf.nn.relu(x), [[0, 0], [1, 2], [0, 1], [0, 0]])),
        _op("reshape-squeeze", lambda tf, x, k: tf.squeeze(tf.reshape(x, [1, 1, -1]), [0])),
        # ---- padding="EXPLICIT", and Keras' ZeroPadding2D before a VALID conv (folded)
        _op(
            "conv2d-explicit",
            lambda tf, x, k: tf.nn.conv2d(
                x, _c(k, 3, 3, c, 6), 1, [[0, 0], [1, 2], [0, 1], [0, 0]]
            ),
            shape=(1, 9, 8, 4),
            doc="Conv2D padding EXPLICIT, explicit_paddings [0, 0, 1, 2, 0, 1, 0, 0]",
        ),
        _op(
            "depthwise-explicit-s2",
            lambda tf, x, k: tf.nn.depthwise_conv2d(
                x, _c(k, 3, 3, c, 2), [1, 2, 2, 1], [[0, 0], [1, 2], [0, 1], [0, 0]]
            ),
            shape=(1, 9, 8, 4),
            doc="DepthwiseConv2dNative padding EXPLICIT, stride 2, multiplier 2",
        ),
        _op(
            "pad-depthwise-valid-s2",
            lambda tf, x, k: tf.nn.depthwise_conv2d(
                tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]),
                _c(k, 3, 3, c, 1),
                [1, 2, 2, 1],
                "VALID",
            ),
            shape=(1, 10, 8, 4),
            doc="MobileNetV2's ZeroPadding2D -> stride-2 depthwise: the Pad folds",
        ),
        _op(
            "pad-conv2d-valid-s2",
            lambda tf, x, k: tf.nn.conv2d(
                tf.pad(x, [[0, 0], [1, 1], [0, 1], [0, 0]]), _c(k, 3, 3, c, 5), 2, "VALID"
            ),
            shape=(1, 9, 8, 4),
            doc="EfficientNet's stem: ZeroPadding2D -> stride-2 Conv2D: the Pad folds",
        ),
        _op(
            "pad-avgpool-valid",
            lambda tf, x, k: tf.nn.avg_pool2d(
                tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID"
            ),
            doc="AvgPool counts the Pad's zeros: the Pad stays a step",
        ),
    ]
    return ops


BUILDERS: dict[str, Builder] = {b.name: b for b in (*_apps(), *_ops())}
APP_NAMES = [n for n in BUILDERS if not n.startswith("op-")]
OP_NAMES = [n for n in BUILDERS if n.startswith("op-")]
