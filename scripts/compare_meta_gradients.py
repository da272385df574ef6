"""Compare the meta-gradients of FOMAML, iMAML and second-order MAML on the same tasks at a saved model.

For each of `--num_tasks` meta-training tasks, from the model's weights theta (T plain inner SGD steps,
the model file's settings unless flags say otherwise):

    maml      d L_query(phi(theta)) / d theta, through the T steps (second order)
    fomaml    d L_query / d phi at phi = phi(theta)
    pullback  d L_query / d phi at iMAML's pulled-back phi - alpha lambda (phi - theta)
    imaml     CG's solution of ((1 + cg_damping) I + H / (lambda + lam_damping)) g = pullback gradient

and prints the mean cosine between each pair per task and between the means over all tasks (a
meta-batch's direction), the CG steps taken and the support loss after adaptation.

    python scripts/compare_meta_gradients.py --model pretrained/omniglot/omniglot_imaml_5w1s.h5
"""

import argparse
import itertools
import json

import numpy as np

NAMES = ("maml", "fomaml", "pullback", "imaml")


def task_gradients(learner, theta, state, data):
    """The four meta-gradients (flat float32 vectors [P], in NAMES order), CG steps and the support
    loss after adaptation, of one task (`TaskData` with inner batches [T, ...])."""
    import tensorflow as tf

    from pymeta.metalearners.fomaml import query_gradient
    with tf.GradientTape() as tape:
        tape.watch(theta)
        phi, _, _ = learner.adapt(theta, state, data.inner, theta=theta)
        query_loss = learner.objective(phi, state, data.query)
    maml = tape.gradient(query_loss, theta)
    pulled = learner.pull_back(theta, phi)
    imaml, _, steps = learner.solve_implicit(pulled, state, data.support, data.query)
    grads = (maml, query_gradient(learner, phi, state, data.query), query_gradient(learner, pulled, state, data.query),
             imaml)
    flat = [tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in gs], 0) for gs in grads]
    return flat, steps, learner.objective(phi, state, data.support)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def pair_cosines(vectors):
    """{'maml~fomaml': cosine, ...} for every pair of the four gradients (in NAMES order)."""
    return {f"{a}~{b}": cosine(vectors[i], vectors[j])
            for (i, a), (j, b) in itertools.combinations(enumerate(NAMES), 2)}


def compare(learner, tasks, num_inner_iterations: int):
    """{'per_task': mean cosine of each pair over the tasks, 'mean_gradients': cosine of the pairs'
    means over the tasks, 'cg_steps', 'support_loss_after_adaptation' (means)}."""
    import tensorflow as tf
    theta = [tf.convert_to_tensor(v) for v in learner.model.trainable_variables]
    state = [tf.convert_to_tensor(v) for v in learner.model.non_trainable_variables]
    fn = tf.function(lambda th, d: task_gradients(learner, th, state, d), reduce_retracing=True)
    per_task, sums, steps, losses = [], None, [], []
    for task in tasks:
        data = tf.nest.map_structure(tf.convert_to_tensor, task.task_data(num_inner_iterations, -1))
        flat, s, loss = fn(theta, data)
        flat = [f.numpy().astype(np.float64) for f in flat]
        sums = flat if sums is None else [a + b for a, b in zip(sums, flat)]
        per_task.append(pair_cosines(flat))
        steps.append(float(s))
        losses.append(float(loss))
    return {"per_task": {k: float(np.mean([p[k] for p in per_task])) for k in per_task[0]},
            "mean_gradients": pair_cosines(sums),
            "cg_steps": float(np.mean(steps)), "support_loss_after_adaptation": float(np.mean(losses))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data_path", default=None)
    p.add_argument("--num_tasks", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num_inner_iterations", type=int, default=None, help="default: the model file's")
    for name in ("imaml_lambda_reg", "imaml_cg_damping", "imaml_lam_damping", "inner_lr"):
        p.add_argument(f"--{name}", type=float, default=None, help="default: the model file's")
    p.add_argument("--imaml_cg_steps", type=int, default=None, help="default: the model file's")
    p.add_argument("--output", default=None, help="also write the result as JSON")
    args = p.parse_args(argv)

    import keras

    from pymeta.config.stored import read_stored_settings
    from pymeta.model_io import load_weights_into
    from pymeta.metalearner_factory import build_metalearner
    from pymeta.problems import seeded_problem_and_model
    s = read_stored_settings(args.model) or {}
    get = lambda name, default: getattr(args, name) if getattr(args, name) is not None else s.get(name, default)
    steps = get("num_inner_iterations", None) or s.get("num_inner_training_iterations", 5)
    problem, model = seeded_problem_and_model(
        args.seed, s.get("precision", "float32"), s.get("dataset", "omniglot"), "imaml", get("inner_lr", 0.1),
        s.get("num_output_classes", 5), s.get("num_train_samples_per_class", 1),
        s.get("num_test_samples_per_class", 5), 1, args.data_path)
    load_weights_into(model, args.model)
    learner = build_metalearner("imaml", model, keras.optimizers.Adam(), inner_mode="pullback",
                                lambda_reg=get("imaml_lambda_reg", 2.0), n_iters_optimizer=get("imaml_cg_steps", 5),
                                cg_damping=get("imaml_cg_damping", 1.0),
                                lam_damping=get("imaml_lam_damping", 10.0), cg_tol=1e-6)
    tasks = [problem.metatrain.sample_batch(1)[0] for _ in range(args.num_tasks)]
    result = compare(learner, tasks, steps)
    result["settings"] = {"model": args.model, "num_tasks": args.num_tasks, "seed": args.seed, "inner_steps": steps,
                          "inner_lr": get("inner_lr", 0.1), "lambda": learner.lambda_reg,
                          "cg_damping": learner.cg_damping, "lam_damping": learner.lam_damping,
                          "cg_steps": learner.n_iters_optimizer}
    for key in ("per_task", "mean_gradients"):
        print(f"cosines ({key.replace('_', ' ')}): " + ", ".join(f"{k} {v:.3f}" for k, v in result[key].items()))
    print(f"CG steps {result['cg_steps']:.2f}, support loss after adaptation {result['support_loss_after_adaptation']:.4f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
