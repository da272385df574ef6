"""The optimizers the original pyMeta used, by meta-learner and dataset: the inner optimizer (SGD, or
Adam with beta_1=0) and the outer one (SGD for Reptile, Adam for the MAML family)."""

from pymeta.registry import INNER_OPTIMIZERS


def inner_optimizer_name(metamodel: str, dataset: str, choice: str = "auto") -> str:
    """'sgd' or 'adam': choice 'auto' is the original's, Adam(beta_1=0) for Reptile and for FOMAML
    (and SeqFOMAML) on sinusoid, plain SGD otherwise (MAML differentiates through the inner steps:
    Adam's sqrt(v) has an infinite derivative where a gradient is exactly zero)."""
    if choice not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {choice!r}: auto, sgd or adam")
    if choice != "auto":
        return choice
    original_adam = metamodel == "reptile" or (metamodel in ("fomaml", "seqfomaml") and dataset == "sinusoid")
    return "adam" if original_adam else "sgd"


def default_inner_optimizer(metamodel: str, dataset: str, inner_lr: float, choice: str = "auto"):
    """The Keras inner optimizer `inner_optimizer_name` names: Adam(inner_lr, beta_1=0) or SGD(inner_lr).
    Its state starts fresh for every task unless the meta-learner keeps it."""
    import keras
    if inner_optimizer_name(metamodel, dataset, choice) == "adam":
        return keras.optimizers.Adam(inner_lr, beta_1=0.0)
    return keras.optimizers.SGD(inner_lr)


def default_meta_optimizer(metamodel: str, meta_lr: float, anneal_steps: int = 0):
    """The original's choice: plain SGD for Reptile, Adam for the MAML family.

    anneal_steps > 0: the learning rate decays linearly to 0 over that many steps (Reptile's recipe).
    """
    import keras
    if anneal_steps > 0:
        meta_lr = keras.optimizers.schedules.PolynomialDecay(meta_lr, anneal_steps, 0.0, power=1.0)
    if metamodel == "reptile":
        return keras.optimizers.SGD(meta_lr)
    return keras.optimizers.Adam(meta_lr)
