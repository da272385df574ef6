"""pymeta.rl gymnasium tasks: HalfCheetah vel/dir and Ant dir rewards equal their formulas on recorded steps,
different tasks give different rewards for the same actions, batch shapes and masking of vector-env
episodes (CartPole terminates early), one-line errors (unknown id, missing gymnasium)."""

import sys

import keras
import numpy as np
import pytest

from pymeta.rl import Agent, make_categorical_policy, make_gaussian_policy
from pymeta.rl.task import collect

gym = pytest.importorskip("gymnasium", reason="gymnasium not installed (pip install -e \".[rl]\")")
from pymeta.rl.gym_tasks import (GymBatchedEnv, GymTask, GymTaskDistribution, OpenAIGymTask,  # noqa: E402
                                 ant_dir, halfcheetah_dir, halfcheetah_vel)

try:
    import mujoco  # noqa: F401
    HAVE_MUJOCO = True
except ImportError:
    HAVE_MUJOCO = False
needs_mujoco = pytest.mark.skipif(not HAVE_MUJOCO, reason="mujoco not installed (pip install -e \".[rl]\")")


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


def run_recorded(tasks, e, steps, actions_seed=1):
    """Step a batched env with seeded uniform actions; record rewards and each copy's x before/after."""
    env = GymBatchedEnv(tasks, e)
    np.random.seed(7)
    env.reset()
    rng = np.random.RandomState(actions_seed)
    sims = [c.unwrapped for v in env.venvs for c in v.envs]
    records = []
    for _ in range(steps):
        a = rng.uniform(-1, 1, (len(tasks) * e, 6))
        x0 = np.array([s.data.qpos[0] for s in sims])
        _, rewards, terminated = env.step(a)
        x1 = np.array([s.data.qpos[0] for s in sims])
        records.append((a, (x1 - x0) / sims[0].dt, rewards, terminated))
    return records


@pytest.mark.slow
@needs_mujoco
def test_halfcheetah_vel_rewards_equal_the_formula_and_depend_on_the_task():
    tasks = halfcheetah_vel(batch_size=2).sample_batch()
    tasks[0].params, tasks[1].params = {"velocity": 0.5}, {"velocity": 1.5}
    for a, vx, rewards, terminated in run_recorded(tasks, 2, 20):
        v_star = np.repeat([0.5, 1.5], 2)
        np.testing.assert_allclose(rewards, -np.abs(vx - v_star) - 0.05 * (a ** 2).sum(-1), rtol=1e-9, atol=1e-9)
        assert not terminated.any()
    # one task at a time, same seeds and actions: the same states, other rewards
    slow, fast = (run_recorded([t], 2, 10) for t in tasks)
    np.testing.assert_allclose(slow[-1][1], fast[-1][1])  # x velocities
    assert np.abs(slow[-1][2] - fast[-1][2]).min() > 1e-3


@pytest.mark.slow
@needs_mujoco
def test_halfcheetah_dir_rewards_equal_the_formula_and_depend_on_the_task():
    tasks = halfcheetah_dir(batch_size=2).sample_batch()
    for t, d in zip(tasks, (-1.0, 1.0)):
        t.params = {"direction": d, "make_kwargs": {"forward_reward_weight": d, "ctrl_cost_weight": 0.05}}
    records = run_recorded(tasks, 2, 20)
    for a, vx, rewards, _ in records:
        d = np.repeat([-1.0, 1.0], 2)
        np.testing.assert_allclose(rewards, d * vx - 0.05 * (a ** 2).sum(-1), rtol=1e-9, atol=1e-9)
    backward, forward = (run_recorded([t], 2, 10) for t in tasks)
    np.testing.assert_allclose(backward[-1][1], forward[-1][1])  # same states
    np.testing.assert_allclose(backward[-1][2] + forward[-1][2], -0.1 * (forward[-1][0] ** 2).sum(-1))
    assert np.abs(backward[-1][2] - forward[-1][2]).min() > 1e-6


@pytest.mark.slow
@needs_mujoco
def test_ant_dir_rewards_equal_the_formula_and_depend_on_the_direction():
    """Ant-v5 as the MAML experiments' Ant-dir: 0.05 + d v_x - 0.005 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2,
    recomputed from the simulator's state; the same actions from the same state, other rewards for d = -1."""
    from pymeta.rl.gym_tasks import make_single_env
    dist = ant_dir(batch_size=8)
    assert {t.params["direction"] for t in dist.sample_batch()} == {-1.0, 1.0}
    assert dist.tasks[0].observation_space.shape == (105,) and dist.tasks[0].action_space.shape == (8,)
    rewards = {}
    for d in (-1.0, 1.0):
        params = {"direction": d, "make_kwargs": {"forward_reward_weight": d, "ctrl_cost_weight": 0.005,
                                                    "contact_cost_weight": 5e-4, "healthy_reward": 0.05}}
        assert dist.tasks[0].sample_params().keys() == params.keys()
        env = make_single_env("Ant-v5", params["make_kwargs"], 200)
        env.reset(seed=3)
        sim, rng, rewards[d] = env.unwrapped, np.random.RandomState(1), []
        for _ in range(15):
            a = rng.uniform(-1, 1, 8)
            x0 = sim.data.body("torso").xpos[0]  # the torso's position, as the MAML experiments' Ant
            _, r, terminated, _, _ = env.step(a)
            vx = (sim.data.body("torso").xpos[0] - x0) / sim.dt
            contact = np.clip(sim.data.cfrc_ext, -1, 1)
            assert not terminated
            np.testing.assert_allclose(r, 0.05 + d * vx - 0.005 * (a ** 2).sum() - 5e-4 * (contact ** 2).sum(),
                                       rtol=1e-9, atol=1e-9)
            rewards[d].append(r)
        env.close()
    assert np.abs(np.subtract(rewards[1.0], rewards[-1.0])).max() > 1e-3


@pytest.mark.slow
@needs_mujoco
def test_vector_env_batches_have_the_sampler_shapes():
    tasks = halfcheetah_dir(batch_size=3, horizon=30).sample_batch()
    agent = Agent(make_gaussian_policy(17, 6, hidden=(8,)), tasks[0].action_space)
    eps = collect(tasks, agent, 4)
    assert eps.obs.shape == (3, 4, 30, 17) and eps.actions.shape == (3, 4, 30, 6)
    assert eps.rewards.shape == eps.mask.shape == (3, 4, 30) and eps.mask.all()
    batch = tasks[0].batch(eps.map(lambda x: x[0]))
    assert batch[0].shape == (120, 17) and batch[2].shape == (120,)


def test_early_termination_is_masked_and_the_copy_reset_without_junk():
    task = OpenAIGymTask("CartPole-v1", horizon=60)
    agent = Agent(make_categorical_policy(4, 2, hidden=(8,)), task.action_space)
    eps = collect([task], agent, 6)
    mask = eps.mask[0]
    assert eps.actions.shape == (1, 6, 60) and eps.obs.shape == (1, 6, 60, 4)
    assert (mask.sum(-1) < 60).any()  # a random CartPole policy falls within 60 steps
    for m, r, o in zip(mask, eps.rewards[0], eps.obs[0]):
        n = int(m.sum())
        assert np.all(m[:n] == 1) and np.all(m[n:] == 0)  # one episode per row, then masked
        assert np.all(r[:n] == 1.0) and np.all(r[n:] == 0) and np.all(o[n:] == 0)
    assert task.evaluate(agent)["mean_episode_length"] < 60


@pytest.mark.slow
@needs_mujoco
def test_distribution_make_kwargs_reach_every_env_and_a_task_own_kwargs_win():
    """make_kwargs={"frame_skip": 1} (--env_kwargs): each step is one raw MuJoCo step (0.01 s, as the
    paper's rllab HalfCheetah) from the same state; the tasks' own forward_reward_weight beats the 5.0 given."""
    import mujoco
    tasks = halfcheetah_dir(batch_size=2, make_kwargs={"frame_skip": 1, "forward_reward_weight": 5.0}).sample_batch()
    for t, d in zip(tasks, (-1.0, 1.0)):
        t.params = {"direction": d, "make_kwargs": {"forward_reward_weight": d, "ctrl_cost_weight": 0.05}}
    env = GymBatchedEnv(tasks, 2)
    env.reset()
    sims = [c.unwrapped for v in env.venvs for c in v.envs]
    rng = np.random.RandomState(1)
    for _ in range(3):
        a = rng.uniform(-1, 1, (4, 6))
        expected = []
        for sim, ai in zip(sims, a):  # one raw MuJoCo step of a copy of each simulation
            data = mujoco.MjData(sim.model)
            mujoco.mj_copyData(data, sim.model, sim.data)
            data.ctrl[:] = ai
            mujoco.mj_step(sim.model, data)
            expected.append(data.qpos.copy())
        x0 = np.array([sim.data.qpos[0] for sim in sims])
        _, rewards, _ = env.step(a)
        np.testing.assert_allclose([sim.data.qpos for sim in sims], expected, rtol=0, atol=1e-12)
        vx = (np.array([sim.data.qpos[0] for sim in sims]) - x0) / 0.01
        np.testing.assert_allclose(rewards, np.repeat([-1.0, 1.0], 2) * vx - 0.05 * (a ** 2).sum(-1), rtol=1e-9,
                                   atol=1e-9)


@needs_mujoco
def test_a_keyword_the_environment_does_not_take_is_a_one_line_error():
    with pytest.raises(ValueError, match="'HalfCheetah-v5' does not take the keyword arguments") as e:
        GymTask("HalfCheetah-v5", make_kwargs={"fram_skip": 1})
    assert "\n" not in str(e.value)


def test_generic_distribution_applies_make_kwargs_on_reset():
    dist = GymTaskDistribution("Pendulum-v1", lambda: {"make_kwargs": {"g": float(np.random.uniform(5, 15))}},
                               batch_size=2, horizon=10)
    tasks = dist.sample_batch()
    gs = [t.params["make_kwargs"]["g"] for t in tasks]
    env = GymBatchedEnv(tasks, 1)
    assert [v.envs[0].unwrapped.g for v in env.venvs] == gs
    # the drawn copies share the spaces, so one model keeps one agent (and its compiled policy)
    model = make_gaussian_policy(3, 1, hidden=(4,))
    assert tasks[0].action_space is tasks[1].action_space
    assert tasks[0].agent(model) is tasks[1].agent(model)


def test_unknown_env_id_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown gymnasium environment id 'NoSuchEnv-v0'") as e:
        GymTask("NoSuchEnv-v0")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="env must be a gymnasium environment id or a function returning an "
                                         "environment, got int 5"):  # was "'int' object is not callable"
        GymTask(5)


def test_missing_gymnasium_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[rl\]"') as e:
        GymTask("CartPole-v1")
    assert "\n" not in str(e.value)


@needs_mujoco
def test_mujoco_warnings_go_to_logging_once_not_to_the_terminal_or_a_log_file(tmp_path, monkeypatch, caplog, capfd):
    import logging

    import pymeta.rl.gym_tasks as gym_tasks
    monkeypatch.chdir(tmp_path)
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(None)  # MuJoCo's default: print, and append to ./MUJOCO_LOG.TXT
    monkeypatch.setattr(gym_tasks, "_mujoco_warnings_seen", set())
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><freejoint/><geom size='.1'/></body>"
                                           "</worldbody></mujoco>")

    def unstable_step():  # MuJoCo warns once per MjData: "Nan, Inf or huge value in QPOS ..."
        data = mujoco.MjData(model)
        data.qpos[:] = np.nan
        mujoco.mj_step(model, data)

    try:
        unstable_step()  # the control: without the routing MuJoCo prints and writes the file
        control = capfd.readouterr()
        assert "QPOS" in control.out + control.err and (tmp_path / "MUJOCO_LOG.TXT").exists()
        (tmp_path / "MUJOCO_LOG.TXT").unlink()
        with caplog.at_level(logging.WARNING, logger="pymeta.rl.gym_tasks"):
            gym_tasks.make_single_env("HalfCheetah-v5", {}, 10).close()  # routes MuJoCo's warnings
            for _ in range(3):
                unstable_step()
    finally:
        mujoco.set_mju_user_warning(previous)
    out = capfd.readouterr()
    assert "QPOS" not in out.out + out.err and not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert [r.getMessage().count("QPOS") for r in caplog.records if "QPOS" in r.getMessage()] == [1]
    assert all(r.getMessage().startswith("MuJoCo: ") for r in caplog.records)
