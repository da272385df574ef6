"""The memory a run's batches need, estimated from its settings before anything is allocated
(`estimate_memory`), and the refusal of settings that cannot fit or that no episode needs
(`check_memory`, called by the config checks: flags and the settings a model file records alike).
No TensorFlow or numpy import: it runs before TensorFlow starts.

What is counted, in bytes, from the code that allocates it (M tasks per compiled call, T inner steps):

+ supervised (`SupervisedTask.task_data`, `stack_tasks`): per task the support set x [NK, *image]
  float32 and labels [NK] int64, the inner batches [T, B, *image] + [T, B], the query set [NQ, *image]
  + [NQ] (sinusoid: x and y [n, 1] float32). A training call stacks M x S meta-batches (S:
  --iterations_per_call) of tasks (SeqFOMAML: sequences of L tasks); a meta-test call --batch tasks.
  These arrays are held DATA_COPIES times (each task's own, the stack, the tensors TensorFlow copies
  them into).
+ reinforcement learning (`pymeta.rl.task.meta_batch_task_data`, `adaptation_returns`): per collection
  (T + 1 of them, all kept until the meta-batch's data are stacked) the episodes [M, E, H, ...] (obs d
  floats in the environment's dtype, actions A float32, rewards and mask float64, the step in the
  episode int64 with --restart_episodes) and their batches [M, E H, ...] float32 (obs, actions,
  advantages, mask); each task's inner batches stacked [T, E H, ...] and the meta-batch's `TaskData`
  (support, inner, query: T + 2 batches); while a collection runs, its per-step arrays and their stack
  (one more collection's episodes). Validation collects --num_validation_batches x M tasks at once.
  Every task of a gymnasium dataset has E environment copies (ENV_COPY_BYTES each, measured).
+ activations of the network (per example, from its layers' output shapes), for the examples a task's
  compiled step holds at once (first order: one inner step's batch, the query set or the support set,
  x BACKWARD_FACTOR; MAML: all T inner steps and the query set, x SECOND_ORDER_FACTOR), for as many tasks
  as run side by side (one per core, at most M).
+ the dataset file (read into memory whole; its size on disk) and the runtime (Python, TensorFlow,
  Keras: RUNTIME_BYTES, measured).

The batches are exact (tests/test_memory_bound.py checks them against the nbytes of the arrays a tiny
run builds); the activations are a model of what TensorFlow keeps, good to a small factor. The estimate
is compared with the memory available (/proc/meminfo's MemAvailable, and the cgroup's limit minus its
usage when there is one) plus what this process already holds (the checks run again inside a run, once
TensorFlow and the dataset are loaded): only a run that cannot fit is refused.
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional, Tuple

from pymeta.config.sections import MetaTestConfig, RunConfig, TaskConfig
from pymeta.registry import DEFAULT_DATA_PATHS, RL_DATASETS, RL_DEFAULTS, RL_GYM_DATASETS, default_data_path

MiB = 2 ** 20
# --horizon: steps per episode. The MAML experiments use 100 (2D navigation) and 200 (locomotion),
# gymnasium's MuJoCo tasks 1000; a collection runs one policy call per step in Python, so 10,000 steps
# is already minutes per meta-iteration, and a horizon of 10^9 runs (and fills memory) for hours.
MAX_HORIZON = 10_000
RUNTIME_BYTES = 700 * MiB  # Python + TensorFlow + Keras (+ gymnasium) imported: ~650 MiB resident, measured
DATA_COPIES = 3
BACKWARD_FACTOR = 2       # a step's activations and their gradients
SECOND_ORDER_FACTOR = 3   # MAML: the inner steps' activations, their gradients and the gradients' gradients
HVP_FACTOR = 4            # iMAML's Hessian-vector products on the support set; TRPO's Fisher-vector products
# the supervised datasets' images (the prepared files' shapes) and examples per class (-1 queries: the rest)
IMAGE_SHAPES = {"omniglot": (28, 28, 1), "miniimagenet": (84, 84, 3)}
CLASS_SIZES = {"omniglot": 20, "miniimagenet": 600}
# the Conv-4 of each image dataset (pymeta.networks): filters, pooling padding
CONV_NETS = {"omniglot": (64, "valid"), "miniimagenet": (32, "same")}
SINUSOID_HIDDEN = (64, 64)  # pymeta.networks.make_sinusoid_model
# RL: (observation dim, action dim, observation bytes) of each dataset's environment, the policy's hidden
# layers (pymeta.rl.problems.build_problem) and the meta-test's default episodes per task
# (pymeta.rl.evaluation.PROTOCOL_EPISODES); repeated here to keep TensorFlow out, checked by the tests
RL_SPACES = {"navigation2d": (2, 2, 4), "halfcheetah_vel": (17, 6, 8), "halfcheetah_dir": (17, 6, 8),
             "ant_dir": (105, 8, 8)}
POLICY_HIDDEN = (100, 100)
METATEST_EPISODES = {"navigation2d": 40, "halfcheetah_vel": 20, "halfcheetah_dir": 20, "ant_dir": 20}
ENV_COPY_BYTES = int(1.1 * MiB)  # one MuJoCo HalfCheetah-v5 / Ant-v5 copy (gymnasium 1.x), measured
# the cached vector environments per task slot: one per make kwargs (the two directions of the *_dir tasks)
ENV_VARIANTS = {"halfcheetah_dir": 2, "ant_dir": 2}


@dataclasses.dataclass
class MemoryEstimate:
    """Bytes a run needs (`parts`: what each is for), and the flags that size its batches."""
    flags: Dict[str, int]
    parts: Dict[str, int]
    batch_bytes: int  # the arrays one compiled call's batch is made of (held once)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def human(n: float) -> str:
    """Bytes as text: 512 MiB, 1.5 GiB, 3.2 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _size(value) -> Optional[int]:
    """A setting as a count (an int, or an integral finite float), else None (other checks refuse it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _sizes(c: TaskConfig, *names: str) -> Optional[List[int]]:
    values = [_size(getattr(c, name, None)) for name in names]
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


# --- the networks' activations ---------------------------------------------------------------------------
def conv_activations(image: Tuple[int, int, int], filters: int, padding: str, classes: int) -> int:
    """Floats one example's forward pass through the Conv-4 leaves (input, each block's conv, batch
    norm, pooling and ReLU outputs, the logits and probabilities)."""
    h, w, c = image
    total = h * w * c
    for _ in range(4):
        total += 2 * h * w * filters  # conv, batch norm
        h, w = ((h + 1) // 2, (w + 1) // 2) if padding == "same" else (h // 2, w // 2)
        total += 2 * h * w * filters  # pooling, ReLU
    return total + 2 * classes


def mlp_activations(inputs: int, hidden: Tuple[int, ...], outputs: int) -> int:
    """Floats one example's forward pass through a ReLU MLP leaves (input, each layer's pre-activation
    and activation, the outputs)."""
    return inputs + 2 * sum(hidden) + outputs


def _concurrent(tasks: int) -> int:
    """Tasks of a compiled call that run side by side (one per core at most)."""
    return max(1, min(tasks, os.cpu_count() or 1))


# --- supervised ----------------------------------------------------------------------------------------------
def _supervised(c: TaskConfig, tasks: int, steps: int, inner_batch: int, flags: Dict[str, int],
                metamodel: str) -> Optional[MemoryEstimate]:
    sizes = _sizes(c, "num_output_classes", "num_train_samples_per_class", "num_test_samples_per_class")
    if sizes is None or sizes[1] < 1 or tasks < 1 or steps < 0:
        return None
    n_way, k, q = sizes
    if c.dataset == "sinusoid":
        n_way, x_floats, y_bytes = 1, 1, 4
        per_example = mlp_activations(1, SINUSOID_HIDDEN, 1)
    else:
        if n_way < 1:
            return None
        image = IMAGE_SHAPES[c.dataset]
        x_floats, y_bytes = image[0] * image[1] * image[2], 8
        filters, padding = CONV_NETS[c.dataset]
        per_example = conv_activations(image, filters, padding, n_way)
        q = CLASS_SIZES[c.dataset] - k if q == -1 else q
    if q < 1:
        return None
    support, query = n_way * k, n_way * q
    batch = support if inner_batch < 1 else inner_batch
    examples = support + steps * batch + query
    per_task = examples * (4 * x_floats + y_bytes)
    batch_bytes = tasks * per_task
    if metamodel == "maml":
        held, factor = steps * batch + query, SECOND_ORDER_FACTOR
    else:
        held, factor = max(batch, query, support), (HVP_FACTOR if metamodel == "imaml" else BACKWARD_FACTOR)
    activations = _concurrent(tasks) * held * per_example * 4 * factor
    return MemoryEstimate(flags, {"batches": DATA_COPIES * batch_bytes, "activations": activations,
                                  "dataset": _dataset_bytes(c), "runtime": RUNTIME_BYTES}, batch_bytes)


def _dataset_bytes(c: TaskConfig) -> int:
    """The size of the dataset file a supervised run reads into memory (0: sinusoid, or not there yet)."""
    if c.dataset not in DEFAULT_DATA_PATHS:
        return 0
    path = c.data_path if isinstance(c.data_path, str) and c.data_path else default_data_path(c.dataset)
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # reported by the data file check


# --- reinforcement learning ---------------------------------------------------------------------------------
def rl_sample_bytes(dataset: str, restart_episodes: bool) -> Tuple[int, int]:
    """(bytes of one time step of `Episodes`, bytes of one row of the policy-gradient batch)."""
    d, a, obs_bytes = RL_SPACES[dataset]
    episode = d * obs_bytes + 4 * a + 8 + 8 + (8 if restart_episodes else 0)
    return episode, 4 * (d + a + 2)


def rl_collections_bytes(dataset: str, tasks: int, episodes: int, horizon: int, steps: int,
                         restart_episodes: bool, task_data: bool) -> int:
    """Bytes of the arrays one meta-batch's collections hold at once: the episodes and batches of the
    T + 1 collections, and (task_data: training) each task's stacked inner batches and the meta-batch's
    `TaskData` (support, inner, query)."""
    episode, row = rl_sample_bytes(dataset, restart_episodes)
    samples = tasks * episodes * horizon
    total = (steps + 1) * samples * (episode + row)
    if task_data:
        total += steps * samples * row + (steps + 2) * samples * row
    return total


def _rl(c: TaskConfig, tasks: int, episodes: int, horizon: int, steps: int, flags: Dict[str, int],
        metamodel: str, training: bool, validation_tasks: int = 0) -> Optional[MemoryEstimate]:
    if min(tasks, episodes, horizon) < 1 or steps < 0:
        return None
    restart = c.restart_episodes is True
    d, a, _ = RL_SPACES[c.dataset]
    per_sample = mlp_activations(d, POLICY_HIDDEN, 2 * a) * 4
    episode, _ = rl_sample_bytes(c.dataset, restart)
    # the training call: collections and TaskData; its compiled step on each task's (T + 1) batches
    if training:
        batch_bytes = rl_collections_bytes(c.dataset, tasks, episodes, horizon, steps, restart, True)
        factor = SECOND_ORDER_FACTOR + HVP_FACTOR if metamodel == "maml" else BACKWARD_FACTOR
        held = (steps + 1) * episodes * horizon if metamodel == "maml" else episodes * horizon
        activations = _concurrent(tasks) * held * per_sample * factor
    else:
        batch_bytes, activations = 0, 0
    # validation / meta-test (`adaptation_returns`): collections only, one inner step at a time
    evaluated = validation_tasks if training else tasks
    eval_bytes = rl_collections_bytes(c.dataset, evaluated, episodes, horizon, steps, restart, False)
    eval_activations = _concurrent(evaluated) * episodes * horizon * per_sample * BACKWARD_FACTOR
    if eval_bytes + eval_activations > batch_bytes + activations:
        batch_bytes, activations, collected = eval_bytes, eval_activations, evaluated
    else:
        collected = tasks
    rollout = collected * episodes * horizon * episode  # a collection's per-step arrays while it is stacked
    envs = 0
    if c.dataset in RL_GYM_DATASETS:
        envs = max(tasks, evaluated) * episodes * ENV_VARIANTS.get(c.dataset, 1) * ENV_COPY_BYTES
    return MemoryEstimate(flags, {"batches": batch_bytes + rollout, "activations": activations,
                                  "environments": envs, "runtime": RUNTIME_BYTES}, batch_bytes)


# --- the settings of a run ----------------------------------------------------------------------------------
def estimate_memory(c: TaskConfig) -> Optional[MemoryEstimate]:
    """The memory run `c` (a `RunConfig` or a `MetaTestConfig`) needs; None when a setting it depends
    on is not a valid count (the config checks refuse those with their own message)."""
    rl = c.dataset in RL_DATASETS
    if isinstance(c, RunConfig):
        m, steps, val = _sizes(c, "meta_batch_size", "num_inner_training_iterations",
                               "num_validation_batches") or (0, -1, 0)
        if m < 1:
            return None
        flags = {"meta_batch_size": m, "num_inner_training_iterations": steps}
        if rl:
            e, h = _sizes(c, "episodes_per_task", "horizon") or (0, 0)
            h = h or RL_DEFAULTS[c.dataset]["horizon"]
            flags.update(episodes_per_task=e, horizon=h, num_validation_batches=val)
            return _rl(c, m, e, h, steps, flags, c.metamodel, True, validation_tasks=max(1, val) * m)
        per_call, length, inner_batch = _sizes(c, "iterations_per_call", "seqfomaml_sequence_length",
                                               "inner_batch_size") or (-1, 0, 0)
        if per_call < 0 or length < 1:
            return None
        per_call = (per_call or (10 if c.dataset == "sinusoid" else 1)) if c.fast else 1
        length = length if c.metamodel == "seqfomaml" else 1
        flags.update(_supervised_flags(c), inner_batch_size=inner_batch)
        if per_call > 1:
            flags["iterations_per_call"] = per_call
        if length > 1:
            flags["seqfomaml_sequence_length"] = length
        return _supervised(c, m * per_call * length, steps, inner_batch, flags, c.metamodel)
    if isinstance(c, MetaTestConfig):
        batch, num_tasks, steps = _sizes(c, "batch", "num_tasks", "num_inner_iterations") or (0, 0, -1)
        if batch < 1 or num_tasks < 1:
            return None
        tasks = min(batch, num_tasks)
        flags = {"batch": batch, "num_inner_iterations": steps}
        if rl:
            e, h = _sizes(c, "episodes_per_task", "horizon") or (-1, -1)
            if e < 0 or h < 0:
                return None
            e, h = e or METATEST_EPISODES[c.dataset], h or RL_DEFAULTS[c.dataset]["horizon"]
            flags.update(episodes_per_task=e, horizon=h)
            return _rl(c, tasks, e, h, steps, flags, "fomaml", False)
        inner_batch = _size(c.inner_batch_size)
        if inner_batch is None:
            return None
        flags.update(_supervised_flags(c), inner_batch_size=inner_batch)
        return _supervised(c, tasks, steps, inner_batch, flags, "evaluation")
    return None


def _supervised_flags(c: TaskConfig) -> Dict[str, int]:
    names = ("num_train_samples_per_class", "num_test_samples_per_class")
    if c.dataset != "sinusoid":
        names = ("num_output_classes",) + names
    return {name: getattr(c, name) for name in names}


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: /proc/meminfo's MemAvailable, or less when the process's
    cgroup has a memory limit (v2 memory.max - memory.current, v1 memory.limit_in_bytes -
    memory.usage_in_bytes); None where neither is known."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_room()
    if limit is not None:
        found.append(limit)
    return min(found) if found else None


def _cgroup_room() -> Optional[int]:
    """The cgroup's memory limit minus its usage, None without a limit."""
    paths = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    paths.append(("/sys/fs/cgroup" + path, "memory.max", "memory.current"))
                elif "memory" in controllers.split(","):
                    paths.append(("/sys/fs/cgroup/memory" + path, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    except (OSError, ValueError):
        return None
    # inside a container the cgroup's own folder is usually the mount's root
    paths += [("/sys/fs/cgroup", "memory.max", "memory.current"),
              ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for folder, limit_file, usage_file in paths:
        try:
            with open(os.path.join(folder, limit_file)) as f:
                limit_text = f.read().strip()
            with open(os.path.join(folder, usage_file)) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2 ** 60:  # no limit
            return None
        return max(0, int(limit_text) - usage)
    return None


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc/self/statm cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def _room() -> Optional[int]:
    """What the run may use: the memory available, plus what this process holds already (when the
    checks run again inside a run, the runtime and the dataset the estimate counts are loaded)."""
    available = available_memory()
    return None if available is None else available + resident_bytes()


def check_memory(c: TaskConfig, available: Optional[int] = None) -> None:
    """One-line ValueError if run `c` has a --horizon above MAX_HORIZON, or needs more memory than is
    available (`available` bytes; default: `available_memory()` plus this process's resident memory),
    naming the flags that size its batches and the estimate. Settings that are not valid counts are
    left to the other checks."""
    horizon = _size(getattr(c, "horizon", None))
    if c.dataset in RL_DATASETS and horizon is not None and horizon > MAX_HORIZON:
        raise ValueError(f"--horizon={horizon} is above the {MAX_HORIZON} steps an episode may have (the MAML "
                         f"experiments use 100-200, gymnasium's MuJoCo tasks 1000): lower it")
    estimate = estimate_memory(c)
    if estimate is None:
        return
    room = available if available is not None else _room()
    if room is None or estimate.total <= room:
        return
    flags = " ".join(f"--{k}={v}" for k, v in estimate.flags.items())
    parts = ", ".join(f"{k} {human(v)}" for k, v in estimate.parts.items() if v)
    raise ValueError(f"{flags} need about {human(estimate.total)} of memory ({parts}; estimated), more than "
                     f"the {human(room)} available: lower them")
