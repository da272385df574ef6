"""The meta-test of a saved model (`pymeta-metatest`), chosen by dataset: the supervised datasets'
(`pymeta.evaluation.meta_test`: accuracy or MSE with its 95% CI) or the RL datasets' MAML evaluation
protocol (`pymeta.rl.evaluation.meta_test_rl`: the return after 0..T policy-gradient steps)."""

from typing import Any, Dict

from pymeta.config import MetaTestConfig, check_metatest_config, check_output_folders
from pymeta.registry import RL_DATASETS


def meta_test(c: MetaTestConfig) -> Dict[str, Any]:
    """Meta-test config `c`; returns the result dict (also written to c.output as JSON)."""
    check_metatest_config(c)
    for path in filter(None, (c.output, c.plot)):
        check_output_folders(path)  # before evaluating
    if c.dataset in RL_DATASETS:
        from pymeta.rl.evaluation import meta_test_rl
        return meta_test_rl(c)
    from pymeta.evaluation import meta_test as meta_test_supervised
    return meta_test_supervised(c)
