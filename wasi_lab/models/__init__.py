"""The models side of wasi-lab: graph files, a NumPy reference, conversion and fetching.

Everything here is plain Python + NumPy so a learner can read how a TensorFlow
frozen graph is laid out on disk (``graphdef``), what each op computes
(``reference``), and where the weights come from (``torch_pickle``,
``efficientnet``, ``fetch``).
"""
