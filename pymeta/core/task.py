"""Tasks: one learning problem each, with a training (support) set and a test (query) set.

+ Task: the base class (`reset()` draws a new problem).
+ SupervisedTask: what every supervised task shares: minibatch sampling, `fit_n_iterations` and
  `evaluate`, both running pymeta's compiled inner loop (`pymeta.inner_loop`).
+ ClassificationTask / ClassificationTaskFromFiles: N-way K-shot problems cut out of a labelled
  dataset (in memory, or one file per example).
+ TaskAsSequenceOfTasks: a sequence of tasks learnt one after the other (continual learning).

Randomness comes from numpy's global generator (`np.random`), so `np.random.seed(s)` makes a run
reproducible, as in the original pyMeta.
"""

import copy
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np

from pymeta.core.counts import as_count, as_int
from pymeta.core.learner import default_learner
from pymeta.core.task_data import TaskData

if TYPE_CHECKING:  # pragma: no cover
    from pymeta.core.learner import Learner

Arrays = Tuple[np.ndarray, np.ndarray]  # (X [n, ...], y [n])


class Task:
    """Base class. `reset()` draws a new problem (new classes, new samples, new parameters...)."""

    # attributes shared, never copied, by `copy.deepcopy` (large read-only dataset arrays)
    _shared_attributes: Tuple[str, ...] = ()
    # the meta-learner that began this task (`metalearner.task_begin(task)`): whose inner loop
    # `fit_n_iterations` runs; None: the model's own (`pymeta.core.learner.default_learner`)
    learner: Optional["Learner"] = None
    # what the last `fit_n_iterations` trained on (a `TaskData`), for the meta-learner's `task_end`
    last_fit: Optional[TaskData] = None

    def reset(self) -> None:
        pass

    def learner_for(self, model: keras.Model) -> "Learner":
        """The `Learner` whose inner loop trains `model` on this task (see `learner`)."""
        learner = self.learner
        if learner is not None and learner.model is model:
            return learner
        return default_learner(model)

    def __deepcopy__(self, memo):
        result = self.__class__.__new__(self.__class__)
        memo[id(self)] = result
        for k, v in self.__dict__.items():
            shared = k in self._shared_attributes or k == "learner"
            setattr(result, k, v if shared else copy.deepcopy(v, memo))
        return result


def as_float_inputs(x: Any) -> np.ndarray:
    """Inputs for the network: uint8 images are scaled to [0, 1] float32, anything else cast to float32."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=False)


class SupervisedTask(Task):
    """A task with `get_train_set()` and `get_test_set()` (both return (X, y) numpy arrays).

    Inner-loop training and evaluation run pymeta's compiled functions on the model (see
    `pymeta.inner_loop`); the model must be compiled with a loss and an inner optimizer, or attached to
    a meta-learner.
    """

    def get_train_set(self) -> Arrays:
        raise NotImplementedError

    def get_test_set(self) -> Arrays:
        raise NotImplementedError

    def num_train_samples(self) -> int:
        return len(self.get_train_set()[1])

    def inner_batch_indices(self, num_iterations: int, batch_size: Optional[int]) -> np.ndarray:
        """Rows of the training set used at each inner step: int32 [num_iterations, batch_size].

        batch_size -1 (or None) means the whole training set at every step (no randomness used);
        otherwise each step draws `batch_size` distinct rows.
        """
        n = self.num_train_samples()
        num_iterations = as_count(num_iterations, "num_iterations", minimum=0)
        batch_size = None if batch_size is None else as_count(batch_size, "batch_size", allow_all=True)
        if batch_size is None or batch_size < 0 or batch_size == n:
            return np.tile(np.arange(n, dtype=np.int32), (num_iterations, 1))
        if batch_size == 0 or batch_size > n:
            raise ValueError(f"inner batch size {batch_size} is not possible with a training set of "
                             f"{n} examples: use 1..{n}, or -1 for the whole set")
        rows = [np.random.choice(n, batch_size, replace=False) for _ in range(num_iterations)]
        return np.asarray(rows, np.int32).reshape(num_iterations, batch_size)

    def sample_batch(self, batch_size: int) -> Arrays:
        """A random minibatch (X [batch_size, ...], y [batch_size]) of the training set."""
        x, y = self.get_train_set()
        idx = self.inner_batch_indices(1, batch_size)[0]
        return x[idx], y[idx]

    def task_data(self, num_iterations: int, batch_size: int) -> TaskData:
        """The `TaskData` of this task for `num_iterations` inner steps on minibatches of `batch_size`
        (-1: the whole training set): support (x [NK, ...], y [NK]), inner (x [T, B, ...], y [T, B]),
        query (x [NQ, ...], y [NQ]), numpy arrays."""
        x, y = self.get_train_set()
        idx = self.inner_batch_indices(num_iterations, batch_size)
        return TaskData(support=(x, y), inner=(x[idx], y[idx]), query=self.get_test_set())

    def fit_n_iterations(self, model: keras.Model, num_iterations: int, batch_size: int) -> Dict[str, float]:
        """Train `model` in place for `num_iterations` inner steps on minibatches of the training set.

        Runs the compiled inner loop (the same one the meta-learners' fast path runs) of the
        meta-learner that began this task (`task_begin`), else with the optimizer and loss the model
        was compiled with; the inner optimizer state starts fresh unless the meta-learner keeps one.
        Records what it trained on in `last_fit` (a `TaskData`). Returns {'last_minibatch_loss': float}.
        """
        data = self.task_data(num_iterations, batch_size)
        learner = self.learner_for(model)
        learner.check_data(data)
        loss = learner.fit_in_place(model, data.inner)
        self.last_fit = data
        return {"last_minibatch_loss": float(loss)}

    def evaluate(self, model: keras.Model, evaluate_on_train: bool = False,
                 transductive: bool = True) -> Dict[str, float]:
        """{'loss': ..., and for classification 'sparse_categorical_accuracy': ...} of the model as it is.

        transductive=True (the original's behaviour): batch norm uses the statistics of the evaluated
        batch itself. transductive=False: batch norm uses the statistics of the training set, so every
        test prediction depends on that test example only.
        """
        x, y = self.get_train_set() if evaluate_on_train else self.get_test_set()
        learner = self.learner_for(model)
        support = None if transductive else self.get_train_set()[0]
        learner.check_batch("support" if evaluate_on_train else "query", x, y)  # as fit_n_iterations does
        if support is not None:
            learner.check_batch("support", support)
        loss, accuracy = learner.metrics_of_model(model, x, y, support)
        out = {"loss": float(loss)}
        if learner.is_classification:
            out["sparse_categorical_accuracy"] = float(accuracy)
        return out


class ClassificationTask(SupervisedTask):
    """N-way K-shot classification problems drawn from a labelled dataset.

    Args:
        X: array of real numbers [n, ...] (uint8 images are scaled to [0, 1] per batch); never copied (a list
            is converted to one).
        y: int labels [n].
        num_training_samples_per_class: K train (support) examples per class; -1 = all of the train part.
        num_test_samples_per_class: Q test (query) examples per class; -1 = all of the test part.
        num_training_classes: N classes drawn at each reset; -1 = all classes.
        split_train_test: fraction of each class's examples in the train part (before drawing K and
            Q); a negative value means K / (K + Q).
        class_ids_to_avoid: classes never drawn (e.g. used by other tasks of the same meta-batch).

    On `reset()` the N classes are relabelled 0..N-1 in the order they were drawn.
    Impossible requests (more classes or examples than exist) raise ValueError.
    """

    _shared_attributes: Tuple[str, ...] = ("X", "y", "_class_to_rows")

    def __init__(self, X: Any, y: Any, num_training_samples_per_class: int = -1,
                 num_test_samples_per_class: int = -1, num_training_classes: int = -1,
                 split_train_test: float = 0.8, class_ids_to_avoid: Any = ()):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
        X = self._checked_inputs(np.asarray(X))  # an array is never copied (a list is converted)
        if len(X) != len(y):
            raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
        if len(y) == 0:
            raise ValueError("empty dataset: X and y have no examples")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
        self.X, self.y = X, y
        self._class_to_rows = _rows_by_class(y)

        K = as_int(num_training_samples_per_class, "num_training_samples_per_class")
        Q = as_int(num_test_samples_per_class, "num_test_samples_per_class")
        if K == 0 or K < -1 or Q == 0 or Q < -1:
            raise ValueError(f"samples per class must be >= 1 or -1 (all), got train {K}, test {Q}")
        if split_train_test < 0:
            if K < 1 or Q < 1:
                raise ValueError("split_train_test < 0 means K/(K+Q): it needs both "
                                 "num_training_samples_per_class and num_test_samples_per_class >= 1")
            split_train_test = K / (K + Q)
        if not 0.0 <= split_train_test <= 1.0:
            raise ValueError(f"split_train_test must be in [0, 1] or negative, got {split_train_test}")
        self.num_training_samples_per_class = K
        self.num_test_samples_per_class = Q
        self.split_train_test = float(split_train_test)
        self.num_training_classes = as_count(num_training_classes, "num_training_classes", allow_all=True)
        self.class_ids_to_avoid = set(class_ids_to_avoid)
        self._check_sizes()
        self.label_offset = 0
        self.reset()

    def _checked_inputs(self, X: np.ndarray) -> np.ndarray:
        if X.ndim == 0 or not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)
                               or X.dtype == np.bool_):  # complex numbers would lose their imaginary part
            raise ValueError(f"X must be an array of real numbers [n, ...], got {X.dtype} of shape {X.shape}")
        return X

    def _split_point(self, n):
        return int(np.floor(n * self.split_train_test + 1e-9))

    def _check_sizes(self):
        available = len(self._available_classes())
        if self.num_training_classes > available:
            raise ValueError(f"{self.num_training_classes} classes per task requested, but only "
                             f"{available} classes are available")
        smallest = min(len(r) for r in self._class_to_rows.values())
        n_train = self._split_point(smallest)
        n_test = smallest - n_train
        K, Q = self.num_training_samples_per_class, self.num_test_samples_per_class
        if n_train < max(K, 1) or n_test < max(Q, 1):
            raise ValueError(
                f"cannot draw {K if K > 0 else 'all'} train + {Q if Q > 0 else 'all'} test examples per "
                f"class: the smallest class has {smallest} examples, split {n_train} train / "
                f"{n_test} test (split_train_test={self.split_train_test:.3f})")

    def _available_classes(self):
        return [c for c in self._class_to_rows if c not in self.class_ids_to_avoid]

    def reset(self) -> None:
        classes = self._available_classes()
        N = self.num_training_classes
        if N > len(classes):
            raise ValueError(f"{N} classes per task requested, but only {len(classes)} classes are "
                             "available (after class_ids_to_avoid)")
        chosen = np.random.choice(len(classes), N, replace=False) if N > 0 else np.arange(len(classes))
        self.classes_ids = [classes[i] for i in chosen]
        train, test, train_labels, test_labels = [], [], [], []
        K, Q = self.num_training_samples_per_class, self.num_test_samples_per_class
        for label, c in enumerate(self.classes_ids):
            rows = np.random.permutation(self._class_to_rows[c])
            sep = self._split_point(len(rows))
            tr, te = rows[:sep], rows[sep:]
            if K >= 1:
                tr = np.random.choice(tr, K, replace=False)
            if Q >= 1:
                te = np.random.choice(te, Q, replace=False)
            train.append(tr)
            test.append(te)
            train_labels.append(np.full(len(tr), label, np.int64))
            test_labels.append(np.full(len(te), label, np.int64))
        order_train = np.random.permutation(sum(len(t) for t in train))
        order_test = np.random.permutation(sum(len(t) for t in test))
        self.train_indices = np.concatenate(train)[order_train]
        self.test_indices = np.concatenate(test)[order_test]
        self._train_labels = np.concatenate(train_labels)[order_train]
        self._test_labels = np.concatenate(test_labels)[order_test]

    def _load_inputs(self, rows):
        return as_float_inputs(self.X[rows])

    def num_train_samples(self) -> int:
        return len(self.train_indices)

    def sample_batch(self, batch_size: int) -> Arrays:
        idx = self.inner_batch_indices(1, batch_size)[0]
        rows = self.train_indices[idx]
        return self._load_inputs(rows), self._train_labels[idx] + self.label_offset

    def get_train_set(self) -> Arrays:
        """(X [N*K, ...] float32, y [N*K] int64 in 0..N-1)."""
        return self._load_inputs(self.train_indices), self._train_labels + self.label_offset

    def get_test_set(self) -> Arrays:
        """(X [N*Q, ...] float32, y [N*Q] int64 in 0..N-1)."""
        return self._load_inputs(self.test_indices), self._test_labels + self.label_offset


def _rows_by_class(y):
    """{label: int array of the rows with that label}, in sorted label order."""
    order = np.argsort(y, kind="stable")
    labels, starts = np.unique(y[order], return_index=True)
    ends = list(starts[1:]) + [len(y)]
    return {lab.item(): order[s:e] for lab, s, e in zip(labels, starts, ends)}


class ClassificationTaskFromFiles(ClassificationTask):
    """A ClassificationTask whose X is an array of file names, loaded by `input_parse_fn(filename)`.

    num_parallel_processes: load batches in that many worker processes (`pymeta.data.processes.Workers`;
        None: in this process); a file that fails to load raises its error here.
    """

    _shared_attributes: Tuple[str, ...] = ClassificationTask._shared_attributes + ("input_parse_fn", "_pool")

    def __init__(self, X: Any, y: Any, num_training_samples_per_class: int = -1,
                 num_test_samples_per_class: int = -1, num_training_classes: int = -1,
                 split_train_test: float = 0.8, class_ids_to_avoid: Any = (),
                 input_parse_fn: Optional[Callable[[Any], Any]] = None,
                 num_parallel_processes: Optional[int] = None):
        if input_parse_fn is None:
            raise ValueError("ClassificationTaskFromFiles needs input_parse_fn(filename) -> array")
        self.input_parse_fn = input_parse_fn
        self.num_parallel_processes = (None if num_parallel_processes is None else
                                       as_count(num_parallel_processes, "num_parallel_processes", minimum=0))
        self._pool: Any = None  # the worker processes, shared by the copies a TaskDistribution draws
        super().__init__(np.asarray(X), y, num_training_samples_per_class, num_test_samples_per_class,
                         num_training_classes, split_train_test, class_ids_to_avoid)
        self._workers()  # after the checks: no process for a task that is refused

    def _checked_inputs(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 1:
            raise ValueError(f"X must be a 1-D array of file names [n], got shape {X.shape}")
        return X

    def _workers(self) -> Any:
        """The worker processes (None without num_parallel_processes), made anew after an error closed
        them (then this copy's own)."""
        if self.num_parallel_processes and (self._pool is None or self._pool.closed):
            from pymeta.data.processes import Workers
            self._pool = Workers(self.input_parse_fn, self.num_parallel_processes)
        return self._pool

    def _load_inputs(self, rows):
        names = [self.X[i] for i in rows]
        workers = self._workers()
        loaded = list(workers.map(names)) if workers else [self.input_parse_fn(n) for n in names]
        return as_float_inputs(np.stack(loaded))


class TaskAsSequenceOfTasks(Task):
    """One "task" made of a sequence of tasks drawn from a distribution, learnt one after the other.

    Args:
        tasks_distribution: a TaskDistribution to draw the sequence from.
        min_length, max_length: the sequence length is drawn in [min_length, max_length] at each reset.
    """

    def __init__(self, tasks_distribution: Any, min_length: int, max_length: int):
        self.tasks_distribution = tasks_distribution
        self.min_length, self.max_length = _length_range(min_length, max_length)
        self.current_task_sequence: List[Any] = []
        self.reset()

    def set_length_of_sequence(self, min_length: int, max_length: int) -> None:
        self.min_length, self.max_length = _length_range(min_length, max_length)
        self.reset()

    def reset(self) -> None:
        length = np.random.randint(self.min_length, self.max_length + 1)
        self.current_task_sequence = list(self.tasks_distribution.sample_batch(batch_size=length))

    def get_sequence_length(self) -> int:
        return len(self.current_task_sequence)

    def get_task_by_index(self, index: int) -> Any:
        if not -len(self.current_task_sequence) <= index < len(self.current_task_sequence):
            raise IndexError(f"task index {index} outside a sequence of {len(self.current_task_sequence)}")
        return self.current_task_sequence[index]

    def get_train_set(self, task_index: int = -1) -> Arrays:
        return self.get_task_by_index(task_index).get_train_set()

    def get_test_set(self, task_index: int = -1) -> Arrays:
        return self.get_task_by_index(task_index).get_test_set()

    def sample_batch(self, batch_size: int) -> Arrays:
        raise NotImplementedError("a sequence of tasks has no single training set: use fit_n_iterations "
                                  "and evaluate, or get_task_by_index(i).sample_batch")

    def fit_n_iterations(self, model: keras.Model, num_iterations: int, batch_size: int) -> Dict[str, float]:
        """`num_iterations` inner steps on *each* task of the sequence, in order.

        Returns {'last_minibatch_loss_<i>': ...} for each task i.
        """
        out = {}
        for i, task in enumerate(self.current_task_sequence):
            task.learner = self.learner
            for key, value in task.fit_n_iterations(model, num_iterations, batch_size).items():
                out[f"{key}_{i}"] = value
        return out

    def evaluate(self, model: keras.Model, evaluate_last_task_only: bool = False,
                 transductive: bool = True) -> Dict[str, float]:
        """Metrics of each task ('<name>_<i>'), or of the last one only (plain names)."""
        for task in self.current_task_sequence:
            task.learner = self.learner
        if evaluate_last_task_only:
            return self.current_task_sequence[-1].evaluate(model, transductive=transductive)
        out = {}
        for i, task in enumerate(self.current_task_sequence):
            for key, value in task.evaluate(model, transductive=transductive).items():
                out[f"{key}_{i}"] = value
        return out


def _length_range(min_length, max_length):
    """(min, max) sequence lengths, integers with 1 <= min <= max, or a one-line ValueError."""
    lo, hi = as_count(min_length, "min_length"), as_count(max_length, "max_length")
    if lo > hi:
        raise ValueError(f"need 1 <= min_length <= max_length, got {lo}, {hi}")
    return lo, hi
