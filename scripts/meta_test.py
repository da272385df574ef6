r"""Meta-test a saved model (`pymeta-metatest` once installed): mean accuracy (or MSE) after adaptation
over many meta-test tasks, with the 95% confidence interval papers report.

    python scripts/meta_test.py --model saved/model.h5 --dataset omniglot --num_output_classes 5 \
        --num_train_samples_per_class 1 --num_test_samples_per_class 15 --metamodel fomaml \
        --inner_lr 0.1 --num_inner_iterations 10 --num_tasks 1000
"""

from pymeta.cli.metatest import run

if __name__ == "__main__":
    run()
