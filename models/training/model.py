"""The Keras network: a small Conv1D stack over time with the 40 mel bands as channels."""

from __future__ import annotations

import functools
from collections.abc import Sequence


def build_model(
    window_frames: int,
    n_mels: int,
    n_classes: int,
    widths: Sequence[int] = (64, 96, 128, 160),
    kernel: int = 5,
    dropout: float = 0.3,
    l2: float = 1e-4,
    pooling: str = "avg",
    aux_classes: int = 0,
    embed_dims: int = 0,
    domain_classes: int = 0,
    level_sets: bool = False,
):
    """Conv1D + BN + ReLU + pooling blocks (separable after the first), global pooling, softmax.

    ``pooling="avgmax"`` concatenates global average and global max pooling: the
    max keeps short, emotion-bearing bursts (a shout, a laugh) that an average
    over a second of speech washes out.

    ``aux_classes > 0`` adds a second softmax head, ``level`` (BAVED's
    low/neutral/high emotion level), on the same pooled embedding: training
    only; ``deployable`` strips it before conversion.

    ``embed_dims > 0`` adds a linear head, ``embed``, on the pooled embedding
    (before dropout) that regresses the teacher's clip embedding (projected to
    ``embed_dims`` principal components): a hint of *what the teacher hears*
    richer than its 7 class probabilities. Training only, stripped like ``level``.

    ``domain_classes > 0`` adds an adversary, ``domain``: a small classifier of the
    training corpus (or speaker) behind a gradient reversal (``gradient_reversal_layer``,
    layer ``reverse``). It learns to tell them apart while the layers below are
    pushed to make that impossible: what is left should be emotion, not a
    corpus's microphone, room or language. Training only, stripped like ``level``.

    ``level_sets`` adds ``level_set``: the emotion probabilities themselves under a
    second name, so BAVED windows can be scored by a set-valued loss (``set_nll``)
    while the emotion windows keep theirs. Training only, stripped like ``level``.

    Every op (Conv2D/DepthwiseConv2D after TFLite lowering, MaxPool, Mean,
    Reduce-max, Concatenation, FullyConnected, Softmax) has an int8 kernel in TFLite builtins.
    """
    import keras
    from keras import layers

    reg = keras.regularizers.l2(l2)
    inp = keras.Input(shape=(window_frames, n_mels), name="logmel")
    x = inp
    for i, w in enumerate(widths):
        if i == 0:
            x = layers.Conv1D(w, kernel, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        else:
            x = layers.SeparableConv1D(
                w, kernel if i < 2 else 3, padding="same", use_bias=False, pointwise_regularizer=reg
            )(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        if i < len(widths) - 1:
            x = layers.MaxPooling1D(2)(x)
    if pooling == "avgmax":
        x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    elif pooling == "avg":
        x = layers.GlobalAveragePooling1D()(x)
    else:
        raise ValueError(f"pooling must be 'avg' or 'avgmax', not {pooling!r}")
    pooled = x
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    heads = {"probs": out}
    if aux_classes > 0:
        heads["level"] = layers.Dense(aux_classes, activation="softmax", name="level")(x)
    if level_sets:
        heads["level_set"] = layers.Identity(name="level_set")(out)
    if embed_dims > 0:
        heads["embed"] = layers.Dense(embed_dims, name="embed")(pooled)
    if domain_classes > 0:
        d = gradient_reversal_layer()(name="reverse")(pooled)
        d = layers.Dense(64, activation="relu", name="domain_hidden")(d)
        heads["domain"] = layers.Dense(domain_classes, activation="softmax", name="domain")(d)
    if len(heads) > 1:
        return keras.Model(inp, heads, name="emotiond_conv1d_heads")
    return keras.Model(inp, out, name="emotiond_conv1d")


@functools.cache
def gradient_reversal_layer():
    """The class of ``GradientReversal``, built on first use so importing this module needs no Keras."""
    import keras

    class GradientReversal(keras.layers.Layer):
        """Identity forward; the gradient flowing back is multiplied by ``-scale``.

        ``stop_gradient(x) − s·(x − stop_gradient(x))`` equals ``x`` exactly and has gradient ``−s``,
        in any Keras backend, without a custom gradient. ``scale`` is a
        non-trainable weight so training can ramp it (Ganin & Lempitsky: start
        at 0 while the adversary knows nothing, rise to 1).
        """

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(), initializer="zeros", trainable=False, name="scale")

        def call(self, x):
            ops = keras.ops
            frozen = ops.stop_gradient(x)
            return frozen - self.scale * (x - frozen)

    return GradientReversal


def reversal_scale(epoch: int, epochs: int) -> float:
    """Ganin & Lempitsky's ramp, 2/(1+exp(-10p)) - 1 at the start of ``epoch`` (0-based) of ``epochs``."""
    import math

    p = epoch / max(1, epochs)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def set_nll(allowed, probs):
    """−log of the probability the network gives to the allowed classes together.

    ``allowed`` is a 0/1 mask per window: a clip known only to be "one of these"
    (a BAVED level) pulls probability into the set without choosing inside it.
    Windows with an all-zero mask must carry sample weight 0.
    """
    import keras

    ops = keras.ops
    return -ops.log(ops.sum(allowed * probs, axis=-1) + 1e-7)


def deployable(model):
    """The network the daemon runs: the emotion head only (training-only heads are dropped)."""
    import keras

    if isinstance(model.output, dict):
        return keras.Model(model.input, model.output["probs"], name="emotiond_conv1d")
    return model


def bag_model(window_model, bag_windows: int):
    """A training-only view that scores ``bag_windows`` windows of one utterance and averages their probabilities.

    Why: the daemon judges an utterance by the mean of its windows'
    probabilities (the smoother's summary), while window-by-window training asks
    every window, silent-ish ones included, to carry the clip's label alone. A
    loss on the mean lets a window the label does not fit count for less. The
    layers are ``window_model``'s own, so what is validated and converted stays
    the window network.
    """
    import keras

    inp = keras.Input(shape=(bag_windows, *tuple(window_model.input.shape[1:])), name="bag")
    probs = keras.layers.TimeDistributed(window_model, name="windows")(inp)
    return keras.Model(inp, keras.layers.GlobalAveragePooling1D(name="probs")(probs), name="emotiond_bag")


def average_of(members: Sequence):
    """One network that averages the class probabilities of ``members`` (same input, same labels).

    Why: seeds of one recipe differ by 1-2 points on validation, and their errors
    differ too; the mean of their probabilities is steadier than any one of them.
    Each member keeps its own layers, so int8 conversion quantises each one as
    trained; the average is one more int8 op.
    """
    import keras

    inp = keras.Input(shape=tuple(members[0].input.shape[1:]), name="logmel")
    outs = []
    for i, member in enumerate(members):
        member.name = f"member_{i}"
        outs.append(member(inp))
    avg = keras.layers.Average(name="probs")(outs) if len(outs) > 1 else outs[0]
    return keras.Model(inp, avg, name="emotiond_conv1d_ensemble")
