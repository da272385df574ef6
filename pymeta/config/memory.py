"""The memory a run's batches need, estimated from its settings before anything is allocated
(`estimate_memory`), and the refusal of settings that cannot fit or that no episode needs (`check_memory`,
called by the config checks for flags and a model file's settings alike). No TensorFlow or numpy import.

What is counted, in bytes, from the code that allocates it (M tasks per compiled call, T inner steps):

+ supervised (`SupervisedTask.task_data`, `stack_tasks`): per task the support set [NK, *input] float32
  with labels [NK] int64 (sinusoid: float32 [n, 1]), the inner batches [T, B, ...], the query set
  [NQ, ...]; a training call holds M x S meta-batches (S: --iterations_per_call; SeqFOMAML: sequences of
  L tasks), a meta-test call --batch tasks. Held DATA_COPIES times (each task's, the stack, TensorFlow's).
+ RL (`pymeta.rl.task.meta_batch_task_data`, `adaptation_returns`): the episodes [M, E, H, ...] (obs in
  the environment's dtype, actions float32, rewards and mask float64, with --restart_episodes the step
  int64) and batches [M, E H, ...] float32 (obs, actions, advantages, mask) of the T + 1 collections, each
  task's stacked inner batches and the meta-batch's `TaskData` (T + 2 batches), the per-step arrays of
  the collection being stacked; validation collects --num_validation_batches x M tasks at once. A
  gymnasium task has E environment copies (ENV_COPY_BYTES each, measured).
+ the network's activations (`activations`: per example, from its layers' output shapes) for the examples
  a task's compiled step holds (first order: the largest of one inner batch, the query and the support set,
  x BACKWARD_FACTOR; MAML: all T inner batches and the query set, x SECOND_ORDER_FACTOR), for as many
  tasks as run side by side (one per core, at most M).
+ the dataset file (read whole; its size on disk) and the runtime (RUNTIME_BYTES, measured).

The batches are exact (tests/test_memory_bound.py checks them against the arrays tiny runs build); the
activations are a model of what TensorFlow keeps, good to a small factor. A run is refused only when its
estimate exceeds the memory available (MemAvailable, or the cgroup's limit minus its usage) plus what
this process holds already (the checks run again inside a run, with TensorFlow and the dataset loaded).
"""

import dataclasses
import math
import os
from typing import Dict, Optional, Sequence, Tuple

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
# The networks and spaces, repeated here to keep TensorFlow out (tests/test_memory_bound.py checks them
# against their sources). Supervised: the prepared files' images and examples per class (-1 queries: the
# rest), the Conv-4 of each image dataset (pymeta.networks: filters, pooling padding), sinusoid's MLP.
IMAGE_SHAPES = {"omniglot": (28, 28, 1), "miniimagenet": (84, 84, 3)}
CLASS_SIZES = {"omniglot": 20, "miniimagenet": 600}
CONV_NETS = {"omniglot": (64, "valid"), "miniimagenet": (32, "same")}
SINUSOID_HIDDEN = (64, 64)
# RL: (observation dim, action dim, observation bytes) of each environment, the policy's hidden layers
# (pymeta.rl.problems.build_problem), the meta-test's default episodes per task (PROTOCOL_EPISODES)
RL_SPACES = {"navigation2d": (2, 2, 4), "halfcheetah_vel": (17, 6, 8), "halfcheetah_dir": (17, 6, 8),
             "ant_dir": (105, 8, 8)}
POLICY_HIDDEN = (100, 100)
METATEST_EPISODES = {"navigation2d": 40, "halfcheetah_vel": 20, "halfcheetah_dir": 20, "ant_dir": 20}
# the ReLU MLPs (inputs, hidden layers, outputs): sinusoid's, each RL dataset's policy (a mean and a log-std
# per action)
MLPS = {"sinusoid": (1, SINUSOID_HIDDEN, 1), **{d: (obs, POLICY_HIDDEN, 2 * a) for d, (obs, a, _) in RL_SPACES.items()}}
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
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{n:.1f} {unit}"


def _size(value) -> Optional[int]:
    """A setting as a count (an int, or an integral finite float), else None (other checks refuse it)."""
    integral = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    return int(value) if integral and not isinstance(value, bool) else None


def _counts(c: TaskConfig, names: Sequence[str]) -> Optional[Dict[str, int]]:
    """The settings `names` of `c` as counts; None if one is not a count."""
    counts = {name: _size(getattr(c, name)) for name in names}
    return None if None in counts.values() else counts  # type: ignore[return-value]


def activations(dataset: str, classes: int = 0) -> int:
    """Floats one example's forward pass through `dataset`'s network leaves: the Conv-4's input, each
    block's conv, batch norm, pooling and ReLU outputs, the logits and probabilities (`classes`); an
    MLP's (`MLPS`) input, each layer's pre-activation and activation, the outputs."""
    if dataset in CONV_NETS:
        (h, w, c), (filters, padding) = IMAGE_SHAPES[dataset], CONV_NETS[dataset]
        total = h * w * c
        for _ in range(4):
            total += 2 * h * w * filters  # conv, batch norm
            h, w = ((h + 1) // 2, (w + 1) // 2) if padding == "same" else (h // 2, w // 2)
            total += 2 * h * w * filters  # pooling, ReLU
        return total + 2 * classes
    inputs, hidden, outputs = MLPS[dataset]
    return inputs + 2 * sum(hidden) + outputs


def _concurrent(tasks: int) -> int:
    """Tasks of a compiled call that run side by side (one per core at most)."""
    return max(1, min(tasks, os.cpu_count() or 1))


# --- supervised ----------------------------------------------------------------------------------------------
def _supervised(c: TaskConfig, training: bool, tasks_flag: str, steps_flag: str) -> Optional[MemoryEstimate]:
    sizes = ["num_output_classes", "num_train_samples_per_class", "num_test_samples_per_class", "inner_batch_size"]
    calls = ["num_validation_batches", "iterations_per_call", "seqfomaml_sequence_length"]
    n = _counts(c, [tasks_flag, steps_flag] + sizes + (calls if training else ["num_tasks"]))
    if n is None:
        return None
    steps, inner_batch = n[steps_flag], n["inner_batch_size"]
    shown = sizes[1:3] if c.dataset == "sinusoid" else sizes[:3]  # sinusoid has no classes
    flags = {tasks_flag: n[tasks_flag], steps_flag: steps, **{name: getattr(c, name) for name in shown},
             "inner_batch_size": inner_batch}
    if training:  # a call holds M meta-batches of S sequences of L tasks
        per_call, length = n["iterations_per_call"], n["seqfomaml_sequence_length"]
        if per_call < 0 or length < 1:
            return None
        per_call = (per_call or (10 if c.dataset == "sinusoid" else 1)) if c.fast else 1
        length = length if c.metamodel == "seqfomaml" else 1
        flags.update({name: value for name, value in (("iterations_per_call", per_call),
                                                      ("seqfomaml_sequence_length", length)) if value > 1})
        tasks, metamodel = n[tasks_flag] * per_call * length, c.metamodel
    else:
        tasks, metamodel = min(n[tasks_flag], n["num_tasks"]), "evaluation"
    n_way, k, q = n["num_output_classes"], n["num_train_samples_per_class"], n["num_test_samples_per_class"]
    if c.dataset == "sinusoid":
        n_way, x_floats, y_bytes = 1, 1, 4
    else:
        image = IMAGE_SHAPES[c.dataset]
        x_floats, y_bytes = image[0] * image[1] * image[2], 8
        q = CLASS_SIZES[c.dataset] - k if q == -1 else q
    if min(n_way, k, q, tasks, n[tasks_flag]) < 1 or steps < 0:
        return None
    support, query = n_way * k, n_way * q
    batch = support if inner_batch < 1 else inner_batch
    batch_bytes = tasks * (support + steps * batch + query) * (4 * x_floats + y_bytes)
    if metamodel == "maml":
        held, factor = steps * batch + query, SECOND_ORDER_FACTOR
    else:
        held, factor = max(batch, query, support), (HVP_FACTOR if metamodel == "imaml" else BACKWARD_FACTOR)
    held_bytes = _concurrent(tasks) * held * activations(c.dataset, n_way) * 4 * factor
    return MemoryEstimate(flags, {"batches": DATA_COPIES * batch_bytes, "activations": held_bytes,
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
    return d * obs_bytes + 4 * a + 8 + 8 + (8 if restart_episodes else 0), 4 * (d + a + 2)


def rl_collections_bytes(dataset: str, tasks: int, episodes: int, horizon: int, steps: int,
                         restart_episodes: bool, task_data: bool) -> int:
    """Bytes of the arrays one meta-batch's collections hold at once: the episodes and batches of the
    T + 1 collections, and (task_data: training) each task's stacked inner batches and the meta-batch's
    `TaskData` (support, inner, query)."""
    episode, row = rl_sample_bytes(dataset, restart_episodes)
    samples = tasks * episodes * horizon
    # with task_data: each task's T inner batches and the TaskData's T + 2
    return (steps + 1) * samples * (episode + row) + ((steps + steps + 2) * samples * row if task_data else 0)


def _rl(c: TaskConfig, training: bool, tasks_flag: str, steps_flag: str) -> Optional[MemoryEstimate]:
    n = _counts(c, [tasks_flag, steps_flag, "num_validation_batches" if training else "num_tasks",
                    "episodes_per_task", "horizon"])
    if n is None:
        return None
    tasks, steps, e, h = n[tasks_flag], n[steps_flag], n["episodes_per_task"], n["horizon"]
    if not training:  # 0 episodes or steps: the MAML evaluation's, the environment's
        if min(tasks, n["num_tasks"]) < 1 or e < 0 or h < 0:
            return None
        tasks, e = min(tasks, n["num_tasks"]), e or METATEST_EPISODES[c.dataset]
    h = h or RL_DEFAULTS[c.dataset]["horizon"]
    if min(tasks, e, h) < 1 or steps < 0:
        return None
    flags = {tasks_flag: n[tasks_flag], steps_flag: steps, "episodes_per_task": e, "horizon": h}
    if training:
        flags["num_validation_batches"] = n["num_validation_batches"]
    restart, samples = c.restart_episodes is True, e * h
    per_sample = activations(c.dataset) * 4

    def collect(tasks: int, task_data: bool) -> int:
        return rl_collections_bytes(c.dataset, tasks, e, h, steps, restart, task_data)
    # validation / meta-test (`adaptation_returns`): collections only, one inner step at a time; training:
    # the collections and TaskData, its compiled step on each task's (T + 1) batches; the larger is held
    evaluated = max(1, n["num_validation_batches"]) * tasks if training else tasks
    phases = [(collect(evaluated, False), _concurrent(evaluated) * samples * per_sample * BACKWARD_FACTOR,
               evaluated)]
    if training:
        maml = c.metamodel == "maml"
        held = ((steps + 1) if maml else 1) * samples * per_sample
        factor = SECOND_ORDER_FACTOR + HVP_FACTOR if maml else BACKWARD_FACTOR
        phases.insert(0, (collect(tasks, True), _concurrent(tasks) * held * factor, tasks))
    batch_bytes, held_bytes, collected = max(phases, key=lambda phase: phase[0] + phase[1])
    rollout = collected * samples * rl_sample_bytes(c.dataset, restart)[0]  # a collection's per-step arrays
    envs = (max(tasks, evaluated) * e * ENV_VARIANTS.get(c.dataset, 1) * ENV_COPY_BYTES
            if c.dataset in RL_GYM_DATASETS else 0)
    return MemoryEstimate(flags, {"batches": batch_bytes + rollout, "activations": held_bytes,
                                  "environments": envs, "runtime": RUNTIME_BYTES}, batch_bytes)


# --- the settings of a run ----------------------------------------------------------------------------------
def estimate_memory(c: TaskConfig) -> Optional[MemoryEstimate]:
    """The memory run `c` (a `RunConfig` or a `MetaTestConfig`) needs; None when a setting it depends
    on is not a valid count (the config checks refuse those with their own message)."""
    if not isinstance(c, (RunConfig, MetaTestConfig)):
        return None
    training = isinstance(c, RunConfig)
    flags = ("meta_batch_size", "num_inner_training_iterations") if training else ("batch", "num_inner_iterations")
    return (_rl if c.dataset in RL_DATASETS else _supervised)(c, training, *flags)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: /proc/meminfo's MemAvailable, or less when the process's
    cgroup has a memory limit (`_cgroup_room`); None where neither is known."""
    try:
        found = [int(line.split()[1]) * 1024 for line in _read("/proc/meminfo").splitlines()
                 if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        found = []
    room = _cgroup_room()
    return min(found + [room] if room is not None else found, default=None)


V2_FILES, V1_FILES = ("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")


def _cgroup_room() -> Optional[int]:
    """The cgroup's memory limit minus its usage (v2 memory.max - memory.current, v1 memory.limit_in_bytes
    - memory.usage_in_bytes), None without a limit."""
    try:
        lines = [line.split(":", 2) for line in _read("/proc/self/cgroup").splitlines()]
        places = [("/sys/fs/cgroup" + path, *V2_FILES) if controllers == "" else
                  ("/sys/fs/cgroup/memory" + path, *V1_FILES)
                  for _, controllers, path in lines if controllers == "" or "memory" in controllers.split(",")]
    except (OSError, ValueError):
        return None
    # inside a container the cgroup's own folder is usually the mount's root
    for folder, limit_file, usage_file in places + [("/sys/fs/cgroup", *V2_FILES),
                                                     ("/sys/fs/cgroup/memory", *V1_FILES)]:
        try:
            limit, usage = _read(os.path.join(folder, limit_file)).strip(), int(_read(os.path.join(folder, usage_file)))
            return None if limit == "max" or int(limit) >= 2 ** 60 else max(0, int(limit) - usage)  # 2^60: none
        except (OSError, ValueError):
            continue
    return None


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc/self/statm cannot be read)."""
    try:
        return int(_read("/proc/self/statm").split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def check_memory(c: TaskConfig, available: Optional[int] = None) -> None:
    """One-line ValueError if run `c` has a --horizon above MAX_HORIZON, or needs more memory than is
    available (`available` bytes; default: `available_memory()` plus this process's resident memory, as
    the runtime and the dataset the estimate counts may be loaded already), naming the flags that size
    its batches and the estimate. Settings that are not valid counts are left to the other checks."""
    horizon = _size(getattr(c, "horizon", None))
    if c.dataset in RL_DATASETS and horizon is not None and horizon > MAX_HORIZON:
        raise ValueError(f"--horizon={horizon} is above the {MAX_HORIZON} steps an episode may have (the MAML "
                         f"experiments use 100-200, gymnasium's MuJoCo tasks 1000): lower it")
    estimate = estimate_memory(c)
    if estimate is None:
        return
    if available is None:
        free = available_memory()
        available = None if free is None else free + resident_bytes()
    if available is None or estimate.total <= available:
        return
    flags = " ".join(f"--{k}={v}" for k, v in estimate.flags.items())
    parts = ", ".join(f"{k} {human(v)}" for k, v in estimate.parts.items() if v)
    raise ValueError(f"{flags} need about {human(estimate.total)} of memory ({parts}; estimated), more than "
                     f"the {human(available)} available: lower them")
