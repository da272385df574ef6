"""Mini-ImageNet task distributions (N-way K-shot image classification).

Data: the file written by ``scripts/make_miniimagenet_dataset.py`` (see ``pymeta.data.load_miniimagenet``):
{'train' | 'val' | 'test': (X uint8 [n, 84, 84, 3], y int [n])}, normally 64 / 16 / 20 classes of 600
images (Ravi & Larochelle split). Images stay uint8; ClassificationTask scales each batch to float32.

Meta-training tasks draw classes from the train split, validation tasks from the val split and test
tasks from the test split (the original pyMeta built its test distribution from the validation classes;
fixed here). Inside a class, the images are split half/half into a train part and a test part
(``split_train_test=0.5``, as the original) before K train and Q test images are drawn, so any
K, Q <= 300 works. The original evaluated validation/test tasks with 50 test images per class; here
``num_eval_test_samples_per_class`` (default: the same Q as meta-training) sets that.
"""

from pymeta.core.task_distribution import as_count
from pymeta.data import load_miniimagenet
from pymeta.tasks._dataset_tasks import check_counts, check_flag, classes_only_once, distribution

__all__ = ["create_miniimagenet_task_distribution"]


def create_miniimagenet_task_distribution(path_to_pkl, num_training_samples_per_class=1,
                                          num_test_samples_per_class=15, num_training_classes=5,
                                          meta_batch_size=5, num_eval_test_samples_per_class=None,
                                          split_train_test=0.5, use_classes_only_once=None):
    """(metatrain, metaval, metatest) TaskDistributions over the train / val / test classes.

    ``path_to_pkl``: pkl or h5 path, or an already loaded dict. Default: 5-way 1-shot, 15 query images
    per class, 5 tasks per meta-batch. ``use_classes_only_once``: no class twice in one meta-training
    batch (None: on when N * meta_batch_size <= number of train classes).
    """
    K, Q, N, meta_batch_size = check_counts(num_training_samples_per_class, num_test_samples_per_class,
                                            num_training_classes, meta_batch_size)
    Q_eval = Q if num_eval_test_samples_per_class is None else \
        as_count(num_eval_test_samples_per_class, "num_eval_test_samples_per_class", allow_all=True)
    use_classes_only_once = check_flag(use_classes_only_once, "use_classes_only_once")
    data = path_to_pkl if isinstance(path_to_pkl, dict) else load_miniimagenet(path_to_pkl)
    out = []
    for split in ("train", "val", "test"):
        X, y = data[split]
        if split == "train":
            once = classes_only_once(use_classes_only_once, N, meta_batch_size, len(set(y.tolist())))
            out.append(distribution(X, y, K, Q, N, split_train_test, meta_batch_size, once))
        else:
            out.append(distribution(X, y, K, Q_eval, N, split_train_test, meta_batch_size, False))
    return tuple(out)
