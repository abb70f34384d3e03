"""TensorFlow as the test oracle: graphs TensorFlow writes, frozen and cached, run by both.

`graphs` holds the builders (Keras applications from Keras 3 and tf_keras, TF1 graph mode,
one small graph per op), `build` runs them in a child process (TensorFlow's import, threads
and TF1 mode never touch the pytest process), `cache` keeps each frozen graph with its
input tensor and TensorFlow's output on disk, and `harness` runs a graph in the real guest.
TensorFlow is a test dependency only (`.[oracle]`, part of `.[dev]`), never the workshop's.
"""
