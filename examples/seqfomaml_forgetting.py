"""Meta-learnt priors slow down catastrophic forgetting (Spigler 2019), on a small synthetic problem.

Three initialisations of the same network are compared:
  random      the network as built,
  FOMAML      meta-learnt on single tasks,
  SeqFOMAML   meta-learnt on sequences of tasks (variant 'loss_after_each_task'),
all with the same number of meta-iterations and the same inner loop. Each is then trained on new
sequences of unseen tasks, one task after the other with a single shared output head (task i's classes
are labels 0..N-1 again), and the test accuracy of every task of the sequence is measured at the end.
A prior that forgets less keeps the accuracy of the first tasks higher.

Data: a synthetic "Omniglot": 16x16x1 images, each class a fixed random pattern of 4x4 blocks,
examples = the pattern with 10% of the pixels flipped plus Gaussian noise (uint8). Disjoint classes for
meta-training and for the evaluation sequences. Runs on CPU in a few minutes.

    python examples/seqfomaml_forgetting.py [--iterations 1000] [--out seqfomaml_forgetting.png]

Prints the accuracy of each task of the sequence after the whole sequence has been learnt (mean
over the evaluation sequences) and writes the plot.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pymeta.core.task import ClassificationTask, TaskAsSequenceOfTasks  # noqa: E402
from pymeta.core.task_distribution import TaskAsSequenceOfTasksDistribution, TaskDistribution  # noqa: E402
from pymeta.metalearners.fomaml import FOMAMLMetaLearner  # noqa: E402
from pymeta.metalearners.seq_fomaml import SeqFOMAMLMetaLearner  # noqa: E402


def synthetic_dataset(num_classes, per_class, size=16, block=4, flip=0.1, noise=0.15, seed=0):
    """uint8 images [num_classes * per_class, size, size, 1] and labels [num_classes * per_class]."""
    rng = np.random.RandomState(seed)
    cells = rng.rand(num_classes, size // block, size // block) < 0.5
    patterns = np.repeat(np.repeat(cells, block, axis=1), block, axis=2).astype(np.float32)
    X = np.repeat(patterns, per_class, axis=0)
    flips = rng.rand(*X.shape) < flip
    X = np.where(flips, 1.0 - X, X) + noise * rng.randn(*X.shape)
    X = (np.clip(X, 0, 1) * 255).astype(np.uint8)[..., None]
    return X, np.repeat(np.arange(num_classes), per_class)


def task_distribution(X, y, ways, shots, queries):
    task = ClassificationTask(X, y, num_training_samples_per_class=shots, num_test_samples_per_class=queries,
                              num_training_classes=ways, split_train_test=-1)
    return TaskDistribution([task], [1.0], batch_size=1)


def make_model(ways, size):
    return keras.Sequential([
        keras.Input((size, size, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(ways, activation="softmax"),
    ])


def compile_model(model, inner_lr):
    model.compile(optimizer=keras.optimizers.SGD(inner_lr), loss="sparse_categorical_crossentropy")
    return model


def meta_train(ml, sample_meta_batch, args, chunk=50):
    """`args.iterations` meta-iterations with the compiled fast path, `chunk` per call."""
    ml.initialize()
    done = 0
    while done < args.iterations:
        n = min(chunk, args.iterations - done)
        ml.metatrain_steps([sample_meta_batch() for _ in range(n)], args.inner_steps, args.inner_batch)
        done += n
    ml.task_begin()  # the model holds the meta-learnt initialisation
    return ml


def meta_train_fomaml(model, tasks, args):
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(args.meta_lr))
    # as many tasks per meta-iteration as SeqFOMAML sees: meta_batch sequences of seq_length tasks
    return meta_train(ml, lambda: tasks.sample_batch(args.meta_batch * args.seq_length), args)


def meta_train_seqfomaml(model, sequences, args):
    """The fast path on sequences; the step-by-step equivalent of one meta-iteration is

        for seq in sequences.sample_batch():
            ml.task_begin(seq)
            seq.fit_n_iterations(model, args.inner_steps, args.inner_batch)
            results.append(ml.task_end(seq))
        ml.update(results)
    """
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.Adam(args.meta_lr), variant=args.variant)
    return meta_train(ml, sequences.sample_batch, args)


def accuracies_after_sequence(model, initial_weights, sequences, args):
    """[num_sequences, L]: test accuracy of each task after learning the whole sequence, and
    [num_sequences, L]: accuracy of each task right after learning it."""
    after_all, just_learnt = [], []
    for seq in sequences:
        model.set_weights(initial_weights)
        right_after = []
        for task in seq.current_task_sequence:
            task.fit_n_iterations(model, args.inner_steps, args.inner_batch)
            right_after.append(task.evaluate(model)["sparse_categorical_accuracy"])
        just_learnt.append(right_after)
        after_all.append([seq.get_task_by_index(i).evaluate(model)["sparse_categorical_accuracy"]
                          for i in range(seq.get_sequence_length())])
    return np.array(after_all), np.array(just_learnt)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=1000, help="meta-iterations per meta-learner")
    p.add_argument("--seq_length", type=int, default=5)
    p.add_argument("--meta_batch", type=int, default=4, help="sequences per meta-iteration")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--inner_steps", type=int, default=10)
    p.add_argument("--inner_batch", type=int, default=10)
    p.add_argument("--inner_lr", type=float, default=0.01)
    p.add_argument("--meta_lr", type=float, default=0.001)
    p.add_argument("--variant", default="loss_after_each_task")
    p.add_argument("--eval_sequences", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="seqfomaml_forgetting.png")
    args = p.parse_args()

    np.random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    size = 16
    X, y = synthetic_dataset(300, 20, size=size, seed=args.seed)
    train = y < 200  # classes 0..199 for meta-training, 200..299 for the evaluation sequences
    train_tasks = task_distribution(X[train], y[train], args.ways, args.shots, args.queries)
    eval_tasks = task_distribution(X[~train], y[~train], args.ways, args.shots, args.queries)
    train_sequences = TaskAsSequenceOfTasksDistribution(
        TaskAsSequenceOfTasks(train_tasks, args.seq_length, args.seq_length), batch_size=args.meta_batch)
    eval_sequences = TaskAsSequenceOfTasksDistribution(
        TaskAsSequenceOfTasks(eval_tasks, args.seq_length, args.seq_length), batch_size=args.eval_sequences)
    evaluation = eval_sequences.sample_batch()

    initial = make_model(args.ways, size).get_weights()
    inits = {"random": initial}
    trainers = {"FOMAML": lambda model: meta_train_fomaml(model, train_tasks, args),
                "SeqFOMAML": lambda model: meta_train_seqfomaml(model, train_sequences, args)}
    for name, meta_train_from in trainers.items():
        t0 = time.time()
        model = compile_model(make_model(args.ways, size), args.inner_lr)
        model.set_weights(initial)
        meta_train_from(model)
        inits[name] = model.get_weights()
        print(f"{name} meta-training: {time.time() - t0:.0f} s", flush=True)

    model = compile_model(make_model(args.ways, size), args.inner_lr)
    results = {}
    for name, weights in inits.items():
        results[name] = accuracies_after_sequence(model, weights, evaluation, args)

    L = args.seq_length
    print(f"\nTest accuracy of task i after learning all {L} tasks of a sequence "
          f"(mean over {args.eval_sequences} sequences of unseen classes; chance {1 / args.ways:.2f}):")
    print(f"{'init':>10s} " + " ".join(f"task {i + 1:>2d}" for i in range(L)) + "   forgetting of task 1")
    for name, (after_all, just_learnt) in results.items():
        forgetting = just_learnt[:, 0].mean() - after_all[:, 0].mean()
        print(f"{name:>10s} " + " ".join(f"{a:7.3f}" for a in after_all.mean(0)) + f"   {forgetting:+.3f}"
              f"  (task 1 right after learning it: {just_learnt[:, 0].mean():.3f})")

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.arange(1, L + 1)
    for name, (after_all, _) in results.items():
        mean = after_all.mean(0)
        err = after_all.std(0) / np.sqrt(len(after_all))
        ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, label=name)
    ax.axhline(1 / args.ways, color="gray", linestyle=":", label="chance")
    ax.set_xticks(xs)
    ax.set_xlabel(f"task i of the sequence (accuracy measured after learning all {L})")
    ax.set_ylabel("test accuracy")
    ax.set_title("Forgetting after sequential learning, by initialisation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nplot written to {args.out}")


if __name__ == "__main__":
    main()
