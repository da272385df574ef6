"""`build_problem(name, ...)`: a task distribution, a policy, its agent and a meta-learner with the
MAML experiments' defaults, for scripts and a CLI.

Defaults (cbfinn/maml_rl): 2D navigation: meta-batch 20, inner lr 0.5 (the value the code behind the
paper's numbers used; the paper's text says 0.1), horizon 100; HalfCheetah vel / dir, Ant dir: meta-batch 40,
inner lr 0.1, horizon 200. All: 20 episodes per task and inner step, gamma 0.99, GAE lambda 1.0,
a 2x100 ReLU policy, one inner step; MAML's outer step TRPO (max KL 0.01), FOMAML / Reptile Adam.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence

import keras

from pymeta import optim
from pymeta.registry import RL_DEFAULTS, RL_METAMODELS
from pymeta.rl.agent import Agent
from pymeta.rl.policies import make_categorical_policy, make_gaussian_policy
from pymeta.rl.spaces import space_kind

DEFAULTS: Dict[str, Dict[str, Any]] = RL_DEFAULTS  # one definition, importable without TensorFlow
METAMODELS = RL_METAMODELS


class RLProblem(NamedTuple):
    distribution: Any      # a TaskDistribution of RLTasks (sample_batch() -> meta-batch)
    model: keras.Model     # the policy whose initial weights are meta-learnt
    agent: Agent
    metalearner: Any
    settings: Dict[str, Any]  # every value used (defaults filled in)


def make_distribution(name: str, meta_batch_size: int, horizon: int, gamma: float, gae_lambda: float,
                      vectorization: str = "sync", restart_episodes: bool = False,
                      env_kwargs: Optional[Dict[str, Any]] = None) -> Any:
    """The task distribution `name` ('navigation2d', 'halfcheetah_vel', 'halfcheetah_dir', 'ant_dir');
    env_kwargs: extra constructor kwargs of the gymnasium environments (`GymTask`'s make_kwargs)."""
    common = {"gamma": gamma, "gae_lambda": gae_lambda, "restart_episodes": restart_episodes}
    if name == "navigation2d":
        if env_kwargs:
            raise ValueError("env_kwargs apply to the gymnasium task distributions, not navigation2d")
        from pymeta.rl.navigation import navigation2d
        return navigation2d(meta_batch_size, horizon=horizon, **common)
    if name in ("halfcheetah_vel", "halfcheetah_dir", "ant_dir"):
        from pymeta.rl import gym_tasks
        return getattr(gym_tasks, name)(meta_batch_size, horizon=horizon, vectorization=vectorization,
                                        make_kwargs=env_kwargs, **common)
    raise ValueError(f"unknown RL problem {name!r}: use one of {sorted(DEFAULTS)}")


def build_problem(name: str, metamodel: str = "maml", outer_optimizer: Optional[str] = None,
                  inner_lr: Optional[float] = None, meta_lr: float = 0.01,
                  meta_batch_size: Optional[int] = None, episodes_per_task: int = 20,
                  horizon: Optional[int] = None, gamma: float = 0.99, gae_lambda: float = 1.0,
                  max_kl: float = 0.01, hidden: Sequence[int] = (100, 100),
                  vectorization: str = "sync", seed: Optional[int] = None,
                  restart_episodes: bool = False, env_kwargs: Optional[Dict[str, Any]] = None) -> RLProblem:
    """Everything a meta-RL run needs (see the module doc for the defaults).

    outer_optimizer: 'trpo' (MAML only; the default for MAML) or 'adam' (meta_lr; the default for
    FOMAML and Reptile). restart_episodes: see `pymeta.rl.task.RLTask`. env_kwargs: constructor kwargs
    of every gymnasium environment (e.g. {"frame_skip": 1}). Train with
    `metalearner.metatrain_step(distribution.sample_batch(), 1, settings['episodes_per_task'])`; evaluate
    with `pymeta.rl.task.adaptation_returns`.
    """
    if name not in DEFAULTS:
        raise ValueError(f"unknown RL problem {name!r}: use one of {sorted(DEFAULTS)}")
    if metamodel not in METAMODELS:
        raise ValueError(f"unknown metamodel {metamodel!r} for RL: use one of {METAMODELS}")
    outer_optimizer = outer_optimizer or ("trpo" if metamodel == "maml" else "adam")
    if outer_optimizer not in ("trpo", "adam"):
        raise ValueError(f"outer_optimizer must be 'trpo' or 'adam', got {outer_optimizer!r}")
    if outer_optimizer == "trpo" and metamodel != "maml":
        raise ValueError("the TRPO outer step is for MAML: use outer_optimizer='adam' with fomaml / reptile")
    d = DEFAULTS[name]
    settings: Dict[str, Any] = {"name": name, "metamodel": metamodel, "outer_optimizer": outer_optimizer,
                "inner_lr": d["inner_lr"] if inner_lr is None else float(inner_lr), "meta_lr": float(meta_lr),
                "meta_batch_size": d["meta_batch_size"] if meta_batch_size is None else int(meta_batch_size),
                "episodes_per_task": int(episodes_per_task),
                "horizon": d["horizon"] if horizon is None else int(horizon), "gamma": float(gamma),
                "gae_lambda": float(gae_lambda), "max_kl": float(max_kl), "hidden": tuple(hidden), "seed": seed,
                "restart_episodes": bool(restart_episodes), "env_kwargs": dict(env_kwargs or {})}
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    dist = make_distribution(name, settings["meta_batch_size"], settings["horizon"], gamma, gae_lambda,
                             vectorization, settings["restart_episodes"], settings["env_kwargs"])
    task = dist.tasks[0]
    obs_dim = int(task.observation_space.shape[0])
    if space_kind(task.action_space) == "box":
        model = make_gaussian_policy(obs_dim, int(task.action_space.shape[0]), hidden)
    else:
        model = make_categorical_policy(obs_dim, int(task.action_space.n), hidden)
    agent = Agent(model, task.action_space)
    common = {"inner_optimizer": optim.sgd(settings["inner_lr"]), "objective": agent.objective}
    from pymeta.metalearners import FOMAMLMetaLearner, MAMLMetaLearner, ReptileMetaLearner
    if outer_optimizer == "trpo":
        from pymeta.rl.trpo import MAMLTRPOMetaLearner
        ml = MAMLTRPOMetaLearner(model, max_kl=settings["max_kl"], **common)
    else:
        cls = {"maml": MAMLMetaLearner, "fomaml": FOMAMLMetaLearner, "reptile": ReptileMetaLearner}[metamodel]
        ml = cls(model, keras.optimizers.Adam(settings["meta_lr"]), **common)
    ml.initialize()
    return RLProblem(dist, model, agent, ml, settings)
