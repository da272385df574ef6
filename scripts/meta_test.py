"""Meta-test a saved model (`pymeta-metatest` once installed): mean accuracy (or MSE) after adaptation
over many meta-test tasks, with the 95% confidence interval papers report.

    python scripts/meta_test.py --model saved/model.h5 --num_tasks 1000 --num_inner_iterations 10

The task and inner-loop flags default to the settings recorded in the model file; flags given win.
"""

from pymeta.cli.metatest import run

if __name__ == "__main__":
    run()
