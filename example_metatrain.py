r"""Meta-train a network with FOMAML, Reptile, iMAML, MAML or SeqFOMAML: the command line of the
original pyMeta (`pymeta-train` once installed; `--helpfull` lists every flag).

    python example_metatrain.py --dataset=sinusoid --metamodel=fomaml \
        --num_train_samples_per_class=10 --num_test_samples_per_class=100 \
        --num_inner_training_iterations=5 --inner_batch_size=10 --meta_lr=0.001 --inner_lr=0.01 \
        --meta_batch_size=5 --num_validation_batches=10 --model_save_filename=saved/model.h5 \
        --num_outer_metatraining_iterations=10000
"""

from pymeta.cli.train import run

if __name__ == "__main__":
    run()
